"""SpQR times a batch of x rows on tensor cores (the `tensor_cores` configs of
spqr_matvec, 2 to 16 rows): the weight is decoded in registers and multiplied with
tl.dot, instead of one FMA per weight and row on CUDA cores.

Per call, two launches:

1. `gather_x_raw_kernel`: x in kernel column order, in x's dtype, [16, codes, NU]: row m,
   code c, unit u is x[m, kperm[c, u]] (0 for padding and for rows past M, so the dot's 16
   rows need no mask). The random gather happens once here.
2. `spqr_dot_kernel`: one program per BLOCK_M weight rows walks all units, BLOCK_U at a
   time. For each code position c it decodes the [BLOCK_M, BLOCK_U] weights with
   spqr_dequant_kernel's exact f32 operations, rounds them once to x's dtype (ctcodec's
   decode), and accumulates W_c x_cᵀ in f32 with the weight as the MMA's A operand
   (registers). Outliers then add delta·x[col] as in the matvec (CSR, after the loop).
   The launch turns off FP contraction, as spqr_dequant_kernel's does, so the decoded
   weight is the decoder's bit for bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import exact_dot, round_to
from .spqr import GATHER_UNITS, _extra_views, _tile_code, _tile_stats, gathered_x

DOT_ROWS = 16  # x rows of the dot (tl.dot needs 16): fewer rows are padded with zeros


@triton.jit
def gather_x_raw_kernel(x_ptr, kperm_ptr, xr_ptr, M, NU, stride_xm, C: tl.constexpr, BLOCK_U: tl.constexpr):
    """xr[m, c, u] = x[m, kperm[c, u]] in x's dtype; 0 for padding and rows m >= M."""
    row = tl.program_id(1)
    xv, c, u, u_ok = gathered_x(x_ptr, kperm_ptr, row, M, NU, stride_xm, C, BLOCK_U)
    tl.store(xr_ptr + (row * C + c) * NU + u, xv, mask=u_ok)


@triton.jit
def spqr_dot_kernel(
    xr_ptr, x_ptr, codes_ptr, stats_ptr, so_ptr, o_off_ptr, o_col_ptr, o_delta_ptr, y_ptr,
    M, ROWS, NU, stride_xm, stride_ym,
    BITS: tl.constexpr, W: tl.constexpr, P: tl.constexpr, E: tl.constexpr, RUN: tl.constexpr,
    QS: tl.constexpr, QZ: tl.constexpr, BETA1: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_U: tl.constexpr, OCH: tl.constexpr, INTERPRET: tl.constexpr,
):
    C: tl.constexpr = W * P + E
    RUNS: tl.constexpr = C // RUN
    MB: tl.constexpr = 16
    rn = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rm = tl.arange(0, MB)
    ru = tl.arange(0, BLOCK_U)
    row_ok = rn < ROWS
    m_ok = rm < M
    acc = tl.zeros([BLOCK_M, MB], dtype=tl.float32)  # (W xᵀ): the weight is the A operand
    for u0 in range(0, NU, BLOCK_U):
        u = u0 + ru
        u_ok = u < NU
        ok = row_ok[:, None] & u_ok[None, :]
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
            xc = tl.load(xr_ptr + (rm[:, None] * C + c) * NU + u[None, :], mask=u_ok[None, :], other=0.0)
            w_val = round_to((q - z) * s, xc.dtype, INTERPRET)  # the decoded weight
            acc = exact_dot(w_val, tl.trans(xc), acc, INTERPRET)

    # Outliers: f32 corrections delta·x[col], OCH per row at a time (CSR), as in the matvec.
    o_lo = tl.load(o_off_ptr + rn, mask=row_ok, other=0)
    o_cnt = tl.load(o_off_ptr + rn + 1, mask=row_ok, other=0) - o_lo
    ko = tl.arange(0, OCH)
    for k0 in range(0, tl.max(o_cnt, axis=0), OCH):
        ok = (k0 + ko)[None, :] < o_cnt[:, None]
        idx = o_lo[:, None] + (k0 + ko)[None, :]
        col = tl.load(o_col_ptr + idx, mask=ok, other=0).to(tl.int32) & 0xFFFF
        dl = tl.load(o_delta_ptr + idx, mask=ok, other=0.0)
        xo = tl.load(x_ptr + rm[None, None, :] * stride_xm + col[:, :, None],
                     mask=m_ok[None, None, :] & (dl != 0.0)[:, :, None], other=0.0).to(tl.float32)
        acc += tl.sum(xo * dl[:, :, None], axis=1)
    out = y_ptr + rm[None, :] * stride_ym + rn[:, None]
    tl.store(out, round_to(acc, y_ptr.dtype.element_ty, INTERPRET), mask=row_ok[:, None] & m_ok[None, :])


def launch_dot(x2, w, y, cfg, interp: bool) -> None:
    """y = x2 @ W.T for up to 16 rows of x2 through spqr_dot_kernel (cfg.tensor_cores)."""
    import torch

    g = w.geometry
    rows = x2.shape[0]
    xr = torch.empty(DOT_ROWS, g.codes, w.nu, dtype=x2.dtype, device=x2.device)
    gather_x_raw_kernel[(triton.cdiv(w.nu, GATHER_UNITS), DOT_ROWS)](
        x2, w.kperm, xr, rows, w.nu, x2.stride(0), C=g.codes, BLOCK_U=GATHER_UNITS, num_warps=1 if interp else 2)
    spqr_dot_kernel[(triton.cdiv(w.m, cfg.block_m),)](
        xr, x2, w.codes, w.stats, w.second_order, w.o_offsets, w.o_cols, w.o_delta, y,
        rows, w.m, w.nu, x2.stride(0), y.stride(0),
        BITS=g.bits, W=g.words, P=g.per_word, E=g.extra, RUN=g.run, QS=g.qs, QZ=g.qz, BETA1=g.beta1,
        BLOCK_M=cfg.block_m, BLOCK_U=cfg.block_u, OCH=cfg.outlier_chunk, INTERPRET=interp,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        # No contraction into FMAs: the decoded weight must be the decoder's bit for bit.
        **({} if interp else {"enable_fp_fusion": False}),
    )
