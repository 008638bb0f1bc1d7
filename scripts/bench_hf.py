"""The Hugging Face peer of examples/bench.rs: same preset shapes, random weights, greedy,
exactly N new tokens (EOS ignored), batch sizes 1/8/32 by default. Prints one JSON object.

    python3 scripts/bench_hf.py --config <(cargo run -q --release --example bench -- --print-config small-opt) \
        --batch 1,8 --new-tokens 20 --runs 3 [--device cuda] [--dtype float16]
Needs torch + transformers (scripts/requirements-fixtures.txt).
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

try:  # the PIL backend, as the Rust side implements it (transformers >= 5.2x)
    from transformers import BlipImageProcessorPil as ImageProcessor
except ImportError:
    from transformers import BlipImageProcessor as ImageProcessor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="preset JSON file (bench --print-config NAME)")
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    cfg = json.load(open(a.config))
    config = Blip2Config(**{k: v for k, v in cfg.items() if k != "model_type"})
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(a.device):
        model = Blip2ForConditionalGeneration(config).to(dtype).eval()
    load_ms = (time.perf_counter() - t) * 1e3
    size = config.vision_config.image_size
    processor = ImageProcessor(size={"height": size, "width": size})
    start = [config.image_token_index] * config.num_query_tokens
    start += [config.text_config.bos_token_id] if not config.text_config.is_encoder_decoder else [1]

    def sync():
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    results = []
    for batch in [int(b) for b in a.batch.split(",")]:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(batch)]
        ids = torch.tensor([start] * batch, device=a.device)
        timings = {"total": [], "preprocess": [], "vision": []}
        for run in range(a.runs + 1):  # first run warms up
            sync()
            t0 = time.perf_counter()
            px = processor(images=images, return_tensors="pt")["pixel_values"].to(a.device, dtype)
            t1 = time.perf_counter()
            with torch.no_grad():
                model.vision_model(px)
                sync()
                t2 = time.perf_counter()
                out = model.generate(pixel_values=px, input_ids=ids, max_new_tokens=a.new_tokens,
                                     min_new_tokens=a.new_tokens, do_sample=False, num_beams=1)
            sync()
            t3 = time.perf_counter()
            assert out.shape[1] - (0 if config.text_config.is_encoder_decoder else ids.shape[1]) \
                - (1 if config.text_config.is_encoder_decoder else 0) == a.new_tokens
            if run:
                # generate() runs the vision tower again itself: total excludes the separate timing run
                timings["total"].append((t3 - t2 + t1 - t0) * 1e3)
                timings["preprocess"].append((t1 - t0) * 1e3)
                timings["vision"].append((t2 - t1) * 1e3)
        total = statistics.median(timings["total"])
        results.append({"batch": batch, "batch_ms": total, "per_caption_ms": total / batch,
                        "captions_per_s": batch * 1e3 / total,
                        "preprocess_ms": statistics.median(timings["preprocess"]),
                        "vision_ms": statistics.median(timings["vision"])})
    print(json.dumps({"implementation": "transformers " + __import__("transformers").__version__ + " eager, torch "
                      + torch.__version__, "device": a.device, "dtype": a.dtype, "new_tokens": a.new_tokens,
                      "threads": torch.get_num_threads(), "load_ms": load_ms, "results": results}, indent=1))


if __name__ == "__main__":
    main()
