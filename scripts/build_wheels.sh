#!/usr/bin/env bash
# Builds the release artifacts into dist/ (or $1): the ctcodec abi3 wheel for this
# platform (manylinux on Linux, checked by maturin's auditwheel check and by
# `auditwheel show`), the ctcodec sdist, and the ctcodec-kernels wheel (pure Python).
# .github/workflows/release.yml runs the same three steps on each platform.
#   bash scripts/build_wheels.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}
[ -x .venv/bin/maturin ] || bash scripts/setup.sh
mkdir -p "$OUT"
echo "== ctcodec wheel"
.venv/bin/maturin build --release --locked --out "$OUT"
echo "== ctcodec sdist"
.venv/bin/maturin sdist --out "$OUT"
echo "== ctcodec-kernels wheel"
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$OUT" ./kernels
if [ "$(uname -s)" = Linux ]; then
  echo "== auditwheel show"
  for whl in "$OUT"/ctcodec-*-abi3-*.whl; do .venv/bin/auditwheel show "$whl"; done
fi
ls -l "$OUT"
