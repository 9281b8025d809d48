"""The package imports where it cannot run: without Triton, and without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=KERNELS, capture_output=True, text=True, timeout=120)


def test_imports_without_triton():
    r = _run(
        "import sys\n"
        "sys.modules['triton'] = None  # makes `import triton` fail\n"
        "import ctcodec_kernels as ck\n"
        "assert not ck.triton_available() and not ck.available()\n"
        "import torch\n"
        "w = ck.prepare(torch.zeros(2, 1, dtype=torch.int32), torch.ones(2, 1), 4, None, 2, 8)\n"
        "assert w.qweight.shape == (2, 32)\n"
        "try:\n"
        "    ck.quant_matmul\n"
        "except ImportError as e:\n"
        "    assert 'needs torch and Triton' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('quant_matmul imported without Triton')\n"
    )
    assert r.returncode == 0, r.stderr


def test_imports_without_torch():
    r = _run(
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import ctcodec_kernels as ck\n"
        "assert not ck.available()\n"
        "assert 'quant_matmul' in dir(ck)\n"
    )
    assert r.returncode == 0, r.stderr
