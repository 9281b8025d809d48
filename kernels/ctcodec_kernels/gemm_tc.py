"""The bit-unpacked GEMM (the tiled path, M > 32, and split-K's rows) with the weight as the
MMA's A operand straight from registers, unpacked by the tensor-core GEMV's bit tricks
(gemv_tc.py) and scaled in x's dtype before the dot: y^T = W x^T, tile by tile.

Per pair of codes (one register): one LOP3 makes the fp16 (1024 + q, 1024 + q'), one
HADD2 (HFMA2 for the codes at bit 4) subtracts 1024 + zp, one HMUL2 multiplies by the
pair's scales. (q - zp) is exact and its product with an fp16 scale is one correctly
rounded product, so the tile is ctcodec's decode bit for bit, as in the other
tensor-core paths; bf16 likewise (4-bit codes). Scales must be in x's dtype (the tuner
offers this kernel only then: matmul.unpacked_gemm_takes).

The weight's codes reach the MMA in the GEMV's k order (gemv_tc._k_order), so x must be
in that order too. Reading x that way inside the loop is a gather of 2-byte values; x is
instead permuted once per call through `PreparedWeight.x_order` (made at load time, any
act-order permutation folded in), and the kernel reads it as plain contiguous
[KB, BLOCK_M] tiles that Triton pipelines through shared memory like any GEMM operand.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import exact_dot, round_to
from .gemm import grouped_tile
from .gemv_tc import _arrange, _halves, _pair
from .split_sum import store_tile


@triton.jit
def _group_row(blk, code: tl.constexpr, KB: tl.constexpr, GROUP: tl.constexpr):
    """The scale row of code position `code` of block `blk` (a group divides a block or is
    a multiple of one: repack.py), as constant offsets where the group is within a block."""
    if KB % GROUP == 0:
        row = blk * (KB // GROUP) + (code * 32) // GROUP
    else:
        row = (blk * KB) // GROUP
    return row


@triton.jit
def _stat(ptr, blk, rn, n_ok, code: tl.constexpr, N, KB: tl.constexpr, GROUP: tl.constexpr):
    """Per row, the statistic (scale or zero code) of code position `code` of block `blk`."""
    return tl.load(ptr + _group_row(blk, code, KB, GROUP) * N + rn, mask=n_ok, other=0)


@triton.jit
def _minus_zero_pair(w4, p: tl.constexpr, z_lo, z_hi, BITS: tl.constexpr, BF16: tl.constexpr,
                     INTERPRET: tl.constexpr):
    """q - zp of codes p and p + PPW/2 of every word (_pair's shape), for per-row zero codes
    `z_lo` / `z_hi` [BLOCK_N] (int32). The zero goes into the word as an integer add of
    (MAGIC + BIAS - zp) to each half, so the float subtraction is a constant as without
    zero points: a per-row pair of halves broadcast over the tile cost a byte permute per
    register on sm_90. q + BIAS - zp is in [1, 2 * 2**BITS), exact under the magic."""
    BLOCK_N: tl.constexpr = w4.shape[0]
    BIAS: tl.constexpr = 1 << BITS
    DT: tl.constexpr = tl.bfloat16 if BF16 else tl.float16
    MAGIC: tl.constexpr = 0x4300 if BF16 else 0x6400  # 128 + x in bf16, 1024 + x in fp16
    AT_BIT4: tl.constexpr = (not BF16) and BITS == 4 and p % 2 == 1  # no shift (as in _pair)
    IN: tl.constexpr = 4 if AT_BIT4 else 0
    if AT_BIT4:
        masked = (w4 >> ((p - 1) * 4)) & 0x00F000F0
    else:
        masked = (w4 >> (p * BITS)) & (((1 << BITS) - 1) * 0x00010001)
    zword = (MAGIC + ((BIAS - z_lo) << IN)) | ((MAGIC + ((BIAS - z_hi) << IN)) << 16)
    v = _halves(masked + tl.reshape(zword, (BLOCK_N, 1, 1, 1)), DT)
    if INTERPRET and BF16:  # no bf16 arithmetic there; exact either way (small integers)
        d = (v.to(tl.float32) - (BIAS + 128.0)).to(tl.bfloat16)
    elif AT_BIT4:  # 1024 + 16 (q + BIAS - zp)
        d = tl.fma(v, 0.0625, -(BIAS + 64.0))
    elif BF16:
        d = v - (BIAS + 128.0)
    else:
        d = v - (BIAS + 1024.0)
    return d


@triton.jit
def _decoded_pair(w4, p: tl.constexpr, s_ptr, z_ptr, blk, rn, n_ok, N, BITS: tl.constexpr, GROUP: tl.constexpr,
                  HAS_ZP: tl.constexpr, BF16: tl.constexpr, INTERPRET: tl.constexpr):
    """ctcodec's decoded weight of codes p and p + PPW/2 of every word (_pair's shape)."""
    PPW: tl.constexpr = 32 // BITS
    KB: tl.constexpr = 32 * PPW
    XT: tl.constexpr = tl.bfloat16 if BF16 else tl.float16
    if HAS_ZP:
        z_lo = _stat(z_ptr, blk, rn, n_ok, p, N, KB, GROUP).to(tl.int32)
        z_hi = _stat(z_ptr, blk, rn, n_ok, p + PPW // 2, N, KB, GROUP).to(tl.int32)
        d = _minus_zero_pair(w4, p, z_lo, z_hi, BITS, BF16, INTERPRET)
    else:
        d = _pair(w4, p, 1 << (BITS - 1), BITS, BF16, INTERPRET)
    lo = _stat(s_ptr, blk, rn, n_ok, p, N, KB, GROUP)
    hi = _stat(s_ptr, blk, rn, n_ok, p + PPW // 2, N, KB, GROUP)
    scale = tl.reshape(tl.join(lo, hi), (lo.shape[0], 1, 1, 1, 2))
    if INTERPRET:  # the exact product rounded once (the interpreter has no bf16 arithmetic)
        w = round_to(d.to(tl.float32) * scale.to(tl.float32), XT, INTERPRET)
    else:  # one correctly rounded product: the same bits (scales in x's dtype)
        w = d * scale
    return w


@triton.jit
def gemm_tc_kernel(
    xk_ptr, qw_ptr, s_ptr, z_ptr, y_ptr, part_ptr, sem_ptr,
    M, N, NBLK, BLK_PER_SPLIT, SPLITS, stride_xm, stride_qn, stride_om, stride_ps,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
    PARTIAL: tl.constexpr, INTERPRET: tl.constexpr,
):
    # xk: x in the weight's k order (PreparedWeight.x_order), NBLK * KB columns, zeros at padding.
    PPW: tl.constexpr = 32 // BITS
    KB: tl.constexpr = 32 * PPW
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = rn < N
    m_ok = rm < M
    w_ptrs = qw_ptr + rn[:, None] * stride_qn + tl.arange(0, 32)[None, :]
    x_ptrs = xk_ptr + tl.minimum(rm, M - 1)[None, :] * stride_xm + tl.arange(0, KB)[:, None]  # [KB, BLOCK_M]
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    lo = tl.program_id(1) * BLK_PER_SPLIT
    hi = tl.minimum(lo + BLK_PER_SPLIT, NBLK)
    for blk in range(lo, hi):
        words = tl.load(w_ptrs + blk * 32, mask=n_ok[:, None], other=0)
        w4 = tl.reshape(words, (BLOCK_N, 4, 4, 2))
        p0 = _decoded_pair(w4, 0, s_ptr, z_ptr, blk, rn, n_ok, N, BITS, GROUP, HAS_ZP, BF16, INTERPRET)
        p1 = _decoded_pair(w4, 1, s_ptr, z_ptr, blk, rn, n_ok, N, BITS, GROUP, HAS_ZP, BF16, INTERPRET)
        if BITS == 4:
            p2 = _decoded_pair(w4, 2, s_ptr, z_ptr, blk, rn, n_ok, N, BITS, GROUP, HAS_ZP, BF16, INTERPRET)
            p3 = _decoded_pair(w4, 3, s_ptr, z_ptr, blk, rn, n_ok, N, BITS, GROUP, HAS_ZP, BF16, INTERPRET)
            w = _arrange(p0, p1, p2, p3, BITS)
        else:
            w = _arrange(p0, p1, p0, p1, BITS)
        xt = tl.load(x_ptrs + blk * KB)  # rows past M repeat row M - 1: B's columns never mix
        acc = exact_dot(w, xt, acc, INTERPRET)
    at = rm[None, :] * stride_om + rn[:, None]
    store_tile(acc, at, n_ok[:, None] & m_ok[None, :], y_ptr, part_ptr, sem_ptr, SPLITS, stride_ps, PARTIAL, INTERPRET)
