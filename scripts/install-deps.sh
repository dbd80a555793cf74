#!/usr/bin/env bash
# Installs the Debian packages focuspatch builds and tests with, if any is missing.
set -euo pipefail
# chromium: tests/test_html_report opens report.html in it headless (the test skips without it).
# ninja-build: scripts/test-sanitized.sh builds the targets it is given in parallel with it.
packages=(cmake g++ make ninja-build pkg-config libeigen3-dev libstb-dev doctest-dev libbenchmark-dev chromium)
# focuspatch-serve (HTTP, gRPC) and its tests, which drive it with real clients
packages+=(libcpp-httplib-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  curl python3-requests python3-grpcio python3-grpc-tools python3-numpy python3-pil)
# --bench: what bench/compare.py compares against and profiles with. Without an optimised BLAS
# Debian's torch falls back to reference BLAS and its timings mean nothing (compare.py refuses).
if [ "${1:-}" = "--bench" ]; then packages+=(python3-torch libopenblas0-pthread linux-perf); fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
