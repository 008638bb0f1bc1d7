#!/usr/bin/env python3
"""Reference data for the Rust port of BlipImageProcessor (src/model/processor.rs, resize.rs).

NOTE: not run by the test suite. The unit tests in src/model/processor.rs and resize.rs hard-code
small Pillow/transformers results (each with its Python one-liner); this script made the large
comparison set the port was developed against (a standalone crate whose integration test asserted
every resize byte-identical and every pixel value bit-identical, so well within 1e-5). Rerun it
after a Pillow or transformers upgrade and compare, e.g. with the loop sketched at the bottom.

Writes deterministic random images, Pillow's `Image.resize` outputs and the pixel values of
transformers' `BlipImageProcessorPil` (the PIL backend) into OUT_DIR (default: ./testdata):

    cases.json            {"resize": [...], "processor": [...], "rgba": [...]}, naming the files
    *.u8                  raw packed 8-bit pixels (row-major, interleaved channels)
    *.f32                 raw little-endian float32, CHW (pixel_values[0])

Generated with Pillow 13.0.0, numpy 2.4, transformers 5.24.0 (no torchvision needed). Pillow
13.0 runs the vertical pass first when the height shrinks by more than twice as many pixels as
the width; older Pillow gives different bytes for those cases.

Usage: python3 scripts/gen_resize_reference.py [OUT_DIR]

Rust side (sketch): for each resize case `resize::resample(src, channels, src_w, src_h, dst_w,
dst_h, Filter::from_pil(filter))` must equal `expected`; for each processor case build
`ImageProcessorConfig` from `config` and compare `preprocess` with `expected`; for the rgba case
`processor::rgba_over_white(src)` must equal `expected`.
"""

import json
import os
import sys

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(20240611)
cases = {"resize": [], "processor": [], "rgba": []}

SOURCES = [(1, 1), (2, 3), (7, 5), (31, 17), (100, 75), (224, 224), (640, 480), (1000, 3), (3, 1000)]
TARGETS = [(32, 32), (224, 224), (364, 364), (30, 40)]  # (width, height)
MODES = {"L": 1, "RGB": 3, "RGBX": 4}
FILTERS = {"lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5, "mks2013": 6, "mks2021": 7}


def image(w, h, channels, smooth):
    """Random pixels; `smooth` adds gradients so that filters' overshoot and clipping show up."""
    data = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    if smooth:
        yy, xx = np.mgrid[0:h, 0:w]
        grad = ((xx * 7 + yy * 3) % 256).astype(np.uint8)[..., None]
        data = np.where(rng.random((h, w, 1)) < 0.7, grad, data).astype(np.uint8)
    return data


def save(name, arr):
    arr.tofile(os.path.join(OUT, name))
    return name


def from_array(data, mode):
    h, w, c = data.shape
    return Image.frombytes(mode, (w, h), data.tobytes())


n = 0
for i, (sw, sh) in enumerate(SOURCES):
    for j, (tw, th) in enumerate(TARGETS):
        data = image(sw, sh, 3, smooth=(i + j) % 2 == 0)
        src = save(f"src{n}.u8", data)
        out = np.asarray(from_array(data, "RGB").resize((tw, th), Image.Resampling.BICUBIC))
        cases["resize"].append(
            dict(src=src, channels=3, src_w=sw, src_h=sh, dst_w=tw, dst_h=th, filter=3,
                 expected=save(f"rs{n}.u8", np.ascontiguousarray(out)))
        )
        n += 1

# Other channel counts, other filters, unchanged dimensions (one pass skipped), no-op.
extra = [
    ("L", "bicubic", (50, 40), (17, 23)),
    ("RGBX", "bicubic", (50, 40), (80, 9)),
    ("RGB", "bicubic", (50, 40), (50, 97)),
    ("RGB", "bicubic", (50, 40), (13, 40)),
    ("RGB", "bicubic", (50, 40), (50, 40)),
    # Pillow 13 runs the vertical pass first when the height shrinks > 2x more than the width.
    ("RGB", "bicubic", (50, 400), (40, 20)),
    ("RGB", "bicubic", (50, 400), (20, 339)),
    ("RGB", "bicubic", (50, 400), (30, 359)),
    ("RGB", "bicubic", (50, 400), (80, 300)),
]
for fname in FILTERS:
    for src_size, dst_size in [((640, 480), (224, 224)), ((31, 17), (364, 364)), ((100, 75), (30, 40))]:
        extra.append(("RGB", fname, src_size, dst_size))
for mode, fname, (sw, sh), (tw, th) in extra:
    data = image(sw, sh, MODES[mode], smooth=True)
    src = save(f"src{n}.u8", data)
    pil = from_array(data, mode).resize((tw, th), FILTERS[fname])
    out = np.frombuffer(pil.tobytes(), dtype=np.uint8)
    cases["resize"].append(
        dict(src=src, channels=MODES[mode], src_w=sw, src_h=sh, dst_w=tw, dst_h=th,
             filter=FILTERS[fname], expected=save(f"rs{n}.u8", out))
    )
    n += 1

# The processor itself: transformers' PIL backend on PIL RGB images.
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil  # noqa: E402

configs = [
    dict(size={"height": 224, "width": 224}),
    dict(size={"height": 364, "width": 364}),
    dict(size={"height": 40, "width": 30}),
    dict(size={"height": 32, "width": 32}, do_rescale=False),
    dict(size={"height": 32, "width": 32}, do_normalize=False),
    dict(size={"height": 32, "width": 32}, resample=2, rescale_factor=1 / 127.5,
         image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
    dict(size={"height": 32, "width": 32}, do_resize=False),
]
for k, kwargs in enumerate(configs):
    sources = SOURCES if k < 3 else [(32, 32), (7, 5)] if k < 6 else [(32, 32)]
    for sw, sh in sources:
        data = image(sw, sh, 3, smooth=True)
        src = save(f"src{n}.u8", data)
        proc = BlipImageProcessorPil(**kwargs)
        pv = proc(images=from_array(data, "RGB"), return_tensors="np")["pixel_values"][0]
        assert pv.dtype == np.float32, pv.dtype
        full = dict(
            height=proc.size.height, width=proc.size.width, do_resize=proc.do_resize,
            do_rescale=proc.do_rescale, rescale_factor=proc.rescale_factor,
            do_normalize=proc.do_normalize, image_mean=list(proc.image_mean),
            image_std=list(proc.image_std), do_convert_rgb=proc.do_convert_rgb,
            resample=int(proc.resample),
        )
        cases["processor"].append(
            dict(src=src, src_w=sw, src_h=sh, config=full, shape=list(pv.shape),
                 expected=save(f"pv{n}.f32", np.ascontiguousarray(pv).astype("<f4")))
        )
        n += 1

# transformers' convert_to_rgb on an RGBA PIL image (alpha composited onto white).
from transformers.image_transforms import convert_to_rgb  # noqa: E402

data = image(37, 11, 4, smooth=False)
data[0, :4, 3] = [0, 255, 1, 254]
src = save(f"src{n}.u8", data)
rgb = convert_to_rgb(from_array(data, "RGBA"), return_numpy=True)
cases["rgba"].append(dict(src=src, expected=save(f"rgb{n}.u8", np.ascontiguousarray(rgb))))

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
print(f"{len(cases['resize'])} resize, {len(cases['processor'])} processor, "
      f"{len(cases['rgba'])} rgba cases in {OUT}")
