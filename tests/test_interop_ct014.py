"""Interop with the real compressed-tensors 0.14.x, the last release with sparse-bitmask:
files it writes decode through ctcodec, files we write decode through it, and for the
same tensors both write the very same bytes."""

import json

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sparse_data import canonical, make_tensor, same_bits, same_values_up_to_nan_payload, seeds, shapes, zero_shares

import ctcodec

ct = pytest.importorskip("compressed_tensors")
pytestmark = pytest.mark.skipif(not ct.__version__.startswith("0.14"), reason="needs compressed-tensors 0.14.x")

from compressed_tensors import load_compressed as ct_load  # noqa: E402
from compressed_tensors import save_compressed as ct_save  # noqa: E402
from compressed_tensors.config import BitmaskConfig  # noqa: E402

# dtypes compressed-tensors 0.14 can bitmask on the CPU (fp8 e4m3 has its own path there)
CT_DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int8, torch.int32, torch.float8_e4m3fn]
# Its decoder scatters with masked_fill, which torch has no CPU kernel for on fp8, so it
# cannot read fp8 back on the CPU (its writer can, and matches our bytes above).
CT_DECODABLE = [d for d in CT_DTYPES if d != torch.float8_e4m3fn]


def _tensors(dtype, shape, zero_share, seed):
    return {
        "model.layers.0.mlp.up_proj.weight": make_tensor(dtype, shape, zero_share, seed),
        "model.layers.0.mlp.up_proj.bias": make_tensor(torch.float32, [3], 0.5, seed + 1),
        "model.norm.weight": make_tensor(dtype, [7], zero_share, seed + 2),
    }


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(CT_DTYPES), shape=shapes, zero_share=zero_shares, seed=seeds)
def test_same_bytes_as_compressed_tensors(tmp_path_factory, dtype, shape, zero_share, seed):
    d = tmp_path_factory.mktemp("bytes")
    tensors = _tensors(dtype, shape, zero_share, seed)
    ct_save(tensors, d / "ct.safetensors", compression_format="sparse-bitmask")
    ctcodec.save_compressed(tensors, d / "ours.safetensors", format="sparse-bitmask")
    assert (d / "ours.safetensors").read_bytes() == (d / "ct.safetensors").read_bytes()


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(CT_DTYPES), shape=shapes, zero_share=zero_shares, seed=seeds)
def test_we_decode_what_compressed_tensors_writes(tmp_path_factory, dtype, shape, zero_share, seed):
    path = tmp_path_factory.mktemp("ct2us") / "ct.safetensors"
    tensors = _tensors(dtype, shape, zero_share, seed)
    ct_save(tensors, path, compression_format="sparse-bitmask")
    ours = dict(ctcodec.load_compressed(path, BitmaskConfig()))
    assert set(ours) == set(tensors)
    for name, t in tensors.items():
        expected = canonical(t) if name.endswith(".weight") else t
        assert same_bits(ours[name], expected), name


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(CT_DECODABLE), shape=shapes, zero_share=zero_shares, seed=seeds)
@example(dtype=torch.float16, shape=[1], zero_share=0.0, seed=2100)  # a NaN whose payload torch drops
def test_compressed_tensors_decodes_what_we_write(tmp_path_factory, dtype, shape, zero_share, seed):
    path = tmp_path_factory.mktemp("us2ct") / "ours.safetensors"
    tensors = _tensors(dtype, shape, zero_share, seed)
    ctcodec.save_compressed(tensors, path)
    theirs = dict(ct_load(path, BitmaskConfig()))
    assert set(theirs) == set(tensors)
    for name, t in tensors.items():
        expected = canonical(t) if name.endswith(".weight") else t
        assert same_values_up_to_nan_payload(theirs[name], expected), name


def _tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=96, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(torch.rand_like(p.float()).ge(0.5).to(p.dtype))  # ~50% zeros
    return model


def test_model_compressed_by_us_loads_in_compressed_tensors(tmp_path):
    from compressed_tensors.compressors import ModelCompressor

    model = _tiny_llama()
    model.save_pretrained(tmp_path / "dense")
    ctcodec.compress_checkpoint(tmp_path / "dense", tmp_path / "comp")

    compressor = ModelCompressor.from_pretrained(str(tmp_path / "comp"))
    assert compressor.sparsity_config.format == "sparse-bitmask"
    assert compressor.sparsity_config.targets == ["Linear"] and compressor.sparsity_config.ignore == ["lm_head"]
    fresh = _tiny_llama(seed=1)
    compressor.decompress(str(tmp_path / "comp"), model=fresh)
    want = model.state_dict()
    for name, t in fresh.state_dict().items():
        compressed = name.endswith("proj.weight")  # the Linear layers; lm_head is ignored
        assert same_bits(t, canonical(want[name]) if compressed else want[name]), name


def test_model_compressed_by_compressed_tensors_decodes_in_ctcodec(tmp_path):
    from compressed_tensors.compressors import ModelCompressor

    model = _tiny_llama()
    config = BitmaskConfig(targets=["Linear"], ignore=["lm_head"], global_sparsity=0.5)  # as llm-compressor sets it
    compressor = ModelCompressor.from_pretrained_model(model, sparsity_config_or_format=config)
    compressed_sd = compressor.compress(model)
    model.save_pretrained(tmp_path / "ct", state_dict=compressed_sd)
    compressor.update_config(str(tmp_path / "ct"))
    assert json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["sparsity_config"]

    want = model.state_dict()
    stored = set(compressed_sd)
    assert "model.layers.0.mlp.up_proj.bitmask" in stored
    # compressed weights lose -0.0; what compressed-tensors left dense keeps every bit
    expected = {
        n: canonical(t) if n.endswith(".weight") and n[: -len(".weight")] + ".bitmask" in stored else t
        for n, t in want.items()
    }
    got = dict(ctcodec.decompress_file(tmp_path / "ct"))
    assert set(got) == set(want)
    for name, t in got.items():
        assert same_bits(t, expected[name]), name

    ctcodec.decompress_checkpoint(tmp_path / "ct", tmp_path / "dense")
    from transformers import LlamaForCausalLM

    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.bfloat16)
    for name, t in reloaded.state_dict().items():
        assert same_bits(t, expected[name]), name
