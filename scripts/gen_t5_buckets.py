"""Reference for T5's relative position buckets (tests/fixtures/t5_buckets.json).

Runs transformers' own `T5Attention._relative_position_bucket` over relative positions -200..200
for the bidirectional (encoder) and unidirectional (decoder) cases. Needs torch + transformers.
"""

import json
import pathlib

import torch
from transformers.models.t5.modeling_t5 import T5Attention

rel = torch.arange(-200, 201)
cases = []
for bidirectional in (True, False):
    for buckets, distance in ((32, 128), (32, 64), (16, 20)):
        out = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
        cases.append(
            {"bidirectional": bidirectional, "num_buckets": buckets, "max_distance": distance,
             "relative_start": -200, "buckets": out.tolist()}
        )
dest = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/t5_buckets.json"
dest.write_text(json.dumps(cases) + "\n")
