#!/usr/bin/env bash
# Sets up .venv and runs the demo: SmolLM2-135M pruned to 50%, compressed, decompressed, verified.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/demo.py
