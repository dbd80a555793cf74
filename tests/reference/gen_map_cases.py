#!/usr/bin/python3
"""Generates the anomaly-map fixtures for tests/test_maps.cpp.

Run from the project root with Debian's Python (it needs numpy, torch and scipy):

    /usr/bin/python3 tests/reference/gen_map_cases.py

Writes into tests/fixtures/maps/:
  - <case>.in.f32: the input plane, raw little-endian float32, row-major [in_h, in_w];
  - <case>.out.f32: the reference output, raw little-endian float32, row-major [out_h, out_w];
  - cases.txt: one line per case: kind name in_h in_w out_h out_w sigma truncate, where kind is
      bilinear  torch.nn.functional.interpolate(x[None, None], size=(out_h, out_w), mode="bilinear",
                align_corners=False) on the float32 plane;
      gaussian  scipy.ndimage.gaussian_filter(x, sigma, truncate=truncate, mode="reflect") on the
                float32 plane (scipy keeps float32 between its two 1-D passes);
      pipeline  bilinear to (out_h, out_w), then gaussian with sigma/truncate, as the detector does.
Inputs are seeded noise plus a hot spot and a ramp, so edges, reflections and asymmetric content
all show. Rerunning writes identical bytes.
"""
import os

import numpy as np
import scipy
import scipy.ndimage
import torch
import torch.nn.functional as F

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "maps"))

BILINEAR = [  # name, in_h, in_w, out_h, out_w
    ("bilinear_3x4_to_8x10", 3, 4, 8, 10),
    ("bilinear_5x7_to_12x17", 5, 7, 12, 17),
    ("bilinear_4x4_to_16x16", 4, 4, 16, 16),
    ("bilinear_6x6_to_4x3", 6, 6, 4, 3),        # shrinking: two taps, no antialias
    ("bilinear_7x5_to_3x11", 7, 5, 3, 11),      # shrink one axis, enlarge the other
    ("bilinear_1x3_to_4x5", 1, 3, 4, 5),        # a single input row
]
GAUSSIAN = [  # name, h, w, sigma, truncate
    ("gaussian_12x17_s4", 12, 17, 4.0, 4.0),    # radius 16 > both sizes: repeated reflection
    ("gaussian_20x24_s1.5", 20, 24, 1.5, 4.0),
    ("gaussian_9x5_s0.7", 9, 5, 0.7, 4.0),
    ("gaussian_16x16_s2.3_t2", 16, 16, 2.3, 2.0),
]
PIPELINE = [  # name, in_h, in_w, out_h, out_w, sigma, truncate
    ("pipeline_4x4_to_32x32_s4", 4, 4, 32, 32, 4.0, 4.0),
    ("pipeline_3x5_to_27x40_s2", 3, 5, 27, 40, 2.0, 4.0),
]


def plane(rng, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    p = 0.3 * x / max(w - 1, 1) - 0.2 * y / max(h - 1, 1) + rng.normal(0.0, 0.15, (h, w))
    p[h // 3, (2 * w) // 3] += 2.0
    return p.astype(np.float32)


def bilinear(p, oh, ow):
    t = torch.from_numpy(p)[None, None]
    return F.interpolate(t, size=(oh, ow), mode="bilinear", align_corners=False)[0, 0].numpy()


def gaussian(p, sigma, truncate):
    out = scipy.ndimage.gaussian_filter(p, sigma, truncate=truncate, mode="reflect")
    assert out.dtype == np.float32
    return out


def write(name, suffix, a):
    with open(os.path.join(ROOT, f"{name}.{suffix}.f32"), "wb") as f:
        f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def main():
    os.makedirs(ROOT, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(20240611)
    lines = ["# kind name in_h in_w out_h out_w sigma truncate (gen_map_cases.py, torch %s, scipy %s)"
             % (torch.__version__, scipy.__version__)]
    for name, h, w, oh, ow in BILINEAR:
        p = plane(rng, h, w)
        write(name, "in", p)
        write(name, "out", bilinear(p, oh, ow))
        lines.append(f"bilinear {name} {h} {w} {oh} {ow} 0 0")
    for name, h, w, sigma, truncate in GAUSSIAN:
        p = plane(rng, h, w)
        write(name, "in", p)
        write(name, "out", gaussian(p, sigma, truncate))
        lines.append(f"gaussian {name} {h} {w} {h} {w} {sigma} {truncate}")
    for name, h, w, oh, ow, sigma, truncate in PIPELINE:
        p = plane(rng, h, w)
        write(name, "in", p)
        write(name, "out", gaussian(bilinear(p, oh, ow), sigma, truncate))
        lines.append(f"pipeline {name} {h} {w} {oh} {ow} {sigma} {truncate}")
    with open(os.path.join(ROOT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", len(lines) - 1, "cases to", ROOT)


if __name__ == "__main__":
    main()
