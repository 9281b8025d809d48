"""Checks of the stored tensors a CompressedLinear takes, before any kernel or fallback
reads them: the same rules the Rust decoder applies, so a malformed checkpoint is refused
on load instead of computing with garbage."""

from __future__ import annotations

import torch


def _want(parts: dict, name: str, shape: list[int], dtypes: tuple) -> torch.Tensor:
    t = parts.get(name)
    if t is None:
        raise ValueError(f"has no {name}")
    if list(t.shape) != shape or t.dtype not in dtypes:
        raise ValueError(f"{name} is {t.dtype} {list(t.shape)}; needs {dtypes[0]} {shape}")
    return t


def _shape(parts: dict, rows: int, cols: int) -> None:
    shape = _want(parts, "weight_shape", [2], (torch.int64, torch.int32))
    if shape.tolist() != [rows, cols]:
        raise ValueError(f"weight_shape {shape.tolist()} is not the layer's [{rows}, {cols}]")


def check_pack(parts: dict, params: dict, rows: int, cols: int) -> None:
    bits, gs = params["num_bits"], params.get("group_size")
    _shape(parts, rows, cols)
    _want(parts, "weight_packed", [rows, -(-cols * bits // 32)], (torch.int32,))
    groups = -(-cols // gs) if gs else 1
    _want(parts, "weight_scale", [rows, groups], (torch.bfloat16, torch.float16, torch.float32))
    if "weight_zero_point" in parts:
        _want(parts, "weight_zero_point", [-(-rows * bits // 32), groups], (torch.int32,))
    if "weight_g_idx" in parts:
        g_idx = _want(parts, "weight_g_idx", [cols], (torch.int32, torch.int64))
        if cols and (g_idx.min() < 0 or g_idx.max() >= groups):
            raise ValueError(f"weight_g_idx names groups outside 0..{groups - 1}")


def check_spqr(parts: dict, params: dict, rows: int, cols: int) -> None:
    b, b1, b2, qs, qz = (params[k] for k in ("bits", "beta1", "beta2", "qq_scale_bits", "qq_zero_bits"))
    _shape(parts, rows, cols)
    groups, tiles = -(-cols // b2), -(-rows // b1)
    _want(parts, "weight_codes", [rows, -(-groups * b2 * b // 32)], (torch.int32,))
    _want(parts, "weight_stats", [rows, -(-groups * (qs + qz) // 32)], (torch.int32,))
    so = _want(parts, "weight_second_order", [tiles, groups, 4], (torch.float16,))
    if not torch.isfinite(so).all():
        raise ValueError("weight_second_order holds a non-finite value")
    perm = _want(parts, "weight_perm", [cols], (torch.int32,))
    if not torch.equal(torch.sort(perm.long()).values, torch.arange(cols, device=perm.device)):
        raise ValueError(f"weight_perm is not a permutation of 0..{cols - 1}")
    csr = "weight_outlier_row_offsets" in parts
    off_name, cv_name = (("weight_outlier_row_offsets", "weight_outlier_col_vals") if csr
                         else ("weight_outlier_tile_offsets", "weight_outlier_tile_col_vals"))
    offsets = _want(parts, off_name, [(rows if csr else tiles) + 1], (torch.int32,)).long()
    col_vals = parts.get(cv_name)
    if col_vals is None or col_vals.dim() != 1 or col_vals.dtype != torch.int32:
        raise ValueError(f"{cv_name} must be a 1-D I32 tensor")
    if offsets[0] != 0 or (offsets.diff() < 0).any() or offsets[-1] != len(col_vals):
        raise ValueError(f"{off_name} must run from 0 to {len(col_vals)} without decreasing")
    live = col_vals[col_vals != 0] if not csr else col_vals
    if ((live & 0xFFFF) >= cols).any():
        raise ValueError(f"an outlier column is past the {cols} columns")
    values = (live >> 16).to(torch.int16).view(torch.float16)
    if not torch.isfinite(values).all():
        raise ValueError("an outlier value is not finite")
