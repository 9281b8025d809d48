"""The tensor-core GEMV: y = x W^T for one row of x (and, over row tiles, up to 32), fp16
x or bf16 x with 4-bit codes, with fewer instructions per weight than the CUDA-core GEMV
(gemv.py): a memory-bound loop has to issue them as fast as HBM delivers words.

Per word the work is bit tricks on whole registers, two weights at a time:
- `(word >> s) & 0x000F000F | 0x64006400` is the fp16 pair (1024 + q, 1024 + q') of codes
  p and p + PPW/2 in one LOP3; the codes at bit 4 of each half need no shift at all
  (mask 0x00F000F0 gives 1024 + 16 q, and one FMA by 1/16 lands on q - 8 exactly);
- one packed HADD2 / HFMA2 subtracts 1024 + 2**(b-1), which leaves q - 2**(b-1)
  exactly (small integers, exact in fp16);
- wgmma multiplies those by x in fp32. The products are exact, as in the CUDA-core GEMV.

The pair sits in one register with its two codes as adjacent k, which is what an MMA's A
fragment holds, so the k order is chosen to match the fragment (see _k_order) and x is
read in that order instead of moving weights between threads. The scale is not applied
per weight: the B operand has one column of x per (row of x, scale group of the block),
x where the code is in that group and 0 elsewhere, so the MMA gives each group's partial
sum of (q - 2**(b-1)) x on its own, and the epilogue multiplies those by the scales in
fp32. That is the CUDA-core GEMV's arithmetic (exact products, the scale once per partial
sum), so both are checked against the same bound. Stored zero points are applied there
too, as (zp - 2**(b-1)) times the group's sum of x (a subtraction the CUDA-core GEMV does
not round; within the bound in the tests, not proven to be in general): a per-row zero pair broadcast over the
tile compiled to a byte permute per register (sm_90: 3.8-4.2 instructions per weight,
with spills, against 3.3-4.3).

bf16 has 7 fraction bits: 0x4300 | q is 128 + q for 4-bit codes, with a shift per pair
(the code at bit 4 would reach the exponent); 8-bit codes do not fit (CUDA-core GEMV).

Compiled for sm_90, the symmetric 4-bit main loop costs 2.3-3.0 instructions per weight
(bf16: 2.5) where the CUDA-core GEMV costs 4.2-5.3 (tests/hopper.py). Few output rows
give few programs, so K is also split across programs, as in the split-K kernel, the last
program of each tile adding the partials (split_sum.py).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import exact_dot, zero_codes
from .split_sum import store_tile


@triton.jit
def _halves(t, DT: tl.constexpr):
    """The two 16-bit halves of int32 `t` as DT (fp16 or bf16), a trailing pair axis (the
    same register on the GPU)."""
    lo = t.to(tl.int16).to(DT, bitcast=True)
    hi = (t >> 16).to(tl.int16).to(DT, bitcast=True)
    return tl.join(lo, hi)


@triton.jit
def _pair(words, p: tl.constexpr, ZERO: tl.constexpr, BITS: tl.constexpr, BF16: tl.constexpr,
          INTERPRET: tl.constexpr):
    """q - ZERO of codes p (low half) and p + PPW/2 (high half) of every word, exact in
    fp16 (bf16 for BF16, 4-bit only), as a trailing axis of 2."""
    if BF16:  # 0x4300 | q is the bf16 128 + q (7 fraction bits: 4-bit codes only)
        v = _halves(((words >> (p * 4)) & 0x000F000F) | 0x43004300, tl.bfloat16)
        if INTERPRET:  # no bf16 arithmetic there; exact either way (small integers)
            d = (v.to(tl.float32) - (ZERO + 128.0)).to(tl.bfloat16)
        else:
            d = v - (ZERO + 128.0)
    elif BITS == 4 and p % 2 == 1:  # the code at bit 4 of each half: 1024 + 16 q, no shift
        v = _halves(((words >> ((p - 1) * 4)) & 0x00F000F0) | 0x64006400, tl.float16)
        d = tl.fma(v, 0.0625, -(ZERO + 64.0))
    else:
        mask: tl.constexpr = ((1 << BITS) - 1) * 0x00010001
        d = _halves(((words >> (p * BITS)) & mask) | 0x64006400, tl.float16) - (ZERO + 1024.0)
    return d


@triton.jit
def _k_order(KB: tl.constexpr, HALFW: tl.constexpr):
    """For each k of a block's dot (the order _block_tile builds), the code position and
    the word it comes from. k = p*64 + ch*16 + sec*8 + c*2 + h holds code p + h*HALFW of
    word c*8 + ch*2 + sec: in each 16-wide k chunk a thread's MMA fragment then holds the
    pairs (k, k+1) and (k+8, k+9), i.e. the two halves of one register of words it loaded."""
    rk = tl.arange(0, KB)
    rem = rk % 64
    code = rk // 64 + (rem % 2) * HALFW
    word = ((rem % 8) // 2) * 8 + (rem // 16) * 2 + (rem % 16) // 8
    return code, word


@triton.jit
def _block_tile(words, BITS: tl.constexpr, BF16: tl.constexpr, INTERPRET: tl.constexpr):
    """The block's q - 2**(BITS-1) as one [BLOCK_N, KB] fp16 (bf16) tile in _k_order."""
    MID: tl.constexpr = 1 << (BITS - 1)
    BLOCK_N: tl.constexpr = words.shape[0]
    w4 = tl.reshape(words, (BLOCK_N, 4, 4, 2))  # word j = c*8 + ch*2 + sec -> [., c, ch, sec]
    p0 = _pair(w4, 0, MID, BITS, BF16, INTERPRET)
    p1 = _pair(w4, 1, MID, BITS, BF16, INTERPRET)
    if BITS == 4:
        tile = _arrange(p0, p1, _pair(w4, 2, MID, BITS, BF16, INTERPRET), _pair(w4, 3, MID, BITS, BF16, INTERPRET), BITS)
    else:
        tile = _arrange(p0, p1, p0, p1, BITS)
    return tile


@triton.jit
def _arrange(p0, p1, p2, p3, BITS: tl.constexpr):
    """The pairs of code positions 0..PPW/2 - 1 (_pair's shape; p2 and p3 unused for
    8 bits) as one [BLOCK_N, KB] tile in _k_order."""
    BLOCK_N: tl.constexpr = p0.shape[0]
    KB: tl.constexpr = 32 * (32 // BITS)
    if BITS == 4:
        tile = tl.permute(tl.join(tl.join(p0, p1), tl.join(p2, p3)), (0, 6, 5, 2, 3, 1, 4))  # [., c, ch, sec, h, a, b]: p = a + 2b
    else:
        tile = tl.permute(tl.join(p0, p1), (0, 5, 2, 3, 1, 4))  # [., c, ch, sec, h, p]
    return tl.reshape(tile, (BLOCK_N, KB))


@triton.jit
def _x_tile(x_ptr, perm_ptr, rm_c, col, K, stride_xm, BLOCK_M: tl.constexpr, HAS_PERM: tl.constexpr):
    """x at kernel columns `col` [KB] (0 for padding columns): [KB] for one row of x, else
    [KB, COLS] with column c holding row rm_c[c] (a real row: B's columns never mix, so
    those of rows past M only need to be finite)."""
    if HAS_PERM:
        src = tl.load(perm_ptr + col)  # -1 = padding
        ok = src >= 0
    else:
        src = col
        ok = col < K
    if BLOCK_M == 1:
        xv = tl.load(x_ptr + src, mask=ok, other=0.0)
    else:
        xv = tl.load(x_ptr + rm_c[None, :] * stride_xm + src[:, None], mask=ok[:, None], other=0.0)
    return xv


@triton.jit
def gemv_tc_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, y_ptr, part_ptr, sem_ptr,
    M, N, K, NBLK, BLK_PER_SPLIT, SPLITS, stride_xm, stride_qn, stride_om, stride_ps,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BF16: tl.constexpr, PARTIAL: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    # BF16 (4-bit only): x, the tile and the MMA in bf16; the codes by the bf16 magic 128.
    # BLOCK_M rows of x (program_id 2 walks row tiles): B has a column per (row, group).
    XT: tl.constexpr = tl.bfloat16 if BF16 else tl.float16
    PPW: tl.constexpr = 32 // BITS
    HALFW: tl.constexpr = PPW // 2
    KB: tl.constexpr = 32 * PPW
    RUN: tl.constexpr = min(PPW, GROUP // 32)  # code positions sharing a scale row
    NG: tl.constexpr = PPW // RUN  # scale groups per block
    COLS: tl.constexpr = max(16, BLOCK_M * NG)  # tl.dot's N is at least 16
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    rc = tl.arange(0, COLS)
    c_row = rc // NG  # B column c: row c // NG of the tile's rows, group c % NG of the block
    c_grp = rc % NG
    rm_c = tl.program_id(2) * BLOCK_M + c_row
    c_ok = (c_row < BLOCK_M) & (rm_c < M)
    rm_c = tl.minimum(rm_c, M - 1)
    w_ptrs = qw_ptr + rn[:, None] * stride_qn + tl.arange(0, 32)[None, :]
    code, word = _k_order(KB, HALFW)
    xcol = code * 32 + word  # kernel column of each k
    group_col = code // RUN  # the scale group (within the block) of each k
    s_ok = n_ok[:, None] & c_ok[None, :]
    acc = tl.zeros([BLOCK_N, COLS], dtype=tl.float32)
    lo = tl.program_id(1) * BLK_PER_SPLIT
    hi = tl.minimum(lo + BLK_PER_SPLIT, NBLK)
    for blk in range(lo, hi):
        words = tl.load(w_ptrs + blk * 32, mask=n_ok[:, None], other=0)
        w = _block_tile(words, BITS, BF16, INTERPRET)
        xv = _x_tile(x_ptr, perm_ptr, rm_c, blk * KB + xcol, K, stride_xm, BLOCK_M, HAS_PERM)
        if BLOCK_M == 1:
            if HAS_ZP:
                xt = tl.where(group_col[:, None] == c_grp[None, :], xv[:, None], 0.0).to(XT)
            else:  # built transposed: fewer selects on sm_90 (2.42 instructions per weight, not 2.60)
                xt = tl.trans(tl.where(c_grp[:, None] == group_col[None, :], xv[None, :], 0.0).to(XT))
        else:
            xt = tl.where(group_col[:, None] == c_grp[None, :], xv, 0.0).to(XT)
        part = exact_dot(w, xt, tl.zeros([BLOCK_N, COLS], dtype=tl.float32), INTERPRET)
        g = (blk * KB + c_grp * (RUN * 32)) // GROUP
        s_idx = g[None, :] * N + rn[:, None]
        if HAS_ZP:  # the tile was q - MID: subtract (zp - MID) times the group's sum of x
            # The sums as an MMA of ones (every row the same): a tl.sum over the tile
            # compiled to more instructions and spilled (sm_90).
            ones = tl.full([16, KB], 1.0, XT)
            xsum = tl.max(exact_dot(ones, xt, tl.zeros([16, COLS], dtype=tl.float32), INTERPRET), axis=0)
            part -= (zero_codes(z_ptr + s_idx, s_ok, HAS_ZP, BITS) - (1 << (BITS - 1))) * xsum[None, :]
        s = tl.load(s_ptr + s_idx, mask=s_ok, other=0.0)
        acc = tl.fma(part, s.to(tl.float32), acc)
    if BLOCK_M == 1:
        y = tl.sum(acc, axis=1)
        at = rn
        y_ok = n_ok
    else:  # the groups of each row added up: [BLOCK_N, COLS // NG] rows of x
        y = tl.sum(tl.reshape(acc, (BLOCK_N, COLS // NG, NG)), axis=2)
        rm = tl.program_id(2) * BLOCK_M + tl.arange(0, COLS // NG)
        at = rm[None, :] * stride_om + rn[:, None]
        y_ok = n_ok[:, None] & ((rm < M) & (tl.arange(0, COLS // NG) < BLOCK_M))[None, :]
    store_tile(y, at, y_ok, y_ptr, part_ptr, sem_ptr, SPLITS, stride_ps, PARTIAL, INTERPRET)
