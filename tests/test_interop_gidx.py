"""Activation-order checkpoints (`weight_g_idx`, each column's group): ctcodec decodes
them as compressed-tensors 0.14 dequantizes them (column j uses scale[:, g_idx[j]]),
which is also what vLLM does; compressed-tensors 0.20 no longer reads g_idx."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import ctcodec

ct = pytest.importorskip("compressed_tensors")
pytestmark = pytest.mark.skipif(not ct.__version__.startswith("0.14"), reason="needs compressed-tensors 0.14.x")

from compressed_tensors.compressors.quantized_compressors.pack_quantized import pack_to_int32  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs  # noqa: E402
from compressed_tensors.quantization.lifecycle.forward import dequantize  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([4, 8]), symmetric=st.booleans(), rows=st.integers(1, 24), groups=st.integers(2, 4),
       dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32]), seed=st.integers(0, 2**16))
def test_g_idx_decodes_like_compressed_tensors_014(tmp_path_factory, bits, symmetric, rows, groups, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gs = 32
    cols = gs * groups
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = torch.randint(lo, hi + 1, (rows, cols), generator=g, dtype=torch.int8)
    scale = (torch.rand(rows, groups, generator=g) + 0.05).to(dtype)
    zero = torch.randint(lo, hi + 1, (rows, groups), generator=g, dtype=torch.int8) if not symmetric else None
    g_idx = (torch.arange(cols) // gs)[torch.randperm(cols, generator=g)].to(torch.int32)  # activation order
    module = "model.layers.0.mlp.up_proj"
    tensors = {
        f"{module}.weight_packed": pack_to_int32(codes, bits),
        f"{module}.weight_scale": scale,
        f"{module}.weight_shape": torch.tensor([rows, cols]),
        f"{module}.weight_g_idx": g_idx,
    }
    if zero is not None:
        tensors[f"{module}.weight_zero_point"] = pack_to_int32(zero.t().contiguous(), bits).t().contiguous()
    d = tmp_path_factory.mktemp("gidx")
    save_file(tensors, d / "model.safetensors")
    weights = {"num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": "group", "group_size": gs,
               "actorder": "group"}
    qc = {"quant_method": "compressed-tensors", "version": "0.14.0.1", "format": "pack-quantized",
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}
    (d / "config.json").write_text(json.dumps({"quantization_config": qc}))

    args = QuantizationArgs(**weights)
    expected = dequantize(codes, scale, zero, args=args, g_idx=g_idx)
    ours = dict(ctcodec.decompress_file(d))[f"{module}.weight"]
    assert ours.dtype == expected.dtype
    assert torch.equal(ours, expected)
