"""Quality of a (compressed) model on real text: perplexity for causal LMs, and the
cosine similarity of sentence embeddings to a reference model for encoders."""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

from .checkpoint import decompress_checkpoint
from .errors import CodecError
from .model_folder import CONFIG_NAME, read_json
from .reading import declared_format, declared_quantization
from .rotation.online import attach_online_rotations, declared_transforms


def load_model(path: str | os.PathLike, causal: bool | None = None):
    """A transformers model (eval mode) and tokenizer from a dense or compressed folder;
    a compressed one is decoded by ctcodec first."""
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    compressed = declared_format(path) not in (None, "dense") or bool(declared_quantization(path))
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # beside the model, not in a small tmpfs
        folder = path
        if compressed:
            folder = Path(tmp) / "dense"
            decompress_checkpoint(path, folder)
        config = AutoConfig.from_pretrained(folder)
        from .inference.loading import model_class

        auto = model_class(config, causal)
        dtype = getattr(config, "torch_dtype", None) or "auto"
        try:
            model = auto.from_pretrained(folder, dtype=dtype).eval()
        except TypeError:  # transformers before `dtype` replaced `torch_dtype`
            model = auto.from_pretrained(folder, torch_dtype=dtype).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    # Online rotations (R4) are part of the model's function; decompression keeps none.
    attach_online_rotations(model, declared_transforms(read_json(path / CONFIG_NAME)))
    return model, tokenizer


def perplexity(model, tokenizer, text: str, seqlen: int = 512) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `seqlen` tokens."""
    import torch

    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, seqlen):
            window = ids[start:start + seqlen].unsqueeze(0)
            if window.shape[1] < 2:
                break
            logits = model(window).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
            total += nll.item()
            count += window.shape[1] - 1
    if count == 0:
        raise CodecError("evaluation text is too short")
    return math.exp(total / count)


def sentences(text: str, limit: int = 256, min_words: int = 6) -> list[str]:
    """Sentences of a real text (split on sentence ends and blank lines)."""
    parts = re.split(r"(?<=[.!?])\s+|\n\s*\n", text)
    out = [" ".join(p.split()) for p in parts]
    return [s for s in out if len(s.split()) >= min_words][:limit]


def embeddings(model, tokenizer, texts: list[str], batch: int = 32):
    """Mean-pooled, L2-normalised sentence embeddings (sentence-transformers' pooling
    for all-MiniLM-L6-v2)."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            outs.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(outs)


def embedding_similarity(reference, candidate, tokenizer, texts: list[str]) -> dict[str, float]:
    """Cosine similarity of each sentence's embedding under `candidate` to `reference`."""
    a = embeddings(reference, tokenizer, texts)
    b = embeddings(candidate, tokenizer, texts)
    cos = (a * b).sum(-1)
    return {"mean_cosine": cos.mean().item(), "min_cosine": cos.min().item(), "sentences": len(texts)}
