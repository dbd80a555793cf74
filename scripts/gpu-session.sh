#!/usr/bin/env bash
# What issue 4 needs measured on the GPU machine (device tool), in two calls of under 10 minutes
# on one warm machine (the build is kept between them):
#   run: bash scripts/gpu-session.sh test     carry: [".deps"]   (made by scripts/fetch-gpu-deps.sh)
#   run: bash scripts/gpu-session.sh bench    carry: [".deps"]
# test:  unpacks the carried Debian packages under /tmp/deps, builds the CUDA targets (Release),
#        runs every CUDA test (kernels and backend against the CPU backend, the CLIP forward and the
#        detector end to end), then the light ones again under compute-sanitizer memcheck;
# bench: bench_cuda (per-op and end-to-end cases) and bench/pytorch_gpu.py (PyTorch eager with
#        SDPA and torch.compile on the same shapes) in the same call, so the figures share one GPU.
# Logs and JSON land in $OUT (./gpu-out without the device tool); each step is time-boxed.
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

if [ ! -e ../shared/clip/bpe_simple_vocab_16e6.txt.gz ] && [ -e .deps/bpe_simple_vocab_16e6.txt.gz ]; then
  mkdir -p ../shared/clip && cp .deps/bpe_simple_vocab_16e6.txt.gz ../shared/clip/ || echo "could not place the vocabulary in ../shared"
fi

step "build"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DFOCUSPATCH_BUILD_BENCH=ON -DFOCUSPATCH_NATIVE=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DEigen3_DIR=/tmp/deps/usr/share/eigen3/cmake || exit 1
cuda_tests=$(cd tests && ls test_cuda_*.cpp | sed 's/\.cpp$//' | tr '\n' ' ')
timeout 300 cmake --build build-gpu -j"$(nproc)" --target $cuda_tests bench_cuda || exit 1

phase=${1:-test}
if [ "$phase" = test ]; then
  step "CUDA tests (full output in $out/<test>.log)"
  for t in $cuda_tests; do
    timeout 240 "build-gpu/tests/$t" --duration=true > "$out/$t.log" 2>&1
    echo "$t exit $?"
    grep -E "^[^ ]*(ERROR|FATAL)|test cases:|assertions:" "$out/$t.log" | head -30
  done

  step "compute-sanitizer memcheck (the heavy end-to-end cases left out)"
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for t in $cuda_tests; do
    timeout 200 "$sanitizer" --tool memcheck --leak-check full --error-exitcode 3 "build-gpu/tests/$t" \
      --test-case-exclude='*CLIP forward*,*detector*,*focuspatch-eval*,*with one it gives*' > "$out/$t.memcheck.log" 2>&1
    echo "$t memcheck exit $?"
    grep -E "ERROR SUMMARY|LEAK SUMMARY|test cases:|Invalid|error" "$out/$t.memcheck.log" | head -12
  done
elif [ "$phase" = bench ]; then
  step "bench_cuda"
  timeout 300 build-gpu/bench/bench_cuda --benchmark_min_time=0.2 --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json

  step "PyTorch on the same GPU"
  PYTHONUNBUFFERED=1 timeout 270 python3 bench/pytorch_gpu.py time --presets ViT-B/16 ViT-L/14@336px --batches 1 8 64 \
    --modes eager compile --json "$out/pytorch.json"
else
  echo "unknown phase '$phase' (test or bench)"
  exit 2
fi
step "done"
