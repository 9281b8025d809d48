"""Whether and where the kernels can run. Nothing here imports Triton or torch at import
time: the kernel modules (which do) are loaded on first use, so the package imports on
machines without a GPU, Triton or torch."""

from __future__ import annotations

import contextlib
import functools
import os


@functools.cache
def triton_available() -> bool:
    """True when Triton imports (it is optional until a kernel is called)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1: kernels then run on the CPU in numpy, which has no
    bf16 arithmetic and no tensor cores, so they take their fp32 fallbacks."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _cuda_ok() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def available() -> bool:
    """True when the kernels can run on a CUDA device (Triton and a GPU are both here)."""
    return triton_available() and _cuda_ok() and not interpreting()


def require_runtime(*tensors, interp: bool | None = None) -> None:
    """Raises a clear error when a kernel is called where it cannot run. `interp`:
    interpreting(), when the caller has it already."""
    if not triton_available():
        raise RuntimeError("ctcodec_kernels needs Triton: pip install 'ctcodec-kernels[gpu]'")
    if interp is None:
        interp = interpreting()
    for t in tensors:
        if t is None:
            continue
        if interp:
            if t.device.type != "cpu":
                raise ValueError(f"under TRITON_INTERPRET=1 tensors must be on the CPU, got {t.device}")
        elif t.device.type != "cuda":
            raise ValueError(f"tensors must be on a CUDA device (got {t.device}); "
                             "set TRITON_INTERPRET=1 to run the kernels on the CPU")


@functools.cache
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of a device (a fixed guess under the interpreter)."""
    if interpreting():
        return 4
    import torch

    return torch.cuda.get_device_properties(device_index).multi_processor_count


_NO_SWITCH = contextlib.nullcontext()


def on_device(t, *, interp: bool | None = None):
    """Context making t's GPU the current one (Triton launches on the current device);
    nothing to do, and nothing made, when it already is."""
    if t.device.type != "cuda" or (interpreting() if interp is None else interp):
        return _NO_SWITCH
    import torch

    index = t.device.index
    if index is None or index == torch.cuda.current_device():
        return _NO_SWITCH
    return torch.cuda.device(t.device)
