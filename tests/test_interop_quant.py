"""Quantized formats against the current compressed-tensors, in both directions:
the same weights quantized by ctcodec and by compressed-tensors (its observer math and
compressors) give identical tensors, and what compressed-tensors writes decodes through
ctcodec to exactly what compressed-tensors itself decompresses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ctcodec
from ct_current import reference_compress

DTYPES = [torch.bfloat16, torch.float16, torch.float32]

# (label, weights args, columns chooser, 3-D?)
SCHEMES = [
    ("w4a16_g128", {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}),
    ("w4a16_asym_g128", {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 128}),
    ("w8a16_g32", {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}),
    ("w3a16_g32", {"num_bits": 3, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}),
    ("w2_asym_g16", {"num_bits": 2, "type": "int", "symmetric": False, "strategy": "group", "group_size": 16}),
    ("w5_g32", {"num_bits": 5, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}),
    ("w6_asym_channel", {"num_bits": 6, "type": "int", "symmetric": False, "strategy": "channel"}),
    ("w7_g64", {"num_bits": 7, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}),
    ("w4_asym_channel", {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "channel"}),
    ("w8_tensor", {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor"}),
    ("w4_asym_tensor", {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "tensor"}),
    ("fp8_channel", {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"}),
    ("fp8_tensor", {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor"}),
    ("fp8_block", {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "block", "block_structure": [16, 32]}),
    ("nvfp4", {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group", "group_size": 16,
               "scale_dtype": "torch.float8_e4m3fn"}),
    ("mxfp4", {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "group", "group_size": 32,
               "scale_dtype": "torch.uint8"}),
]
INT8_ACTS = {"dynamic": True, "num_bits": 8, "strategy": "token", "symmetric": True, "type": "int"}
# int-quantized (weights with activation quantization) stores codes unpacked in int8.
WITH_ACTS = {"w8_channel_int_quantized": ({"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}, INT8_ACTS),
             "w4_g32_int_quantized": ({"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 32}, INT8_ACTS)}


def _weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Weights with the awkward cases: all-zero rows, exact zeros, -0.0, outliers."""
    scale = 10.0 ** rng.uniform(-3, 1)
    w = rng.standard_normal(shape) * scale
    w[rng.random(shape) < 0.05] = 0.0
    w[rng.random(shape) < 0.02] = -0.0
    w[rng.random(shape) < 0.01] *= 30
    if shape[-2] > 2:
        w[..., 1, :] = 0.0  # a whole zero row: zero scales become eps
    return torch.from_numpy(w.astype(np.float32)).to(dtype)


def _cols(rng, w: dict) -> int:
    g = w.get("group_size")
    if w["strategy"] in ("group", "tensor_group"):
        return g * int(rng.integers(1, 4))
    if w["strategy"] == "block":
        return int(rng.integers(1, 100))
    return int(rng.integers(1, 300))


def _build(seed: int, tmp_path: Path):
    rng = np.random.default_rng(seed)
    tensors, groups, modules = {}, {}, []
    cases = [(label, w, None) for label, w in SCHEMES] + [(label, w, a) for label, (w, a) in WITH_ACTS.items()]
    for i, (label, w, acts) in enumerate(cases):
        dtype = DTYPES[(seed + i) % 3]
        rows = int(rng.integers(1, 70))
        moe = w["strategy"] in ("group", "channel") and w["type"] == "int" and i % 4 == 0
        shape = (3, rows, _cols(rng, w)) if moe else (rows, _cols(rng, w))
        name = f"model.layers.{i}.{label}"
        tensors[name + ".weight"] = _weights(rng, shape, dtype)
        group = {"targets": [name], "weights": w}
        if acts:
            group["input_activations"] = acts
        groups[f"group_{i}"] = group
        modules.append(name)
    tensors["model.norm.weight"] = torch.ones(8, dtype=torch.bfloat16)
    src = tmp_path / "dense"
    src.mkdir()
    save_file(tensors, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return src, {"config_groups": groups, "ignore": []}, modules


def _read_all(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantized_bytes_match_compressed_tensors(seed: int, tmp_path: Path) -> None:
    src, recipe, modules = _build(seed, tmp_path)
    dst = tmp_path / "ours"
    ctcodec.compress_checkpoint(src, dst, recipe=recipe)
    config = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert config["format"] == "mixed-precision"
    by_module = {g["targets"][0]: g for g in config["config_groups"].values()}
    assert set(by_module) == set(modules)
    jobs = [{"name": m, "weights": {k: v for k, v in by_module[m]["weights"].items() if v is not None},
             "format": by_module[m]["format"]} for m in modules]
    ct_file, ct_dense = reference_compress(src / "model.safetensors", jobs, tmp_path)

    ours, theirs = _read_all(dst / "model.safetensors"), _read_all(ct_file)
    assert sorted(ours) == sorted(theirs)
    mismatched = [k for k in theirs if not _same_bytes(ours[k], theirs[k])]
    assert not mismatched, f"differ from compressed-tensors: {mismatched}"

    # And the other way: compressed-tensors' file decodes through ctcodec to exactly
    # what compressed-tensors decompresses it to.
    theirs_dir = tmp_path / "theirs"
    theirs_dir.mkdir()
    ct_file.rename(theirs_dir / "model.safetensors")
    (theirs_dir / "config.json").write_text((dst / "config.json").read_text())
    expected = _read_all(ct_dense)
    decoded = dict(ctcodec.decompress_file(theirs_dir))
    assert sorted(decoded) == sorted(expected)
    wrong = [k for k in expected if not _same_bytes(decoded[k], expected[k])]
    assert not wrong, f"decoded differently from compressed-tensors: {wrong}"


LEGACY_SCHEMES = {
    f"w{b}_{'sym' if sym else 'asym'}": {"num_bits": b, "type": "int", "symmetric": sym, "strategy": "group", "group_size": 32}
    for b in (2, 3, 4, 5, 6, 7, 8) for sym in (True, False)
}


def test_reads_the_pre_018_layout_of_compressed_tensors_017(tmp_path: Path) -> None:
    """compressed-tensors 0.17 packed 3/5/6/7-bit codes word-aligned; config.json's
    version selects that layout on read, and the values equal 0.17's own decode."""
    rng = np.random.default_rng(7)
    tensors, groups = {}, {}
    for i, (label, w) in enumerate(LEGACY_SCHEMES.items()):
        name = f"model.layers.{i}.{label}"
        tensors[name + ".weight"] = _weights(rng, (int(rng.integers(1, 40)), 32 * int(rng.integers(1, 4))), DTYPES[i % 3])
        groups[f"group_{i}"] = {"targets": [name], "weights": w}
    src = tmp_path / "dense"
    src.mkdir()
    save_file(tensors, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    ours = tmp_path / "ours"
    ctcodec.compress_checkpoint(src, ours, recipe={"config_groups": groups})
    config = json.loads((ours / "config.json").read_text())
    jobs = [{"name": g["targets"][0], "weights": g["weights"], "format": "pack-quantized"}
            for g in config["quantization_config"]["config_groups"].values()]
    ct_file, ct_dense = reference_compress(src / "model.safetensors", jobs, tmp_path, version="0.17.1")

    legacy = _read_all(ct_file)
    dense_layout = _read_all(ours / "model.safetensors")
    odd = [k for k in legacy if k.endswith("weight_packed") and not any(f".w{b}_" in k for b in (2, 4, 8))]
    assert odd and all(legacy[k].shape != dense_layout[k].shape or not torch.equal(legacy[k], dense_layout[k]) for k in odd)

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    ct_file.rename(theirs / "model.safetensors")
    config["quantization_config"]["version"] = "0.17.1"
    (theirs / "config.json").write_text(json.dumps(config))
    expected = _read_all(ct_dense)
    decoded = dict(ctcodec.decompress_file(theirs))
    wrong = [k for k in expected if not _same_bytes(decoded[k], expected[k])]
    assert not wrong, f"decoded differently from compressed-tensors 0.17: {wrong}"


def test_decodes_mxfp4_written_by_compressed_tensors(tmp_path: Path) -> None:
    """MXFP4 (fp4 codes, E8M0 exponent scales per 32 columns): ctcodec decodes what
    compressed-tensors writes to exactly its own dequantization (encoding is not ours)."""
    mx = {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "group", "group_size": 32,
          "scale_dtype": "torch.uint8"}
    rng = np.random.default_rng(11)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": _weights(rng, (int(rng.integers(1, 30)), 64), torch.bfloat16)
               for i in range(4)}
    src = tmp_path / "dense"
    src.mkdir()
    save_file(tensors, src / "model.safetensors")
    modules = [k[: -len(".weight")] for k in tensors]
    ct_file, ct_dense = reference_compress(src / "model.safetensors",
                                           [{"name": m, "weights": mx, "format": "mxfp4-pack-quantized"} for m in modules],
                                           tmp_path)
    folder = tmp_path / "theirs"
    folder.mkdir()
    ct_file.rename(folder / "model.safetensors")
    qc = {"quant_method": "compressed-tensors", "version": "0.20.0", "format": "mxfp4-pack-quantized",
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": mx, "format": "mxfp4-pack-quantized"}}}
    (folder / "config.json").write_text(json.dumps({"quantization_config": qc}))
    expected = _read_all(ct_dense)
    decoded = dict(ctcodec.decompress_file(folder))
    wrong = [k for k in expected if not _same_bytes(decoded[k], expected[k])]
    assert not wrong, wrong
