"""transformers' own half-precision greedy tokens on the committed tiny fixtures, on this machine's
GPU: the reference the f16/bf16 runs of the candle model are compared with there (the committed
references are float32; half precision moves logits by more than some of their top-1 margins).

    python3 scripts/half_reference.py --out half_reference.json [--device cuda]

Same inputs as tests/fixtures/reference (transformers' pixel values and input ids), eager attention
(softmax in f32, as the Rust side computes it), greedy, the cases' own parameters. Run by
scripts/gpu_check.sh; `GST_BLIP2_HALF_REFERENCE=<file> <CUDA parity test binary> --exact
half_precision_matches_transformers_on_this_device` compares.
"""

import argparse
import json
import pathlib

import torch
from safetensors.torch import load_file
from transformers import Blip2ForConditionalGeneration

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MODELS = ["opt-tiny", "opt-tiny-sharded-f16", "t5-tiny"]


def new_tokens(seq, fed, is_enc_dec, eos):
    rows = []
    for row, prompt in zip(seq.tolist(), fed.tolist()):
        if is_enc_dec:
            row = row[1:]  # the decoder start id
        elif row[: len(prompt)] == prompt:
            row = row[len(prompt):]
        cut = []
        for t in row:
            cut.append(t)
            if t in eos:
                break
        rows.append(cut)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    results = {}
    for name in MODELS:
        ref = json.load(open(ROOT / "reference" / f"{name}.json"))
        tensors = load_file(str(ROOT / "reference" / f"{name}.safetensors"))
        results[name] = {}
        for dtype_name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
            model = Blip2ForConditionalGeneration.from_pretrained(
                ROOT / "models" / name, dtype=dtype, attn_implementation="eager"
            ).to(a.device).eval()
            is_enc_dec = model.config.is_encoder_decoder
            default_eos = model.generation_config.eos_token_id
            cases = {}
            for case in ref["cases"]:
                params = dict(case["params"])
                if params.get("num_beams", 1) != 1:
                    continue
                pixels = torch.stack([tensors[f"pixel_values.{i}"] for i in case["images"]])
                ids = torch.tensor([case["input_ids"][0]] * len(case["images"]))
                eos = params.get("eos_token_id", default_eos)
                eos = eos if isinstance(eos, list) else [eos]
                with torch.no_grad():
                    seq = model.generate(
                        pixel_values=pixels.to(a.device),
                        input_ids=ids.to(a.device),
                        attention_mask=torch.ones_like(ids).to(a.device),
                        do_sample=False,
                        **params,
                    )
                cases[case["name"]] = new_tokens(seq.cpu(), ids, is_enc_dec, eos)
            results[name][dtype_name] = cases
            del model
    out = {
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device,
        "results": results,
    }
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
