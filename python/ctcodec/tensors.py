"""Raw tensor bytes <-> torch / numpy arrays, without copies where the types allow."""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import numpy as np

from .errors import CodecError

# safetensors dtype name -> (bits per element, torch dtype attribute, numpy dtype name,
# whether that numpy dtype comes from ml_dtypes)
_DTYPES = {
    "BOOL": (8, "bool", "bool", False),
    "U8": (8, "uint8", "uint8", False),
    "I8": (8, "int8", "int8", False),
    "I16": (16, "int16", "int16", False),
    "U16": (16, "uint16", "uint16", False),
    "I32": (32, "int32", "int32", False),
    "U32": (32, "uint32", "uint32", False),
    "I64": (64, "int64", "int64", False),
    "U64": (64, "uint64", "uint64", False),
    "F16": (16, "float16", "float16", False),
    "BF16": (16, "bfloat16", "bfloat16", True),
    "F32": (32, "float32", "float32", False),
    "F64": (64, "float64", "float64", False),
    "C64": (64, "complex64", "complex64", False),
    "F8_E4M3": (8, "float8_e4m3fn", "float8_e4m3fn", True),
    "F8_E5M2": (8, "float8_e5m2", "float8_e5m2", True),
    "F8_E8M0": (8, "float8_e8m0fnu", "float8_e8m0fnu", True),
    "F8_E4M3FNUZ": (8, "float8_e4m3fnuz", "float8_e4m3fnuz", True),
    "F8_E5M2FNUZ": (8, "float8_e5m2fnuz", "float8_e5m2fnuz", True),
    "F4": (4, None, None, False),
    "F6_E2M3": (6, None, None, False),
    "F6_E3M2": (6, None, None, False),
}


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def nbytes(dtype: str, shape) -> int:
    """Bytes a tensor of this safetensors dtype and shape takes."""
    return numel(shape) * _DTYPES[dtype][0] // 8


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def default_framework() -> str:
    return "torch" if torch_available() else "numpy"


def _torch_dtype(name: str):
    import torch

    attr = _DTYPES.get(name, (0, None))[1]
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        raise CodecError(f"dtype {name} has no torch equivalent in torch {torch.__version__}")
    return dtype


def _numpy_dtype(name: str) -> np.dtype:
    _bits, _torch, np_name, from_ml_dtypes = _DTYPES.get(name, (0, None, None, False))
    if np_name is None:
        raise CodecError(f"dtype {name} has no numpy equivalent")
    if not from_ml_dtypes:
        return np.dtype(np_name)
    try:
        import ml_dtypes
    except ImportError:
        raise CodecError(
            f"dtype {name} needs the ml_dtypes package for numpy output "
            "(pip install ml_dtypes), or ask for framework='torch'"
        ) from None
    return np.dtype(getattr(ml_dtypes, np_name))


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
    import torch

    for name, (_bits, attr, _np, _ml) in _DTYPES.items():
        if attr and getattr(torch, attr, None) == dtype:
            return name
    raise CodecError(f"torch dtype {dtype} cannot be stored in safetensors")


def _numpy_name(dtype: np.dtype) -> str:
    for name, (_bits, _torch, np_name, from_ml_dtypes) in _DTYPES.items():
        if np_name and (dtype.name == np_name if from_ml_dtypes else dtype == np.dtype(np_name)):
            return name
    raise CodecError(f"numpy dtype {dtype} cannot be stored in safetensors")


def to_raw(tensor: Any) -> tuple[str, list[int], np.ndarray]:
    """(dtype name, shape, contiguous 1-D uint8 view) of a torch tensor or numpy array."""
    if isinstance(tensor, np.ndarray):
        # ascontiguousarray would turn a 0-d array into shape (1,)
        arr = tensor if tensor.flags.c_contiguous else tensor.copy(order="C")
        if arr.dtype.byteorder == ">":
            raise CodecError(f"big-endian {arr.dtype} arrays cannot be stored (safetensors is little-endian)")
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
