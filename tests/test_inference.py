"""load_model / replace_modules: transformers models run straight from compressed
checkpoints, compressed layers held packed; on the CPU the exact fallback must give the
same logits as the dense model ctcodec decodes."""

import pytest
import torch

import ctcodec
from ctcodec import CodecError, CompressedLinear
from ctcodec.calibrate import compress_calibrated
from ctcodec.evaluate import load_model as load_decoded

from tiny_models import calib_file, tiny_bert

PROMPT = "The capital of France is Paris, and the capital of Italy is"


def _logits(model, tok):
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits




MAKERS = {
    "W4A16 g32": lambda src, out, tmp: ctcodec.compress_checkpoint(src, out, scheme="W4A16", group_size=32),
    "W4A16_ASYM channel": lambda src, out, tmp: ctcodec.compress_checkpoint(src, out, scheme="W4A16_ASYM",
                                                                            group_size=-1),
    "W3A16 g16": lambda src, out, tmp: ctcodec.compress_checkpoint(src, out, scheme="W3A16", group_size=16),
    "W8A16 g32": lambda src, out, tmp: ctcodec.compress_checkpoint(src, out, scheme="W8A16", group_size=32),
    "GPTQ act-order g_idx": lambda src, out, tmp: compress_calibrated(
        src, out, scheme="W4A16_ASYM", group_size=32, act_order=True, actorder="group", calib=calib_file(tmp),
        nsamples=2, seqlen=32),
    "SpQR csr": lambda src, out, tmp: compress_calibrated(src, out, algorithm="spqr", calib=calib_file(tmp), nsamples=2,
                                                          seqlen=32),
    "FP8 (decoded on load)": lambda src, out, tmp: ctcodec.compress_checkpoint(src, out, scheme="FP8_DYNAMIC"),
    "sparse-bitmask (decoded on load)": lambda src, out, tmp: ctcodec.compress_checkpoint(src, out),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_load_model_logits_equal_the_decoded_model(tiny, tmp_path, kind):
    out = tmp_path / "c"
    MAKERS[kind](tiny, out, tmp_path)
    model = ctcodec.load_model(out)
    compressed = [m for m in model.modules() if isinstance(m, CompressedLinear)]
    kernel_format = "decoded on load" not in kind
    assert len(compressed) == (14 if kernel_format else 0)
    assert not any(isinstance(m, torch.nn.Linear) and "proj" in n for n, m in model.named_modules()) or not kernel_format
    decoded = dict(ctcodec.decompress_file(out))
    for name, mod in model.named_modules():
        if isinstance(mod, CompressedLinear):
            assert torch.equal(mod.dequantize(), decoded[f"{name}.weight"]), name
    reference, tok = load_decoded(out)
    assert torch.equal(_logits(model, tok), _logits(reference, tok))


def test_replace_modules_on_a_model_built_by_the_user(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "c"
    ctcodec.compress_checkpoint(tiny, out, scheme="W4A16", group_size=32)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16)
    assert ctcodec.replace_modules(model, out) == 14
    reference, tok = load_decoded(out)
    assert torch.equal(_logits(model.eval(), tok), _logits(reference, tok))


def test_an_encoder_loads_too(cache_dir, tmp_path):
    src = tiny_bert(cache_dir)
    out = tmp_path / "c"
    ctcodec.compress_checkpoint(src, out, scheme="W8A16", group_size=32)
    model = ctcodec.load_model(out)
    assert sum(isinstance(m, CompressedLinear) for m in model.modules()) == 13  # 2 x 6 + pooler
    reference, tok = load_decoded(out)
    enc = tok(["a short sentence to embed"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc).last_hidden_state, reference(**enc).last_hidden_state)


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(tiny, cache_dir, tmp_path):
    out = tmp_path / "c"
    ctcodec.compress_checkpoint(tiny, out, scheme="W4A16", group_size=32)
    from transformers import AutoModel

    other = AutoModel.from_pretrained(tiny_bert(cache_dir))
    with pytest.raises((CodecError, AttributeError)):
        ctcodec.replace_modules(other, out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["W4A16 g64", "SpQR 3-bit"])
def test_smollm2_from_a_compressed_checkpoint(cache_dir, tmp_path, kind):
    from realdata import dense_smollm2_folder

    src = dense_smollm2_folder(cache_dir)
    out = tmp_path / "c"
    if kind.startswith("W4"):
        ctcodec.compress_checkpoint(src, out, scheme="W4A16", group_size=64)
    else:
        compress_calibrated(src, out, algorithm="spqr", calib=calib_file(tmp_path), nsamples=4, seqlen=64)
    model = ctcodec.load_model(out)
    assert sum(isinstance(m, CompressedLinear) for m in model.modules()) == 210
    reference, tok = load_decoded(out)
    a, b = _logits(model, tok), _logits(reference, tok)
    # The CPU fallback decodes exactly as ctcodec does and runs the same matmuls.
    assert torch.equal(a, b)


def test_a_model_with_a_head_loads_as_its_own_class(cache_dir, tmp_path):
    from transformers import BertForSequenceClassification

    src = tmp_path / "cls"
    base = tiny_bert(cache_dir)
    model = BertForSequenceClassification.from_pretrained(base, num_labels=3)
    model.save_pretrained(src)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base).save_pretrained(src)
    out = tmp_path / "c"
    ctcodec.compress_checkpoint(src, out, scheme="W8A16", group_size=32, ignore=["classifier"])
    loaded = ctcodec.load_model(out)
    assert type(loaded).__name__ == "BertForSequenceClassification"
    reference, _ = load_decoded(out)
    ids = torch.tensor([[101, 2023, 2003, 102]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)


@pytest.mark.parametrize("corrupt", ["perm", "outlier column"])
def test_malformed_spqr_parts_are_refused_on_load(tiny, tmp_path, corrupt):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "c"
    compress_calibrated(tiny, out, algorithm="spqr", calib=calib_file(tmp_path), nsamples=2, seqlen=32,
                        outlier_threshold=0.05)
    tensors = load_file(out / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight_perm" if corrupt == "perm" else \
        "model.layers.0.mlp.up_proj.weight_outlier_col_vals"
    t = tensors[name]
    tensors[name] = (t * 0) if corrupt == "perm" else (t | 0xFFFF)
    assert t.numel() > 0
    save_file(tensors, out / "model.safetensors")
    with pytest.raises(CodecError, match="up_proj"):
        ctcodec.load_model(out)
