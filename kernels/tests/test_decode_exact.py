"""The weight the tensor-core paths multiply by equals ctcodec's decode bit for bit, on
files ctcodec wrote (compress_checkpoint from a dense model) and on files written here in
compressed-tensors' layout (activation order, uneven groups, per channel, fp16/fp32
scales); and the matmul of each agrees with x @ (ctcodec's decode).T."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from packing import random_weight, write_checkpoint
from reference import assert_matmul_close, same_bits
from safetensors import safe_open
from safetensors.torch import save_file

import ctcodec
import ctcodec_kernels as ck


def _stored(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in folder.glob("*.safetensors"):
        with safe_open(f, "pt") as s:
            out.update({k: s.get_tensor(k) for k in s.keys()})
    return out


def _schemes(folder: Path) -> dict[str, dict]:
    """module -> weights args, from config.json (targets are module names or Linear)."""
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    return {t: g["weights"] for g in qc["config_groups"].values() for t in g["targets"]}


def _prepare(stored, module, args, device):
    t = {k.rsplit(".", 1)[1]: v.to(device) for k, v in stored.items() if k.rsplit(".", 1)[0] == module}
    n, k = (int(v) for v in t["weight_shape"].reshape(-1))
    group = args["group_size"] if args["strategy"] == "group" else None
    return ck.prepare(t["weight_packed"], t["weight_scale"], args["num_bits"], group, n, k,
                      weight_zero_point=t.get("weight_zero_point"), weight_g_idx=t.get("weight_g_idx"))


def _check_folder(folder: Path, schemes: dict[str, dict], device: str) -> int:
    decoded = dict(ctcodec.decompress_file(folder))
    stored = _stored(folder)
    checked = 0
    for module, args in schemes.items():
        w = _prepare(stored, module, args, device)
        ours = ck.dequantize(w)
        theirs = decoded[f"{module}.weight"]
        assert same_bits(ours, theirs), module
        if theirs.dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(5, w.k, generator=torch.Generator().manual_seed(w.n)).to(theirs.dtype)
            assert_matmul_close(ck.quant_matmul(x.to(device), w), x, theirs)
        checked += 1
    return checked


def _dense_model(folder: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    save_file({f"{m}.weight": (torch.randn(*s, generator=g) * 0.05).bfloat16() for m, s in shapes.items()},
              folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
    return folder


@pytest.mark.parametrize("scheme,group", [("W4A16", 32), ("W8A16", 64), ("W4A16_ASYM", 128)])
def test_files_ctcodec_wrote(tmp_path, device, scheme, group):
    shapes = {"model.layers.0.self_attn.q_proj": (40, 256), "model.layers.0.mlp.up_proj": (24, 384)}
    out = tmp_path / "out"
    ctcodec.compress_checkpoint(_dense_model(tmp_path / "src", shapes), out, scheme=scheme, group_size=group)
    schemes = {m: next(iter(_schemes(out).values())) for m in shapes}
    assert _check_folder(out, schemes, device) == 2


def test_files_in_compressed_tensors_layout(tmp_path, device):
    weights = {
        "model.layers.0.mlp.up_proj": random_weight(1, 4, 10, 64, None, asym=True, scale_dtype=torch.float16),
        "model.layers.0.mlp.down_proj": random_weight(2, 8, 9, 96, 32, asym=True, act_order=True),
        "model.layers.0.mlp.gate_proj": random_weight(3, 4, 9, 96, 32, act_order="uneven"),
        "model.layers.0.self_attn.q_proj": random_weight(4, 8, 7, 64, 64, scale_dtype=torch.float32),
        "model.layers.0.self_attn.k_proj": random_weight(5, 4, 33, 320, 64, asym=True, act_order=True,
                                                         scale_dtype=torch.float16),
        "model.layers.0.self_attn.v_proj": random_weight(6, 4, 5, 48, 16, asym=True),
    }
    folder = write_checkpoint(tmp_path / "ct", weights)
    schemes = {m: {"num_bits": w.bits, "strategy": "channel" if w.group is None else "group",
                   "group_size": w.group} for m, w in weights.items()}
    assert _check_folder(folder, schemes, device) == len(weights)


def test_extreme_codes_and_scales(device):
    # Every code against every zero point, scales at the ends of fp16's range (products
    # near overflow and in the subnormals): still one rounding of the exact product.
    for bits in (4, 8):
        n = 2**bits
        qw = random_weight(0, bits, n, 64, 32, asym=True)
        qw.codes[:] = torch.arange(64) % n
        qw.zero_codes[:] = torch.arange(n)[:, None]
        qw.scales = torch.tensor([6e-8, 1e-5, 0.3, 3.0, 60000.0 / 255])[torch.arange(n * 2) % 5].view(n, 2).half()
        args, kw = qw.prepare_args(device)
        w = ck.prepare(*args, **kw)
        assert same_bits(ck.dequantize(w), qw.decoded(torch.float16))
        assert same_bits(ck.dequantize(w, torch.bfloat16), qw.decoded(torch.bfloat16))
