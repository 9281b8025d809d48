"""sparse-24-bitmask against the real compressed-tensors 0.14 (its last release): the
same 2:4 weights give the same bytes, and each side decodes what the other writes.
Quantized weights stored 2:4 (W8A8 / FP8 with 2:4) decode to the same values as the
same weights stored without the 2:4 layer."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_data import make_tensor, same_bits, same_values_up_to_nan_payload

import ctcodec

ct = pytest.importorskip("compressed_tensors")
pytestmark = pytest.mark.skipif(not ct.__version__.startswith("0.14"), reason="needs compressed-tensors 0.14.x")

from compressed_tensors import load_compressed as ct_load  # noqa: E402
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.config import Sparse24BitMaskConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def ct_save24(tensors, path):
    """compressed-tensors 0.14's own 2:4 compressor over a state dict, saved as its
    `save_compressed` saves (its `save_compressed` cannot build this compressor itself)."""
    compressor = BaseCompressor.load_from_registry("sparse-24-bitmask", config=Sparse24BitMaskConfig())
    save_file(compressor.compress(tensors), path)

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.int8, torch.float8_e4m3fn]


def two_four(dtype, rows, cols, zero_share, seed) -> torch.Tensor:
    """A 2:4 weight: random bits (NaN, inf and -0.0 included), 2 of every 4 zeroed, and
    more zeros on top so some groups keep fewer than 2 (ties for the mask)."""
    t = make_tensor(dtype, [rows, cols], zero_share, seed)
    g = torch.Generator().manual_seed(seed)
    drop = torch.rand(rows * cols // 4, 4, generator=g).argsort(dim=1)[:, :2]
    bits = t.view(torch.int8 if t.element_size() == 1 else {2: torch.int16, 4: torch.int32}[t.element_size()])
    flat = bits.view(-1, 4)
    flat.scatter_(1, drop, 0)
    return t


shapes = st.tuples(st.integers(1, 9), st.integers(1, 12).map(lambda c: 4 * c))


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), shape=shapes, zero_share=st.sampled_from([0.0, 0.3, 0.9]), seed=st.integers(0, 2**16))
def test_same_bytes_both_ways(tmp_path_factory, dtype, shape, zero_share, seed):
    d = tmp_path_factory.mktemp("s24")
    w = two_four(dtype, *shape, zero_share, seed)
    tensors = {"model.layers.0.mlp.up_proj.weight": w, "model.layers.0.mlp.up_proj.bias": torch.ones(3)}
    ct_save24(tensors, d / "ct.safetensors")
    # Decoded: the kept values in place, +0 elsewhere (a dropped -0.0 comes back +0).
    from safetensors.torch import load_file

    mask = torch.from_numpy(np.unpackbits(load_file(d / "ct.safetensors")["model.layers.0.mlp.up_proj.bitmask"].numpy(),
                                          axis=-1, count=shape[1], bitorder="little").astype(bool))
    expected = w.clone()
    expected.view(torch.uint8).view(shape[0], shape[1], -1)[~mask] = 0
    wf = w.float()
    ctcodec.save_compressed(tensors, d / "ours.safetensors", format="sparse-24-bitmask")
    if (((wf != 0) | wf.isnan()) & ~mask).any():
        # compressed-tensors dropped a non-zero: its int8 `abs` wraps -128 to the
        # smallest key. We keep every value instead, so only here do the bytes differ.
        assert dtype == torch.int8
        ours = dict(ctcodec.load_compressed(d / "ours.safetensors", "sparse-24-bitmask"))
        assert torch.equal(ours["model.layers.0.mlp.up_proj.weight"], w)
        return
    assert (d / "ours.safetensors").read_bytes() == (d / "ct.safetensors").read_bytes()
    ours = dict(ctcodec.load_compressed(d / "ct.safetensors", "sparse-24-bitmask"))
    assert same_bits(ours["model.layers.0.mlp.up_proj.weight"], expected)
    if dtype != torch.float8_e4m3fn:  # compressed-tensors cannot scatter fp8 on the CPU
        theirs = dict(ct_load(str(d / "ours.safetensors"), Sparse24BitMaskConfig()))
        assert same_values_up_to_nan_payload(theirs["model.layers.0.mlp.up_proj.weight"], expected)


def test_refuses_weights_that_are_not_two_four(tmp_path):
    w = torch.arange(1, 17, dtype=torch.float32).reshape(2, 8)
    with pytest.raises(ctcodec.CodecError, match="not 2:4"):
        ctcodec.save_compressed({"m.weight": w}, tmp_path / "x.safetensors", format="sparse-24-bitmask")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("scheme", ["W8A8", "FP8_DYNAMIC"])
def test_quantized_two_four_decodes_like_plain_quantized(tmp_path, scheme):
    from safetensors.torch import save_file

    src = tmp_path / "dense"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(24, 64, generator=g).bfloat16() for i in range(3)}
    tensors["model.norm.weight"] = torch.ones(64, dtype=torch.bfloat16)
    save_file(tensors, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    stacked, plain = tmp_path / "stacked", tmp_path / "plain"
    ctcodec.compress_checkpoint(src, stacked, scheme=scheme, sparsity="2:4", format="sparse-24-bitmask")
    ctcodec.compress_checkpoint(src, plain, scheme=scheme, sparsity="2:4")
    qc = json.loads((stacked / "config.json").read_text())["quantization_config"]
    assert qc["sparsity_config"]["format"] == "sparse-24-bitmask"
    assert qc["sparsity_config"]["sparsity_structure"] == "2:4"
    a, b = dict(ctcodec.decompress_file(stacked)), dict(ctcodec.decompress_file(plain))
    assert sorted(a) == sorted(b)
    for k in a:
        assert same_bits(a[k], b[k]), k
    w = a["model.layers.0.mlp.up_proj.weight"].float().view(-1, 4)
    assert ((w != 0).sum(dim=1) <= 2).all()


def test_pruned_groups_span_rows_as_compressed_tensors_groups_them(tmp_path):
    """2:4 groups are 4 consecutive elements of the flattened weight (compressed-tensors'
    `view(-1, 4)`), so with 6 columns a group spans two rows; pruning and storage agree."""
    from safetensors.torch import load_file

    w = torch.arange(1, 13, dtype=torch.float32).reshape(2, 6).bfloat16()
    src = tmp_path / "src"
    src.mkdir()
    save_file({"model.layers.0.mlp.up_proj.weight": w}, src / "model.safetensors")
    (src / "config.json").write_text("{}")
    out = tmp_path / "out"
    ctcodec.compress_checkpoint(src, out, format="sparse-24-bitmask", sparsity="2:4")
    back = dict(ctcodec.decompress_file(out))["model.layers.0.mlp.up_proj.weight"]
    flat = back.float().view(-1, 4)
    assert ((flat != 0).sum(dim=1) == 2).all()
    # Each group keeps its two largest: 3, 4 | 7, 8 | 11, 12.
    assert flat.tolist() == [[0, 0, 3, 4], [0, 0, 7, 8], [0, 0, 11, 12]]
    ct_save24({"model.layers.0.mlp.up_proj.weight": back}, tmp_path / "ct.safetensors")
    theirs, ours = load_file(tmp_path / "ct.safetensors"), load_file(out / "model.safetensors")
    for k, v in theirs.items():
        assert torch.equal(ours[k].view(torch.uint8), v.view(torch.uint8)), k


def test_asymmetric_codes_are_not_stored_two_four(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_file({"model.layers.0.mlp.up_proj.weight": torch.randn(8, 16).bfloat16()}, src / "model.safetensors")
    (src / "config.json").write_text("{}")
    recipe = {"config_groups": {"g": {"targets": ["Linear"],
                                      "weights": {"num_bits": 8, "type": "int", "symmetric": False, "strategy": "channel"},
                                      "input_activations": {"num_bits": 8, "type": "int", "dynamic": True, "strategy": "token"}}}}
    with pytest.raises(ctcodec.CodecError, match="symmetric"):
        ctcodec.compress_checkpoint(src, tmp_path / "out", recipe=recipe, sparsity="2:4", format="sparse-24-bitmask")
    assert not list((tmp_path / "out").glob("*.safetensors"))
