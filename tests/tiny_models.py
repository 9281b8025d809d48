"""Tiny transformers models with random weights (a Llama decoder and a BERT encoder),
saved as model folders with real tokenizers, for fast end-to-end checks."""

from __future__ import annotations

from pathlib import Path

import torch

from realdata import dense_smollm2_folder, license_history_text, minilm_folder


def tiny_llama(cache: Path, dtype=torch.bfloat16, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = cache / f"tiny-llama-{str(dtype).split('.')[-1]}-{seed}"
    if (out / "model.safetensors").is_file():
        return out
    smol = dense_smollm2_folder(cache)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, torch_dtype=str(dtype).split(".")[-1])
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # heavier tails than the init's, so outliers exist
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.copy_((torch.randn_like(p.float()) * 0.05 + 0.4 * torch.randn_like(p.float()).pow(3) * 0.02).to(dtype))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(smol).save_pretrained(out)
    return out


def tiny_bert(cache: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = cache / f"tiny-bert-{seed}"
    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(minilm_folder(cache))
    config = BertConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512)
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def calib_file(folder: Path) -> str:
    """A small real calibration text (CPython's license history) as a file."""
    p = Path(folder) / "calib.txt"
    p.write_text(license_history_text(6000))
    return str(p)


def tiny_qwen2(cache: Path, seed: int = 0) -> Path:
    """A tiny Qwen2 whose two layers use different attention (full, then sliding): its
    decoder picks each layer's mask by the layer's `attention_type`."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = cache / f"tiny-qwen2-{seed}"
    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         use_sliding_window=True, sliding_window=8, max_window_layers=1,
                         tie_word_embeddings=True, torch_dtype="bfloat16")
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(dense_smollm2_folder(cache)).save_pretrained(out)
    return out
