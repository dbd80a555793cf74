#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs focuspatch's main job on a
# generated demo: a synthetic MVTec-layout dataset, randomly initialized CLIP ViT-B/32 weights (real
# ones cannot be downloaded here), unified few-shot evaluation, and detection on a few images.
# With random weights the figures measure the pipeline, not the method: see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target focuspatch-synth focuspatch-convert focuspatch-eval focuspatch-detect
tools=$build/tools
demo=${DEMO_DIR:-$build/demo}
vocab=${FOCUSPATCH_VOCAB:-../shared/clip/bpe_simple_vocab_16e6.txt.gz}
if [ ! -f "$vocab" ]; then
  echo "demo: CLIP's BPE vocabulary is not at $vocab; set FOCUSPATCH_VOCAB to bpe_simple_vocab_16e6.txt.gz" \
       "(from github.com/openai/CLIP, clip/ folder)" >&2
  exit 1
fi
mkdir -p "$demo"
echo "== 1/4 synthetic dataset (4 categories, scratches, holes, stains, missing parts)"
"$tools/focuspatch-synth" --out "$demo/data" --size 224 --train 4 --test-good 3 --test-defect 2 --force | tail -n 3
echo "== 2/4 random ViT-B/32 weights with CLIP's tokenizer and the keyword embeddings of every category"
"$tools/focuspatch-convert" --random ViT-B/32 --seed 1 --vocab "$vocab" -o "$demo/vit-b-32-random.fpw" \
  --prompts weights/prompts/unified_keywords.txt --categories capsule,grain,washer,weave | head -n 4
echo "== 3/4 unified evaluation: 2 normal shots per category in one memory bank, categories unknown"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "$tools/focuspatch-eval" --weights "$demo/vit-b-32-random.fpw" \
  --data "$demo/data" --shots 2 --seed 0 --out "$demo/eval"
echo "== 4/4 detection on two images, memory bank saved for reuse"
"$tools/focuspatch-detect" --weights "$demo/vit-b-32-random.fpw" --memory "$demo/memory.fpw" \
  --normal "$demo/data/washer/train/good" --normal "$demo/data/weave/train/good" \
  --image "$demo/data/washer/test/hole/000.png" --image "$demo/data/weave/test/scratch/000.png" --out "$demo/detect"
echo
echo "table:    $demo/eval/results.md"
echo "overlays: $demo/eval/overlays/ and $demo/detect/"
echo "report:   $demo/eval/report.html and $demo/detect/report.html (open in a browser, works offline)"
echo "note: random weights; the numbers show the pipeline runs end to end, not how well FocusPatch detects."
