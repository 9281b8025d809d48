"""A per-tensor report of a checkpoint: format, sparsity, sizes, compression ratio."""

from __future__ import annotations

import os
import re
from typing import Any

from . import _native
from .model_folder import shard_paths
from .reading import declared_format, declared_quantization, shard_schemes
from .tensors import nbytes, numel

_PART_SUFFIXES = (".compressed", ".bitmask", ".shape", ".row_offsets")
_QUANT_SUFFIXES = (".weight", ".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape",
                   ".weight_g_idx", ".weight_global_scale", ".scale_packed", ".meta",  # marlin-24
                   ".compressed", ".bitmask", ".shape")  # quantized codes stored 2:4
_SPQR_SUFFIXES = (".weight_codes", ".weight_stats", ".weight_second_order", ".weight_perm", ".weight_shape",
                  ".weight_outlier_row_offsets", ".weight_outlier_col_vals", ".weight_outlier_tile_offsets",
                  ".weight_outlier_tile_col_vals")


def natural_key(name: str) -> list:
    """Sorts numbered parts by value: model.layers.2 before model.layers.10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def inspect_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Returns {format, tensors: [...], dense_bytes, stored_bytes, ratio, sparsity,
    bits_per_param}; each compressed tensor also reports its stored bits per parameter."""
    fmt = declared_format(path)
    quant = declared_quantization(path)
    formats = set()
    rows = []
    for shard in shard_paths(path):
        schemes = shard_schemes(shard, quant) or {}
        reader = _native.CompressedFile(os.fspath(shard), fmt, "auto", schemes)
        _meta, stored = _native.read_header(os.fspath(shard))
        stored_by_name = {name: (dtype, shape) for name, dtype, shape in stored}
        for name, dtype, shape, compressed in reader.entries():
            dense, count = nbytes(dtype, shape), numel(shape)
            module = name[: -len(".weight")]
            if compressed and module in schemes:
                suffixes = _SPQR_SUFFIXES if schemes[module].format == "spqr" else _QUANT_SUFFIXES
                parts = {s: stored_by_name[module + s] for s in suffixes if module + s in stored_by_name}
                size = sum(nbytes(d, sh) for d, sh in parts.values())
                nnz = None
                formats.add(schemes[module].format.replace("-legacy", ""))
            elif compressed:
                parts = {s: stored_by_name[module + s] for s in _PART_SUFFIXES if module + s in stored_by_name}
                size = sum(nbytes(d, sh) for d, sh in parts.values())
                nnz = numel(parts[".compressed"][1])
                formats.add(reader.format)
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
                    "bits_per_param": 8 * size / max(count, 1),
                }
            )
    rows.sort(key=lambda r: natural_key(r["name"]))  # layers.2 before layers.10
    dense = sum(r["dense_bytes"] for r in rows)
    stored_total = sum(r["stored_bytes"] for r in rows)
    comp = [r for r in rows if r["compressed"]]
    comp_numel = sum(r["numel"] for r in comp)
    zeros = sum((r["sparsity"] or 0) * r["numel"] for r in comp)
    weights = [r for r in rows if r["name"].endswith(".weight") and len(r["shape"]) >= 2]
    return {
        "format": "mixed-precision" if len(formats) > 1 else (formats.pop() if formats else "dense"),
        "tensors": rows,
        "dense_bytes": dense,
        "stored_bytes": stored_total,
        "ratio": dense / stored_total if stored_total else 1.0,
        "compressed_sparsity": zeros / comp_numel if comp_numel else 0.0,
        # Over the compressed weights, and over every weight matrix of the model.
        "bits_per_param": 8 * sum(r["stored_bytes"] for r in comp) / comp_numel if comp_numel else None,
        "bits_per_param_all_weights": (8 * sum(r["stored_bytes"] for r in weights) / max(sum(r["numel"] for r in weights), 1)) if weights else None,
    }
