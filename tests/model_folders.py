"""Small synthetic model folders (bf16 safetensors + config.json) for CLI and config tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def model_folder(path: Path, layers: int = 12, widths=(64, 96)) -> Path:
    """A model folder with `layers` layers, each an up (widths[0] wide) and a down
    projection (widths[1] wide), in bf16 as ml_dtypes stores it."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((32, widths[0])).astype(ml_dtypes.bfloat16)}
    for i in range(layers):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal((widths[1], widths[0]))
        tensors[f"model.layers.{i}.mlp.down_proj.weight"] = rng.standard_normal((widths[0], widths[1]))
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    path.mkdir(parents=True)
    save_file(tensors, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}))
    return path


SHARDS = 4


def sharded_model(folder: Path) -> Path:
    """A 4-shard bf16 model folder (~8 MiB a shard, weights half zeros) with its index."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    folder.mkdir()
    weight_map = {}
    for s in range(SHARDS):
        name = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        tensors = {}
        for i in range(3):
            layer = s * 3 + i
            w = rng.standard_normal((2048, 2048)).astype(np.float32)
            w[rng.random(w.shape) < 0.5] = 0
            tensors[f"model.layers.{layer}.mlp.up_proj.weight"] = w.astype(ml_dtypes.bfloat16)
            tensors[f"model.layers.{layer}.post_attention_layernorm.weight"] = np.ones(2048, ml_dtypes.bfloat16)
        save_file(tensors, folder / name)
        weight_map.update({t: name for t in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}))
    (folder / "tokenizer.json").write_text("{}")
    return folder
