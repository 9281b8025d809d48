"""The compressed matmuls as torch custom ops (`torch.ops.ctcodec.*`), so that
`torch.compile(fullgraph=True)` traces a model through its compressed layers without a
graph break and CUDA graphs capture a whole step: each op has a schema, a fake (meta)
implementation giving the output's shape, and real implementations per device.

- `pack_linear`: x Wᵀ with W in compressed-tensors' pack-quantized layout, as stored.
  Any device: decoded exactly as ctcodec decodes (`unpack.py`), multiplied in x's dtype.
- `kernel_linear`: x Wᵀ with W in ctcodec-kernels' layout (`prepare`, done once at load
  time). CUDA: the Triton kernels (GEMV / split-K / tiled by M). Elsewhere: the same
  weight decoded in torch from that layout (equal to `pack_linear`'s bit for bit), so
  the graph a CPU test compiles is the one a GPU runs.
- `spqr_linear`: x Wᵀ with W a SpQR weight's stored parts. Any device: ctcodec's exact
  decode. CUDA: the SpQR kernels, with the repacked form made at load time.

In eager mode layers call the implementations directly (`call_*`): the dispatcher's way
through a Python custom op costs more host time than the launch path.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch

from .unpack import dequantize_pack, dequantize_spqr

# The kernels' group size for per-channel weights (ctcodec_kernels.repack.CHANNEL_GROUP):
# larger than any row, so every column is in group 0.
_CHANNEL_GROUP = 1 << 30


@torch.library.custom_op("ctcodec::pack_linear", mutates_args=())
def pack_linear(x: torch.Tensor, weight_packed: torch.Tensor, weight_scale: torch.Tensor,
                weight_zero_point: Optional[torch.Tensor], weight_g_idx: Optional[torch.Tensor],
                num_bits: int, group_size: int, n: int, k: int) -> torch.Tensor:
    """x Wᵀ for a pack-quantized W [n, k]; `group_size` 0 means per channel."""
    return _pack_linear_body(x, weight_packed, weight_scale, weight_zero_point, weight_g_idx, num_bits, group_size,
                             n, k)


def _pack_linear_body(x, weight_packed, weight_scale, weight_zero_point, weight_g_idx, num_bits, group_size, n, k):
    w = dequantize_pack(weight_packed, weight_scale, num_bits, (n, k), weight_zero_point, weight_g_idx,
                        group_size or None)
    return torch.nn.functional.linear(x, w.to(x.dtype))


@pack_linear.register_fake
def _pack_linear_shape(x, weight_packed, weight_scale, weight_zero_point, weight_g_idx, num_bits, group_size, n, k):
    return x.new_empty((*x.shape[:-1], n))


def dequantize_kernel_layout(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                             perm: torch.Tensor | None, num_bits: int, group: int, n: int,
                             k: int) -> torch.Tensor:
    """W [n, k] in the scales' dtype from the kernels' layout: word j of block b holds, at
    bits i·num_bits, the code of kernel column b·32·(32/num_bits) + 32·i + j; kernel column
    c has scale row c // group and takes x's column perm[c] (-1: padding)."""
    per_word = 32 // num_bits
    blocks = qweight.shape[1] // 32
    shifts = (torch.arange(per_word, device=qweight.device) * num_bits).view(1, 1, per_word, 1)
    words = qweight.to(torch.int64).view(n, blocks, 1, 32) & 0xFFFFFFFF
    codes = ((words >> shifts) & ((1 << num_bits) - 1)).reshape(n, blocks * per_word * 32)
    rows = torch.arange(codes.shape[1], device=qweight.device) // group
    zero = zeros.to(torch.int64)[rows].t() if zeros is not None else 1 << (num_bits - 1)
    w = ((codes - zero).float() * scales.float()[rows].t()).to(scales.dtype)
    if perm is None:
        return w[:, :k].contiguous()
    dense = w.new_zeros(n, k)
    real = perm >= 0
    dense[:, perm[real].long()] = w[:, real]
    return dense


def _kernel_linear_reference(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k):
    w = dequantize_kernel_layout(qweight, scales, zeros, perm, num_bits, group, n, k)
    return torch.nn.functional.linear(x, w.to(x.dtype))


def _kernel_linear_cuda(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k):
    import ctcodec_kernels

    # The kernels take half precision, and need Triton (the layout itself is plain torch).
    if x.dtype not in (torch.float16, torch.bfloat16) or not (ctcodec_kernels.available()
                                                                or ctcodec_kernels.interpreting()):
        return _kernel_linear_reference(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k)
    from ctcodec_kernels import PreparedWeight, quant_matmul

    return quant_matmul(x, PreparedWeight(qweight, scales, zeros, perm, num_bits, n, k, group, x_order))


@torch.library.custom_op("ctcodec::kernel_linear", mutates_args=())
def kernel_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                  perm: Optional[torch.Tensor], x_order: Optional[torch.Tensor], num_bits: int, group: int, n: int,
                  k: int) -> torch.Tensor:
    """x Wᵀ for W in the kernels' layout (off CUDA: decoded in torch, then multiplied).
    `x_order` is PreparedWeight.x_order (made at load time; only some kernels read it)."""
    return _kernel_linear_reference(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k)


@kernel_linear.register_fake
def _kernel_linear_shape(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k):
    return x.new_empty((*x.shape[:-1], n))


kernel_linear.register_kernel("cuda")(_kernel_linear_cuda)


def call_kernel_linear(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k):
    """The op inside torch.compile (one opaque node, captured by CUDA graphs); in eager
    mode its implementation called directly: the dispatcher's way through a Python custom
    op costs more host time per call than the whole launch path (benches/python_overhead.py)."""
    if torch.compiler.is_compiling():
        return torch.ops.ctcodec.kernel_linear.default(x, qweight, scales, zeros, perm, x_order, num_bits, group,
                                                       n, k)
    impl = _kernel_linear_cuda if x.is_cuda else _kernel_linear_reference
    return impl(x, qweight, scales, zeros, perm, x_order, num_bits, group, n, k)


def call_pack_linear(x, weight_packed, weight_scale, weight_zero_point, weight_g_idx, num_bits, group_size, n, k):
    """`pack_linear` the same way: the op when compiling, its body in eager mode."""
    args = (x, weight_packed, weight_scale, weight_zero_point, weight_g_idx, num_bits, group_size, n, k)
    if torch.compiler.is_compiling():
        return torch.ops.ctcodec.pack_linear.default(*args)
    return _pack_linear_body(*args)




# SpQR: the op takes the stored parts (one outlier layout's pair present, the other None).
SPQR_ARGS = ("weight_codes", "weight_stats", "weight_second_order", "weight_perm", "weight_shape",
             "weight_outlier_row_offsets", "weight_outlier_col_vals", "weight_outlier_tile_offsets",
             "weight_outlier_tile_col_vals")


def _spqr_parts(tensors) -> dict[str, torch.Tensor]:
    return {name: t for name, t in zip(SPQR_ARGS, tensors) if t is not None}


def _spqr_linear_reference(x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype):
    w = dequantize_spqr(_spqr_parts(tensors), bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype)
    return torch.nn.functional.linear(x, w.to(x.dtype))


# The kernels' repacked form of each SpQR weight on a GPU, made once (`prepare_spqr_kernels`,
# at load time) and found by the address of its codes: a host-side lookup, no device work.
# Weak values: the module owns the prepared form; when it goes, so does the entry.
_PREPARED_SPQR: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()


def prepare_spqr_kernels(tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits):
    """The kernels' form of one SpQR weight, registered for the op's CUDA implementation;
    the caller keeps the returned object alive."""
    from ctcodec_kernels import prepare_spqr

    prepared = prepare_spqr(_spqr_parts(tensors), {"bits": bits, "beta1": beta1, "beta2": beta2,
                                                    "qq_scale_bits": qq_scale_bits, "qq_zero_bits": qq_zero_bits})
    _PREPARED_SPQR[tensors[0].data_ptr()] = prepared
    return prepared


def _spqr_linear_cuda(x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype):
    prepared = _PREPARED_SPQR.get(tensors[0].data_ptr())
    if prepared is None or x.dtype not in (torch.float16, torch.bfloat16):
        return _spqr_linear_reference(x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype)
    import ctcodec_kernels as ck

    if x.numel() // max(x.shape[-1], 1) > 16:  # many rows: one dense weight beats re-reading tiles
        return torch.nn.functional.linear(x, ck.dequantize_spqr(prepared, x.dtype))
    return ck.spqr_matvec(x, prepared)


@torch.library.custom_op("ctcodec::spqr_linear", mutates_args=())
def spqr_linear(x: torch.Tensor, tensors: list[Optional[torch.Tensor]], bits: int, beta1: int, beta2: int,
                qq_scale_bits: int, qq_zero_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """x Wᵀ for a SpQR weight given as its stored parts (in SPQR_ARGS order), decoded in
    `dtype` exactly as ctcodec decodes; on CUDA, the SpQR kernels once prepared."""
    return _spqr_linear_reference(x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype)


@spqr_linear.register_fake
def _spqr_linear_shape(x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype):
    return x.new_empty((*x.shape[:-1], tensors[0].shape[0]))  # codes: one row per output


spqr_linear.register_kernel("cuda")(_spqr_linear_cuda)


def call_spqr_linear(x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype):
    """`spqr_linear` as the other ops: the op when compiling, its body in eager mode."""
    args = (x, tensors, bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype)
    if torch.compiler.is_compiling():
        return torch.ops.ctcodec.spqr_linear.default(*args)
    return (_spqr_linear_cuda if x.is_cuda else _spqr_linear_reference)(*args)


__all__ = ["call_kernel_linear", "call_pack_linear", "call_spqr_linear", "dequantize_kernel_layout", "kernel_linear",
           "pack_linear", "prepare_spqr_kernels", "spqr_linear"]
