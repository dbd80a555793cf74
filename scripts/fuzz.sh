#!/usr/bin/env bash
# Builds the libFuzzer targets (clang++, -fsanitize=fuzzer,address,undefined) in build-fuzz and runs
# each for a bounded time from its seed corpus in fuzz/corpus/<target>, then prints executions and
# findings per target. Findings (crash-*, leak-*, timeout-*, oom-* inputs) are kept under
# build-fuzz/fuzz/findings/<target>/; the exit status is 1 when there is any.
#   scripts/fuzz.sh [seconds-per-target, default 60]
# Environment: TARGETS="fpw json" (a subset), PARALLEL=2 (targets run at once; default 1),
# BUILD_DIR (default build-fuzz), CXX (default clang++).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${BUILD_DIR:-build-fuzz}
parallel=${PARALLEL:-1}
all_targets="fpw torch safetensors tokenizer image prompt_bank json dataset"
targets=${TARGETS:-$all_targets}

# Longest input per target: room for the seeds' real files and some growth, small enough that a
# single execution stays fast.
max_len() {
  case $1 in
    fpw|torch|image) echo 65536 ;;
    safetensors|tokenizer|prompt_bank|json) echo 16384 ;;
    dataset) echo 4096 ;;
  esac
}

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="${CXX:-clang++}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFOCUSPATCH_BUILD_FUZZ=ON \
  -DFOCUSPATCH_BUILD_TESTS=OFF -DFOCUSPATCH_BUILD_TOOLS=OFF -DFOCUSPATCH_BUILD_BENCH=OFF >/dev/null
programs=()
for t in $targets; do programs+=("fuzz_$t"); done
cmake --build "$build" -j"${JOBS:-$(nproc)}" --target "${programs[@]}"

out="$build/fuzz"
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

run_target() {
  local t=$1
  local work="$out/work/$t" findings="$out/findings/$t" log="$out/logs/$t.log"
  mkdir -p "$work" "$findings" "$out/logs"
  # New inputs go to the work folder; the committed seeds are only read.
  "$out/fuzz_$t" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1 || true
}

mkdir -p "$out"
touch "$out/.run-start"  # findings of earlier runs stay on disk but are not counted again
running=0
for t in $targets; do
  run_target "$t" &
  running=$((running + 1))
  if ((running >= parallel)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

status=0
printf '\n%-12s %8s %12s %10s %9s %s\n' target seconds executions exec/s findings files
for t in $targets; do
  log="$out/logs/$t.log"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "-")
  files=$(find "$out/findings/$t" -type f -newer "$out/.run-start" -printf '%f\n' | grep -E '^(crash|leak|timeout|oom)-' || true)
  count=$(printf '%s' "$files" | grep -c . || true)
  ((count == 0)) || status=1
  printf '%-12s %8s %12s %10s %9s %s\n' "$t" "$seconds" "${execs:-?}" "$rate" "$count" "$(echo $files)"
done
echo "logs: $out/logs/<target>.log; findings: $out/findings/<target>/"
exit $status
