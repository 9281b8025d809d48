"""The format names ctcodec reads and writes, from the core's one table
(`ctcodec._native.formats()`, defined in rust/ctcodec/src/formats/names.rs)."""

from __future__ import annotations

from . import _native
from .errors import CodecError

_TABLE = tuple(_native.formats())

# File-wide formats (config.json's `format` / sparsity_config): dense and the sparse line.
SUPPORTED = tuple(f["name"] for f in _TABLE if f["family"] in ("dense", "sparse"))
# Quantization formats a config group may name; all of them decode.
QUANTIZED = tuple(f["name"] for f in _TABLE if f["family"] == "quantized" and f["writable"])
# Those ctcodec writes from a recipe (the same set today).
WRITABLE_QUANTIZED = QUANTIZED


def normalize_any(name: str) -> str:
    """compressed-tensors' registry spelling: lower case, `_` and spaces as `-`."""
    return str(getattr(name, "value", name)).strip().lower().replace("_", "-").replace(" ", "-")


def normalize(name: str) -> str:
    """A sparse (or dense) format name in registry spelling, refused if unsupported."""
    norm = normalize_any(name)
    if norm not in SUPPORTED:
        raise CodecError(f"unknown or unsupported format {name!r} (supported: {', '.join(SUPPORTED)})")
    return norm
