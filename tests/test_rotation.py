"""Rotations folded into Llama-family weights (ctcodec.rotation): Hadamard matrices of
real hidden sizes, the rotated model computes the dense model's function, and the
rotated checkpoint is a standard one compressed-tensors 0.20 and transformers load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ctcodec
from ctcodec import CodecError
from ctcodec.rotation import hadamard, rotate_folder, rotation

from ct_current import PROMPT, run_ct, transformers_logits
from tiny_models import calib_file, tiny_bert, tiny_llama, tiny_qwen2

# k · 2^m with k = 1, 2 or a Paley order (q + 1, q ≡ 3 mod 4, or 2(q + 1), q ≡ 1 mod 4).
BASES = [1, 2, 12, 20, 24, 28, 36, 44, 60, 84, 108]


@settings(max_examples=25, deadline=None)
@given(base=st.sampled_from(BASES), power=st.integers(0, 5))
def test_hadamard_matrices_of_real_sizes(base, power):
    n = base * 2 ** power
    if n < 1 or n > 2048:
        return
    H = hadamard(n)
    assert H.shape == (n, n)
    assert torch.equal(H.abs(), torch.ones(n, n, dtype=torch.float64))
    assert torch.equal(H @ H.T, n * torch.eye(n, dtype=torch.float64))
    for kind in ("hadamard", "random-hadamard"):
        R = rotation(n, kind, seed=power)
        assert torch.allclose(R @ R.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_hidden_sizes_of_real_models_and_impossible_orders():
    for n in (384, 576, 896, 1536, 2048, 4096, 5120, 14336):  # MiniLM, SmolLM2, Qwen2, Llama ...
        assert hadamard(n).shape == (n, n)
    for n in (6, 14, 22, 100):  # orders 6, 14, 22 are no multiple of 4; 100 = 25 · 4 is not k · 2^m here
        with pytest.raises(CodecError, match="Hadamard"):
            hadamard(n)
    with pytest.raises(CodecError, match="hadamard or random-hadamard"):
        rotation(64, "givens")


def _logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("kind", ["hadamard", "random-hadamard"])
def test_folded_rotation_keeps_the_models_function(family, kind, cache_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    if family == "llama":
        src = tiny_llama(cache_dir, dtype=torch.float32)
    else:  # bf16 on disk: compare in fp32 from an fp32 copy
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2(cache_dir), dtype=torch.float32)
        src = tmp_path / "qwen2-fp32"
        model.save_pretrained(src)
    out = tmp_path / "rotated"
    rot = rotate_folder(src, out, kind, seed=3)
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    a, b = _logits(src, ids), _logits(out, ids)
    assert torch.allclose(a, b, atol=1e-4 * a.abs().max().item()), (a - b).abs().max()
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    tensors = dict(ctcodec.decompress_file(out / "model.safetensors"))
    assert "lm_head.weight" in tensors
    norms = [n for n in tensors if n.endswith("layernorm.weight") or n == "model.norm.weight"]
    assert len(norms) == 5 and all(torch.equal(tensors[n], torch.ones_like(tensors[n])) for n in norms)
    # The embeddings really turned: a rotation, not a copy.
    before = dict(ctcodec.decompress_file(src / "model.safetensors"))["model.embed_tokens.weight"]
    assert torch.allclose(tensors["model.embed_tokens.weight"], (before.double() @ rot.hidden).float(), atol=1e-6)


def test_rotated_w4a16_loads_in_compressed_tensors_and_transformers(cache_dir, tmp_path):
    """The rotated, quantized checkpoint is standard: compressed-tensors 0.20 parses its
    transform_config, and transformers (through compressed-tensors) computes exactly the
    logits of our dense decompression."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tiny_llama(cache_dir)
    out = tmp_path / "q"
    summary = ctcodec.compress_checkpoint(src, out, scheme="W4A16", group_size=32, rotate="random-hadamard")
    assert summary["rotate"] == "random-hadamard"
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert set(qc["transform_config"]["config_groups"]) == {"R1", "R2"}
    log = run_ct("ct_transform_config.py", str(out))
    assert "R1 random-hadamard None [('weight_output', False), ('weight_input', True)]" in log
    assert "R2 random-hadamard 16 [('weight_output', False), ('weight_input', True)]" in log
    theirs = transformers_logits(out, src, tmp_path)
    dense = tmp_path / "dense"
    ctcodec.decompress_checkpoint(out, dense)
    ids = AutoTokenizer.from_pretrained(src)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.bfloat16)(ids).logits
    assert torch.equal(theirs, ours)


def test_rotation_with_gptq_and_the_command_line(cache_dir, tmp_path):
    from ctcodec.calibrate import compress_calibrated
    from ctcodec.cli import main

    src = tiny_llama(cache_dir)
    s = compress_calibrated(src, tmp_path / "g", scheme="W4A16", group_size=32, calib=calib_file(tmp_path),
                            nsamples=4, seqlen=32, rotate="hadamard", observer="mse")
    assert s["rotate"] == "hadamard" and s["weights"] == 14
    qc = json.loads((tmp_path / "g" / "config.json").read_text())["quantization_config"]
    assert qc["config_groups"]["group_0"]["weights"]["observer"] == "mse"
    assert qc["transform_config"]["config_groups"]["R2"]["head_dim"] == 16
    with pytest.raises(CodecError, match="observer"):
        compress_calibrated(src, tmp_path / "bad", scheme="W4A16", observer="max")
    assert main(["compress", str(src), str(tmp_path / "c"), "--scheme", "W4A16", "--group-size", "32",
                 "--rotate", "hadamard", "-q"]) == 0
    qc = json.loads((tmp_path / "c" / "config.json").read_text())["quantization_config"]
    assert qc["transform_config"]["config_groups"]["R1"]["type"] == "hadamard"
    assert not list(tmp_path.glob(".*rotated*")), "the rotated temporary folder is removed"


def test_rotation_refuses_what_it_cannot_fold(cache_dir, tmp_path):
    with pytest.raises(CodecError, match="pre-norm RMSNorm"):
        ctcodec.compress_checkpoint(tiny_bert(cache_dir), tmp_path / "b", scheme="W4A16", rotate="hadamard")
    with pytest.raises(CodecError, match="no longer sparse"):
        ctcodec.compress_checkpoint(tiny_llama(cache_dir), tmp_path / "s", rotate="hadamard")
    with pytest.raises(CodecError, match="rotate must be"):
        ctcodec.compress_checkpoint(tiny_llama(cache_dir), tmp_path / "x", scheme="W4A16", rotate="spin")
    assert not (tmp_path / "b").exists() and not (tmp_path / "x").exists()
