"""The compressed matmuls as torch custom ops (ctcodec.inference.ops): schema, fake and
real implementations checked by torch.library.opcheck; the kernels' layout decodes to the
checkpoint's weight bit for bit; and the op's CUDA implementation (run here through
Triton's interpreter when there is no GPU) multiplies by that weight."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packing import random_weight
from reference import assert_matmul_close

import ctcodec_kernels as ck
from ctcodec.inference.ops import _kernel_linear_cuda, dequantize_kernel_layout
from ctcodec.inference.unpack import dequantize_pack

CASES = [  # bits, n, k, group, asym, act_order
    (4, 24, 256, 32, False, False),
    (4, 40, 200, 64, True, False),
    (8, 16, 96, None, False, False),
    (4, 32, 192, 48, False, True),  # group not a multiple of 32, activation order
    (8, 8, 128, 32, True, "uneven"),
]


def _weight(case, seed=0):
    bits, n, k, group, asym, act_order = case
    return random_weight(seed, bits, n, k, group, asym=asym, act_order=act_order)


def _pack_args(w, x):
    t = w.tensors()
    return (x, t["weight_packed"], t["weight_scale"], t.get("weight_zero_point"), t.get("weight_g_idx"), w.bits,
            w.group or 0, w.n, w.k)


def _kernel_args(w, x):
    p = ck.prepare(*w.prepare_args()[0], **w.prepare_args()[1])
    return (x, p.qweight, p.scales, p.zeros, p.perm, p.x_order, p.num_bits, p.group, p.n, p.k)


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([4, 8]), n=st.integers(1, 20), k=st.integers(1, 300),
       group=st.sampled_from([None, 32, 64, 128, 24, 100]), asym=st.booleans(),
       act_order=st.sampled_from([False, True, "uneven"]), seed=st.integers(0, 999))
def test_kernel_layout_decodes_to_the_checkpoint_weight(bits, n, k, group, asym, act_order, seed):
    if group is None and act_order:
        act_order = False
    w = random_weight(seed, bits, n, k, group, asym=asym, act_order=act_order)
    args = _kernel_args(w, None)[1:]
    decoded = dequantize_kernel_layout(*args[:4], *args[5:])  # all but x_order (the GEMM's x permutation)
    assert decoded.dtype == w.scales.dtype and decoded.shape == (n, k)
    assert torch.equal(decoded, w.decoded(w.scales.dtype))
    t = w.tensors()
    assert torch.equal(decoded, dequantize_pack(t["weight_packed"], t["weight_scale"], bits, (n, k),
                                                t.get("weight_zero_point"), t.get("weight_g_idx"), group))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_both_ops(case, dtype):
    w = _weight(case)
    x = torch.randn(3, 5, w.k, generator=torch.Generator().manual_seed(1)).to(dtype)
    for op, args in ((torch.ops.ctcodec.pack_linear.default, _pack_args(w, x)),
                     (torch.ops.ctcodec.kernel_linear.default, _kernel_args(w, x))):
        torch.library.opcheck(op, args)
        y = op(*args)
        assert y.shape == (3, 5, w.n) and y.dtype == dtype
    # Same weight, same matmul: the two layouts give the same bits.
    assert torch.equal(torch.ops.ctcodec.pack_linear(*_pack_args(w, x)),
                       torch.ops.ctcodec.kernel_linear(*_kernel_args(w, x)))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("rows", [1, 7])
def test_the_ops_cuda_implementation_multiplies_by_the_decoded_weight(case, rows, device):
    """The function registered for the CUDA key (Triton's quant_matmul behind it) with its
    arguments as the op passes them; on a CPU it runs through the interpreter."""
    w = _weight(case, seed=2)
    x = (torch.randn(rows, w.k, generator=torch.Generator().manual_seed(3)) * 0.5).to(torch.float16).to(device)
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in _kernel_args(w, x)]
    y = _kernel_linear_cuda(*args)
    assert y.shape == (rows, w.n) and y.dtype == torch.float16
    exact = w.exact() if rows == 1 else w.decoded(torch.float16)  # GEMV scales partial sums
    assert_matmul_close(y, x, exact)
    if device == "cuda":
        assert torch.equal(torch.ops.ctcodec.kernel_linear(*args), y)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("rows", [7, 40])
def test_the_ops_cuda_implementation_takes_the_bit_unpacked_gemm_with_its_x_order(case, rows, device, monkeypatch):
    """With the tuner's pick made the bit-unpacked GEMM, the op's CUDA implementation runs it
    on the x_order the op was given (made at load time), within the decoded weight's bound."""
    from dataclasses import replace

    from ctcodec_kernels import matmul, tuning

    bits, n, k, group, asym, act_order = case
    w = random_weight(5, bits, n, k, group, asym=asym, act_order=act_order, scale_dtype=torch.float16)
    unpacked = next(c for c in tuning.TILED_TC.configs if c.bit_unpack)
    for tuner in (tuning.SPLIT_K_UNPACKED, tuning.TILED_TC):  # the pick an untuned call makes: configs[0]
        monkeypatch.setattr(tuner, "configs", [replace(unpacked, block_m=16 if rows <= 32 else 64)])
        monkeypatch.setattr(tuner, "best", {})
    x = (torch.randn(rows, k, generator=torch.Generator().manual_seed(4)) * 0.5).to(torch.float16).to(device)
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in _kernel_args(w, x)]
    assert args[5] is not None  # x_order
    launched = []
    real = matmul._launch_gemm_tc
    monkeypatch.setattr(matmul, "_launch_gemm_tc", lambda *a: launched.append(a[1].x_order) or real(*a))
    y = _kernel_linear_cuda(*args)
    assert len(launched) == 1 and launched[0] is args[5]  # that kernel, on the op's own x_order
    assert_matmul_close(y, x, w.decoded(torch.float16))


def test_compressed_linear_eager_gpu_path_calls_the_kernels_with_its_own_buffers(monkeypatch, device):
    """CompressedLinear's eager path on a GPU (forced here: the interpreter on the CPU)
    gives the op's CUDA implementation's bits, builds its PreparedWeight once, and
    rebuilds it when `.to()` replaces the buffers."""
    import ctcodec.inference.linear as linear
    from ctcodec.inference import CompressedLinear

    w = random_weight(4, 4, 24, 256, 64, asym=True)
    mod = CompressedLinear(w.k, w.n, "pack", {"num_bits": 4, "symmetric": False, "group_size": 64}, True,
                           torch.bfloat16)
    for name, t in w.tensors().items():
        mod.set_part(name, t.to(device))
    mod.bias = torch.nn.Parameter(torch.randn(w.n).to(torch.bfloat16).to(device), requires_grad=False)
    assert mod.prepare_kernels()
    monkeypatch.setattr(linear, "_kernels", lambda: ck)
    monkeypatch.setattr(linear, "_on_kernels", lambda x: True)
    x = torch.randn(2, w.k, generator=torch.Generator().manual_seed(6)).to(torch.float16).to(device)
    y = mod(x)
    p = mod.parts()
    args = (x, p["qweight"], p["scales"], p.get("zeros"), p.get("perm"), p.get("x_order"), 4, mod.kernel_group, w.n,
            w.k)
    assert torch.equal(y, _kernel_linear_cuda(*args) + mod.bias.to(torch.float16))
    first = mod._kernel_weight
    mod(x)
    assert mod._kernel_weight is first  # made once
    mod.to(torch.float16)  # new scale and bias tensors
    y16 = mod(x)
    assert mod._kernel_weight is not first and mod._kernel_weight.scales is mod.scales
    assert y16.dtype == torch.float16
