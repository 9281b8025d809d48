"""The dense weight the tensor-core paths multiply by, materialized on the device: dot_kernel's
fp32 dequant_slice and single rounding (its fp16 variant gives the same bits), so it equals ctcodec's decode
(when the scale dtype is the output dtype) and is what tests compare the paths against."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import interpreting, on_device, require_runtime
from .dequant_math import code_floats, dequant_slice, round_to, zero_codes
from .repack import PreparedWeight


@triton.jit
def dequant_kernel(
    qw_ptr, s_ptr, z_ptr, out_ptr, N, stride_qn, stride_on,
    BITS: tl.constexpr, GROUP: tl.constexpr, RUN: tl.constexpr, HAS_ZP: tl.constexpr,
    BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr,
):
    PPW: tl.constexpr = 32 // BITS
    KB: tl.constexpr = 32 * PPW
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    blk = tl.program_id(1)
    rj = tl.arange(0, 32)
    n_ok = rn < N
    words = tl.load(qw_ptr + rn[:, None] * stride_qn + blk * 32 + rj[None, :], mask=n_ok[:, None], other=0)
    scale = tl.zeros([BLOCK_N], dtype=tl.float32)
    zero = tl.zeros([BLOCK_N], dtype=tl.float32)
    low, high = code_floats(words, BITS)
    for i in tl.static_range(PPW):
        if i % RUN == 0:
            g_off = ((blk * KB + i * 32) // GROUP) * N
            scale = tl.load(s_ptr + g_off + rn, mask=n_ok, other=0.0).to(tl.float32)
            zero = zero_codes(z_ptr + g_off + rn, n_ok, HAS_ZP, BITS)
        w = dequant_slice(low, high, i, zero[:, None], scale[:, None], BITS)
        out = out_ptr + rn[:, None] * stride_on + blk * KB + i * 32 + rj[None, :]
        tl.store(out, round_to(w, out_ptr.dtype.element_ty, INTERPRET), mask=n_ok[:, None])


def dequantize(w: PreparedWeight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The dense weight [n, k] in `dtype` (default: the scale dtype), in the checkpoint's
    column order."""
    require_runtime(w.qweight)
    dtype = dtype or w.scales.dtype
    kernel_cols = torch.empty(w.n, w.k_padded, dtype=dtype, device=w.device)
    block_n = 32
    grid = (triton.cdiv(w.n, block_n), w.blocks)
    dummy = w.qweight
    with on_device(w.qweight):
        dequant_kernel[grid](
            w.qweight, w.scales, w.zeros if w.zeros is not None else dummy, kernel_cols,
            w.n, w.qweight.stride(0), kernel_cols.stride(0),
            BITS=w.num_bits, GROUP=w.group, RUN=w.run, HAS_ZP=w.zeros is not None, BLOCK_N=block_n,
            INTERPRET=interpreting(),
            num_warps=1 if interpreting() else 4,
        )
    if w.perm is None:
        return kernel_cols[:, : w.k].contiguous()
    dense = torch.empty(w.n, w.k, dtype=dtype, device=w.device)
    real = w.perm >= 0
    dense[:, w.perm[real].long()] = kernel_cols[:, real]
    return dense
