"""Driving the current compressed-tensors release, which cannot share an environment
with 0.14 (the legacy sparse reference): scripts/setup.sh installs it with
`pip install --target .ct-current`, and tests run it in a subprocess with that folder
first on the import path (torch and transformers come from the test environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CT_CURRENT = ROOT / ".ct-current"
VERSION = "0.20.0"


def ct_current_path() -> Path:
    meta = CT_CURRENT / f"compressed_tensors-{VERSION}.dist-info"
    if not meta.is_dir():
        pytest.fail(f"compressed-tensors {VERSION} is not installed in {CT_CURRENT}; run scripts/setup.sh")
    return CT_CURRENT


def run_ct(script: str, *args: str, timeout: int = 600) -> str:
    """Runs a script from tests/ under the current compressed-tensors."""
    env = dict(os.environ, PYTHONPATH=os.fspath(ct_current_path()))
    proc = subprocess.run([sys.executable, os.fspath(ROOT / "tests" / script), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def reference_compress(dense: Path, modules: list[dict], workdir: Path) -> tuple[Path, Path]:
    """compressed-tensors' compressed file and its own dequantization of it."""
    job = {"input": os.fspath(dense), "compressed": os.fspath(workdir / "ct_compressed.safetensors"),
           "dequantized": os.fspath(workdir / "ct_dequantized.safetensors"), "modules": modules}
    path = workdir / "ct_job.json"
    path.write_text(json.dumps(job))
    run_ct("ct_reference.py", os.fspath(path))
    return Path(job["compressed"]), Path(job["dequantized"])
