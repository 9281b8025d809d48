"""GPTQ and SparseGPT: columns are quantized (and/or pruned) one at a time and each
column's error is pushed onto the columns not yet done, through the upper Cholesky
factor of the damped inverse Hessian (Frantar et al. 2022, 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hessian import prepare
from .int_quantizer import IntQuantizer


@dataclass
class GptqResult:
    codes: torch.Tensor  # int8 [m, n], signed, original column order
    scale: torch.Tensor  # fp32 [m, G] (values of the weight dtype)
    zero: torch.Tensor  # fp32 [m, G] integer-valued
    g_idx: torch.Tensor | None  # int32 [n] when columns were reordered with groups
    weight: torch.Tensor  # fp32 [m, n]: the dequantized (and pruned) weight
    pruned: int


def _prune_block(w: torch.Tensor, d: torch.Tensor, fraction: float) -> torch.Tensor:
    """SparseGPT's mask for one block: the smallest w²/[H⁻¹]ⱼⱼ² share of it."""
    score = w.square() / d.square().unsqueeze(0)
    k = int(score.numel() * fraction)
    if k == 0:
        return torch.zeros_like(w, dtype=torch.bool)
    thresh = torch.kthvalue(score.flatten(), k).values
    return score <= thresh


def solve(weight: torch.Tensor, H: torch.Tensor, quantizer: IntQuantizer | None, *, percdamp: float = 0.01,
          act_order: bool = False, static_groups: bool = False, blocksize: int = 128,
          sparsity: float | None = None, prune_n: int = 0, prune_m: int = 0) -> GptqResult:
    """Quantizes `weight` [m, n] against the Hessian `H` [n, n] (fp32). With `sparsity`
    or `prune_n:prune_m`, prunes first in each block (SparseGPT); pruned weights are
    stored as the code of 0 so they dequantize to exactly 0.

    With `act_order`, columns are visited by decreasing Hessian diagonal. Groups then
    are either contiguous in that order, which needs a `g_idx` (compressed-tensors'
    `actorder: group`), or, with `static_groups`, the original column groups with
    statistics fitted before the pass (`actorder: weight`, no `g_idx`)."""
    W = weight.detach().float().clone()
    m, n = W.shape
    perm, U, W = prepare(W, H, percdamp, act_order)
    gs = quantizer.group_size if quantizer and quantizer.group_size else None
    if gs:
        blocksize = max(blocksize // gs, 1) * gs  # groups never straddle blocks
    groups = (n + gs - 1) // gs if gs else 1
    scale = torch.zeros(m, groups)
    zero = torch.zeros(m, groups)
    codes = torch.zeros(m, n)
    out = torch.zeros(m, n)
    # GPTQ's loss weighs column j's quantization error by 1 / [H⁻¹]_jj = 1 / U_jj²: the
    # MSE observer fits ranges to that loss, not to the plain weight error.
    column_weights = torch.diag(U).square().reciprocal()
    if quantizer is not None and gs is None:
        s, z = quantizer.params(W, column_weights)
        scale[:, 0], zero[:, 0] = s, z
    static = bool(quantizer is not None and gs and act_order and static_groups)
    if static:
        original = W[:, torch.argsort(perm)]
        for g in range(groups):
            cw = column_weights[torch.argsort(perm)][g * gs:(g + 1) * gs]
            scale[:, g], zero[:, g] = quantizer.params(original[:, g * gs:(g + 1) * gs], cw)
    group_of = (perm // gs) if static else None
    pruned = 0
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        E1 = torch.zeros_like(W1)
        mask = torch.zeros_like(W1, dtype=torch.bool)
        if sparsity:
            mask = _prune_block(W1, torch.diag(U1), sparsity)
        for i in range(i2 - i1):
            col = i1 + i
            if prune_n and i % prune_m == 0:
                seg = W1[:, i:i + prune_m].square() / torch.diag(U1)[i:i + prune_m].square().unsqueeze(0)
                drop = torch.topk(seg, prune_n, dim=1, largest=False).indices
                mask[:, i:i + prune_m].scatter_(1, drop, True)
            w = W1[:, i]
            keep = ~mask[:, i]
            if quantizer is not None:
                if gs and not static and col % gs == 0:
                    s, z = quantizer.params(W1[:, i:i + gs] * ~mask[:, i:i + gs], column_weights[col:col + gs])
                    scale[:, col // gs], zero[:, col // gs] = s, z
                g = int(group_of[col]) if static else (col // gs if gs else 0)
                s, z = scale[:, g], zero[:, g]
                q = torch.where(keep, quantizer.codes(w, s, z), z)
                deq = quantizer.dequantize(q, s, z)
                codes[:, col] = q
            else:
                deq = torch.where(keep, w, torch.zeros_like(w))
            pruned += int((~keep).sum())
            out[:, col] = deq
            err = (w - deq) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    inverse = torch.argsort(perm)
    g_idx = None
    if act_order and gs and not static:
        g_idx = (torch.arange(n) // gs)[inverse].to(torch.int32)
    return GptqResult(codes[:, inverse].to(torch.int8), scale, zero, g_idx, out[:, inverse], pruned)
