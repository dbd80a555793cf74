#!/usr/bin/env bash
# One call on the GPU machine (device tool) that does everything issue 4 needs measured there:
#   run: bash scripts/gpu-session.sh        carry: [".deps"]   (made by scripts/fetch-gpu-deps.sh)
# 1. unpacks the carried Debian packages under /tmp/deps and builds the CUDA targets (Release);
# 2. runs every CUDA test (kernels and backend against the CPU backend, the CLIP forward and the
#    detector end to end) and the same under compute-sanitizer memcheck;
# 3. runs bench_cuda (per-op and end-to-end cases) and bench/pytorch_gpu.py (PyTorch eager with
#    SDPA and torch.compile on the same shapes) in the same call, so the figures share one GPU.
# Everything it prints and the JSON files land in $OUT (or ./gpu-out without the device tool).
# Budget: well under 10 minutes on an H100 with 16 cores; each step is time-boxed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/session.log") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
nvcc --version | tail -1

step "dependencies"
mkdir -p /tmp/deps
for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
export CMAKE_PREFIX_PATH=/tmp/deps/usr:/tmp/deps/usr/lib/x86_64-linux-gnu/cmake${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export CPATH=/tmp/deps/usr/include${CPATH:+:$CPATH}
export LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

step "build"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DFOCUSPATCH_BUILD_BENCH=ON -DFOCUSPATCH_NATIVE=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DEigen3_DIR=/tmp/deps/usr/share/eigen3/cmake || exit 1
cuda_tests=$(cd tests && ls test_cuda_*.cpp | sed 's/\.cpp$//' | tr '\n' ' ')
timeout 300 cmake --build build-gpu -j"$(nproc)" --target $cuda_tests bench_cuda || exit 1

step "CUDA tests"
for t in $cuda_tests; do timeout 240 "build-gpu/tests/$t" --duration=true 2>&1 | tail -40; done

step "compute-sanitizer memcheck"
for t in $cuda_tests; do
  timeout 240 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 "build-gpu/tests/$t" \
    --test-case-exclude='*CLIP forward*,*detector*' 2>&1 | tail -15
  echo "$t memcheck exit ${PIPESTATUS[0]}"
done

step "bench_cuda"
timeout 240 build-gpu/bench/bench_cuda --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json

step "PyTorch on the same GPU"
PYTHONUNBUFFERED=1 timeout 270 python3 bench/pytorch_gpu.py time --presets ViT-B/16 ViT-L/14@336px --batches 1 8 64 \
  --modes eager compile --json "$out/pytorch.json"
step "done"
