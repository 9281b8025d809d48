"""The on-disk format names ctcodec reads and writes."""

from __future__ import annotations

from .errors import CodecError

SUPPORTED = ("dense", "sparse-bitmask", "sparse-24-bitmask")


def normalize_any(name: str) -> str:
    """compressed-tensors' registry spelling: lower case, `_` and spaces as `-`."""
    return str(getattr(name, "value", name)).strip().lower().replace("_", "-").replace(" ", "-")


def normalize(name: str) -> str:
    """A sparse (or dense) format name in registry spelling, refused if unsupported."""
    norm = normalize_any(name)
    if norm not in SUPPORTED:
        raise CodecError(f"unknown or unsupported format {name!r} (supported: {', '.join(SUPPORTED)})")
    return norm
