"""SpinQuant's R4 as an online transform (`online_rotation=True`, ctcodec.rotation.online):
down_proj's weight turns by a block Hadamard V, its input by the same V at run time.
Checked against compressed-tensors 0.20 applying the checkpoint's online transforms
itself, through the calibration path, and on what it refuses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ctcodec
from ctcodec import CodecError
from ctcodec.rotation import attach_online_rotations, rotate_folder
from ctcodec.rotation.online import InputRotation, fold_into_weight, input_rotation_group, power_of_two_block

from ct_current import PROMPT, run_ct
from tiny_models import calib_file, tiny_bert, tiny_llama, tiny_qwen2


@settings(max_examples=30, deadline=None)
@given(log_block=st.integers(0, 7), heads=st.integers(1, 5), rows=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_folded_weight_and_rotated_input_give_the_same_product(log_block, heads, rows, seed):
    block = 2 ** log_block
    width = block * heads
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, width, generator=g, dtype=torch.float64)
    W = torch.randn(rows, width, generator=g, dtype=torch.float64)
    turned = InputRotation(block)(None, (x,))[0]
    assert torch.allclose(turned @ fold_into_weight(W, block).T, x @ W.T, atol=1e-9)
    # Orthogonal: norms are kept, and it is no identity (for blocks past 1).
    assert torch.allclose(turned.norm(dim=-1), x.norm(dim=-1))
    if block > 1:
        assert not torch.allclose(turned, x)


def test_block_is_the_largest_power_of_two_dividing_the_width():
    assert [power_of_two_block(n) for n in (96, 1536, 11008, 14336, 4864, 8192, 3)] == \
        [32, 512, 256, 2048, 256, 8192, 1]


def _logits_of(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_rotated_folder_with_r4_keeps_the_function_through_our_loaders(family, cache_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctcodec.calibrate.layerwise import LayerwiseModel
    from ctcodec.evaluate import load_model

    if family == "llama":
        src = tiny_llama(cache_dir, dtype=torch.float32)
    else:
        src = tmp_path / "qwen2-fp32"
        AutoModelForCausalLM.from_pretrained(tiny_qwen2(cache_dir), dtype=torch.float32).save_pretrained(src)
        AutoTokenizer.from_pretrained(tiny_qwen2(cache_dir)).save_pretrained(src)
    out = tmp_path / "rotated"
    rot = rotate_folder(src, out, "random-hadamard", seed=5, online=True)
    assert rot.down_block == 32  # intermediate 96 = 3 · 32
    config = json.loads((out / "config.json").read_text())
    assert config["transform_config"]["config_groups"]["R4"]["head_dim"] == 32
    ids = torch.randint(0, 1000, (2, 20), generator=torch.Generator().manual_seed(1))
    dense = _logits_of(AutoModelForCausalLM.from_pretrained(src), ids)
    ours = _logits_of(load_model(out)[0], ids)
    assert torch.allclose(ours, dense, atol=1e-4 * dense.abs().max().item()), (ours - dense).abs().max()
    # Without the online half the model is another function: R4 really is in the weights.
    bare = _logits_of(AutoModelForCausalLM.from_pretrained(out), ids)
    assert not torch.allclose(bare, dense, atol=1e-2 * dense.abs().max().item())
    # Calibration sees the same function: each layer loaded for it carries R4's input side.
    lw_dense, lw_rot = LayerwiseModel(src), LayerwiseModel(out)
    layer = lw_rot.load_layer(1)
    assert len(layer.mlp.down_proj._forward_pre_hooks) == 1
    mlp_in = torch.randn(2, 7, 96, generator=torch.Generator().manual_seed(3))
    want = lw_dense.load_layer(1).mlp.down_proj(mlp_in) @ rot.hidden.float()
    assert torch.allclose(layer.mlp.down_proj(mlp_in), want, atol=1e-5), "down_proj(x) == (dense down_proj(x)) Q"


def test_compressed_tensors_applying_our_online_transforms_computes_our_logits(cache_dir, tmp_path):
    """compressed-tensors 0.20's own apply_transform_config on the online groups (what vLLM
    does) over transformers' decompression gives exactly the logits of ctcodec's loader."""
    from transformers import AutoTokenizer

    from ctcodec.evaluate import load_model

    src = tiny_llama(cache_dir)
    out = tmp_path / "q"
    summary = ctcodec.compress_checkpoint(src, out, scheme="W4A16", group_size=32, rotate="random-hadamard",
                                          online_rotation=True)
    assert summary["online_rotation"] is True
    config = json.loads((out / "config.json").read_text())
    assert "transform_config" not in config, "only the quantization_config carries it in a checkpoint"
    r4 = config["quantization_config"]["transform_config"]["config_groups"]["R4"]
    assert {k: r4[k] for k in input_rotation_group(32)} == input_rotation_group(32)
    log = run_ct("ct_transform_config.py", str(out))
    assert "R4 hadamard 32 [('input', False), ('weight_input', True)]" in log
    theirs_file = tmp_path / "ct-online.pt"
    log = run_ct("ct_online_logits.py", str(out), str(src), str(theirs_file))
    assert "online transforms: 2 " in log, log  # one per layer's down_proj
    theirs = torch.load(theirs_file)
    ids = AutoTokenizer.from_pretrained(src)(PROMPT, return_tensors="pt").input_ids
    model = load_model(out)[0].to(torch.bfloat16)
    ours = _logits_of(model, ids)
    # Equal up to bf16 rounding (the float64 rotation's summation order follows the thread
    # count of each process); without R4's online half the logits are off by ~the logits.
    scale = theirs.abs().max().item()
    assert (theirs - ours).abs().max().item() <= 0.02 * scale, (theirs - ours).abs().max()
    bare = tmp_path / "bare"
    ctcodec.decompress_checkpoint(out, bare)
    from transformers import AutoModelForCausalLM

    unrotated = _logits_of(AutoModelForCausalLM.from_pretrained(bare, dtype=torch.bfloat16), ids)
    assert (theirs - unrotated).abs().max().item() > 0.2 * scale
    # The kernel-module loader applies it too (CPU fallback of the dequant GEMM).
    from ctcodec.inference import load_model as load_compressed_model

    served = _logits_of(load_compressed_model(out, dtype=torch.float32), ids)
    assert torch.allclose(served, ours.float(), atol=0.05 * ours.abs().max().item())


def test_gptq_with_r4_and_the_command_line(cache_dir, tmp_path):
    from ctcodec.calibrate import compress_calibrated
    from ctcodec.cli import main
    from ctcodec.evaluate import load_model

    src = tiny_llama(cache_dir)
    s = compress_calibrated(src, tmp_path / "g", scheme="W4A16", group_size=32, calib=calib_file(tmp_path),
                            nsamples=4, seqlen=32, rotate="hadamard", online_rotation=True, act_order=True)
    assert s["online_rotation"] is True and s["weights"] == 14
    groups = json.loads((tmp_path / "g" / "config.json").read_text())["quantization_config"]["transform_config"]
    assert set(groups["config_groups"]) == {"R1", "R2", "R4"}
    model = load_model(tmp_path / "g")[0]
    assert sum(len(m._forward_pre_hooks) for n, m in model.named_modules() if n.endswith("down_proj")) == 2
    assert main(["compress", str(src), str(tmp_path / "c"), "--scheme", "W4A16", "--group-size", "32",
                 "--rotate", "hadamard", "--online-rotation", "-q"]) == 0
    assert "R4" in json.loads((tmp_path / "c" / "config.json").read_text())["quantization_config"][
        "transform_config"]["config_groups"]
    with pytest.raises(CodecError, match="online_rotation goes with rotate"):
        ctcodec.compress_checkpoint(src, tmp_path / "x", scheme="W4A16", online_rotation=True)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("group, message", [
    ({"type": "random-hadamard", "head_dim": 32, "apply": [{"targets": ["Linear"], "location": "input"}]},
     "random-hadamard"),  # its matrix is drawn at load time: no loader can rebuild ours
    ({"type": "hadamard", "head_dim": 32, "apply": [{"targets": ["Linear"], "location": "output"}]}, "output"),
    ({"type": "hadamard", "head_dim": 32, "randomize": True, "apply": [{"targets": ["Linear"], "location": "input"}]},
     "randomize"),
    ({"type": "hadamard", "head_dim": 24, "apply": [{"targets": ["Linear"], "location": "input"}]}, "power-of-two"),
    ({"type": "hadamard", "head_dim": 64, "apply": [{"targets": ["re:.*down_proj$"], "location": "input"}]},
     "no multiple"),
])
def test_online_transforms_we_cannot_apply_are_refused(group, message, cache_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama(cache_dir))
    with pytest.raises(CodecError, match=re.escape(message)):
        attach_online_rotations(model, {"config_groups": {"v": group}})


def test_a_checkpoint_with_online_transforms_we_cannot_apply_fails_to_load(cache_dir, tmp_path):
    """QuIP-style online random rotations (no stored matrix) are a clear error, not a model
    that silently computes something else."""
    from ctcodec.evaluate import load_model

    src = tiny_llama(cache_dir)
    out = tmp_path / "q"
    ctcodec.compress_checkpoint(src, out, scheme="W4A16", group_size=32)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["transform_config"] = {"config_groups": {"v": {
        "type": "random-hadamard", "apply": [{"targets": ["Linear"], "location": "input", "ignore": ["lm_head"]}]}}}
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CodecError, match="not supported"):
        load_model(out)
    from ctcodec.inference import load_model as load_compressed_model

    with pytest.raises(CodecError, match="not supported"):
        load_compressed_model(out)


def test_bert_gets_online_input_rotations_that_compressed_tensors_applies_alike(cache_dir, tmp_path):
    """BERT's post-norm layers take no folded rotation; every Linear gets an online input
    rotation instead. The rotated dense folder computes the same function, and
    compressed-tensors 0.20 applying the group itself matches our loader."""
    from transformers import AutoModel, AutoTokenizer

    from ctcodec.calibrate import compress_calibrated
    from ctcodec.evaluate import load_model
    from ctcodec.rotation import rotate_linear_inputs

    src = tiny_bert(cache_dir)
    ids = AutoTokenizer.from_pretrained(src)(PROMPT, return_tensors="pt").input_ids
    rotated = tmp_path / "rotated"
    transforms = rotate_linear_inputs(src, rotated)
    assert transforms["config_groups"]["V"]["head_dim"] == 64  # widths 64 and 128
    with torch.no_grad():
        dense = AutoModel.from_pretrained(src)(ids).last_hidden_state
        ours = load_model(rotated)[0](ids).last_hidden_state
        bare = AutoModel.from_pretrained(rotated)(ids).last_hidden_state
    assert torch.allclose(ours, dense, atol=1e-5 * dense.abs().max().item())
    assert not torch.allclose(bare, dense, atol=1e-2 * dense.abs().max().item())

    out = tmp_path / "q"
    s = compress_calibrated(src, out, scheme="W4A16", group_size=32, calib=calib_file(tmp_path), nsamples=4,
                            seqlen=32, rotate="hadamard", online_rotation=True)
    assert s["rotate"] == "hadamard (online inputs)"
    log = run_ct("ct_transform_config.py", str(out))
    assert "V hadamard 64 [('input', False), ('weight_input', True)]" in log
    theirs_file = tmp_path / "ct.pt"
    log = run_ct("ct_online_logits.py", str(out), str(src), str(theirs_file), "--encoder")
    assert "online transforms: 13 " in log, log  # 2 layers × 6 Linear + the pooler
    theirs = torch.load(theirs_file)
    model = load_model(out)[0].to(torch.bfloat16)
    assert sum(isinstance(h, InputRotation) for m in model.modules() for h in m._forward_pre_hooks.values()) == 13
    with torch.no_grad():
        ours = model(ids).last_hidden_state
    scale = theirs.abs().max().item()
    assert (theirs - ours).abs().max().item() <= 0.02 * scale, (theirs - ours).abs().max()
    with pytest.raises(CodecError, match="with online_rotation any model"):
        ctcodec.compress_checkpoint(src, tmp_path / "no", scheme="W4A16", rotate="hadamard")


def test_decompressing_keeps_the_online_half_where_our_loaders_read_it(cache_dir, tmp_path, capsys):
    from ctcodec.cli import main
    from ctcodec.evaluate import load_model

    src = tiny_llama(cache_dir, dtype=torch.float32)
    out = tmp_path / "q"
    ctcodec.compress_checkpoint(src, out, scheme="W8A16", group_size=32, rotate="hadamard", online_rotation=True)
    assert main(["decompress", str(out), str(tmp_path / "d"), "-q"]) == 0
    assert "online transforms" in capsys.readouterr().err
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert "quantization_config" not in config and "R4" in config["transform_config"]["config_groups"]
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = load_model(out)[0](ids).logits
        b = load_model(tmp_path / "d")[0](ids).logits
    assert torch.equal(a, b)
    ctcodec.compress_checkpoint(src, tmp_path / "p", scheme="W8A16", group_size=32)
    plain = ctcodec.decompress_checkpoint(tmp_path / "p", tmp_path / "pd")
    assert plain["online_transforms"] is False
    assert "transform_config" not in json.loads((tmp_path / "pd" / "config.json").read_text())


def test_input_rotations_leave_a_tied_head_alone_and_target_exactly_what_turned(cache_dir, tmp_path):
    """A masked-LM BERT's decoder is a Linear tied to the word embeddings: it must neither
    turn nor be hooked. The group names exactly the layers that turned."""
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM

    from ctcodec.evaluate import load_model
    from ctcodec.rotation import rotate_linear_inputs

    base = tiny_bert(cache_dir)
    config = AutoConfig.from_pretrained(base)
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(0)
    src = tmp_path / "mlm"
    BertForMaskedLM(config).save_pretrained(src)
    AutoTokenizer.from_pretrained(base).save_pretrained(src)
    transforms = rotate_linear_inputs(src, tmp_path / "rot")
    targets = transforms["config_groups"]["V"]["apply"][0]["targets"]
    assert len(targets) == 13 and not any("decoder" in t for t in targets)  # 2 × 6 + the head's transform (no pooler)
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = load_model(src)[0](ids).logits
        rotated_model = load_model(tmp_path / "rot")[0]
        ours = rotated_model(ids).logits
    assert sum(isinstance(h, InputRotation) for m in rotated_model.modules() for h in m._forward_pre_hooks.values()) == 13
    assert torch.allclose(ours, dense, atol=1e-4 * dense.abs().max().item()), (ours - dense).abs().max()


def test_an_already_rotated_folder_is_not_rotated_again(cache_dir, tmp_path):
    src = tiny_llama(cache_dir, dtype=torch.float32)
    rotate_folder(src, tmp_path / "r", "hadamard", online=True)
    with pytest.raises(CodecError, match="already rotated"):
        ctcodec.compress_checkpoint(tmp_path / "r", tmp_path / "q", scheme="W4A16", group_size=32, rotate="hadamard")
    assert not (tmp_path / "q").exists()
