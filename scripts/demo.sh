#!/usr/bin/env bash
# Sets up .venv and runs the demo: SmolLM2-135M pruned to 50%, compressed, decompressed,
# verified; then quantized to W8A16 and W4A16 and scored on real text.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/demo.py
