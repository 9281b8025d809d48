#!/usr/bin/env bash
# Installs llm-compressor (requirements/llmc.in, exact pins) into .llmc, its own import
# path beside .venv, like .ct-current: everything goes in with --no-deps, so torch,
# transformers, accelerate and numpy come from .venv. Run after scripts/setup.sh.
#   bash scripts/setup_llmc.sh
#   PYTHONPATH=.llmc .venv/bin/python benches/llmc_worker.py ...
# A stamp of llmc.in skips the install on reruns (the import check still runs, ~15 s).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || { echo "no .venv/bin/uv: run scripts/setup.sh first" >&2; exit 1; }
export VIRTUAL_ENV=$PWD/.venv UV_PYTHON=$PWD/.venv/bin/python UV_NO_PROGRESS=1
START=$SECONDS
stamp=$(sha256sum requirements/llmc.in | cut -c1-16)
if [ "$(cat .llmc/.in-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "[setup_llmc] installing requirements/llmc.in into .llmc"
  rm -rf .llmc
  .venv/bin/uv pip install --quiet --no-deps --target .llmc -r requirements/llmc.in
  echo "$stamp" > .llmc/.in-stamp
fi
# A smoke test: the import path resolves llmcompressor and its compressed-tensors from
# .llmc, torch and transformers from .venv.
PYTHONPATH=$PWD/.llmc .venv/bin/python - <<'PY'
import compressed_tensors, llmcompressor, datasets, torch, transformers
from llmcompressor import oneshot  # noqa: F401
from llmcompressor.modifiers.quantization import GPTQModifier  # noqa: F401
from llmcompressor.modifiers.transform import QuIPModifier, SpinQuantModifier  # noqa: F401
print(f"[setup_llmc] llmcompressor {llmcompressor.__version__}, compressed-tensors "
      f"{compressed_tensors.__version__} ({compressed_tensors.__file__.split('/')[-3]}), "
      f"datasets {datasets.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
echo "[setup_llmc] done in $((SECONDS - START))s ($(du -sh .llmc | cut -f1))"
