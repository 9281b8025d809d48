"""GEMV (M = 1): y = W x with the weight streamed once, on CUDA cores.

At M = 1 the time is reading the weight, so this path does as little as it can per
weight: per code one AND and one FMA make the exact q - zp (dequant_math), and one FMA
multiplies it by x. The scale is applied once per run of codes sharing a group
(acc += partial * scale), loaded once per row and run. Products x * (q - zp) are exact in
fp32, so this path differs from multiplying by the decoded weight only in that the weight
is never rounded to the activation dtype (more accurate, not less; tests bound both).
Compiled for sm_90 the loop costs about 4-5 instructions per weight (tests/hopper.py).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import code_floats, code_minus_zero, round_to, zero_codes


@triton.jit
def _load_x(x_ptr, perm_ptr, col, col_ok, K, HAS_PERM: tl.constexpr):
    """x at kernel columns `col` as fp32 (0 for padding columns and where not col_ok)."""
    if HAS_PERM:
        src = tl.load(perm_ptr + col, mask=col_ok, other=-1)  # -1 = padding
        xv = tl.load(x_ptr + src, mask=src >= 0, other=0.0)
    else:
        xv = tl.load(x_ptr + col, mask=col < K, other=0.0)
    return xv.to(tl.float32)


@triton.jit
def gemv_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, y_ptr,
    N, K, NBLK, stride_qn,
    BITS: tl.constexpr, GROUP: tl.constexpr, RUN: tl.constexpr,
    HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
    BLOCK_N: tl.constexpr, UNROLL: tl.constexpr, INTERPRET: tl.constexpr,
):
    # One program: BLOCK_N rows over all of K, UNROLL blocks (UNROLL * 128 bytes per row)
    # per iteration, so each iteration has enough loads in flight to cover memory latency.
    PPW: tl.constexpr = 32 // BITS
    KB: tl.constexpr = 32 * PPW
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ru = tl.arange(0, UNROLL)
    rj = tl.arange(0, 32)
    n_ok = rn < N
    w_ptrs = qw_ptr + rn[:, None, None] * stride_qn + ru[None, :, None] * 32 + rj[None, None, :]
    acc = tl.zeros([BLOCK_N, UNROLL, 32], dtype=tl.float32)
    # Loads run one iteration ahead (Triton pipelines only loads that feed tl.dot), so
    # the next tile is in flight while this one is computed.
    words_next = tl.load(w_ptrs, mask=(n_ok[:, None] & (ru < NBLK)[None, :])[:, :, None], other=0)
    for b0 in range(0, NBLK, UNROLL):
        blk = b0 + ru
        b_ok = blk < NBLK
        tile_ok = n_ok[:, None] & b_ok[None, :]
        words = words_next
        ahead_ok = n_ok[:, None] & (blk + UNROLL < NBLK)[None, :]
        words_next = tl.load(w_ptrs + (b0 + UNROLL) * 32, mask=ahead_ok[:, :, None], other=0)
        part = tl.zeros([BLOCK_N, UNROLL, 32], dtype=tl.float32)
        scale = tl.zeros([BLOCK_N, UNROLL], dtype=tl.float32)
        zero = tl.zeros([BLOCK_N, UNROLL], dtype=tl.float32)
        low, high = code_floats(words, BITS)
        for i in tl.static_range(PPW):
            if i % RUN == 0:  # a new group starts at this code position
                g_off = ((blk * KB + i * 32) // GROUP) * N
                s_idx = g_off[None, :] + rn[:, None]
                scale = tl.load(s_ptr + s_idx, mask=tile_ok, other=0.0).to(tl.float32)
                zero = zero_codes(z_ptr + s_idx, tile_ok, HAS_ZP, BITS)
            xv = _load_x(x_ptr, perm_ptr, blk[:, None] * KB + i * 32 + rj[None, :], b_ok[:, None], K, HAS_PERM)
            d = code_minus_zero(low, high, i, zero[:, :, None], BITS)
            if i % RUN == 0:
                part = d * xv[None, :, :]
            else:
                part = tl.fma(d, xv[None, :, :], part)
            if (i + 1) % RUN == 0:
                acc = tl.fma(part, scale[:, :, None], acc)
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    tl.store(y_ptr + rn, round_to(y, y_ptr.dtype.element_ty, INTERPRET), mask=n_ok)
