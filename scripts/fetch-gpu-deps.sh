#!/usr/bin/env bash
# Run HERE (a Debian build machine) before a GPU session: downloads the Debian packages of our
# build-time dependencies (Eigen, stb, doctest, Google Benchmark) into .deps/, which the GPU
# machine lacks and cannot fetch. scripts/gpu-session.sh unpacks them there (carry .deps).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
apt-get download libeigen3-dev libstb-dev libstb0 doctest-dev libbenchmark-dev libbenchmark1debian >/dev/null
ls -la
