#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs every test: Rust (cargo) then Python (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace -q
.venv/bin/python -m pytest -q "$@"
