#!/usr/bin/python3
"""focuspatch-eval in --precision f32 against --precision bf16 on the CPU: detection metrics and
images per second, on the same synthetic data and the same random ViT-B/16 weights.

The metrics are compared run against run (the same shots, the same images: only the precision
differs) over several shot draws (--runs seeds), and set beside how much the fp32 metrics move from
one shot draw to the next, the scale any difference has to be read against. With random weights the
image scores of a category lie close together, so the image-level ranking metrics are the sensitive
ones; pixel metrics sum over many pixels and move little.

The two precisions alternate run by run (f32, bf16, bf16, f32, ...), so machine noise is shared.
Images per second is focuspatch-eval's own figure (test images over the detection phase).

Usage: /usr/bin/python3 bench/eval_precision.py --build build [--runs 3] [--size 224]
Needs: focuspatch-convert, focuspatch-synth and focuspatch-eval in BUILD/tools, and CLIP's
vocabulary at ../shared/clip/bpe_simple_vocab_16e6.txt.gz beside the project (for the prompts).
Data and weights go to BUILD/eval_precision (reused when present).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCAB = HERE.parent.parent / "shared" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro", "image_precision",
           "image_recall", "image_f1", "false_alarm_rate", "pixel_precision", "pixel_recall", "pixel_iou")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", type=Path)
    ap.add_argument("--runs", type=int, default=3, help="shot draws (seeds 1..N), each evaluated in both precisions")
    ap.add_argument("--size", type=int, default=224, help="synthetic image size (default 224)")
    ap.add_argument("--categories", default="weave,grain,washer,capsule")
    ap.add_argument("--test-good", type=int, default=20)
    ap.add_argument("--test-defect", type=int, default=5, help="test images per defect type (default 5)")
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not VOCAB.exists():
        sys.exit(f"{VOCAB} is absent: the keyword prompts need CLIP's vocabulary")
    tools = args.build / "tools"
    work = args.build / "eval_precision"
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "b16.fpw"
    if not weights.exists():
        run([tools / "focuspatch-convert", "--random", "ViT-B/16", "--seed", "3", "--vocab", VOCAB, "-o", weights])
    data = work / f"data-{args.size}-{args.categories.replace(',', '_')}-{args.train}-{args.test_good}-{args.test_defect}"
    if not data.exists():
        run([tools / "focuspatch-synth", "--out", data, "--size", str(args.size), "--train", str(args.train), "--test-good",
             str(args.test_good), "--test-defect", str(args.test_defect), "--categories", args.categories, "--seed", "11"])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))

    results = {"f32": [], "bf16": []}
    for seed in range(1, args.runs + 1):
        order = ("f32", "bf16") if seed % 2 else ("bf16", "f32")
        for precision in order:
            out = work / f"run-{precision}-{seed}"
            run([tools / "focuspatch-eval", "--weights", weights, "--data", data, "--shots", str(args.shots), "--seed", str(seed),
                 "--quiet", "--overlays", "0", "--precision", precision, "--out", out], env=env)
            results[precision].append(json.loads((out / "results.json").read_text()))
            r = results[precision][-1]
            print(f"seed {seed} {precision:>4} ({r['device']}): {r['images_per_second']:.2f} images/s, "
                  f"image AUROC {r['mean']['image_auroc']:.4f}, pixel AUROC {r['mean']['pixel_auroc']:.4f}", flush=True)

    f32, bf16 = results["f32"], results["bf16"]
    images = f32[0]["mean"].get("test_images")
    print(f"\n{len(args.categories.split(','))} categories, {images} test images per run, {args.shots} shots, "
          f"{args.size} px; devices: {f32[0]['device']} / {bf16[0]['device']}")
    print("\n| metric | f32 mean | bf16 mean | mean |bf16 - f32| (points) | max |bf16 - f32| | f32 s.d. across draws |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in METRICS:
        a = [r["mean"].get(name) for r in f32]
        b = [r["mean"].get(name) for r in bf16]
        if any(not isinstance(x, (int, float)) for x in a + b):
            continue
        diffs = [abs(x - y) * 100 for x, y in zip(a, b)]
        sd = statistics.stdev(a) * 100 if len(a) > 1 else float("nan")
        print(f"| {name} | {statistics.mean(a):.4f} | {statistics.mean(b):.4f} | {statistics.mean(diffs):.2f} | "
              f"{max(diffs):.2f} | {sd:.2f} |")
    ips = {p: [r["images_per_second"] for r in results[p]] for p in results}
    print(f"\nimages/s (median of {args.runs}): f32 {statistics.median(ips['f32']):.2f}, bf16 {statistics.median(ips['bf16']):.2f} "
          f"(bf16 / f32 time {statistics.median(ips['f32']) / statistics.median(ips['bf16']):.2f})")


if __name__ == "__main__":
    main()
