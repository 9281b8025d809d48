"""The on-disk format names ctcodec reads and writes."""

from __future__ import annotations

from .errors import CodecError

SUPPORTED = ("dense", "sparse-bitmask")


def normalize(name: str) -> str:
    """compressed-tensors' registry spelling: lower case, `_` and spaces as `-`."""
    norm = str(getattr(name, "value", name)).strip().lower().replace("_", "-").replace(" ", "-")
    if norm not in SUPPORTED:
        raise CodecError(f"unknown or unsupported format {name!r} (supported: {', '.join(SUPPORTED)})")
    return norm
