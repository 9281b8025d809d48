"""SpQR (Dettmers et al. 2023): GPTQ over groups of `beta2` permuted columns with
asymmetric min-max statistics per (row, group), those statistics quantized again over
groups of `beta1` rows, and weights whose error would exceed a relative threshold kept
as fp16 outliers.

Two departures from the reference code, both so that what is stored is exactly what
was optimised: the second-order statistics are rounded to fp16 *before* the
first-order ones are quantized with them (the original rounds them only when saving),
and every dequantization is computed as ctcodec's decoders compute it (f32, subtract
then multiply). A group of equal values gets a range that contains 0 instead of the
original's [-1, 1], so it stays representable."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spqr_format import SpqrParams
from .hessian import prepare

FP16_MAX = 65504.0


@dataclass
class SpqrResult:
    codes: torch.Tensor  # uint8 [m, n], stored (permuted) column order
    scale_codes: torch.Tensor  # uint8 [m, G]
    zero_codes: torch.Tensor  # uint8 [m, G]
    second_order: torch.Tensor  # float16 [tiles, G, 4]
    perm: torch.Tensor  # int32 [n]
    outlier_rows: torch.Tensor
    outlier_cols: torch.Tensor  # stored column order
    outlier_values: torch.Tensor  # float16
    weight: torch.Tensor  # fp32 [m, n], original column order: what decoders produce


def _range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A min-max range that is never empty: equal ends widen to include 0, and an
    all-zero range becomes [0, 1] (any scale represents 0 exactly then)."""
    eq = lo == hi
    lo = torch.where(eq, torch.clamp(lo, max=0.0), lo)
    hi = torch.where(eq, torch.clamp(hi, min=0.0), hi)
    hi = torch.where(lo == hi, lo + 1.0, hi)
    return lo, hi


def _minmax_params(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and (non-integer) zero per row of `x`."""
    lo, hi = _range(x.amin(dim=1), x.amax(dim=1))
    scale = (hi - lo) / ((1 << bits) - 1)
    return scale, -lo / scale


def _quantize(x, scale, zero, bits):
    return torch.clamp(torch.round(x / scale.clamp_min(1e-9) + zero), 0, (1 << bits) - 1)


def _dequantize(q, scale, zero):
    return scale * (q - zero)


def _second_order(values: torch.Tensor, rows_per_group: int, bits: int):
    """Quantizes per-row statistics over groups of consecutive rows; returns
    (codes [m], fp16 scale [T], fp16 zero [T], dequantized values [m])."""
    m = values.shape[0]
    tiles = (m + rows_per_group - 1) // rows_per_group
    padded = torch.cat([values, values[-1:].expand(tiles * rows_per_group - m)]).reshape(tiles, rows_per_group)
    scale, zero = _minmax_params(padded, bits)
    scale = scale.clamp(min=2.0 ** -24, max=FP16_MAX).half().float()
    zero = zero.clamp(-FP16_MAX, FP16_MAX).half().float()
    codes = _quantize(padded, scale.unsqueeze(1), zero.unsqueeze(1), bits)
    deq = _dequantize(codes, scale.unsqueeze(1), zero.unsqueeze(1))
    return codes.reshape(-1)[:m], scale, zero, deq.reshape(-1)[:m]


def _loo_outliers(group: torch.Tensor, u_diag: torch.Tensor, bits: int, threshold: float) -> torch.Tensor:
    """Leave-one-out pre-detection: weights whose exclusion from the group's min-max
    fit lowers the row's U-weighted squared error by more than the threshold."""
    m, k = group.shape
    if k < 2:
        return torch.zeros_like(group, dtype=torch.bool)
    idx = torch.arange(k)
    others = idx[1:] - (idx.unsqueeze(1) >= idx[1:]).long()  # [k, k-1]: all but i
    loo = group[:, others]  # [m, k, k-1]
    flat = loo.reshape(m * k, k - 1)
    s, z = _minmax_params(flat, bits)
    rec = _dequantize(_quantize(flat, s.unsqueeze(1), z.unsqueeze(1), bits), s.unsqueeze(1), z.unsqueeze(1))
    loo_err = ((rec.reshape(m, k, k - 1) - loo) / u_diag[others]).square().sum(-1)
    s, z = _minmax_params(group, bits)
    base = _dequantize(_quantize(group, s.unsqueeze(1), z.unsqueeze(1), bits), s.unsqueeze(1), z.unsqueeze(1))
    base_err = ((base - group) / u_diag).square().sum(dim=1, keepdim=True)
    return (base_err - loo_err) > threshold


def solve(weight: torch.Tensor, H: torch.Tensor, params: SpqrParams, *, percdamp: float = 1.0,
          outlier_threshold: float = 0.2, act_order: bool = True, blocksize: int = 128,
          simplified_outliers: bool = False) -> SpqrResult:
    W = weight.detach().float().clone()
    m, n = W.shape
    b1, b2, bits = params.beta1, params.beta2, params.bits
    perm, U, W = prepare(W, H, percdamp, act_order)
    blocksize = max(blocksize // b2, 1) * b2
    groups = (n + b2 - 1) // b2
    tiles = (m + b1 - 1) // b1
    tau = outlier_threshold * (W.var(dim=0) / torch.diag(U).square()).mean().item()

    codes = torch.zeros(m, n, dtype=torch.uint8)
    scale_codes = torch.zeros(m, groups, dtype=torch.uint8)
    zero_codes = torch.zeros(m, groups, dtype=torch.uint8)
    second = torch.zeros(tiles, groups, 4)
    out = torch.zeros(m, n)
    is_outlier = torch.zeros(m, n, dtype=torch.bool)
    u_diag = torch.diag(U)
    scale = zero = None
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        E1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % b2 == 0:
                group = W1[:, i:i + b2]
                if not simplified_outliers and tau < float("inf"):
                    likely = _loo_outliers(group, u_diag[col:col + group.shape[1]], bits, tau)
                    keep = (~likely).float()
                    mean = (group * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1)
                    group = group * keep + mean * (1 - keep)
                s, z = _minmax_params(group, bits)
                g = col // b2
                sc, ss, sz, scale = _second_order(s, b1, params.qq_scale_bits)
                zc, zs, zz, zero = _second_order(z, b1, params.qq_zero_bits)
                scale_codes[:, g], zero_codes[:, g] = sc.to(torch.uint8), zc.to(torch.uint8)
                second[:, g] = torch.stack([ss, sz, zs, zz], dim=1)
            w = W1[:, i]
            deq = _dequantize(_quantize(w, scale, zero, bits), scale, zero)
            err = (w - deq) / U1[i, i]
            outlier = err.square() > tau
            kept = w.clamp(-FP16_MAX, FP16_MAX).half().float()
            q = _quantize(torch.where(outlier, torch.zeros_like(w), w), scale, zero, bits)
            deq = torch.where(outlier, kept, deq)
            codes[:, col] = q.to(torch.uint8)
            is_outlier[:, col] = outlier
            out[:, col] = deq
            err = (w - deq) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    rows, cols = torch.nonzero(is_outlier, as_tuple=True)
    inverse = torch.argsort(perm)
    return SpqrResult(codes, scale_codes, zero_codes, second.half(), perm.to(torch.int32), rows.to(torch.int32),
                      cols.to(torch.int32), out[rows, cols].half(), out[:, inverse])
