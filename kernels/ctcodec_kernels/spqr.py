"""SpQR matvec (M <= 16 rows of x) from the repacked layout of spqr_repack.py.

Per call, two launches:

1. `gather_x_kernel`: x in kernel column order (through kperm, which folds SpQR's
   permutation and the unit layout) as f32 [M, codes, NU], and the sum of x over each
   run of codes sharing a group, f32 [M, runs, NU]. n elements per row of x: the random
   gather happens once here instead of once per program of the matvec.
2. `spqr_matvec_kernel`: one program per BLOCK_M output rows walks all of K, BLOCK_U
   units per iteration, one plane of words at a time (16-byte loads). Per weight it does
   one AND and one FADD to make the exact code as a float (times a power of two that x
   carries; no int->float conversion, no code straddles a word) and one FMA per row of
   x for q·x. Per (row, group) it
   dequantizes s and z from the stat codes and the fp16 second order with the decoder's
   f32 operations and adds s·(Σq·x − z·Σx): the zero point is applied to the group's sum
   of x, not per weight. Outliers are additive f32 corrections delta·x[col] (CSR, after
   the dense loop). Everything accumulates in f32; the output is rounded once.

At M = 1 the kernel is bound by what it reads per weight: b bits of code, 8 / beta2 bits
of stat codes, 64 / (beta1·beta2) bits of second order (read once per program when
BLOCK_M divides beta1), and 48 bits per outlier; plus the f32 x from L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._runtime import interpreting, on_device, require_runtime
from .dequant_math import round_to
from .spqr_repack import ROW_PAD, PreparedSpqr, SpqrGeometry, geometry_of, prepare_spqr
from .tuning import Tuner

__all__ = ["PreparedSpqr", "SpqrConfig", "prepare_spqr", "spqr_matvec", "dequantize_spqr", "SPQR_TUNERS",
           "check_config", "geometry_of"]

MAX_ROWS = 16  # rows of x one launch takes (the weight is read once for all of them)
# Units per program of the x gathers ([codes, units] tiles of 1,024 elements at 32 codes):
# several small programs, since a gather is latency, not bandwidth.
GATHER_UNITS = 32


@dataclass(frozen=True)
class SpqrConfig:
    block_m: int  # output rows per program
    block_u: int  # units per iteration
    num_warps: int
    num_stages: int = 1
    outlier_chunk: int = 32  # outliers per row per step
    tensor_cores: bool = False  # spqr_dot.py: the weight decoded for tl.dot (x rows padded to 16)


# Per bucket of x rows (1, 2, 4, 8, 16). What makes a config cheap on Hopper (checked by
# compiling for sm_90, tests/test_spqr_matvec.py): the words tile [block_m, block_u]
# gives every thread 4 consecutive units (one 16-byte load per plane and row) and the
# x tile [MB, block_u] has fewer elements than the program has threads, so Triton issues
# each thread's own x loads in the words' layout instead of moving x through shared
# memory at every code; M = 1 configs then run ~4.5-5 instructions per weight, with no
# spills. From MB = 4 some configs take that conversion to keep tiles big enough.
# outlier_chunk: outliers per row read in one step (after the dense loop); 128 covers a 1%
# row of K <= 12800 in one step.
# From 4 rows the tuner also times the tensor-core kernel (spqr_dot.py): its cost per
# weight does not grow with the rows, the CUDA-core kernel's does (one FMA per row).
# One config: of those compiled for sm_90 (64x32, 64x16, 32x32, 32x64 with 4 warps, 64x32
# with 8) it is the only one with MMAs in its loop, no spills and the fewest instructions.
TENSOR_CORE_CONFIGS = [
    SpqrConfig(64, 32, 4, outlier_chunk=16, tensor_cores=True),  # 64 weight rows: one warpgroup's wgmma
]
SPQR_TUNERS = {
    1: Tuner("spqr-m1", [
        SpqrConfig(16, 128, 8, outlier_chunk=128),  # ~100 registers: 2 programs (16 warps) per SM
        SpqrConfig(16, 64, 4, outlier_chunk=64),  # ~107 registers: 4 programs (16 warps), one wave at 8192 rows
        SpqrConfig(16, 64, 4, outlier_chunk=128),  # one outlier step per 1% row; ~146 registers, 3 programs
        SpqrConfig(32, 64, 4, outlier_chunk=64),  # 2 rows x 4 units per thread; ~182 registers
        SpqrConfig(8, 64, 4, outlier_chunk=128),  # 1 row per thread, ~66 registers, many programs
    ]),
    2: Tuner("spqr-m2", [
        SpqrConfig(16, 64, 8, outlier_chunk=64),
        SpqrConfig(16, 32, 4, outlier_chunk=64),
        SpqrConfig(32, 32, 4, outlier_chunk=32),
    ]),
    4: Tuner("spqr-m4", [
        SpqrConfig(32, 32, 8, outlier_chunk=32),
        SpqrConfig(32, 16, 4, outlier_chunk=16),
        SpqrConfig(16, 32, 4, outlier_chunk=32),
        *TENSOR_CORE_CONFIGS,
    ]),
    8: Tuner("spqr-m8", [
        SpqrConfig(64, 16, 8, outlier_chunk=8),
        SpqrConfig(32, 32, 8, outlier_chunk=8),
        SpqrConfig(16, 32, 4, outlier_chunk=16),
        *TENSOR_CORE_CONFIGS,
    ]),
    16: Tuner("spqr-m16", [
        SpqrConfig(16, 32, 4, outlier_chunk=8),
        SpqrConfig(16, 16, 2, outlier_chunk=8),
        *TENSOR_CORE_CONFIGS,
    ]),
}
# Under the interpreter: small tiles, so that tests run several programs and iterations.
INTERPRETER_CONFIG = SpqrConfig(8, 16, 1, outlier_chunk=8)


def check_config(cfg: SpqrConfig) -> None:
    """ValueError for a config the kernel cannot take (it launches nothing)."""
    pow2 = lambda v: isinstance(v, int) and v >= 1 and v & (v - 1) == 0  # noqa: E731
    if not isinstance(cfg, SpqrConfig):
        raise ValueError(f"config must be a SpqrConfig, got {type(cfg).__name__}")
    if not (pow2(cfg.block_m) and cfg.block_m <= ROW_PAD):
        raise ValueError(f"block_m must be a power of two <= {ROW_PAD} (the rows' padding), got {cfg.block_m}")
    if not (pow2(cfg.block_u) and pow2(cfg.outlier_chunk) and pow2(cfg.num_warps) and cfg.num_warps <= 32):
        raise ValueError(f"block_u, outlier_chunk and num_warps must be powers of two: {cfg}")
    if not (isinstance(cfg.num_stages, int) and cfg.num_stages >= 1):
        raise ValueError(f"num_stages must be a positive integer: {cfg}")
    if cfg.tensor_cores and (cfg.block_m < 16 or cfg.block_u < 16):
        raise ValueError(f"tensor-core configs need block_m and block_u >= 16 (tl.dot's minimum): {cfg}")


@triton.jit
def _views(word, INTERPRET: tl.constexpr):
    """Two views of int32 words from which each code is one AND away from a float, both
    with 0x4B (the exponent byte of 2**23) as their top byte: `low` keeps bits 0..23 of
    the word, `high` has bits 16..31 at 0..15. The code's AND clears the rest of the
    exponent field. On the GPU each view is one byte permute (PRMT): made of logic ops,
    LLVM and ptxas fold them into every code's AND, which then needs two constants and
    costs an extra MOV per code."""
    if INTERPRET:
        low = (word & 0xFFFFFF) | 0x4B000000
        high = (word.to(tl.uint32, bitcast=True) >> 16).to(tl.int32, bitcast=True) | 0x4B000000
    else:
        low, high = tl.inline_asm_elementwise(
            "prmt.b32 $0, $2, 0x4B000000, 0x7210;\n\tprmt.b32 $1, $2, 0x4B000000, 0x7432;",
            "=r,=r,r", [word], dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
    return low, high


@triton.jit
def _scaled_code(low, high, POS: tl.constexpr, BITS: tl.constexpr):
    """q · 2**v, exactly, for the BITS-bit code at bit POS of the word `low`/`high` came
    from; v is its bit in the view it is read from (POS, or POS - 16 above bit
    23 - BITS). One AND with one immediate (LOP3) and one FADD: the float is
    2**23 + q·2**v. The kernels scale x by 2**-v instead (exact)."""
    MASK: tl.constexpr = (1 << BITS) - 1
    if POS + BITS <= 23:
        f = (low & (0x4B000000 | (MASK << POS))).to(tl.float32, bitcast=True)  # exponent and code bits
    else:
        f = (high & (0x4B000000 | (MASK << (POS - 16)))).to(tl.float32, bitcast=True)
    return f - 8388608.0


@triton.jit
def _unscale(v, POS: tl.constexpr, BITS: tl.constexpr):
    """v · 2**-v(POS) (exact): undoes _scaled_code's power of two."""
    if POS + BITS <= 23:
        r = v * (1.0 / (1 << POS))
    else:
        r = v * (1.0 / (1 << (POS - 16)))
    return r


@triton.jit
def _extra_bits(word, w: tl.constexpr, P: tl.constexpr, BITS: tl.constexpr):
    """The top 32 - P·BITS bits of word w of a unit, moved to their place in the string of
    the unit's extra codes."""
    SPARE: tl.constexpr = 32 - P * BITS
    return (word >> (P * BITS - w * SPARE)) & (((1 << SPARE) - 1) << (w * SPARE))


@triton.jit
def _dequant_stats(st, ss, sz, zs, zz, QS: tl.constexpr, QZ: tl.constexpr, INTERPRET: tl.constexpr):
    """(s, z) = (ss·(cs − sz), zs·(cz − zz)) in f32, with the decoder's roundings: st holds
    cz << QS | cs (< 2**16). The codes become floats with the 2**23 trick (st's two low
    bytes under the exponent byte 0x4B, one PRMT on the GPU); cz comes out times 2**QS and
    the FMA that scales it back and subtracts zz rounds once, like the decoder's subtraction."""
    if INTERPRET:
        v = (st & 0xFFFF) | 0x4B000000
    else:
        v = tl.inline_asm_elementwise("prmt.b32 $0, $1, 0x4B000000, 0x7510;", "=r,r", [st],
                                      dtype=tl.int32, is_pure=True, pack=1)
    cs = (v & (0x4B000000 | ((1 << QS) - 1))).to(tl.float32, bitcast=True) - 8388608.0
    cz = (v & (0x4B000000 | (((1 << QZ) - 1) << QS))).to(tl.float32, bitcast=True) - 8388608.0
    s = (cs - sz) * ss
    z = tl.fma(cz, 1.0 / (1 << QS), -zz) * zs
    return s, z


@triton.jit
def _ld(ptrs, ok, EVEN: tl.constexpr):
    """A load masked only when the tile can run past the end (other = 0)."""
    if EVEN:
        v = tl.load(ptrs)
    else:
        v = tl.load(ptrs, mask=ok, other=0)
    return v


@triton.jit
def gathered_x(x_ptr, kperm_ptr, row, M, NU, stride_xm, C: tl.constexpr, BLOCK_U: tl.constexpr):
    """(xv, c, u, u_ok): xv[c, u] = x[row, kperm[c, u]] in x's dtype for every code c of
    the program's BLOCK_U units (0 for padding and for rows >= M), with the index tiles.
    One 2-D load of kperm, then one of x: the kernels store only after every load is in
    flight. A loop of a load, a dependent load and a store per code serializes all of them
    (the stores may alias the loads), 2·C round trips to memory per call."""
    tl.static_assert((C & (C - 1)) == 0, "codes per unit must be a power of two")
    c = tl.arange(0, C)[:, None]
    u = (tl.program_id(0) * BLOCK_U + tl.arange(0, BLOCK_U))[None, :]
    u_ok = u < NU
    col = tl.load(kperm_ptr + c * NU + u, mask=u_ok, other=-1)
    live = (col >= 0) & (row + tl.zeros_like(col) < M)  # a tensor mask (the interpreter takes no scalar)
    xv = tl.load(x_ptr + row * stride_xm + col, mask=live, other=0.0)
    return xv, c, u, u_ok


@triton.jit
def _code_unscale(c, BITS: tl.constexpr, W: tl.constexpr, P: tl.constexpr):
    """2**-v(c) as f32 for a tensor of code positions c: _unscale's factor (exact, made
    from its exponent bits). The view rule is _scaled_code's, here on tensors (there the
    position is a constexpr that picks the view); if the two disagree, the matvec's
    products are off by a power of two (test_matvec_within_bound)."""
    pos = tl.where(c < W * P, (c % P) * BITS, (c - W * P) * BITS)
    v = tl.where(pos + BITS <= 23, pos, pos - 16)
    return ((127 - v) << 23).to(tl.float32, bitcast=True)


@triton.jit
def gather_x_kernel(x_ptr, kperm_ptr, xk_ptr, xs_ptr, M, NU, stride_xm,
                    BITS: tl.constexpr, W: tl.constexpr, P: tl.constexpr, E: tl.constexpr, RUN: tl.constexpr,
                    BLOCK_U: tl.constexpr):
    """xk[m, c, u] = x[m, kperm[c, u]] · 2**-v(c) (v: the bit of code c in its view, see
    _scaled_code) and xs[m, r, u] = the sum of x over the codes of run r, both f32; 0 for
    padding and for rows m >= M (the matvec reads MB rows unmasked)."""
    C: tl.constexpr = W * P + E
    RUNS: tl.constexpr = C // RUN
    row = tl.program_id(1)
    xv, c, u, u_ok = gathered_x(x_ptr, kperm_ptr, row, M, NU, stride_xm, C, BLOCK_U)
    xv = xv.to(tl.float32)
    tl.store(xk_ptr + (row * C + c) * NU + u, xv * _code_unscale(c, BITS, W, P), mask=u_ok)
    sums = tl.sum(tl.reshape(xv, [RUNS, RUN, BLOCK_U]), axis=1)
    r = tl.arange(0, RUNS)[:, None]
    tl.store(xs_ptr + (row * RUNS + r) * NU + u, sums, mask=u_ok)


@triton.jit
def spqr_matvec_kernel(
    xk_ptr, xs_ptr, x_ptr, codes_ptr, stats_ptr, so_ptr, o_off_ptr, o_col_ptr, o_delta_ptr, y_ptr,
    M, ROWS, stride_xm, stride_ym,
    NU: tl.constexpr, BITS: tl.constexpr, W: tl.constexpr, P: tl.constexpr, E: tl.constexpr,
    RUN: tl.constexpr, QS: tl.constexpr, QZ: tl.constexpr, BETA1: tl.constexpr, MB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_U: tl.constexpr, OCH: tl.constexpr, INTERPRET: tl.constexpr,
):
    # Every tile is 3-D [x rows, weight rows, units], built from pointers (no expand_dims
    # of loaded data, which would cost a layout conversion per code): the words
    # [1, BLOCK_M, BLOCK_U] set the layout (4 consecutive units per thread, one 16-byte
    # load per plane and row), and the loads of x, of its run sums and of a shared second
    # order ([MB or 1, 1, BLOCK_U], fewer elements than threads) are issued by each thread
    # for its own units in that layout, reused for all its rows. Rows are padded in the
    # repack and x rows in the gather, so only the units can need a mask (NU not a
    # multiple of BLOCK_U). NU is a compile-time constant: every load is a loop-carried
    # pointer plus an immediate offset.
    C: tl.constexpr = W * P + E
    RUNS: tl.constexpr = C // RUN
    EVEN_U: tl.constexpr = NU % BLOCK_U == 0
    SO_SHARED: tl.constexpr = BETA1 % BLOCK_M == 0  # the program's rows share one second-order tile
    SO_TILE: tl.constexpr = 4 * RUNS * NU  # second order: [tiles, 4, runs, NU]
    pid = tl.program_id(0)
    rn = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rm = tl.arange(0, MB)
    ru = tl.arange(0, BLOCK_U)
    row_ok = rn < ROWS
    m_ok = rm < M

    rn3 = rn[None, :, None]
    ru3 = ru[None, None, :]
    rm3 = rm[:, None, None]
    code_ptrs = codes_ptr + rn3 * (W * NU) + ru3  # [1, BLOCK_M, BLOCK_U]
    # byte loads would otherwise widen every same-shaped load to 16 elements per thread
    stat_ptrs = stats_ptr + tl.max_contiguous(rn3 * (RUNS * NU) + ru3, [1, 1, 4])
    x_ptrs = xk_ptr + rm3 * (C * NU) + ru3  # [MB, 1, BLOCK_U]
    xs_ptrs = xs_ptr + rm3 * (RUNS * NU) + ru3
    if SO_SHARED:
        so_ptrs = so_ptr + ((pid * BLOCK_M) // BETA1) * SO_TILE + ru3  # [1, 1, BLOCK_U]
    else:
        so_ptrs = so_ptr + tl.max_contiguous((rn3 // BETA1) * SO_TILE + ru3, [1, 1, 4])

    acc = tl.zeros([MB, BLOCK_M, BLOCK_U], dtype=tl.float32)
    for u0 in range(0, NU, BLOCK_U):
        u_ok = (u0 + ru3) < NU  # unused when EVEN_U
        low = tl.zeros([1, BLOCK_M, BLOCK_U], dtype=tl.int32)
        high = low
        extra = low
        e_low = low
        e_high = low
        part = tl.zeros([MB, BLOCK_M, BLOCK_U], dtype=tl.float32)
        for c in tl.static_range(C):
            if c < W * P:
                if c % P == 0:
                    word = _ld(code_ptrs + (c // P) * NU, u_ok, EVEN_U)
                    low, high = _views(word, INTERPRET)
                    if E > 0:
                        extra = extra | _extra_bits(word, c // P, P, BITS)
                        if c // P == W - 1:
                            e_low, e_high = _views(extra, INTERPRET)
                d = _scaled_code(low, high, (c % P) * BITS, BITS)
            else:
                d = _scaled_code(e_low, e_high, (c - W * P) * BITS, BITS)
            xc = _ld(x_ptrs + c * NU, u_ok, EVEN_U)  # x · 2**-v, [MB, 1, BLOCK_U]
            if c % RUN == 0:
                part = d * xc
            else:
                part = tl.fma(d, xc, part)
            if (c + 1) % RUN == 0:  # the run's group is complete: s·(Σ q·x − z·Σ x)
                r = c // RUN
                st = _ld(stat_ptrs + r * NU, u_ok, EVEN_U).to(tl.int32)
                so_p = so_ptrs + r * NU
                ss = _ld(so_p, u_ok, EVEN_U).to(tl.float32)
                sz = _ld(so_p + RUNS * NU, u_ok, EVEN_U).to(tl.float32)
                zs = _ld(so_p + 2 * RUNS * NU, u_ok, EVEN_U).to(tl.float32)
                zz = _ld(so_p + 3 * RUNS * NU, u_ok, EVEN_U).to(tl.float32)
                s, z = _dequant_stats(st, ss, sz, zs, zz, QS, QZ, INTERPRET)
                xsum = _ld(xs_ptrs + r * NU, u_ok, EVEN_U)  # [MB, 1, BLOCK_U]
                acc = tl.fma(s, tl.fma(-z, xsum, part), acc)
        code_ptrs += BLOCK_U
        stat_ptrs += BLOCK_U
        x_ptrs += BLOCK_U
        xs_ptrs += BLOCK_U
        so_ptrs += BLOCK_U

    # Outliers: f32 corrections delta·x[col], OCH per row at a time (CSR), after the dense
    # loop (before it they keep registers busy through the loop: fewer programs per SM).
    o_lo = tl.load(o_off_ptr + rn, mask=row_ok, other=0)
    o_cnt = tl.load(o_off_ptr + rn + 1, mask=row_ok, other=0) - o_lo
    ko = tl.arange(0, OCH)
    y_out = tl.zeros([MB, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, tl.max(o_cnt, axis=0), OCH):
        ok = (k0 + ko)[None, :] < o_cnt[:, None]
        idx = o_lo[:, None] + (k0 + ko)[None, :]
        col = tl.load(o_col_ptr + idx, mask=ok, other=0).to(tl.int32) & 0xFFFF
        dl = tl.load(o_delta_ptr + idx, mask=ok, other=0.0)
        xo = tl.load(x_ptr + rm[:, None, None] * stride_xm + col[None, :, :],
                     mask=m_ok[:, None, None] & (dl != 0.0)[None, :, :], other=0.0).to(tl.float32)
        y_out += tl.sum(xo * dl[None, :, :], axis=2)

    y = tl.sum(acc, axis=2) + y_out
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    tl.store(out, round_to(y, y_ptr.dtype.element_ty, INTERPRET), mask=m_ok[:, None] & row_ok[None, :])


@triton.jit
def _extra_views(word_ptrs, ok, NU, W: tl.constexpr, P: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
                 INTERPRET: tl.constexpr):
    """(e_low, e_high): the views of a [rows, units] tile's extra codes, gathered from the
    top bits of every word of each unit (zeros when there are none)."""
    extra = tl.zeros(ok.shape, dtype=tl.int32)
    e_low = extra
    e_high = extra
    if E > 0:
        for w in tl.static_range(W):
            extra = extra | _extra_bits(tl.load(word_ptrs + w * NU, mask=ok, other=0), w, P, BITS)
        e_low, e_high = _views(extra, INTERPRET)
    return e_low, e_high


@triton.jit
def _tile_stats(stats_ptr, so_ptr, rn, u, ok, r: tl.constexpr, NU, RUNS: tl.constexpr, BETA1: tl.constexpr,
                QS: tl.constexpr, QZ: tl.constexpr, INTERPRET: tl.constexpr):
    """(s, z) of run r for a tile of rows `rn` and units `u`, the decoder's f32 values."""
    st = tl.load(stats_ptr + rn[:, None] * (RUNS * NU) + r * NU + u[None, :], mask=ok, other=0)
    so_p = so_ptr + (rn // BETA1)[:, None] * (4 * RUNS * NU) + r * NU + u[None, :]
    ss = tl.load(so_p, mask=ok, other=0.0).to(tl.float32)
    sz = tl.load(so_p + RUNS * NU, mask=ok, other=0.0).to(tl.float32)
    zs = tl.load(so_p + 2 * RUNS * NU, mask=ok, other=0.0).to(tl.float32)
    zz = tl.load(so_p + 3 * RUNS * NU, mask=ok, other=0.0).to(tl.float32)
    return _dequant_stats(st.to(tl.int32), ss, sz, zs, zz, QS, QZ, INTERPRET)


@triton.jit
def _tile_code(word_ptrs, ok, low, high, e_low, e_high, c: tl.constexpr, NU, W: tl.constexpr, P: tl.constexpr,
               BITS: tl.constexpr, INTERPRET: tl.constexpr):
    """(q, low, high): code c of a tile as an exact f32, and the views of its word (loaded
    here when code c is the first of a plane)."""
    if c < W * P:
        if c % P == 0:
            low, high = _views(tl.load(word_ptrs + (c // P) * NU, mask=ok, other=0), INTERPRET)
        q = _unscale(_scaled_code(low, high, (c % P) * BITS, BITS), (c % P) * BITS, BITS)
    else:
        q = _unscale(_scaled_code(e_low, e_high, (c - W * P) * BITS, BITS), (c - W * P) * BITS, BITS)
    return q, low, high


@triton.jit
def spqr_dequant_kernel(
    codes_ptr, stats_ptr, so_ptr, kperm_ptr, out_ptr, ROWS, NU, stride_om,
    BITS: tl.constexpr, W: tl.constexpr, P: tl.constexpr, E: tl.constexpr, RUN: tl.constexpr,
    QS: tl.constexpr, QZ: tl.constexpr, BETA1: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_U: tl.constexpr, INTERPRET: tl.constexpr,
):
    """The dense weight (outliers excluded: the caller writes them) in input column
    order: w = s·(q − z) in f32 with the matvec's decode, rounded once to out's dtype."""
    C: tl.constexpr = W * P + E
    RUNS: tl.constexpr = C // RUN
    rn = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    u = tl.program_id(1) * BLOCK_U + tl.arange(0, BLOCK_U)
    u_ok = u < NU
    ok = (rn < ROWS)[:, None] & u_ok[None, :]
    word_ptrs = codes_ptr + rn[:, None] * (W * NU) + u[None, :]
    e_low, e_high = _extra_views(word_ptrs, ok, NU, W, P, E, BITS, INTERPRET)
    low = tl.zeros([BLOCK_M, BLOCK_U], dtype=tl.int32)
    high = low
    s = tl.zeros([BLOCK_M, BLOCK_U], dtype=tl.float32)
    z = s
    for c in tl.static_range(C):
        if c % RUN == 0:
            s, z = _tile_stats(stats_ptr, so_ptr, rn, u, ok, c // RUN, NU, RUNS, BETA1, QS, QZ, INTERPRET)
        q, low, high = _tile_code(word_ptrs, ok, low, high, e_low, e_high, c, NU, W, P, BITS, INTERPRET)
        w_val = (q - z) * s
        col = tl.load(kperm_ptr + c * NU + u, mask=u_ok, other=-1)
        tl.store(out_ptr + rn[:, None] * stride_om + col[None, :], round_to(w_val, out_ptr.dtype.element_ty, INTERPRET),
                 mask=(rn < ROWS)[:, None] & (col >= 0)[None, :])


def _constexprs(g: SpqrGeometry) -> dict:
    return dict(BITS=g.bits, W=g.words, P=g.per_word, E=g.extra, RUN=g.run, QS=g.qs, QZ=g.qz, BETA1=g.beta1)


def _check_prepared(w) -> None:
    if not isinstance(w, PreparedSpqr):
        raise ValueError(f"expected a PreparedSpqr (from prepare_spqr), got {type(w).__name__}")
    w.check()


def dequantize_spqr(w: PreparedSpqr, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The dense weight [m, n] in `dtype` (float16, bfloat16 or float32), equal bit for bit
    to ctcodec's decode: dense values from the kernels' decode, outliers replacing them,
    columns un-permuted, one rounding."""
    _check_prepared(w)
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    require_runtime(w.codes)
    g = w.geometry
    out = torch.empty(w.m, w.n, dtype=dtype, device=w.device)
    block_m, block_u = (8, 16) if interpreting() else (16, 64)
    grid = (triton.cdiv(w.m, block_m), triton.cdiv(w.nu, block_u))
    with on_device(w.codes):
        spqr_dequant_kernel[grid](
            w.codes, w.stats, w.second_order, w.kperm, out, w.m, w.nu, out.stride(0),
            **_constexprs(g), BLOCK_M=block_m, BLOCK_U=block_u, INTERPRET=interpreting(),
            num_warps=1 if interpreting() else 4,
            # No contraction into FMAs: `q - t * zs` fused would skip the rounding of z the
            # decoder does, and this kernel must equal the decoder bit for bit.
            **({} if interpreting() else {"enable_fp_fusion": False}),
        )
    if w.nnz:
        # output_size: the count is known on the host, so the device is not asked for it
        # (a sync per call on the prefill path, and no CUDA graph capture without it).
        rows = torch.repeat_interleave(torch.arange(w.m, device=w.device), w.o_offsets.diff().to(torch.int64),
                                       output_size=w.nnz)
        cols = w.o_cols.to(torch.int64) & 0xFFFF
        out[rows, cols] = w.o_values.to(dtype)
    return out


def gather_x(x2: torch.Tensor, w: PreparedSpqr, xk: torch.Tensor, xs: torch.Tensor, mb: int) -> None:
    """The matvec's first launch: xk [mb, codes, nu] and xs [mb, runs, nu] (f32) from the
    rows of x2 [rows <= mb, n] (see gather_x_kernel). Timed on its own by the bench."""
    g = w.geometry
    gather_x_kernel[(triton.cdiv(w.nu, GATHER_UNITS), mb)](
        x2, w.kperm, xk, xs, x2.shape[0], w.nu, x2.stride(0), BITS=g.bits, W=g.words, P=g.per_word, E=g.extra,
        RUN=g.run, BLOCK_U=GATHER_UNITS, num_warps=1 if interpreting() else 2)


def _launch(x2: torch.Tensor, w: PreparedSpqr, y: torch.Tensor, xk: torch.Tensor, xs: torch.Tensor,
            cfg: SpqrConfig, mb: int) -> None:
    if cfg.tensor_cores:
        from .spqr_dot import launch_dot  # imports this module's helpers: loaded on first use

        launch_dot(x2, w, y, cfg, interpreting())
        return
    g = w.geometry
    rows = x2.shape[0]
    gather_x(x2, w, xk, xs, mb)
    spqr_matvec_kernel[(triton.cdiv(w.m, cfg.block_m),)](
        xk, xs, x2, w.codes, w.stats, w.second_order, w.o_offsets, w.o_cols, w.o_delta, y,
        rows, w.m, x2.stride(0), y.stride(0), NU=w.nu,
        **_constexprs(g), MB=mb, BLOCK_M=cfg.block_m, BLOCK_U=cfg.block_u, OCH=cfg.outlier_chunk,
        INTERPRET=interpreting(), num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )


def _bucket(rows: int) -> int:
    return 1 << (rows - 1).bit_length()


def spqr_matvec(x: torch.Tensor, w: PreparedSpqr, *, config: SpqrConfig | None = None) -> torch.Tensor:
    """y = x @ W.T for x [..., n] in float16 or bfloat16 (few rows: 1 is the main case, up
    to 16 share each weight load; more go 16 at a time, re-reading the weight, so for
    many rows multiply by dequantize_spqr(w) instead). Returns [..., m] in x's dtype,
    accumulated in f32 and rounded once. The first call per shape times the configs
    (outside CUDA graph capture; during capture the first config is used)."""
    _check_prepared(w)
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be a float16 or bfloat16 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() == 0 or x.shape[-1] != w.n:
        raise ValueError(f"x has {x.shape[-1] if x.dim() else 0} columns, the weight {w.n}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device}, the weight on {w.device}")
    require_runtime(x)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, w.n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    total = x2.shape[0]
    y = torch.empty(total, w.m, dtype=x.dtype, device=x.device)
    if total == 0:
        return y.reshape(*lead, w.m)
    g = w.geometry
    with on_device(x):
        for r0 in range(0, total, MAX_ROWS):
            xs_, ys_ = x2[r0:r0 + MAX_ROWS], y[r0:r0 + MAX_ROWS]
            rows = xs_.shape[0]
            mb = _bucket(rows)
            xk = torch.empty(mb, g.codes, w.nu, dtype=torch.float32, device=x.device)
            xsum = torch.empty(mb, g.runs, w.nu, dtype=torch.float32, device=x.device)
            if config is not None:
                check_config(config)
                cfg = config
            elif interpreting():
                cfg = INTERPRETER_CONFIG
            else:
                key = (mb, w.m, w.nu, g, x.dtype, x.device.index)
                cfg = SPQR_TUNERS[mb].pick(key, lambda c: _launch(xs_, w, ys_, xk, xsum, c, mb))
            _launch(xs_, w, ys_, xk, xsum, cfg, mb)
    return y.reshape(*lead, w.m)
