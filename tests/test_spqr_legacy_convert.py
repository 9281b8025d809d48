"""`ctcodec convert-spqr`: the original SpQR's saved layers (written by a faithful
re-implementation of its quantizer and saving convention, tests/spqr_legacy.py) become
a ctcodec SpQR checkpoint that decodes to what the original's own dequantizer gives."""

import json

import pytest
import torch

import ctcodec
from ctcodec import CodecError
from ctcodec.cli import main

from spqr_legacy import dequantize_legacy, quantize_layer_legacy, random_hessian, save_legacy_model
from tiny_models import tiny_llama

SUBLAYERS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def legacy(cache_dir, tmp_path_factory):
    """(base model folder, legacy folder, {weight name: legacy dict}) for a tiny Llama."""
    base = tiny_llama(cache_dir)
    dense = dict(ctcodec.decompress_file(base))
    layers, dicts = {}, {}
    for i in range(2):
        layers[i] = {}
        for k, sub in enumerate(SUBLAYERS):
            w = dense[f"model.layers.{i}.{sub}.weight"]
            d = quantize_layer_legacy(w, random_hessian(w.shape[1], seed=10 * i + k), outlier_relative_threshold=0.2,
                                      permutation_order="act_order" if k % 2 else "identity")
            layers[i][sub] = d
            dicts[f"model.layers.{i}.{sub}.weight"] = d
    not_quantized = {n: t for n, t in dense.items() if "proj" not in n}
    folder = save_legacy_model(tmp_path_factory.mktemp("legacy") / "spqr", layers, not_quantized,
                               emulate_cuda_location=True)
    return base, folder, dicts


@pytest.mark.parametrize("layout", ["csr", "ptcsr"])
def test_converted_checkpoint_decodes_like_the_original_dequantizer(legacy, tmp_path, layout):
    base, folder, dicts = legacy
    out = tmp_path / "out"
    assert main(["convert-spqr", "--legacy-model-path", str(folder), "--base-model", str(base), str(out),
                 "--outlier-layout", layout]) == 0
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["format"], qc["bits"], qc["beta1"], qc["beta2"], qc["outlier_layout"]) == ("spqr", 3, 16, 16, layout)
    got = dict(ctcodec.decompress_file(out))
    dense = dict(ctcodec.decompress_file(base))
    assert set(got) == set(dense)
    for name, d in dicts.items():
        want = dequantize_legacy(d)  # fp32, computed in fp16 steps by the original
        mine = got[name].float()
        # The original rounds its statistics and weights to fp16 at each step (s·(q − z)
        # cancels, so the error is relative to s·z, not to w); we do f32 then one rounding
        # to bf16. Both stay far below one quantization step (a wrong code or statistic
        # would be off by ≥ range/7).
        assert torch.allclose(mine, want, rtol=2 ** -7, atol=2 ** -8 * want.abs().max().item()), name
        rows, cols = d["outliers_matrix"].coalesce().indices()
        perm = d["perm"].long()
        values = d["outliers_matrix"].coalesce().values()
        assert torch.equal(mine[rows, perm[cols]], values.to(torch.bfloat16).float()), "outliers replace"
    for name, t in dense.items():
        if name not in dicts:
            assert torch.equal(got[name], t), name


def test_bad_legacy_folders_are_refused(legacy, tmp_path):
    from ctcodec.spqr_legacy import convert_legacy

    base, folder, dicts = legacy
    with pytest.raises(CodecError, match="args.pt"):
        convert_legacy(tmp_path, base, tmp_path / "o1")
    broken = tmp_path / "broken"
    d = dict(next(iter(dicts.values())))
    d["quant_weights"] = d["quant_weights"] + 8  # codes past 3 bits
    save_legacy_model(broken, {0: {"self_attn.q_proj": d}}, {})
    with pytest.raises(CodecError, match="outside"):
        convert_legacy(broken, base, tmp_path / "o2")
    stray = tmp_path / "stray"
    save_legacy_model(stray, {5: {"self_attn.q_proj": next(iter(dicts.values()))}}, {})
    with pytest.raises(CodecError, match="matches 0 weights"):
        convert_legacy(stray, base, tmp_path / "o3")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_unquantized_float_zeros_are_refused_not_rounded(legacy, tmp_path):
    """A save without second-order zeros holds fp16 zeros such as 3.4: refusing beats
    silently rounding them (round_zero saves hold integers and convert)."""
    from ctcodec.spqr_legacy import convert_legacy

    base, _folder, dicts = legacy
    w = dict(ctcodec.decompress_file(base))["model.layers.0.self_attn.q_proj.weight"]
    d = quantize_layer_legacy(w, random_hessian(w.shape[1]), qq_zero_bits=None)
    save_legacy_model(tmp_path / "l", {0: {"self_attn.q_proj": d}}, {}, args={"qq_zero_bits": None})
    with pytest.raises(CodecError, match="neither second-order quantized nor integers"):
        convert_legacy(tmp_path / "l", base, tmp_path / "o")
