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
VERSION = "0.20.0"
# Each release on its own import path; 0.17.1 is the last one with the word-aligned
# pack-quantized layout (3, 5, 6, 7 bits changed in 0.18).
INSTALLS = {"0.20.0": ROOT / ".ct-current", "0.17.1": ROOT / ".ct-017"}


def ct_path(version: str = VERSION) -> Path:
    folder = INSTALLS[version]
    if not (folder / f"compressed_tensors-{version}.dist-info").is_dir():
        pytest.fail(f"compressed-tensors {version} is not installed in {folder}; run scripts/setup.sh")
    return folder


def run_ct(script: str, *args: str, timeout: int = 600, version: str = VERSION) -> str:
    """Runs a script from tests/ under a compressed-tensors release (default: current)."""
    env = dict(os.environ, PYTHONPATH=os.fspath(ct_path(version)))
    proc = subprocess.run([sys.executable, os.fspath(ROOT / "tests" / script), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


PROMPT = "The capital of France is Paris, and the capital of Italy is"


def transformers_logits(folder: Path, tokenizer_dir: Path, workdir: Path) -> "torch.Tensor":
    """The bf16 logits of PROMPT from transformers loading `folder` through the current
    compressed-tensors (tests/ct_hf_load.py), checked to load every tensor it expects
    and nothing else."""
    import torch

    out = workdir / "ct-logits.pt"
    log = run_ct("ct_hf_load.py", str(folder), str(tokenizer_dir), str(out))
    assert "ok" in log
    for warning in ("were not used", "newly initialized", "missing", "unexpected"):
        assert warning not in log.lower(), log
    return torch.load(out)


def reference_compress(dense: Path, modules: list[dict], workdir: Path, version: str = VERSION) -> tuple[Path, Path]:
    """compressed-tensors' compressed file and its own dequantization of it."""
    job = {"input": os.fspath(dense), "compressed": os.fspath(workdir / "ct_compressed.safetensors"),
           "dequantized": os.fspath(workdir / "ct_dequantized.safetensors"), "modules": modules}
    path = workdir / "ct_job.json"
    path.write_text(json.dumps(job))
    run_ct("ct_reference.py", os.fspath(path), version=version)
    return Path(job["compressed"]), Path(job["dequantized"])
