#!/usr/bin/env bash
# Builds the programs and tests with AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer
# included) and runs the suite (the CMake preset "asan"). Any leak, memory error or undefined
# behaviour fails the run. Without the CUDA backend: the CUDA runtime and ASan's shadow memory do
# not mix (compute-sanitizer is the GPU side's memory checker, scripts/gpu-session.sh).
#   bash scripts/test-sanitized.sh                 # every test (every program and test sanitized: slow)
#   bash scripts/test-sanitized.sh test_faults ... # only these tests (and the programs they run)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc)}
start=$(date +%s)
# Ninja where there is one (a fresh folder only: a folder keeps the generator it was made with):
# CMake's Makefiles build the targets named below one after another, Ninja all together. -O1 -g1
# (line tables: the reports still name file and line) compiles far faster than RelWithDebInfo's
# -O2 -g and is what the sanitizers' authors recommend.
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DFOCUSPATCH_SANITIZE=address,undefined -DFOCUSPATCH_BUILD_BENCH=OFF -DFOCUSPATCH_BUILD_FUZZ=OFF -DFOCUSPATCH_CUDA=OFF >/dev/null
filter=()
if [ $# -gt 0 ]; then
  cmake --build "$build" -j"$jobs" --target "$@"
  filter=(-R "^($(IFS='|'; echo "$*"))\$")
else
  cmake --build "$build" -j"$jobs"
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
(cd "$build" && ctest --output-on-failure -j"$jobs" "${filter[@]}") || status=$?
echo "sanitized build + suite: $(($(date +%s) - start)) s (exit $status)"
exit $status
