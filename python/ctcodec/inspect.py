"""A per-tensor report of a checkpoint: format, sparsity, sizes, compression ratio."""

from __future__ import annotations

import os
from typing import Any

from . import _native
from .layout import shard_paths
from .reading import declared_format
from .tensors import nbytes, numel

_PART_SUFFIXES = (".compressed", ".bitmask", ".shape", ".row_offsets")


def inspect_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Returns {format, tensors: [...], dense_bytes, stored_bytes, ratio, sparsity}."""
    fmt = declared_format(path)
    rows = []
    for shard in shard_paths(path):
        reader = _native.CompressedFile(os.fspath(shard), fmt)
        _meta, stored = _native.read_header(os.fspath(shard))
        stored_by_name = {name: (dtype, shape) for name, dtype, shape in stored}
        for name, dtype, shape, compressed in reader.entries():
            dense, count = nbytes(dtype, shape), numel(shape)
            if compressed:
                module = name[: -len(".weight")]
                parts = {s: stored_by_name[module + s] for s in _PART_SUFFIXES if module + s in stored_by_name}
                size = sum(nbytes(d, sh) for d, sh in parts.values())
                nnz = numel(parts[".compressed"][1])
            else:
                size, nnz = dense, None
            rows.append(
                {
                    "name": name,
                    "shard": shard.name,
                    "dtype": dtype,
                    "shape": list(shape),
                    "compressed": compressed,
                    "numel": count,
                    "sparsity": None if nnz is None else 1 - nnz / max(count, 1),
                    "dense_bytes": dense,
                    "stored_bytes": size,
                }
            )
        fmt = fmt or reader.format
    dense = sum(r["dense_bytes"] for r in rows)
    stored_total = sum(r["stored_bytes"] for r in rows)
    comp = [r for r in rows if r["compressed"]]
    comp_numel = sum(r["numel"] for r in comp)
    zeros = sum(r["sparsity"] * r["numel"] for r in comp)
    return {
        "format": fmt or "dense",
        "tensors": rows,
        "dense_bytes": dense,
        "stored_bytes": stored_total,
        "ratio": dense / stored_total if stored_total else 1.0,
        "compressed_sparsity": zeros / comp_numel if comp_numel else 0.0,
    }
