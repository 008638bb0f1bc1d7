#!/usr/bin/env python3
"""Generate tiny random-weight BLIP-2 snapshots and transformers reference outputs.

Writes (deterministically, fixed seeds, single-threaded):

  tests/fixtures/images/*.png                 small real photographs (scikit-image data)
  tests/fixtures/models/<name>/               complete HF snapshots (config, weights,
                                              generation config, tokenizer, processor)
  tests/fixtures/reference/<name>.json        generation cases + expected token ids / text
  tests/fixtures/reference/<name>.safetensors processor pixel values + first-step logits

Usage:  python3 scripts/gen_fixtures.py        (versions: scripts/requirements-fixtures.txt)

Needs torch, transformers==5.24.0 (PIL image backend: do NOT install torchvision),
tokenizers, pillow, scikit-image, safetensors, numpy.  No network access needed.
"""

import os

# Determinism: single-threaded tokenizer training and torch kernels.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import tokenizers
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    GenerationConfig,
    GPT2Tokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    T5Tokenizer,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMG_DIR = FIX / "images"
MODEL_DIR = FIX / "models"
REF_DIR = FIX / "reference"

MIN_MARGIN = 1e-2  # required top-1 vs top-2 gap at every greedy step
PERTURB = 1e-3  # beam results must be unchanged under +-PERTURB noise on every score
VQA_PROMPT = "Question: what is in the picture? Answer:"

# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def make_images():
    from skimage import data

    IMG_DIR.mkdir(parents=True, exist_ok=True)
    out = {}

    def down(arr, size, mode):
        im = Image.fromarray(arr, mode=None)
        if im.mode != mode:
            im = im.convert(mode)
        return im.resize(size, Image.Resampling.LANCZOS)

    # astronaut 512x512 -> 151x151 (odd square)
    out["astronaut.png"] = down(data.astronaut(), (151, 151), "RGB")
    # chelsea 451x300 (w x h) -> 181x120 (landscape, odd width)
    out["chelsea.png"] = down(data.chelsea(), (181, 120), "RGB")
    # astronaut portrait crop (300 wide x 512 high) -> 117x200 (portrait, odd width)
    out["astronaut_portrait.png"] = down(np.ascontiguousarray(data.astronaut()[:, 100:400]), (117, 200), "RGB")
    # camera 512x512 grayscale -> 97x97 mode "L" (exercises gray -> RGB)
    out["camera_gray.png"] = down(data.camera(), (97, 97), "L")
    # coffee 600x400 -> 150x100, RGBA with a deterministic alpha ramp (exercises RGBA -> RGB)
    coffee = down(data.coffee(), (150, 100), "RGB")
    rgb = np.asarray(coffee)
    h, w = rgb.shape[:2]
    xs = np.arange(w, dtype=np.float64)[None, :]
    ys = np.arange(h, dtype=np.float64)[:, None]
    alpha = np.clip(255.0 - 1.6 * xs - 0.4 * ys, 0, 255).round().astype(np.uint8)
    alpha[: h // 4, : w // 4] = 255
    rgba = np.concatenate([rgb, alpha[:, :, None]], axis=2)
    out["coffee_rgba.png"] = Image.fromarray(rgba, mode="RGBA")

    for name, im in out.items():
        im.save(IMG_DIR / name, format="PNG", optimize=False, compress_level=9)
    return sorted(out)


def load_image(name):
    im = Image.open(IMG_DIR / name)
    im.load()
    return im


# --------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------

_SUBJECTS = [
    "a man", "a woman", "an astronaut", "a cat", "a dog", "a cup of coffee", "a camera", "a person",
    "a small bird", "two people", "a red car", "a white plate", "a tabby cat", "a photographer",
    "a wooden table", "a flag", "a space suit", "a tripod", "a kitten", "a mug",
]
_VERBS = [
    "is sitting on", "is standing next to", "is holding", "is looking at", "is lying on",
    "is in front of", "is near", "is on top of", "is wearing", "is next to",
]
_OBJECTS = [
    "a table", "the grass", "a chair", "a saucer", "a flag", "a helmet", "the floor", "a field",
    "a window", "a bed", "a blanket", "a building", "the sky", "a plate", "a spoon",
]
_ADJ = ["black and white", "colorful", "bright", "dark", "old", "blurry", "close up", "sunny"]
_EXTRA = """\
red orange yellow green blue purple pink brown gray silver golden striped spotted wooden metal glass
kitchen bathroom bedroom street beach mountain river forest garden park station airport office
horse cow sheep elephant giraffe zebra bear bicycle motorcycle airplane train boat truck bus
umbrella backpack handbag suitcase bottle knife fork bowl banana apple sandwich orange pizza cake
running jumping eating drinking sleeping walking smiling playing reading writing cooking flying
morning evening afternoon winter summer autumn spring weather cloudy rainy snowy foggy windy
children family friends teacher student doctor farmer soldier player driver pilot artist singer
computer keyboard monitor phone television camera lamp clock mirror picture painting poster sign
bridge tower castle church temple market restaurant hotel library museum school hospital stadium
ocean lake island desert valley hill road path fence wall door roof stairs corner shadow light
happy sad tired busy quiet noisy crowded empty large small tall short long wide narrow heavy
carefully quickly slowly together alone inside outside above below behind between through across
vegetable carrot tomato potato onion pepper cheese bread butter chocolate cookie juice water tea
shirt jacket dress shoes boots hat glasses scarf gloves uniform costume necklace watch ring
"""
_FIXED = """\
a photograph of an astronaut in a white space suit holding a helmet in front of a flag
a close up photo of a tabby cat with green eyes looking at the camera
a cup of coffee on a saucer with a spoon on a wooden table
a black and white photo of a man with a camera on a tripod in a field
Question: what is in the picture? Answer: a cat
Question: what is in the picture? Answer: an astronaut
Question: what is in the picture? Answer: a cup of coffee
Question: what color is the cat? Answer: brown and black
Question: how many people are there? Answer: one
Question: what is the man holding? Answer: a camera
Question: where is the cup? Answer: on the table
Question: is it day or night? Answer: day
The quick brown fox jumps over the lazy dog.
Pack my box with five dozen liquor jugs!
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.
"""


def corpus_lines():
    rng = random.Random(1234)
    lines = _FIXED.splitlines()
    extra = _EXTRA.split()
    for i, w in enumerate(extra):
        lines.append(f"a {w} {extra[(7 * i + 3) % len(extra)]} in the {extra[(11 * i + 5) % len(extra)]}")
    for _ in range(600):
        s = rng.choice(_SUBJECTS)
        v = rng.choice(_VERBS)
        o = rng.choice(_OBJECTS)
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(f"{s} {v} {o}")
        elif kind == 1:
            lines.append(f"a {rng.choice(_ADJ)} photo of {s} {v} {o}.")
        elif kind == 2:
            lines.append(f"Question: what is {s} doing? Answer: {s} {v} {o}")
        else:
            lines.append(f"There is {s} {v} {o}, and {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {o}.")
    return lines


def train_opt_tokenizer():
    """Byte-level BPE like GPT-2/OPT; OPT special ids <s>=0 <pad>=1 </s>=2 <unk>=3."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = corpus_lines()
    # newline-joined documents so "\n" is seen as its own (byte) token
    docs = ["\n".join(lines[i : i + 5]) + "\n" for i in range(0, len(lines), 5)]
    tok.train_from_iterator(docs, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    assert [vocab[t] for t in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3]
    # As facebook/opt-* and Salesforce/blip2-opt-*: bos = eos = unk = "</s>" (id 2), pad "<pad>" (1),
    # add_bos_token=True (prepends "</s>" through the tokenizer.json TemplateProcessing post-processor).
    t = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        errors="replace",
        bos_token="</s>",
        eos_token="</s>",
        unk_token="</s>",
        pad_token="<pad>",
        add_prefix_space=False,
        add_bos_token=True,
        model_max_length=1000000000000000019884624838656,
    )
    nl = t.convert_tokens_to_ids("Ċ")
    assert t("\n", add_special_tokens=False)["input_ids"] == [nl], "newline must be a single token"
    return t


def train_t5_tokenizer():
    """Unigram (SentencePiece-like) like T5/Flan-T5: <pad>=0 </s>=1 <unk>=2, post-processor "$A </s>".

    tokenizers' UnigramTrainer is not deterministic (hash-map order), so the pieces come from a
    (deterministic) BPE training on Metaspace-pre-tokenized text and get Unigram log-probability
    scores from their substring counts in the corpus.
    """
    import math
    from collections import Counter

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=500, min_frequency=1, special_tokens=[], show_progress=False)
    lines = corpus_lines()
    tok.train_from_iterator(lines, trainer=trainer)
    pieces = sorted(json.loads(tok.to_str())["model"]["vocab"])
    words = Counter(w for line in lines for w, _ in pre.pre_tokenize_str(line))
    counts = {}
    for piece in pieces:
        c = 0
        for w, n in words.items():
            if piece in w:
                c += n * w.count(piece)
        counts[piece] = c + 1
    total = sum(counts.values())
    scored = sorted(((round(math.log(counts[p] / total), 6), p) for p in pieces), key=lambda x: (-x[0], x[1]))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, sc) for sc, p in scored]
    t = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
    return t


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def scale_init(model, seed, std):
    """Re-init all params with a large std so greedy choices are clear-cut; LayerNorms ~1."""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm) or "LayerNorm" in type(mod).__name__:
            for p in mod.parameters(recurse=False):
                norm_params.add(id(p))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in norm_params:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def write_sparse_config(folder, cfg):
    """Rewrite config.json hub-style: keep only values differing from the transformers class defaults."""
    from transformers import OPTConfig
    from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig, Blip2VisionConfig

    full = cfg.to_dict()

    def diff(d, default, keep=()):
        out = {}
        for k, v in d.items():
            if k in keep or k not in default or default[k] != v:
                out[k] = v
        return out

    drop_common = {"transformers_version", "_name_or_path", "output_hidden_states", "return_dict",
                   "output_attentions", "chunk_size_feed_forward", "problem_type", "tie_word_embeddings"}
    vis = diff(full["vision_config"], Blip2VisionConfig().to_dict())
    qf = diff(full["qformer_config"], Blip2QFormerConfig().to_dict())
    qf.pop("encoder_hidden_size", None)  # always overwritten with vision_config.hidden_size by Blip2Config
    txt = diff(full["text_config"], OPTConfig().to_dict(), keep=("model_type",))
    for d in (vis, qf, txt):
        for k in list(d):
            if k in drop_common or k in ("dtype", "torch_dtype", "architectures", "model_type") and d is not txt:
                d.pop(k)
        for k in ("dtype", "torch_dtype", "architectures"):
            if d is txt:
                d.pop(k, None)
    txt.pop("_remove_final_layer_norm", None) if not txt.get("_remove_final_layer_norm") else None
    sparse = {
        "architectures": ["Blip2ForConditionalGeneration"],
        "image_token_index": full["image_token_index"],
        "model_type": "blip-2",
        "num_query_tokens": full["num_query_tokens"],
        "qformer_config": qf,
        "text_config": txt,
        "torch_dtype": "float16",
        "transformers_version": transformers.__version__,
        "use_decoder_only_language_model": True,
        "vision_config": vis,
    }
    (folder / "config.json").write_text(json.dumps(sparse, indent=2, sort_keys=True) + "\n")


MODELS = {
    "opt-tiny": dict(
        seed=11,
        kind="opt",
        dtype=torch.float32,
        num_query_tokens=4,
        vision=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64),
        qformer=dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                     cross_attention_frequency=2),
        text=dict(hidden_size=40, ffn_dim=80, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, word_embed_proj_dim=40),
        std=0.35,
        save=dict(),
        sparse_config=False,
        legacy_processor=False,
    ),
    "opt-tiny-sharded-f16": dict(
        seed=23,
        kind="opt",
        dtype=torch.float16,
        num_query_tokens=5,
        vision=dict(image_size=28, patch_size=7, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=96),
        qformer=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     cross_attention_frequency=1),
        text=dict(hidden_size=48, ffn_dim=96, num_hidden_layers=3, num_attention_heads=4,
                  max_position_embeddings=64, word_embed_proj_dim=24, do_layer_norm_before=False),
        std=0.35,
        save=dict(max_shard_size="60KB"),
        sparse_config=True,
        legacy_processor=True,
    ),
    "t5-tiny": dict(
        seed=37,
        kind="t5",
        dtype=torch.bfloat16,
        num_query_tokens=6,
        vision=dict(image_size=24, patch_size=6, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=80),
        qformer=dict(hidden_size=28, num_hidden_layers=2, num_attention_heads=4, intermediate_size=56,
                     cross_attention_frequency=2),
        text=dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
                  relative_attention_num_buckets=32, relative_attention_max_distance=64,
                  feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                  eos_token_id=1, pad_token_id=0, dropout_rate=0.1, layer_norm_epsilon=1e-6),
        std=0.2,
        save=dict(),
        sparse_config=False,
        legacy_processor=False,
    ),
}


def build_snapshot(name, spec):
    folder = MODEL_DIR / name
    folder.mkdir(parents=True, exist_ok=True)

    tok = train_opt_tokenizer() if spec["kind"] == "opt" else train_t5_tokenizer()
    S = spec["vision"]["image_size"]
    image_processor = BlipImageProcessorPil(
        size={"height": S, "width": S},
        resample=3,  # PILImageResampling.BICUBIC
        do_convert_rgb=True,
    )
    processor = Blip2Processor(image_processor, tok, num_query_tokens=spec["num_query_tokens"])
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vocab_size = len(tok)
    assert image_token_id == vocab_size - 1

    if spec["kind"] == "opt":
        nl = tok.convert_tokens_to_ids("Ċ")
        text = dict(model_type="opt", vocab_size=vocab_size, bos_token_id=2, eos_token_id=nl, pad_token_id=1,
                    dropout=0.1, activation_function="relu", **spec["text"])
        gen = GenerationConfig(bos_token_id=2, eos_token_id=nl, pad_token_id=1)
    else:
        text = dict(model_type="t5", vocab_size=vocab_size, **spec["text"])
        gen = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)

    config = Blip2Config(
        vision_config=spec["vision"],
        qformer_config=spec["qformer"],
        text_config=text,
        num_query_tokens=spec["num_query_tokens"],
        image_token_index=image_token_id,
    )
    torch.manual_seed(spec["seed"])
    model = Blip2ForConditionalGeneration(config).eval()
    scale_init(model, spec["seed"], spec["std"])
    model.generation_config = gen
    model = model.to(spec["dtype"])
    model.save_pretrained(folder, **spec["save"])

    processor.save_pretrained(folder)
    if spec["legacy_processor"]:
        # Older hub snapshots (e.g. Salesforce/blip2-opt-2.7b): image processor settings in
        # preprocessor_config.json, processor_config.json only carries num_query_tokens.
        image_processor.save_pretrained(folder)
        (folder / "processor_config.json").write_text(
            json.dumps({"num_query_tokens": spec["num_query_tokens"], "processor_class": "Blip2Processor"},
                       indent=2) + "\n"
        )
    if spec["sparse_config"]:
        write_sparse_config(folder, config)
    if spec["kind"] == "t5":
        untie_t5_lm_head(folder, spec)
    return folder


def untie_t5_lm_head(folder, spec):
    """Make the T5 snapshot look like Flan-T5 (T5 v1.1): separate lm_head.weight, no decoder-output scaling.

    transformers 5's T5Config forces tie_word_embeddings=True (scale_decoder_outputs is derived from the
    *passed* tie_word_embeddings != False), so save_pretrained drops lm_head.weight. Real Flan-T5 snapshots
    have `"tie_word_embeddings": false` and a distinct lm_head.weight; transformers 5 then keeps them
    untied (both keys present with different values) and does not scale.
    """
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    sd = load_file(str(path))
    assert "language_model.lm_head.weight" not in sd
    shared = sd["language_model.shared.weight"]
    g = torch.Generator().manual_seed(spec["seed"] + 7)
    sd["language_model.lm_head.weight"] = (spec["std"] * torch.randn(shared.shape, generator=g)).to(shared.dtype)
    save_file(sd, str(path), metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"]["tie_word_embeddings"] = False
    cfg["text_config"].pop("scale_decoder_outputs", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------
# Reference generation
# --------------------------------------------------------------------------------------


class FixtureCheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise FixtureCheckFailed(msg)


class Noise(LogitsProcessor):
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids, scores):
        return scores + (torch.rand(scores.shape, generator=self.g, dtype=torch.float64) * 2 - 1).to(
            scores.dtype) * PERTURB


def run_generate(model, inputs, params, extra=None):
    kwargs = dict(params)
    kwargs["do_sample"] = False
    with torch.no_grad():
        return model.generate(**inputs, **kwargs, output_logits=True, output_scores=True,
                              return_dict_in_generate=True, logits_processor=extra)


def process_case(model, processor, case, eos_default, is_enc_dec):
    imgs = [load_image(n) for n in case["images"]]
    if case["prompt"] is None:
        inputs = processor(images=imgs, return_tensors="pt")
    else:
        inputs = processor(images=imgs, text=[case["prompt"]] * len(imgs), return_tensors="pt")
    params = case["params"]
    out = run_generate(model, inputs, params)
    seq = out.sequences
    cfg = model.config
    fed = inputs["input_ids"] if "input_ids" in inputs else None
    if is_enc_dec:
        assert (seq[:, 0] == model.generation_config.decoder_start_token_id).all()
        new = seq[:, 1:]
    else:
        if fed is None:
            start = [cfg.image_token_index] * cfg.num_query_tokens + [cfg.text_config.bos_token_id]
            fed = torch.tensor([start] * len(imgs))
            # same ids as the processor gives for an empty prompt
            alt = processor(images=imgs, text=[""] * len(imgs), return_tensors="pt")["input_ids"]
            assert torch.equal(alt, fed), (alt, fed)
        assert torch.equal(seq[:, : fed.shape[1]], fed), "sequences must start with the fed input_ids"
        new = seq[:, fed.shape[1]:]
    eos = params.get("eos_token_id", eos_default)
    token_ids = []
    for row in new.tolist():
        cut = []
        for t in row:
            cut.append(t)
            if t == eos:
                break
        token_ids.append(cut)

    margin = None
    if params.get("num_beams", 1) == 1:
        for step, sc in enumerate(out.scores):
            for b in range(sc.shape[0]):
                if step >= len(token_ids[b]):
                    continue
                top = torch.topk(sc[b].double(), 2)
                assert top.indices[0].item() == token_ids[b][step]
                m = (top.values[0] - top.values[1]).item()
                margin = m if margin is None else min(margin, m)
    else:
        top = torch.topk(out.scores[0][0].double(), 2)
        margin = (top.values[0] - top.values[1]).item()
    # robustness: result must not change under tiny score perturbations
    for s in range(3):
        o2 = run_generate(model, inputs, params, LogitsProcessorList([Noise(1000 + s)]))
        check(torch.equal(o2.sequences, seq), f"{case['name']}: output not robust to {PERTURB} perturbation")
    texts = [processor.tokenizer.decode(r, skip_special_tokens=True).strip() for r in token_ids]
    return dict(
        inputs=inputs,
        fed=fed,
        token_ids=token_ids,
        texts=texts,
        margin=margin,
        first_logits=out.logits[0].float().contiguous(),
    )


def first_new_token(tokens):
    """Index of the first token at position >= 3 (else >= 1) that does not occur earlier."""
    for lo in (3, 1):
        for i in range(lo, len(tokens)):
            if tokens[i] not in tokens[:i]:
                return i
    return None


def make_cases(caption_text, greedy_caption_tokens=None):
    """caption_text: None (OPT: documented `processor(images=...)` call, generate() builds the prompt)
    or "" (T5: transformers 5 T5Config has no bos_token_id, so text=None cannot be used)."""
    img1 = "chelsea.png"
    def P(**kw):
        return {**dict(max_new_tokens=12, min_new_tokens=0, num_beams=1, length_penalty=1.0,
                       early_stopping=False, repetition_penalty=1.0), **kw}
    cases = [
        dict(name="greedy_caption", images=[img1], prompt=None, params=P()),
        dict(name="greedy_vqa", images=["astronaut.png"], prompt=VQA_PROMPT, params=P()),
        dict(name="beam3", images=["coffee_rgba.png"], prompt=None,
             params={**P(), "max_new_tokens": 10, "num_beams": 3}),
        dict(name="beam4_lp", images=["astronaut_portrait.png"], prompt=VQA_PROMPT,
             params={**P(), "max_new_tokens": 10, "num_beams": 4, "length_penalty": 0.6, "early_stopping": True}),
        dict(name="batch_greedy", images=["astronaut.png", "camera_gray.png", "coffee_rgba.png"],
             prompt=VQA_PROMPT, params=P()),
        dict(name="batch_beam", images=["chelsea.png", "astronaut_portrait.png"], prompt=None,
             params={**P(), "max_new_tokens": 10, "num_beams": 3}),
        dict(name="repetition", images=["camera_gray.png"], prompt=None, params=P(repetition_penalty=1.5)),
    ]
    if greedy_caption_tokens is not None:
        # EOS override: the first token at position >= 3 of greedy_caption that did not occur before,
        # so generation provably stops right there (usually the 4th token).
        idx = first_new_token(greedy_caption_tokens)
        eos = greedy_caption_tokens[idx]
        cases.append(dict(name="greedy_eos", images=[img1], prompt=None, params=P(eos_token_id=eos)))
        cases.append(dict(name="min_tokens", images=[img1], prompt=None,
                          params={**P(eos_token_id=eos), "min_new_tokens": idx + 4}))
    for c in cases:
        if c["prompt"] is None:
            c["prompt"] = caption_text
    return cases


def references(name, spec, folder):
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor.image_processor).__name__ == "BlipImageProcessorPil", type(processor.image_processor)
    model = Blip2ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if spec["kind"] == "t5":
        lm = model.language_model
        assert lm.lm_head.weight.data_ptr() != lm.shared.weight.data_ptr(), "T5 lm_head must be untied"
        assert not lm.config.scale_decoder_outputs, "Flan-T5 style: no decoder output scaling"
    is_enc_dec = model.config.is_encoder_decoder
    eos_default = model.generation_config.eos_token_id

    # tokenizer.json alone (what the Rust side loads) must tokenize like transformers
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in [VQA_PROMPT, "", "a cat\n", "Hello world", "<image><image> x"]:
        a = raw.encode(text).ids
        b = processor.tokenizer(text)["input_ids"]
        assert a == b, (name, text, a, b)

    tensors = {}
    for img in sorted(os.listdir(IMG_DIR)):
        pv = processor(images=[load_image(img)], return_tensors="pt")["pixel_values"][0]
        tensors[f"pixel_values.{img}"] = pv.float().contiguous()

    results = []
    caption_text = "" if is_enc_dec else None
    first = process_case(model, processor, make_cases(caption_text)[0], eos_default, is_enc_dec)
    gc_tokens = first["token_ids"][0]
    check(len(gc_tokens) >= 5 and gc_tokens[-1] != eos_default and first_new_token(gc_tokens) is not None,
          "greedy_caption must give >= 5 tokens, not all equal")
    for case in make_cases(caption_text, gc_tokens):
        r = process_case(model, processor, case, eos_default, is_enc_dec)
        if case["params"]["num_beams"] == 1:
            check(r["margin"] >= MIN_MARGIN, f"{case['name']}: margin {r['margin']:.5f} too small")
        if case["name"] == "greedy_eos":
            e = case["params"]["eos_token_id"]
            assert r["token_ids"][0] == gc_tokens[: gc_tokens.index(e) + 1], (r["token_ids"], gc_tokens)
        if case["name"] == "min_tokens":
            e, mn = case["params"]["eos_token_id"], case["params"]["min_new_tokens"]
            assert e not in r["token_ids"][0][:mn]
            check(len(r["token_ids"][0]) > mn, "min_tokens should run past min_new_tokens")
        if case["name"].startswith("batch_"):
            check(len({tuple(t) for t in r["token_ids"]}) == len(case["images"]),
                  f"{case['name']}: outputs for different images must differ")
        if case["name"] in ("greedy_caption", "greedy_vqa", "batch_greedy", "repetition"):
            tensors[f"logits.{case['name']}"] = r["first_logits"]
        params = dict(case["params"])
        results.append(dict(
            name=case["name"],
            images=case["images"],
            prompt="" if case["prompt"] is None else case["prompt"],
            processor_text=case["prompt"],
            params=params,
            input_ids=r["fed"].tolist(),
            token_ids=r["token_ids"],
            text=r["texts"],
            min_greedy_margin=round(r["margin"], 6),
        ))
    # The same first steps in float64: the f32 reference carries its own rounding error, which
    # for the post-LN fixture reaches a few 1e-4; the Rust test measures against this truth.
    model64 = Blip2ForConditionalGeneration.from_pretrained(folder, dtype=torch.float64).eval()
    for r in results:
        if f"logits.{r['name']}" not in tensors:
            continue
        px = torch.stack([tensors[f"pixel_values.{i}"] for i in r["images"]]).double()
        ids = torch.tensor(r["input_ids"])
        with torch.no_grad():
            if is_enc_dec:
                start = torch.full((len(r["images"]), 1), model.generation_config.decoder_start_token_id)
                out = model64(pixel_values=px, input_ids=ids, decoder_input_ids=start)
            else:
                out = model64(pixel_values=px, input_ids=ids)
        tensors[f"logits_f64.{r['name']}"] = out.logits[:, -1, :].contiguous()
    tok = processor.tokenizer
    doc = {
        "model": name,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "weights_dtype": str(spec["dtype"]).replace("torch.", ""),
        "reference_dtype": "float32",
        "eos_token_id": eos_default,
        "bos_token_id": getattr(model.config.text_config, "bos_token_id", None),
        "pad_token_id": model.generation_config.pad_token_id,
        "decoder_start_token_id": model.generation_config.decoder_start_token_id,
        "image_token_id": model.config.image_token_index,
        "num_query_tokens": model.config.num_query_tokens,
        "image_size": model.config.vision_config.image_size,
        "tokenizer_len": len(tok),
        "cases": results,
    }
    REF_DIR.mkdir(parents=True, exist_ok=True)
    (REF_DIR / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    save_file(dict(sorted(tensors.items())), str(REF_DIR / f"{name}.safetensors"), metadata={"format": "pt"})
    return doc


def main():
    for d in (IMG_DIR, MODEL_DIR, REF_DIR):
        if d.exists():
            shutil.rmtree(d)
    make_images()
    for name, spec in MODELS.items():
        # Deterministic seed search: the first seed (spec["seed"] + k * 1000) whose reference
        # passes every margin / robustness check is used.
        for k in range(40):
            spec = {**spec, "seed": MODELS[name]["seed"] + 1000 * k}
            folder = build_snapshot(name, spec)
            try:
                doc = references(name, spec, folder)
                break
            except FixtureCheckFailed as e:
                print(f"  {name}: seed {spec['seed']} rejected: {e}")
                shutil.rmtree(folder)
        else:
            raise SystemExit(f"{name}: no acceptable seed found")
        print(f"== {name}: eos={doc['eos_token_id']} image_token={doc['image_token_id']} "
              f"vocab={doc['tokenizer_len']}")
        for c in doc["cases"]:
            print(f"  {c['name']:15s} margin={c['min_greedy_margin']:.4f} tokens={c['token_ids']} text={c['text']}")


if __name__ == "__main__":
    sys.exit(main())
