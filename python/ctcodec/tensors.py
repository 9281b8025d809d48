"""Raw tensor bytes <-> torch / numpy arrays, without copies where the types allow."""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import numpy as np

from .errors import CodecError

# safetensors dtype name -> torch dtype attribute name
_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}

# safetensors dtype name -> numpy dtype (ml_dtypes names for the ones numpy lacks)
_NUMPY = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
}
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def default_framework() -> str:
    return "torch" if torch_available() else "numpy"


def _torch_dtype(name: str):
    import torch

    attr = _TORCH.get(name)
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        raise CodecError(f"dtype {name} has no torch equivalent in torch {torch.__version__}")
    return dtype


def _numpy_dtype(name: str) -> np.dtype:
    if name in _NUMPY:
        return np.dtype(_NUMPY[name])
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise CodecError(
                f"dtype {name} needs the ml_dtypes package for numpy output "
                "(pip install ml_dtypes), or ask for framework='torch'"
            ) from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
    raise CodecError(f"dtype {name} has no numpy equivalent")


def from_raw(raw: np.ndarray, dtype: str, shape: Sequence[int], framework: str, device: str | None = None) -> Any:
    """Views a 1-D uint8 buffer as a tensor of `dtype` and `shape` (no copy on the CPU)."""
    if framework == "torch":
        import torch

        if raw.size == 0:  # torch cannot re-view an empty buffer across element sizes
            t = torch.empty(tuple(shape), dtype=_torch_dtype(dtype))
        else:
            t = torch.from_numpy(raw).view(_torch_dtype(dtype)).reshape(tuple(shape))
        if device is not None and str(device) != "cpu":
            t = t.to(device)
        return t
    if framework == "numpy":
        if device not in (None, "cpu"):
            raise CodecError(f"numpy arrays live on the CPU, not {device!r}")
        return raw.view(_numpy_dtype(dtype)).reshape(tuple(shape))
    raise CodecError(f"unknown framework {framework!r} (torch or numpy)")


def _torch_name(dtype) -> str:
    for name, attr in _TORCH.items():
        if getattr(__import__("torch"), attr, None) == dtype:
            return name
    raise CodecError(f"torch dtype {dtype} cannot be stored in safetensors")


def _numpy_name(dtype: np.dtype) -> str:
    for name, np_name in _NUMPY.items():
        if np.dtype(np_name) == dtype:
            return name
    for name, ml_name in _ML_DTYPES.items():
        if dtype.name == ml_name:
            return name
    raise CodecError(f"numpy dtype {dtype} cannot be stored in safetensors")


def to_raw(tensor: Any) -> tuple[str, list[int], np.ndarray]:
    """(dtype name, shape, contiguous 1-D uint8 view) of a torch tensor or numpy array."""
    if isinstance(tensor, np.ndarray):
        arr = np.ascontiguousarray(tensor)
        return _numpy_name(arr.dtype), list(arr.shape), arr.reshape(-1).view(np.uint8)
    if type(tensor).__module__.startswith("torch"):
        import torch

        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        name = _torch_name(t.dtype)
        if t.numel() == 0:
            return name, list(t.shape), np.empty(0, np.uint8)
        return name, list(t.shape), t.reshape(-1).view(torch.uint8).numpy()
    raise CodecError(f"expected a torch tensor or numpy array, got {type(tensor).__name__}")
