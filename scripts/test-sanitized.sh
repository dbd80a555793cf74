#!/usr/bin/env bash
# Builds the programs and tests with AddressSanitizer + UndefinedBehaviorSanitizer and runs the whole
# suite (the CMake preset "asan"). Any leak, memory error or undefined behaviour fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc)}
start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFOCUSPATCH_SANITIZE=address,undefined \
  -DFOCUSPATCH_BUILD_BENCH=OFF -DFOCUSPATCH_BUILD_FUZZ=OFF >/dev/null
cmake --build "$build" -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1
status=0
(cd "$build" && ctest --output-on-failure -j"$jobs") || status=$?
echo "sanitized build + suite: $(($(date +%s) - start)) s (exit $status)"
exit $status
