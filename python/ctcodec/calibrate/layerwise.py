"""A transformers model held one decoder/encoder layer at a time: the parts around the
layers (embeddings, norms, head) are loaded normally, each layer is built empty and
filled from the checkpoint when needed, so models larger than memory calibrate."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from ..errors import CodecError
from ..model_folder import CONFIG_NAME, INDEX_NAME, read_json, shard_paths
from ..rotation.online import attach_online_rotations, declared_transforms


def _auto_class(config):
    from transformers import AutoModel, AutoModelForCausalLM

    archs = getattr(config, "architectures", None) or []
    return AutoModelForCausalLM if any(a.endswith("ForCausalLM") for a in archs) else AutoModel


def _layer_list(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The ModuleList of repeated layers: the one holding the most parameters."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0:
            size = sum(p.numel() for p in mod.parameters())
            if best is None or size > best[2]:
                best = (name, mod, size)
    if best is None:
        raise CodecError(f"{type(model).__name__} has no list of layers to calibrate layer by layer")
    return best[0], best[1]


class LayerwiseModel:
    def __init__(self, folder: str | Path, dtype: torch.dtype | None = None):
        from transformers import AutoConfig

        self.folder = Path(folder)
        self.config = AutoConfig.from_pretrained(self.folder)
        self.dtype = dtype or getattr(self.config, "torch_dtype", None) or torch.float32
        if isinstance(self.dtype, str):
            self.dtype = getattr(torch, self.dtype)
        self.num_layers = self.config.num_hidden_layers
        auto = _auto_class(self.config)
        one = copy.deepcopy(self.config)
        one.num_hidden_layers = 1
        with torch.device("meta"):
            skeleton = auto.from_config(one)
        self.layers_path, layers = _layer_list(skeleton)
        self.template = layers[0]
        outer_config = copy.deepcopy(self.config)
        outer_config.num_hidden_layers = 0
        quiet = logging.getLogger("transformers.modeling_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the layers' weights are unused here, on purpose
        try:
            try:
                self.outer = auto.from_pretrained(self.folder, config=outer_config, dtype=self.dtype).eval()
            except TypeError:  # transformers before `dtype` replaced `torch_dtype`
                self.outer = auto.from_pretrained(self.folder, config=outer_config, torch_dtype=self.dtype).eval()
        finally:
            quiet.setLevel(level)
        self.layers = self.outer.get_submodule(self.layers_path)
        # Online rotations (R4) are part of the model's function: calibrate through them.
        self.transforms = declared_transforms(read_json(self.folder / CONFIG_NAME))
        attach_online_rotations(self.outer, self.transforms)
        self._index = self._tensor_index()
        self.prefix = self._checkpoint_prefix()

    def _tensor_index(self) -> dict[str, Path]:
        index = self.folder / INDEX_NAME
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return {k: self.folder / v for k, v in weight_map.items()}
        from safetensors import safe_open

        out = {}
        for shard in shard_paths(self.folder):
            with safe_open(shard, "pt") as f:
                out.update({k: shard for k in f.keys()})
        return out

    def _checkpoint_prefix(self) -> str:
        """How layer i's tensors are named in the checkpoint (the model class may add or
        drop a base-model prefix such as `bert.`)."""
        first = next(iter(self.template.state_dict()))
        want = f"{self.layers_path}.0.{first}"
        parts = want.split(".")
        for k in range(len(parts)):
            cand = ".".join(parts[k:])
            for name in self._index:
                if name == cand or name.endswith("." + cand):
                    return name[: len(name) - len(cand)] + ".".join(self.layers_path.split(".")[k:])
        raise CodecError(f"{self.folder}: no tensor of layer 0 ({want}) in the checkpoint")

    def layer_names(self, i: int) -> dict[str, str]:
        """Module-relative parameter name -> checkpoint tensor name, for layer i."""
        return {k: f"{self.prefix}.{i}.{k}" for k in self.template.state_dict()}

    def load_layer(self, i: int) -> torch.nn.Module:
        from safetensors import safe_open

        layer = copy.deepcopy(self.template).to_empty(device="cpu")
        state = {}
        by_shard: dict[Path, list[tuple[str, str]]] = {}
        for local, name in self.layer_names(i).items():
            if name not in self._index:
                raise CodecError(f"{self.folder}: tensor {name!r} of layer {i} is missing")
            by_shard.setdefault(self._index[name], []).append((local, name))
        for shard, names in by_shard.items():
            with safe_open(shard, "pt") as f:
                for local, name in names:
                    state[local] = f.get_tensor(name).to(self.dtype)
        layer.load_state_dict(state)
        for mod in layer.modules():  # caches keyed by layer index (unused without a cache)
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = i
        attach_online_rotations(layer, self.transforms, prefix=f"{self.prefix}.{i}.")
        return layer.eval()
