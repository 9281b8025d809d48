"""Online input rotations on every Linear layer, for models whose norms a residual-stream
rotation cannot pass (BERT's post-norm LayerNorm subtracts the mean and sits after the
residual add): each Linear's weight turns by a block Hadamard V on its input side, folded
here, and its input by the same V at run time (`online.py`), QuIP's input-side rotation
with a deterministic matrix. One transform group covers every layer, so its block is the
largest power of two dividing every width (MiniLM: 384 and 1536, blocks of 128); its
targets name exactly the layers turned, so no loader hooks a layer whose weight did not."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CodecError
from ..model_folder import CONFIG_NAME, read_json, shard_paths
from ..targets import is_target
from .online import fold_into_weight, input_rotation_group, power_of_two_block
from .rewrite import rewrite_folder

TARGETS = ["Linear"]
IGNORE = ["lm_head"]  # a tied head shares the embeddings' tensor, which must not turn


def _linear_modules(src: Path) -> set[str]:
    """Names of the torch.nn.Linear modules of the model `src` describes (built on the
    meta device), less a tied output head: only those get turned. Weights of other 2-D
    modules (GPT-2's Conv1D, relative-position embeddings) and tied heads are left alone."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    from ..inference.loading import model_class

    config = AutoConfig.from_pretrained(src)
    with init_empty_weights():
        model = model_class(config).from_config(config)
    tied = set()
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out_emb is not None and getattr(config, "tie_word_embeddings", True):
        tied = {n for n, m in model.named_modules() if m is out_emb}
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in tied}


def _is_one_of(module: str, names: set[str]) -> bool:
    """Checkpoint and model names may differ by a base-model prefix (`bert.`)."""
    return any(n == module or n.endswith("." + module) or module.endswith("." + n) for n in names)


def _exactly(weights) -> list[str]:
    """Targets matching exactly the modules turned, whatever prefix a loader's model adds."""
    return [f"re:(.*\\.)?{re.escape(w[: -len('.weight')])}$" for w in sorted(weights)]


def rotate_linear_inputs(src: str | os.PathLike, dst: str | os.PathLike, min_block: int = 16) -> dict:
    """Writes `dst`, the model folder `src` with every Linear weight turned by V on its
    input side, and the transform group its loaders must apply (also in dst's config.json
    as `transform_config`). Returns that transform_config."""
    from safetensors import safe_open

    src, dst = Path(src), Path(dst)
    linears = _linear_modules(src)
    shards = shard_paths(src)
    widths = {}
    for shard in shards:
        with safe_open(shard, "pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                module = name[: -len(".weight")]
                if name.endswith(".weight") and is_target(module, shape, TARGETS, IGNORE) \
                        and _is_one_of(module, linears) and f.get_slice(name).get_dtype() in ("BF16", "F16", "F32"):
                    widths[name] = shape[1]
    if not widths:
        raise CodecError(f"{src}: no Linear weight to rotate")
    block = min(power_of_two_block(k) for k in widths.values())
    if block < min_block:
        raise CodecError(f"{src}: Linear widths {sorted(set(widths.values()))} share only blocks of {block}; "
                         f"an online rotation needs at least {min_block}")
    from ..config_models import TransformConfig

    transforms = TransformConfig.model_validate(
        {"config_groups": {"V": input_rotation_group(block, _exactly(widths), [])}}).model_dump(mode="json")
    config = read_json(src / CONFIG_NAME)
    config["transform_config"] = transforms

    def rotated(_shard, f) -> dict:
        out = {}
        for name in f.keys():
            t = f.get_tensor(name)
            out[name] = fold_into_weight(t, block).to(t.dtype) if name in widths else t
        return out

    rewrite_folder(src, Path(dst), rotated, config)
    return transforms
