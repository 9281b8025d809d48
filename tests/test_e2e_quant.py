"""Real SmolLM2-135M quantized by ctcodec: compressed-tensors' own model-free
dequantizer reads every module of our output and gets the same weights we decode, and
the quantized model still predicts like the dense one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import ctcodec
from ct_current import PROMPT, run_ct, transformers_logits
from realdata import dense_smollm2_folder, license_history_text

pytestmark = pytest.mark.slow


# SmolLM2's 576 input features are not a multiple of 128: group schemes use 64.
@pytest.mark.parametrize("scheme", ["W4A16", "W4A16_ASYM", "W3A16", "W8A8", "FP8_DYNAMIC", "NVFP4A16"])
def test_smollm2_quantized_reads_in_compressed_tensors(scheme: str, cache_dir: Path, tmp_path: Path) -> None:
    src = dense_smollm2_folder(cache_dir)
    out = tmp_path / "quantized"
    group = 64 if scheme.endswith(("A16", "A16_ASYM")) and scheme != "NVFP4A16" else None
    summary = ctcodec.compress_checkpoint(src, out, scheme=scheme, group_size=group)
    assert summary["compressed_tensors"] == 7 * 30  # q/k/v/o/gate/up/down in 30 layers
    assert not summary["skipped"]
    ct_dense = tmp_path / "ct_dense"
    run_ct("ct_dequantize.py", str(out), str(ct_dense))
    with safe_open(ct_dense / "model.safetensors", "pt") as f:
        theirs = {k: f.get_tensor(k) for k in f.keys()}
    ours = dict(ctcodec.decompress_file(out))
    assert sorted(ours) == sorted(theirs)
    for name, t in theirs.items():
        # compressed-tensors casts every dequantized weight to bf16; ours keep the scale
        # dtype, which for this bf16 model is bf16 as well.
        assert torch.equal(ours[name].to(t.dtype), t), name


def _loss(folder: Path, ids) -> float:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(ids, labels=ids).loss.item()


def test_smollm2_quantized_predicts_like_dense(cache_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    src = dense_smollm2_folder(cache_dir)
    losses = {}
    for scheme in ("W8A16", "W4A16"):
        out = tmp_path / scheme
        ctcodec.compress_checkpoint(src, out, scheme=scheme, group_size=64)
        ctcodec.decompress_checkpoint(out, tmp_path / f"{scheme}-dense")
    tok = AutoTokenizer.from_pretrained(src)
    # Real text nobody here wrote: the history section of CPython's LICENSE.txt.
    ids = tok(license_history_text(), return_tensors="pt").input_ids
    dense = _loss(src, ids)
    for scheme in ("W8A16", "W4A16"):
        losses[scheme] = _loss(tmp_path / f"{scheme}-dense", ids)
    print(f"next-token loss: dense {dense:.4f}, " + ", ".join(f"{k} g64 {v:.4f}" for k, v in losses.items()))
    # 8 bits is near lossless; 4-bit round-to-nearest costs a 135M model clearly more,
    # but it still models the text (a broken codec lands far above).
    assert abs(losses["W8A16"] - dense) < 0.02 * dense, (dense, losses)
    assert losses["W8A16"] < losses["W4A16"] < dense * 1.4, (dense, losses)


# compressed-tensors 0.20 builds the expected parameters on the meta device without
# packing asymmetric zero points ([out, groups] instead of [out * bits / 32, groups]), so
# transformers refuses any asymmetric pack-quantized checkpoint, its own included (our
# tensors equal its compressor's, see test_interop_quant). Kept as a strict xfail.
CT_META_ZP = pytest.mark.xfail(strict=True, reason="compressed-tensors 0.20 meta path leaves zero points unpacked")


@pytest.mark.parametrize("scheme, group", [("W4A16", 64), pytest.param("W4A16_ASYM", 64, marks=CT_META_ZP),
                                           ("W8A16", 64), ("NVFP4A16", None), ("MXFP4A16", None)])
def test_transformers_loads_our_checkpoint_through_compressed_tensors(scheme, group, cache_dir: Path, tmp_path: Path):
    """transformers + compressed-tensors 0.20 load what we write as their own (no missing
    or unexpected keys) and compute exactly the logits of our dense decompression."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = dense_smollm2_folder(cache_dir)
    out = tmp_path / "q"
    ctcodec.compress_checkpoint(src, out, scheme=scheme, group_size=group)
    theirs = transformers_logits(out, src, tmp_path)
    dense = tmp_path / "dense"
    ctcodec.decompress_checkpoint(out, dense)
    tok = AutoTokenizer.from_pretrained(src)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.bfloat16)
    if scheme == "NVFP4A16":
        # Asked for bf16, transformers casts the fp32 `weight_global_scale` to bf16 and
        # dequantizes in bf16 (scale / global_scale, then times the fp4 value). Our dense
        # decompression keeps fp32 until the last rounding, so the exact reference for
        # what transformers computes is built from our stored bytes with its roundings.
        _load_nvfp4_as_transformers_does(model, out / "model.safetensors")
    with torch.no_grad():
        ours = model(ids).logits
    assert torch.equal(theirs, ours)


# The fp4 (E2M1) values of the 16 codes, from the OCP microscaling spec: sign bit 3.
_E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def _load_nvfp4_as_transformers_does(model, compressed: Path) -> None:
    """Sets every NVFP4 weight of `model` to bf16(code) * bf16(bf16(scale) / bf16(global_scale)),
    decoding the codes from the stored nibbles (low nibble first) without ctcodec."""
    state, loaded = model.state_dict(), 0
    with safe_open(compressed, "pt") as f:
        for key in f.keys():
            if not key.endswith(".weight_packed"):
                continue
            loaded += 1
            module = key[: -len(".weight_packed")]
            packed = f.get_tensor(key).long()
            codes = torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
            values = _E2M1[codes].to(torch.bfloat16)
            scale = f.get_tensor(module + ".weight_scale").to(torch.bfloat16)
            scale = scale / f.get_tensor(module + ".weight_global_scale").to(torch.bfloat16)
            grouped = values.reshape(values.shape[0], scale.shape[1], -1) * scale.unsqueeze(-1)
            state[module + ".weight"].copy_(grouped.reshape(values.shape))
    assert loaded == 7 * 30, loaded  # q/k/v/o/gate/up/down in 30 layers
