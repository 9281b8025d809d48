#!/usr/bin/env bash
# Sets up .venv (the pinned environment; several minutes on a new machine, each phase
# announced) and runs the demo: SmolLM2-135M pruned to 50%, compressed, decompressed,
# verified; then quantized to W8A16 and W4A16 and scored on real text. The compressed
# folders stay in demo-data/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[demo] setting up .venv from requirements/*.lock (scripts/setup.sh)"
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py
