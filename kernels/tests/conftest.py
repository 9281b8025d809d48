"""Kernel tests run on a CUDA GPU when there is one, else on the CPU through Triton's
interpreter: TRITON_INTERPRET must be set before triton is first imported, so here.

    .venv/bin/python -m pytest kernels/tests -q
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parent.parent
if str(KERNELS) not in sys.path:
    sys.path.insert(0, str(KERNELS))  # the package from this checkout, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if not _has_cuda():
    os.environ["TRITON_INTERPRET"] = "1"
# Tests check results, not speed: no timing of configs (each would be a compile); the
# config tests name the configs they run.
os.environ.setdefault("CTCODEC_KERNELS_TUNE", "0")


@pytest.fixture(scope="session")
def device() -> str:
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"

