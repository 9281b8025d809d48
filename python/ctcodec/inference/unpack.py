"""Dequantization in torch of the formats compressed modules keep in memory, exactly as
ctcodec's Rust decoder computes it (so the CPU fallback and the decoder agree bit for
bit): pack-quantized int codes, and SpQR tiles."""

from __future__ import annotations

import torch


def bit_fields(words: torch.Tensor, count: int, bits: int) -> torch.Tensor:
    """`count` unsigned `bits`-wide fields packed LSB-first along the last dim of int32
    `words` (fields may straddle two words)."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros_like(w[..., :1])], dim=-1)
    pos = torch.arange(count, device=words.device) * bits
    idx, shift = pos // 32, pos % 32
    window = w[..., idx] | (w[..., idx + 1] << 32)
    return (window >> shift) & ((1 << bits) - 1)


def dequantize_pack(packed: torch.Tensor, scale: torch.Tensor, bits: int, shape: tuple[int, int],
                    zero_point: torch.Tensor | None = None, g_idx: torch.Tensor | None = None,
                    group_size: int | None = None) -> torch.Tensor:
    """compressed-tensors' pack-quantized weight (dense layout), in the scale's dtype:
    (q − zp) · scale computed in f32 and rounded once."""
    rows, cols = shape
    offset = 1 << (bits - 1)
    q = bit_fields(packed, cols, bits) - offset
    if g_idx is not None:
        groups = g_idx.long()
    elif scale.shape[-1] == 1:
        groups = torch.zeros(cols, dtype=torch.long, device=packed.device)
    else:
        groups = torch.arange(cols, device=packed.device) // (group_size or -(-cols // scale.shape[-1]))
    zp = 0
    if zero_point is not None:
        zp = bit_fields(zero_point.t(), rows, bits).t() - offset  # packed along the output dim
        zp = zp[:, groups]
    w = (q - zp).float() * scale.float()[:, groups]
    return w.to(scale.dtype)


def dequantize_spqr(parts: dict[str, torch.Tensor], bits: int, beta1: int, beta2: int, qq_scale_bits: int,
                    qq_zero_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The SpQR definition (rust/ctcodec/src/spqr/mod.rs): f32, subtraction then
    multiplication, outliers replace, columns un-permuted, one final rounding."""
    rows, cols = (int(v) for v in parts["weight_shape"].tolist())
    groups = -(-cols // beta2)
    dev = parts["weight_codes"].device
    q = bit_fields(parts["weight_codes"], cols, bits).float()
    packed = bit_fields(parts["weight_stats"], groups, qq_scale_bits + qq_zero_bits)
    cs = (packed & ((1 << qq_scale_bits) - 1)).float()
    cz = (packed >> qq_scale_bits).float()
    so = parts["weight_second_order"].float()[torch.arange(rows, device=dev) // beta1]  # [rows, G, 4]
    s = so[..., 0] * (cs - so[..., 1])
    z = so[..., 2] * (cz - so[..., 3])
    g = torch.arange(cols, device=dev) // beta2
    w = s[:, g] * (q - z[:, g])
    r, c, v = outlier_coo(parts, rows, beta1)
    w[r, c] = v.float()
    out = torch.empty_like(w)
    out[:, parts["weight_perm"].long()] = w
    return out.to(dtype)


def outlier_coo(parts: dict[str, torch.Tensor], rows: int, beta1: int):
    """(rows, stored columns, fp16 values) of a SpQR weight's outliers, either layout."""
    if "weight_outlier_row_offsets" in parts:
        offsets = parts["weight_outlier_row_offsets"].long()
        col_vals = parts["weight_outlier_col_vals"]
        r = torch.repeat_interleave(torch.arange(rows, device=offsets.device), offsets.diff())
    else:
        offsets = parts["weight_outlier_tile_offsets"].long()
        col_vals = parts["weight_outlier_tile_col_vals"]
        slot = torch.arange(len(col_vals), device=offsets.device)
        tile = torch.searchsorted(offsets, slot, right=True) - 1
        r = tile * beta1 + (slot - offsets[tile]) % beta1
        keep = col_vals != 0  # all-zero slots are padding
        r, col_vals = r[keep], col_vals[keep]
    c = (col_vals & 0xFFFF).long()
    v = (col_vals >> 16).to(torch.int16).view(torch.float16)
    return r, c, v
