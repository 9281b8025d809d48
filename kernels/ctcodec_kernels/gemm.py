"""Tensor-core paths (M >= 2): tiles of W are dequantized to the activation dtype (exactly
ctcodec's decode) and multiplied with tl.dot, accumulating in fp32.

One kernel serves both the tiled GEMM (large M, one program per output tile) and split-K
(small M, where output tiles are too few to fill the GPU: programs also split K, write
fp32 partial sums, and the last program of each tile adds them in split order, so results
are deterministic: split_sum.py). A block of the kernel layout is 32 words per row; code
i of those words covers 32 consecutive columns, so each block is PPW dots of K = 32.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import (code_floats, decoded_block_fp16, decoded_fp16, dequant_slice, exact_dot, round_to,
                           zero_codes)
from .split_sum import store_tile


@triton.jit
def _x_tile(x_rows, perm_ptr, col, m_ok, K, HAS_PERM: tl.constexpr):
    """x at kernel columns `col` for the tile's rows (0 for padding columns)."""
    if HAS_PERM:
        src = tl.load(perm_ptr + col)
        xs = tl.load(x_rows + src[None, :], mask=m_ok[:, None] & (src[None, :] >= 0), other=0.0)
    else:
        xs = tl.load(x_rows + col[None, :], mask=m_ok[:, None] & (col[None, :] < K), other=0.0)
    return xs


@triton.jit
def _block_by_slices(acc, words, x_rows, s_ptr, z_ptr, perm_ptr, blk, rn, n_ok, m_ok, N, K,
                     BITS: tl.constexpr, GROUP: tl.constexpr, RUN: tl.constexpr, HAS_ZP: tl.constexpr,
                     HAS_PERM: tl.constexpr, HALF: tl.constexpr, SWAP_AB: tl.constexpr, BLOCK_N: tl.constexpr,
                     INTERPRET: tl.constexpr):
    """One kernel block as PPW dots of K = 32, one per code position. SWAP_AB: `words` and
    `acc` are [BLOCK_N, .], and acc += W x^T (the weight is wgmma's A operand, from
    registers), else [32, BLOCK_N] words and acc += x W^T (the weight through shared memory)."""
    PPW: tl.constexpr = 32 // BITS
    KB: tl.constexpr = 32 * PPW
    rj = tl.arange(0, 32)
    scale = tl.zeros([BLOCK_N], dtype=tl.float32)
    zero = tl.zeros([BLOCK_N], dtype=tl.float32)
    if not HALF:
        low, high = code_floats(words, BITS)
    for i in tl.static_range(PPW):
        if i % RUN == 0:  # a new group starts at this code position
            g_off = ((blk * KB + i * 32) // GROUP) * N
            scale = tl.load(s_ptr + g_off + rn, mask=n_ok, other=0.0).to(tl.float32)
            zero = zero_codes(z_ptr + g_off + rn, n_ok, HAS_ZP, BITS)
        xs = _x_tile(x_rows, perm_ptr, blk * KB + i * 32 + rj, m_ok, K, HAS_PERM)
        if SWAP_AB:  # per-row statistics broadcast along the 32 columns
            zero_b = zero[:, None]
            scale_b = scale[:, None]
        else:
            zero_b = zero[None, :]
            scale_b = scale[None, :]
        if HALF:  # fp16, the decoded weight
            w = decoded_fp16(words, i, (zero_b + 1024).to(tl.float16), scale_b.to(tl.float16), BITS)
        else:  # exact in fp32, rounded once: the decoded weight
            w = round_to(dequant_slice(low, high, i, zero_b, scale_b, BITS), xs.dtype, INTERPRET)
        if SWAP_AB:
            acc = exact_dot(w, tl.trans(xs), acc, INTERPRET)
        else:
            acc = exact_dot(xs, w, acc, INTERPRET)
    return acc


@triton.jit
def _whole_block_fp16(acc, words, x_rows, s_ptr, z_ptr, perm_ptr, blk, rn, n_ok, m_ok, N, K,
                      BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
                      INTERPRET: tl.constexpr):
    """One kernel block as one dot of K = KB over its decoded_block_fp16 tile."""
    PPW: tl.constexpr = 32 // BITS
    KB: tl.constexpr = 32 * PPW
    ri = tl.arange(0, PPW)
    s_idx = (((blk * KB + ri * 32) // GROUP) * N)[:, None] + rn[None, :]  # [PPW, BLOCK_N]
    s_ok = (ri[:, None] >= 0) & n_ok[None, :]
    scale16 = tl.load(s_ptr + s_idx, mask=s_ok, other=0.0)
    zero16 = (zero_codes(z_ptr + s_idx, s_ok, HAS_ZP, BITS) + 1024).to(tl.float16)
    w = decoded_block_fp16(words, zero16, scale16, BITS)
    xs = _x_tile(x_rows, perm_ptr, blk * KB + tl.arange(0, KB), m_ok, K, HAS_PERM)
    return exact_dot(xs, w, acc, INTERPRET)


@triton.jit
def grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row tile, column tile) of this program: programs walk output tiles GROUP_M rows of
    tiles at a time, so tiles running together share their weight columns in L2."""
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    first_m = (pid // width) * GROUP_M
    rows_here = tl.minimum(grid_m - first_m, GROUP_M)
    return first_m + (pid % width) % rows_here, (pid % width) // rows_here


@triton.jit
def dot_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, y_ptr, part_ptr, sem_ptr,
    M, N, K, NBLK, BLK_PER_SPLIT, SPLITS, stride_xm, stride_qn, stride_om, stride_ps,
    BITS: tl.constexpr, GROUP: tl.constexpr, RUN: tl.constexpr,
    HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr, HALF: tl.constexpr, WHOLE_BLOCK: tl.constexpr,
    SWAP_AB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
    PARTIAL: tl.constexpr, INTERPRET: tl.constexpr,
):
    # HALF (fp16 x and fp16 scales): the weight is dequantized in fp16 (decoded_fp16),
    # about 0.6-0.8 instructions per weight fewer than in fp32 (tests/hopper.py); same bits.
    # WHOLE_BLOCK (with HALF): a block's PPW slices are one [KB, BLOCK_N] tile and one
    # tl.dot instead of PPW dots of K = 32 (fewer again on mma.sync; the split-K configs).
    # SWAP_AB (tiled configs): accumulates the transposed tile, W x^T, so the dequantized
    # weight feeds wgmma from registers and never goes through shared memory.
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, 32)
    m_ok = rm < M
    n_ok = rn < N
    x_rows = x_ptr + rm[:, None] * stride_xm
    if SWAP_AB:
        w_ptrs = qw_ptr + rn[:, None] * stride_qn + rj[None, :]  # [BLOCK_N, 32]
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        w_ok = n_ok[:, None]
    else:
        w_ptrs = qw_ptr + rn[None, :] * stride_qn + rj[:, None]  # [32, BLOCK_N]: 128 contiguous bytes per row
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        w_ok = n_ok[None, :]
    lo = tl.program_id(1) * BLK_PER_SPLIT
    hi = tl.minimum(lo + BLK_PER_SPLIT, NBLK)
    for blk in range(lo, hi):
        words = tl.load(w_ptrs + blk * 32, mask=w_ok, other=0)
        if HALF and WHOLE_BLOCK and not SWAP_AB:
            acc = _whole_block_fp16(acc, words, x_rows, s_ptr, z_ptr, perm_ptr, blk, rn, n_ok, m_ok, N, K,
                                    BITS, GROUP, HAS_ZP, HAS_PERM, INTERPRET)
        else:
            acc = _block_by_slices(acc, words, x_rows, s_ptr, z_ptr, perm_ptr, blk, rn, n_ok, m_ok, N, K,
                                   BITS, GROUP, RUN, HAS_ZP, HAS_PERM, HALF, SWAP_AB, BLOCK_N, INTERPRET)
    if SWAP_AB:
        out_ok = n_ok[:, None] & m_ok[None, :]
        at = rm[None, :] * stride_om + rn[:, None]
    else:
        out_ok = m_ok[:, None] & n_ok[None, :]
        at = rm[:, None] * stride_om + rn[None, :]
    store_tile(acc, at, out_ok, y_ptr, part_ptr, sem_ptr, SPLITS, stride_ps, PARTIAL, INTERPRET)
