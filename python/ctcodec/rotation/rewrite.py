"""Writing a rotated copy of a model folder: each shard's tensors replaced, the index's
weight map and config.json rewritten, every other file copied."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..model_folder import INDEX_NAME, copy_other_files, read_json, shard_paths, write_config, write_json_atomic


def rewrite_folder(src: Path, dst: Path, tensors_of: Callable[[Path, object], dict[str, torch.Tensor]],
                   config: dict) -> None:
    """`tensors_of(shard, reader)` gives a shard's new tensors (a safetensors reader of
    it open in torch mode); `config` becomes dst's config.json."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shards = shard_paths(src)
    dst.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard in shards:
        with safe_open(shard, "pt") as f:
            out = {name: t.contiguous() for name, t in tensors_of(shard, f).items()}
            metadata = f.metadata()
        save_file(out, dst / shard.name, metadata=metadata)
        weight_map.update({n: shard.name for n in out})
    if (src / INDEX_NAME).is_file():
        index = read_json(src / INDEX_NAME)
        index["weight_map"] = dict(sorted(weight_map.items()))
        write_json_atomic(dst / INDEX_NAME, index)
    write_config(dst, config, sort_keys=False)
    copy_other_files(src, dst, shards)
