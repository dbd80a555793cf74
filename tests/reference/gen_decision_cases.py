#!/usr/bin/python3
"""Generates the fixtures of tests/test_calibration.cpp: defect regions and operating points.

Run from the project root with Debian's Python (numpy, scipy, scikit-learn 1.2):

    /usr/bin/python3 tests/reference/gen_decision_cases.py

Writes:
  - tests/fixtures/regions/label_cases.json: random binary masks (several sizes and densities,
    plus hand-made ones: diagonal chains, a ring, a full and an empty mask) with random float32
    anomaly maps, and what scipy.ndimage gives for them with 8-connectivity (a 3x3 all-ones
    structure): the label image of ndimage.label, and per region (label order) its bounding box
    from ndimage.find_objects, its pixel count, and the maximum and mean of the map over it
    (ndimage.maximum / ndimage.mean).
  - tests/fixtures/metrics/operating_point_cases.json: scores, labels and a threshold, with
    scikit-learn's precision_score, recall_score, f1_score and jaccard_score of the predictions
    y_pred = score > threshold (strictly above: what the verdict does), zero_division left at its
    default; the false-alarm rate fp / (fp + tn) from sklearn's confusion_matrix.

Rerunning writes identical files (fixed numpy seeds).
"""
import json
import os
import warnings

import numpy as np
import scipy.ndimage as ndi
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score, precision_score, recall_score

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def g17(x):
    return float("%.17g" % x)


def region_cases():
    rng = np.random.default_rng(11)
    masks = []
    for (h, w, density) in [(7, 9, 0.3), (16, 16, 0.45), (13, 31, 0.2), (32, 24, 0.55), (5, 5, 0.6), (40, 40, 0.1), (1, 17, 0.5), (19, 1, 0.5)]:
        masks.append((rng.random((h, w)) < density).astype(np.uint8))
    diag = np.zeros((6, 6), np.uint8)
    for i in range(6):
        diag[i, i] = 1
    diag[0, 5] = diag[1, 4] = 1
    ring = np.ones((5, 5), np.uint8)
    ring[1:4, 1:4] = 0
    ring[2, 2] = 1
    masks += [diag, ring, np.ones((4, 3), np.uint8), np.zeros((3, 4), np.uint8)]
    cases = []
    for m in masks:
        h, w = m.shape
        values = rng.random((h, w)).astype(np.float32)
        labels, count = ndi.label(m, structure=np.ones((3, 3), int))
        regions = []
        for r, sl in enumerate(ndi.find_objects(labels), start=1):
            ys, xs = sl
            regions.append({
                "x": int(xs.start), "y": int(ys.start), "width": int(xs.stop - xs.start), "height": int(ys.stop - ys.start),
                "area": int((labels == r).sum()),
                "peak": float(ndi.maximum(values, labels, r)),
                "mean": g17(ndi.mean(values.astype(np.float64), labels, r)),
            })
        cases.append({
            "width": w, "height": h, "mask": m.ravel().tolist(), "map": [float(v) for v in values.ravel()],
            "labels": labels.ravel().tolist(), "count": int(count), "regions": regions,
        })
    return cases


def operating_cases():
    rng = np.random.default_rng(5)
    cases = []
    specs = [(40, 0.5, 0.5), (200, 0.3, 0.7), (25, 0.6, 0.2), (60, 0.5, 2.0), (30, 0.0, 0.5), (30, 1.0, 0.5)]
    for n, pos_rate, thr in specs:
        labels = (rng.random(n) < pos_rate).astype(np.uint8)
        scores = np.round(rng.random(n) + 0.4 * labels, 2)  # rounded: ties, some exactly at the threshold
        cases.append((scores, labels, thr))
    # Exactly-at-threshold scores are normal.
    cases.append((np.array([0.5, 0.5, 0.6, 0.4]), np.array([1, 0, 1, 0], np.uint8), 0.5))
    out = []
    for scores, labels, thr in cases:
        pred = (scores > thr).astype(np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = precision_score(labels, pred, zero_division="warn")
            r = recall_score(labels, pred, zero_division="warn")
            f = f1_score(labels, pred, zero_division="warn")
            j = jaccard_score(labels, pred, zero_division="warn")
        tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[0, 1]).ravel()
        far = fp / (fp + tn) if fp + tn else None
        out.append({"scores": [float(s) for s in scores], "labels": labels.tolist(), "threshold": thr,
                    "precision": g17(p), "recall": g17(r), "f1": g17(f), "iou": g17(j),
                    "false_alarm_rate": None if far is None else g17(far), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)})
    return out


def main():
    with open(os.path.join(ROOT, "fixtures", "regions", "label_cases.json"), "w") as f:
        json.dump(region_cases(), f)
        f.write("\n")
    with open(os.path.join(ROOT, "fixtures", "metrics", "operating_point_cases.json"), "w") as f:
        json.dump(operating_cases(), f)
        f.write("\n")


if __name__ == "__main__":
    main()
