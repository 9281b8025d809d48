"""GPTQ checkpoints (AutoGPTQ / GPTQModel / transformers layout) converted to
compressed-tensors pack-quantized: the GPTQ side is written here from the format's
description (codes packed along the input dim, zero points along the output dim, one
little-endian bit stream per column or row; "gptq" stores zeros minus one), the
reference weight is `scales[g_idx[k], n] * (q[k, n] - z[g_idx[k], n])`, and the
converted folder must decode to exactly it, with ctcodec and with compressed-tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ctcodec
from ctcodec.errors import CodecError
from ctcodec.gptq import convert_gptq

torch = pytest.importorskip("torch")
from safetensors.numpy import save_file  # noqa: E402


def pack_bitstream(codes: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """int32 words holding `codes` (unsigned) as a little-endian bit stream along `axis`."""
    c = np.moveaxis(codes.astype(np.uint64), axis, 0)  # [L, M]
    length, m = c.shape
    stream = ((c[:, None, :] >> np.arange(bits, dtype=np.uint64)[None, :, None]) & 1).reshape(length * bits, m)
    words = -(-length * bits // 32)
    padded = np.zeros((words * 32, m), np.uint64)
    padded[: length * bits] = stream
    w = (padded.reshape(words, 32, m) << np.arange(32, dtype=np.uint64)[None, :, None]).sum(axis=1)
    return np.ascontiguousarray(np.moveaxis(w.astype(np.uint32).view(np.int32), 0, axis))


def gptq_module(rng, k: int, n: int, bits: int, group: int | None, sym: bool, act_order: bool, v1: bool):
    g = group or k
    groups = k // g
    q = rng.integers(0, 2 ** bits, size=(k, n))
    if sym:
        z = np.full((groups, n), 2 ** (bits - 1))
    else:
        z = rng.integers(1 if v1 else 0, 2 ** bits, size=(groups, n))
    scales = (rng.random((groups, n)) * 0.02 + 0.001).astype(np.float16)
    if act_order:
        perm = rng.permutation(k)
        g_idx = np.empty(k, np.int32)
        g_idx[perm] = np.arange(k) // g
    else:
        g_idx = (np.arange(k) // g).astype(np.int32)
    stored_z = z - 1 if v1 else z
    tensors = {"qweight": pack_bitstream(q, bits, 0), "qzeros": pack_bitstream(stored_z, bits, 1),
               "scales": scales, "g_idx": g_idx}
    ref = (scales.astype(np.float32)[g_idx, :] * (q - z[g_idx, :]).astype(np.float32)).astype(np.float16).T
    return tensors, ref


def gptq_folder(path, rng, bits=4, group=32, sym=False, act_order=False, v1=False, k=64, n=64, config_in="quantize",
                bias=True):
    path.mkdir(parents=True, exist_ok=True)
    tensors, refs = {}, {}
    for i, name in enumerate(["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]):
        parts, ref = gptq_module(rng, k * (i + 1), n, bits, group, sym, act_order, v1)
        tensors.update({f"{name}.{p}": v for p, v in parts.items()})
        refs[f"{name}.weight"] = np.ascontiguousarray(ref)
    if bias:
        tensors["model.layers.0.self_attn.q_proj.bias"] = rng.standard_normal(n).astype(np.float16)
    tensors["model.norm.weight"] = np.ones(n, np.float16)
    save_file(tensors, str(path / "model.safetensors"))
    qc = {"bits": bits, "group_size": group or -1, "sym": sym, "desc_act": act_order, "quant_method": "gptq",
          "checkpoint_format" if config_in == "quantize" else "format": "gptq" if v1 else "gptq_v2"}
    config = {"architectures": ["LlamaForCausalLM"], "torch_dtype": "float16"}
    if config_in == "quantize":
        (path / "quantize_config.json").write_text(json.dumps(qc))
    else:
        config["quantization_config"] = qc
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")
    return path, refs, tensors


def check_decodes_to_reference(out, refs, tensors):
    ours = dict(ctcodec.decompress_file(out, framework="numpy"))
    for name, ref in refs.items():
        assert ours[name].dtype == np.float16
        np.testing.assert_array_equal(ours[name], ref, err_msg=name)
    for name in ("model.layers.0.self_attn.q_proj.bias", "model.norm.weight"):
        if name in tensors:
            assert np.array_equal(ours[name], tensors[name]), name
    assert not any(k.endswith(("qweight", "qzeros", "scales", "g_idx")) for k in ours)
    return ours


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("v1", [True, False])
def test_converts_exactly(tmp_path, bits, sym, v1):
    src, refs, tensors = gptq_folder(tmp_path / "gptq", np.random.default_rng(bits * 7 + sym + 2 * v1), bits=bits,
                                     sym=sym, v1=v1)
    s = convert_gptq(src, tmp_path / "ct")
    assert s["modules"] == 2 and s["g_idx_kept"] == 0
    check_decodes_to_reference(tmp_path / "ct", refs, tensors)
    assert not (tmp_path / "ct" / "quantize_config.json").exists()
    assert (tmp_path / "ct" / "tokenizer.json").exists()
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    (group,) = qc["config_groups"].values()
    assert qc["format"] == "pack-quantized" and group["weights"]["num_bits"] == bits
    assert group["weights"]["symmetric"] == sym and group["weights"].get("actorder") is None


@given(bits=st.sampled_from([2, 3, 4, 8]), group=st.sampled_from([None, 16, 32]), sym=st.booleans(),
       act_order=st.booleans(), v1=st.booleans(), seed=st.integers(0, 2 ** 16), n_words=st.integers(1, 3))
@settings(max_examples=25, deadline=None)
def test_property_any_layout_roundtrips(tmp_path_factory, bits, group, sym, act_order, v1, seed, n_words):
    tmp = tmp_path_factory.mktemp("gptq")
    n = 32 * n_words
    src, refs, tensors = gptq_folder(tmp / "g", np.random.default_rng(seed), bits=bits, group=group, sym=sym,
                                     act_order=act_order, v1=v1, n=n, config_in="config")
    convert_gptq(src, tmp / "ct")
    check_decodes_to_reference(tmp / "ct", refs, tensors)


def test_act_order_keeps_g_idx(tmp_path):
    src, refs, tensors = gptq_folder(tmp_path / "gptq", np.random.default_rng(1), act_order=True)
    s = convert_gptq(src, tmp_path / "ct")
    assert s["g_idx_kept"] == 2
    check_decodes_to_reference(tmp_path / "ct", refs, tensors)
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert qc["config_groups"]["group_0"]["weights"]["actorder"] == "group"


def _ct_dequantized(out, tmp_path, version):
    from pathlib import Path

    from ct_current import run_ct
    from safetensors.torch import load_file

    ref = tmp_path / f"ct-{version}"
    run_ct(str(Path(__file__).parent / "ct_dequantize.py"), str(out), str(ref), version=version)
    return load_file(ref / "model.safetensors")


@pytest.mark.parametrize("bits,sym", [(4, True), (4, False), (3, False), (8, True), (2, False)])
def test_compressed_tensors_020_reads_the_conversion(tmp_path, bits, sym):
    src, refs, _ = gptq_folder(tmp_path / "gptq", np.random.default_rng(bits), bits=bits, sym=sym)
    convert_gptq(src, tmp_path / "ct")
    theirs = _ct_dequantized(tmp_path / "ct", tmp_path, "0.20.0")
    for name, ref in refs.items():
        # Its converter dequantizes to bf16: the same fp16 values, rounded once more.
        assert torch.equal(theirs[name], torch.from_numpy(ref).to(torch.bfloat16)), name


def test_compressed_tensors_017_reads_act_order(tmp_path):
    # (0.17's converter refuses a bias beside a quantized weight, whatever wrote it.)
    src, refs, _ = gptq_folder(tmp_path / "gptq", np.random.default_rng(5), bits=4, act_order=True, bias=False)
    convert_gptq(src, tmp_path / "ct")
    theirs = _ct_dequantized(tmp_path / "ct", tmp_path, "0.17.1")
    for name, ref in refs.items():
        assert torch.equal(theirs[name], torch.from_numpy(ref).to(torch.bfloat16)), name


# --- malformed input ---------------------------------------------------------------

def _corrupt(tmp_path, edit, **kw):
    src, _refs, tensors = gptq_folder(tmp_path / "gptq", np.random.default_rng(0), **kw)
    edit(tensors)
    save_file(tensors, str(src / "model.safetensors"))
    return src


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.pop("model.layers.0.mlp.down_proj.scales"), "no scales"),
    (lambda t: t.__setitem__("model.layers.0.mlp.down_proj.scales", np.ones((1, 64), np.float16)), "must be"),
    (lambda t: t.__setitem__("model.layers.0.mlp.down_proj.qweight", np.zeros((5, 64), np.int32)), "does not hold"),
    (lambda t: t.__setitem__("model.layers.0.mlp.down_proj.g_idx", np.full(128, 99, np.int32)), "outside"),
    (lambda t: t.__setitem__("model.layers.0.mlp.down_proj.qzeros", np.zeros((4, 8), np.float32)), "I32"),
])
def test_malformed_gptq_is_a_codec_error_naming_the_module(tmp_path, edit, match):
    src = _corrupt(tmp_path, edit)
    with pytest.raises(CodecError, match=match) as e:
        convert_gptq(src, tmp_path / "ct")
    assert "down_proj" in str(e.value) and "model.safetensors" in str(e.value)
    assert not (tmp_path / "ct" / "model.safetensors").exists()


def test_symmetric_config_with_other_zeros_is_refused(tmp_path):
    src, _r, _t = gptq_folder(tmp_path / "gptq", np.random.default_rng(0), sym=False)
    qc = json.loads((src / "quantize_config.json").read_text())
    (src / "quantize_config.json").write_text(json.dumps({**qc, "sym": True}))
    with pytest.raises(CodecError, match="symmetric GPTQ"):
        convert_gptq(src, tmp_path / "ct")


def test_v1_zero_of_zero_is_refused(tmp_path):
    def zero_minus_one(t):
        name = "model.layers.0.self_attn.q_proj.qzeros"
        t[name] = np.full_like(t[name], -1)  # what a v1 writer leaves for z = 0

    src = _corrupt(tmp_path, zero_minus_one, v1=True)
    with pytest.raises(CodecError, match="stored as -1"):
        convert_gptq(src, tmp_path / "ct")


@pytest.mark.parametrize("qc,match", [({"bits": 4, "checkpoint_format": "marlin"}, "marlin"),
                                      ({"bits": 4, "dynamic": {"-:.*": {}}}, "dynamic"),
                                      ({"quant_method": "awq", "bits": 4}, "not a GPTQ"),
                                      ({"bits": 5}, "2, 3, 4 or 8")])
def test_unsupported_settings(tmp_path, qc, match):
    src, _r, _t = gptq_folder(tmp_path / "gptq", np.random.default_rng(0))
    (src / "quantize_config.json").write_text(json.dumps(qc))
    with pytest.raises(CodecError, match=match):
        convert_gptq(src, tmp_path / "ct")


def test_input_folder_is_not_modified(tmp_path):
    src, _r, _t = gptq_folder(tmp_path / "gptq", np.random.default_rng(0))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    convert_gptq(src, tmp_path / "ct")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_cli_converts(tmp_path):
    import subprocess
    import sys

    src, refs, tensors = gptq_folder(tmp_path / "gptq", np.random.default_rng(3), act_order=True)
    proc = subprocess.run([sys.executable, "-m", "ctcodec.cli", "convert-gptq", str(src), str(tmp_path / "ct")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "converted 2 GPTQ modules (4-bit)" in proc.stdout and "g_idx kept in 2" in proc.stdout
    check_decodes_to_reference(tmp_path / "ct", refs, tensors)
