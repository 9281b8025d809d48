#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs every test: Rust (cargo) then Python (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace -q
.venv/bin/python -m pytest -q "$@"
# The same suites again through the fallback I/O paths (positioned reads and writes
# instead of mmap), which network filesystems and filesystems without fallocate use.
CTCODEC_NO_MMAP=1 .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider tests "$@"
