#!/usr/bin/env bash
# Run HERE (a Debian build machine) before a GPU session: downloads the Debian packages of our
# build-time dependencies (Eigen, stb, doctest, Google Benchmark) into .deps/, which the GPU
# machine lacks and cannot fetch. scripts/gpu-session.sh unpacks them there (carry .deps).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
apt-get download libeigen3-dev libstb-dev libstb0 doctest-dev libbenchmark-dev libbenchmark1debian >/dev/null
# CLIP's vocabulary, which the tokenizer-dependent GPU tests need and which lives beside the project
# (../shared), where a device call does not look. Carried in .deps (git-ignored), never committed.
vocab=../../shared/clip/bpe_simple_vocab_16e6.txt.gz
if [ -e "$vocab" ]; then cp "$vocab" .; fi
ls -la
