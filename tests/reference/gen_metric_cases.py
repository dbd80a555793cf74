#!/usr/bin/python3
"""Generates the fixtures of tests/test_metrics.cpp (and the few-shot sampling vectors of
tests/test_dataset.cpp).

Run from the project root with Debian's Python (numpy, scipy, scikit-learn 1.2):

    /usr/bin/python3 tests/reference/gen_metric_cases.py

Writes into tests/fixtures/metrics/:
  - binary_cases.json: image-level and pixel-level classification cases (random, tied, imbalanced,
    degenerate) with what scikit-learn returns for them: roc_auc_score, average_precision_score and
    F1-max = max over the finite 2PR / (P + R) of precision_recall_curve. Errors and warnings that
    sklearn raises are recorded as text. Scores are written exactly (shortest round-trip repr of the
    float64, or of the float32 widened to float64); expected values with 17 significant digits.
  - pro_cases.json: hand-made ground-truth masks (several images, regions of different sizes and
    shapes, diagonal-only connections, a region with a hole, an image without anomaly) with
    anomaly maps, and the AUPRO of the MVTec AD protocol at several integration limits, from
    pro_curve_bruteforce() below: our own implementation written from the protocol's definition
    (scipy.ndimage.label with a 3x3 all-ones structure; one threshold per distinct score, predicted
    anomalous when score >= threshold; PRO = mean over all regions of the covered fraction; FPR over
    all normal pixels; curve (0,0) ... (1,1); trapezoid up to the limit with the PRO at the limit
    interpolated; divided by the limit). It loops over thresholds, so it shares no code path with
    the sorted cumulative sweep of include/focuspatch/eval/pro.hpp; the script cross-checks it
    against a second, cumulative-sum formulation (pro_curve_cumsum) and stops if they disagree.
    The pixel-level sklearn metrics of the same maps are stored too.
  - few_shot.json: SplitMix64 outputs and few-shot index draws computed from the algorithm
    described in include/focuspatch/eval/dataset.hpp, written here independently in Python.

Rerunning writes identical files (fixed numpy seeds).
"""
import json
import os
import warnings

import numpy as np
import scipy
import scipy.ndimage
import sklearn
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "metrics"))



class Fmt(float):
    """A float that json writes with 17 significant digits."""

    def __repr__(self):
        return "%.17g" % self


def dumps(obj):
    # json.dumps writes floats with float.__repr__; Fmt values get %.17g instead. Scores stay repr
    # (the shortest exact round trip).
    def enc(o):
        if isinstance(o, Fmt):
            return "%.17g" % o
        if isinstance(o, float):
            if o == 0.0 and np.signbit(o):
                return "-0.0"
            return repr(o)
        if isinstance(o, bool):
            return "true" if o else "false"
        if o is None:
            return "null"
        if isinstance(o, int):
            return str(o)
        if isinstance(o, str):
            return json.dumps(o)
        if isinstance(o, list):
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in o):
                return "[" + ",".join(enc(v) for v in o) + "]"
            return "[\n" + ",\n".join(enc(v) for v in o) + "\n]"
        if isinstance(o, dict):
            return "{" + ", ".join(json.dumps(k) + ": " + enc(v) for k, v in o.items()) + "}"
        raise TypeError(type(o))

    return enc(obj) + "\n"


def sklearn_reference(labels, scores):
    out = {}
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out["roc_auc"] = Fmt(roc_auc_score(y, s))
        except ValueError as e:
            out["roc_auc"] = None
            out["roc_auc_error"] = str(e)
        out["average_precision"] = Fmt(average_precision_score(y, s))
        p, r, _ = precision_recall_curve(y, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = 2 * p * r / (p + r)
        out["f1_max"] = Fmt(np.max(f1[np.isfinite(f1)]))
        messages = sorted({str(w.message) for w in caught})
        if messages:
            out["warnings"] = messages
    return out


def binary_case(name, scores, labels, chunks=None, note=""):
    scores = np.asarray(scores)
    case = {
        "name": name,
        "dtype": "float32" if scores.dtype == np.float32 else "float64",
        "note": note,
        "labels": "".join("1" if v else "0" for v in labels),
        "scores": [float(v) for v in scores],
    }
    if chunks is not None:
        assert sum(chunks) == len(scores)
        case["chunks"] = chunks
    case["sklearn"] = sklearn_reference(labels, scores)
    return case


def binary_cases():
    rng = np.random.default_rng(20240611)
    cases = []
    n = 40
    labels = rng.random(n) < 0.4
    cases.append(binary_case("random_n40", rng.random(n), labels, note="uniform scores independent of labels"))

    n = 300
    labels = rng.random(n) < 0.35
    scores = rng.normal(size=n) + 0.8 * labels
    cases.append(binary_case("random_n300_separated", scores, labels, note="normal scores, positives shifted by 0.8"))

    n = 240
    labels = rng.random(n) < 0.5
    scores = np.round(rng.normal(size=n) + 0.7 * labels, 1)
    cases.append(binary_case("tied_rounded_0.1", scores, labels, note="scores rounded to one decimal: many ties"))

    n = 90
    labels = rng.random(n) < 0.4
    scores = np.where(labels, rng.choice([0.0, 0.5, 1.0], n, p=[0.2, 0.3, 0.5]),
                      rng.choice([0.0, 0.5, 1.0], n, p=[0.5, 0.3, 0.2]))
    cases.append(binary_case("tied_three_levels", scores, labels, note="three score values"))

    n = 500
    labels = np.zeros(n, dtype=bool)
    labels[rng.choice(n, 5, replace=False)] = True
    scores = rng.normal(size=n) + 1.5 * labels
    cases.append(binary_case("imbalanced_1pct", scores, labels, note="5 positives in 500"))

    n = 120
    labels = np.ones(n, dtype=bool)
    labels[rng.choice(n, 4, replace=False)] = False
    scores = np.round(rng.normal(size=n) + 0.5 * labels, 2)
    cases.append(binary_case("imbalanced_97pct", scores, labels, note="4 negatives in 120, ties"))

    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    cases.append(binary_case("all_tied", np.full(labels.size, 0.25), labels, note="one threshold"))

    scores = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, -0.0, 0.5])
    labels = np.array([1, 0, 0, 1, 1, 0, 1, 0], dtype=bool)
    cases.append(binary_case("signed_zeros", scores, labels, note="-0.0 and +0.0 tie"))

    n = 1200
    labels = rng.random(n) < 0.2
    raw = rng.normal(size=n) + 1.2 * labels
    scores = np.where(rng.random(n) < 0.5, np.round(raw * 16) / 16, raw).astype(np.float32)
    cases.append(binary_case("pixels_float32", scores, labels, chunks=[500, 1, 0, 299, 400],
                             note="float32 scores, half of them on a 1/16 grid; chunks are the images"))

    labels = np.zeros(10, dtype=bool)
    cases.append(binary_case("all_normal", rng.random(10), labels, note="degenerate: no positives"))
    labels = np.ones(10, dtype=bool)
    scores = np.round(rng.random(10), 1)
    cases.append(binary_case("all_anomalous", scores, labels, note="degenerate: no negatives"))
    return cases


# ---- PRO ----------------------------------------------------------------------------------------

STRUCTURE = np.ones((3, 3), dtype=int)


def pro_curve_bruteforce(maps, masks):
    labelled = [scipy.ndimage.label(m != 0, STRUCTURE) for m in masks]
    regions = [(i, lab == k) for i, (lab, n) in enumerate(labelled) for k in range(1, n + 1)]
    normal = [m == 0 for m in masks]
    n_normal = sum(int(n.sum()) for n in normal)
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        predicted = [m >= t for m in maps]
        overlaps = [predicted[i][region].mean() for i, region in regions]
        pros.append(float(np.mean(overlaps)))
        fprs.append(sum(int((p & n).sum()) for p, n in zip(predicted, normal)) / n_normal)
    fprs.append(1.0)
    pros.append(1.0)
    return np.array(fprs), np.array(pros), len(regions), n_normal


def pro_curve_cumsum(maps, masks):
    """The same curve from sorted scores and cumulative sums (the formulation of the official code)."""
    scores, fp, pro = [], [], []
    n_regions = 0
    for m, mask in zip(maps, masks):
        lab, n = scipy.ndimage.label(mask != 0, STRUCTURE)
        n_regions += n
        weight = np.zeros(lab.shape)
        for k in range(1, n + 1):
            weight[lab == k] = 1.0 / (lab == k).sum()
        scores.append(m.ravel())
        fp.append((lab == 0).ravel().astype(np.float64))
        pro.append(weight.ravel())
    scores, fp, pro = (np.concatenate(v) for v in (scores, fp, pro))
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    scores, fp, pro = scores[order], fp[order], pro[order]
    fpr = np.cumsum(fp) / fp.sum()
    prov = np.minimum(np.cumsum(pro) / n_regions, 1.0)
    keep = np.append(np.diff(scores) != 0, True)
    return np.concatenate(([0.0], fpr[keep], [1.0])), np.concatenate(([0.0], prov[keep], [1.0]))


def trapezoid_to(x, y, limit):
    """Trapezoid from x[0] to limit; y at the limit interpolated between the points around it."""
    area = 0.0
    for i in range(1, len(x)):
        if x[i] <= limit:
            area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1])
            continue
        if x[i - 1] < limit:
            y_limit = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
            area += 0.5 * (y_limit + y[i - 1]) * (limit - x[i - 1])
        break
    return area


def mask_from_rows(rows):
    return np.array([[1 if c == "#" else 0 for c in r] for r in rows], dtype=np.uint8)


# 16 x 12 masks drawn by hand; '#' is anomalous.
MASKS = {
    # a 5x4 block, a single pixel, a diagonal chain (one region only under 8-connectivity) and a
    # 3-pixel bar touching the right border.
    "blocks": [
        "................",
        ".#####..........",
        ".#####.......###",
        ".#####..........",
        ".#####....#.....",
        "...........#....",
        "............#...",
        ".............#..",
        "................",
        "...#............",
        "................",
        "................",
    ],
    # an L shape and a ring around a normal hole (the hole is not part of the region).
    "shapes": [
        "................",
        "..#.............",
        "..#.......#####.",
        "..#.......#...#.",
        "..#.......#...#.",
        "..#####...#####.",
        "................",
        "................",
        "................",
        "................",
        "................",
        "................",
    ],
    # no anomaly at all: only normal pixels.
    "good": ["." * 16] * 12,
    # two blobs touching only at a corner (one region), and a region along the bottom border.
    "corner": [
        "................",
        "................",
        "..##............",
        "..##............",
        "....##..........",
        "....##..........",
        "................",
        "................",
        "................",
        "................",
        "................",
        "################",
    ],
}


def anomaly_maps(masks, rng, quantize=None):
    maps = []
    for m in masks:
        smooth = scipy.ndimage.uniform_filter(m.astype(np.float64), size=3)
        a = rng.normal(0.0, 0.6, m.shape) + 2.0 * smooth
        if quantize:
            a = np.round(a * quantize) / quantize
        maps.append(a.astype(np.float32))
    return maps


def pro_case(name, names, masks, maps, note):
    fprs, pros, n_regions, n_normal = pro_curve_bruteforce(maps, masks)
    fprs2, pros2 = pro_curve_cumsum(maps, masks)
    assert fprs.shape == fprs2.shape and np.abs(fprs - fprs2).max() < 1e-12 and np.abs(pros - pros2).max() < 1e-12
    limits = [0.3, 0.05, 0.5, 1.0]
    pixels = np.concatenate([m.ravel() for m in maps])
    labels = np.concatenate([m.ravel() for m in masks]) != 0
    return {
        "name": name,
        "note": note,
        "images": [{"mask_name": n, "width": int(m.shape[1]), "height": int(m.shape[0]),
                    "mask": "".join("1" if v else "0" for v in m.ravel()),
                    "scores": [float(v) for v in a.ravel()]} for n, m, a in zip(names, masks, maps)],
        "regions": n_regions,
        "normal_pixels": n_normal,
        "curve_points": int(len(fprs)),
        # Whether FPR = 0.3 is itself a point of the curve (integration needs no interpolation there).
        "fpr_0.3_is_a_curve_point": bool(np.any(fprs == 0.3)),
        "aupro": [{"limit": lim, "value": Fmt(trapezoid_to(fprs, pros, lim) / lim)} for lim in limits],
        "pixel_sklearn": sklearn_reference(labels, pixels),
    }


def pro_cases():
    rng = np.random.default_rng(7)
    names = list(MASKS)
    masks = [mask_from_rows(MASKS[n]) for n in names]
    for n, m in zip(names, masks):
        assert m.shape == (12, 16), n
    cases = [
        pro_case("continuous", names, masks, anomaly_maps(masks, rng), "distinct float32 scores"),
        pro_case("quantized_quarters", names, masks, anomaly_maps(masks, rng, 4), "scores on a 1/4 grid: heavy ties"),
    ]
    # A 7x1 normal strip brings the normal pixels to 700, so with distinct scores some threshold has
    # FPR = 210/700 = 0.3 exactly and the integration ends on a curve point.
    extra = np.zeros((1, 7), dtype=np.uint8)
    case = pro_case("exact_limit_point", names + ["strip"], masks + [extra], anomaly_maps(masks + [extra], rng),
                    "700 normal pixels, distinct scores: FPR 0.3 is a curve point")
    assert case["normal_pixels"] == 700 and case["fpr_0.3_is_a_curve_point"]
    cases.append(case)
    return cases


# ---- few-shot sampling --------------------------------------------------------------------------

M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, bound):
        reject_under = (2**64 - bound) % bound
        while True:
            r = self.next()
            if r >= reject_under:
                return r % bound


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def sample_indices(n, k, seed):
    order = list(range(n))
    rng = SplitMix64(seed)
    for i in range(k):
        j = i + rng.below(n - i)
        order[i], order[j] = order[j], order[i]
    return sorted(order[:k])


def few_shot_cases():
    streams = []
    for seed in (0, 1234567, 2**64 - 1):
        rng = SplitMix64(seed)
        streams.append({"seed": str(seed), "outputs": [str(rng.next()) for _ in range(5)]})
    draws = []
    for n, k, seed in ((10, 3, 0), (10, 10, 42), (1000, 8, 7), (5, 1, 2**63 + 5), (300, 16, 123456789)):
        draws.append({"n": n, "k": k, "seed": str(seed), "indices": sample_indices(n, k, seed)})
    categories = []
    for name, n, k, seed in (("bottle", 12, 4, 0), ("pcb1", 30, 2, 99), ("audiojack", 7, 7, 5)):
        categories.append({"category": name, "n": n, "k": k, "seed": str(seed),
                           "fnv1a64": str(fnv1a64(name)), "indices": sample_indices(n, k, seed ^ fnv1a64(name))})
    return {"splitmix64": streams, "draws": draws, "categories": categories}


def main():
    os.makedirs(OUT, exist_ok=True)
    header = {"generator": "tests/reference/gen_metric_cases.py", "sklearn": sklearn.__version__,
              "scipy": scipy.__version__, "numpy": np.__version__}
    with open(os.path.join(OUT, "binary_cases.json"), "w") as f:
        f.write(dumps({**header, "cases": binary_cases()}))
    with open(os.path.join(OUT, "pro_cases.json"), "w") as f:
        f.write(dumps({**header, "cases": pro_cases()}))
    with open(os.path.join(OUT, "few_shot.json"), "w") as f:
        f.write(dumps({"generator": header["generator"], **few_shot_cases()}))
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
