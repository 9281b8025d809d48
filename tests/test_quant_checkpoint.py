"""Quantizing whole folders: presets and recipes, what is left dense and why, fused NVFP4
scales across shards, the CLI, inspect, and the round-to-nearest error bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import ctcodec
from ctcodec.cli import main as cli


def _folder(path: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> Path:
    path.mkdir(parents=True)
    names = list(tensors)
    if shards == 1:
        save_file(tensors, path / "model.safetensors")
    else:
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            save_file(part, path / fname)
            weight_map.update({n: fname for n in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
    (path / "tokenizer.json").write_text("{}")
    return path


def _model(seed: int = 0, cols: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {}
    for p, rows, scale in [("self_attn.q_proj", 64, 1.0), ("self_attn.k_proj", 32, 4.0), ("self_attn.v_proj", 32, 0.3),
                           ("self_attn.o_proj", 64, 1.0), ("mlp.gate_proj", 128, 2.0), ("mlp.up_proj", 128, 0.5)]:
        t[f"model.layers.0.{p}.weight"] = (torch.randn(rows, cols, generator=g) * scale).bfloat16()
    t["model.layers.0.mlp.down_proj.weight"] = torch.randn(cols, 128, generator=g).bfloat16()
    t["model.embed_tokens.weight"] = torch.randn(100, cols, generator=g).bfloat16()
    t["model.norm.weight"] = torch.ones(cols, dtype=torch.bfloat16)
    t["lm_head.weight"] = torch.randn(100, cols, generator=g).bfloat16()
    return t


def test_nvfp4_fused_layers_share_the_smallest_global_scale_across_shards(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", _model(), shards=3)
    out = tmp_path / "out"
    ctcodec.compress_checkpoint(src, out, scheme="NVFP4A16")
    g = {}
    for f in out.glob("*.safetensors"):
        g.update({k.rsplit(".", 2)[-2]: v.item() for k, v in load_file(f).items() if k.endswith("weight_global_scale")})
    assert g["q_proj"] == g["k_proj"] == g["v_proj"]
    assert g["gate_proj"] == g["up_proj"]
    # The shared scale is the smallest, i.e. that of the member with the largest |w|.
    w = _model()
    amax_k = w["model.layers.0.self_attn.k_proj.weight"].abs().max().item()
    assert g["k_proj"] == pytest.approx(448 * 6 / amax_k, rel=1e-2)
    assert g["o_proj"] != g["q_proj"]


def test_layers_the_scheme_cannot_take_stay_dense_and_are_ignored(tmp_path: Path) -> None:
    t = _model()
    t["model.layers.0.mlp.odd_proj.weight"] = torch.randn(8, 100).bfloat16()  # 100 % 64 != 0
    src = _folder(tmp_path / "src", t)
    out = tmp_path / "out"
    summary = ctcodec.compress_checkpoint(src, out, scheme="W4A16", group_size=64)
    assert [s["module"] for s in summary["skipped"]] == ["model.layers.0.mlp.odd_proj"]
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert "model.layers.0.mlp.odd_proj" in qc["ignore"] and "lm_head" in qc["ignore"]
    stored = load_file(out / "model.safetensors")
    assert "model.layers.0.mlp.odd_proj.weight" in stored
    assert "model.layers.0.mlp.q_proj.weight_packed" not in stored
    assert stored["model.layers.0.self_attn.q_proj.weight_packed"].dtype == torch.int32
    assert torch.equal(stored["lm_head.weight"], t["lm_head.weight"])
    assert (out / "tokenizer.json").is_file()


def test_recipe_gives_layers_their_own_schemes(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", _model())
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "config_groups": {
            "attn": {"scheme": "W8A16", "targets": ["re:.*self_attn.*"], "group_size": 32},
            "mlp": {"scheme": "W4A16_ASYM", "targets": ["re:.*mlp.*"], "group_size": 32},
            "fp8_head": {"scheme": "FP8_DYNAMIC", "targets": ["model.layers.0.self_attn.o_proj"]},
        },
        "ignore": ["lm_head"],
        "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True},
    }))
    out = tmp_path / "out"
    assert cli(["compress", str(src), str(out), "--recipe", str(recipe), "-q"]) == 0
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "mixed-precision"
    assert qc["kv_cache_scheme"]["num_bits"] == 8 and qc["kv_cache_scheme"]["type"] == "float"
    assert {g: v["format"] for g, v in qc["config_groups"].items()} == {
        "attn": "pack-quantized", "mlp": "pack-quantized", "fp8_head": "float-quantized"}
    stored = load_file(out / "model.safetensors")
    # The exact name beats the regex: o_proj is fp8, the other attention layers int8.
    assert stored["model.layers.0.self_attn.o_proj.weight"].dtype == torch.float8_e4m3fn
    assert stored["model.layers.0.self_attn.q_proj.weight_packed"].shape == (64, 64 * 8 // 32)
    assert "model.layers.0.mlp.up_proj.weight_zero_point" in stored
    report = ctcodec.inspect_checkpoint(out)
    assert report["format"] == "mixed-precision"
    bits = {r["name"]: r["bits_per_param"] for r in report["tensors"]}
    # 4 bits + a bf16 scale and an int4 zero point per 32 weights + the int64 shape.
    assert bits["model.layers.0.mlp.up_proj.weight"] == pytest.approx(4 + 16 / 32 + 4 / 32 + 128 / (128 * 64), abs=1e-6)
    back = tmp_path / "back"
    assert cli(["decompress", str(out), str(back), "-q"]) == 0
    dense = load_file(back / "model.safetensors")
    assert dense["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert "quantization_config" not in json.loads((back / "config.json").read_text())


def test_compressing_a_compressed_folder_is_refused(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", _model())
    out = tmp_path / "out"
    ctcodec.compress_checkpoint(src, out, scheme="W8A8")
    with pytest.raises(ctcodec.CodecError, match="already compressed"):
        ctcodec.compress_checkpoint(out, tmp_path / "again", scheme="W4A16")


def test_static_activation_presets_need_calibration(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", _model())
    with pytest.raises(ctcodec.CodecError, match="calibration"):
        ctcodec.compress_checkpoint(src, tmp_path / "out", scheme="FP8")


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), rows=st.integers(1, 20), groups=st.integers(1, 3),
       dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32]), seed=st.integers(0, 2**16))
def test_round_to_nearest_error_is_at_most_half_a_step(tmp_path_factory, bits, symmetric, rows, groups, dtype, seed):
    d = tmp_path_factory.mktemp("rtn")
    w = (torch.randn(rows, 32 * groups, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)
    src = _folder(d / "src", {"model.layers.0.mlp.up_proj.weight": w})
    recipe = {"config_groups": {"g": {"targets": ["Linear"], "weights": {
        "num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": "group", "group_size": 32}}}}
    ctcodec.compress_checkpoint(src, d / "out", recipe=recipe)
    stored = load_file(d / "out" / "model.safetensors")
    scale = stored["model.layers.0.mlp.up_proj.weight_scale"].float().repeat_interleave(32, dim=1)
    back = dict(ctcodec.decompress_file(d / "out"))["model.layers.0.mlp.up_proj.weight"].float()
    x = w.float()
    err = (back - x).abs()
    # Half a step inside the range; at its ends up to one step, where a symmetric grid
    # stops one level short of +amax and an asymmetric grid is shifted by the rounding
    # of its zero point; plus compressed-tensors' roundings in the weight's dtype of
    # x / scale and of x / scale + zero (up to 2^bits levels), and of the output.
    eps = {torch.bfloat16: 2**-8, torch.float16: 2**-11, torch.float32: 2**-24}[dtype]
    step = scale * (1 + 4 * eps)
    slack = 2 * eps * (x.abs() + 2**bits * scale) + 1e-30
    assert (err <= step + slack).all(), (err - step - slack).max()
    cells = x.reshape(rows, groups, 32)
    lo = cells.amin(-1, keepdim=True).expand(-1, -1, 32).reshape(x.shape)
    hi = cells.amax(-1, keepdim=True).expand(-1, -1, 32).reshape(x.shape)
    inside = (x > lo + step) & (x < hi - step)
    assert (err[inside] <= (step / 2 + slack)[inside]).all()
