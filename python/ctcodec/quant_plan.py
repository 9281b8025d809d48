"""Planning a round-to-nearest quantization of a checkpoint: which weight gets which
scheme, and the `quantization_config` compressed-tensors writes for the result."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from .config_models import validate_quantization_config
from .errors import CodecError
from .formats import WRITABLE_QUANTIZED
from .scheme_lookup import parse as parse_config
from .scheme_presets import infer_format, normalize_weights, preset, weight_spec
from .targets import looks_linear

# The compressed-tensors release whose quantized layouts (dense int32 packing for odd
# bit widths, per-group `format`) our output follows.
CT_VERSION = "0.20.0"
QUANTIZABLE_DTYPES = ("BF16", "F16", "F32")


def _load_recipe(recipe: str | os.PathLike | dict) -> dict[str, Any]:
    if isinstance(recipe, dict):
        data = recipe
    else:
        try:
            data = json.loads(Path(recipe).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CodecError(f"{recipe}: cannot read recipe: {e}") from None
    data = data.get("quantization_config", data)
    if not isinstance(data, dict) or not isinstance(data.get("config_groups"), dict):
        raise CodecError(f"recipe {recipe!r} has no config_groups")
    validate_quantization_config(data, "recipe" if isinstance(recipe, dict) else recipe)
    return data


def _recipe_groups(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Recipe groups may be full schemes, `{"scheme": "W4A16", "targets": [...],
    "group_size": 64}`, or compressed-tensors' `{"W4A16": ["re:..."]}` shorthand."""
    groups = {}
    for name, g in data["config_groups"].items():
        if isinstance(g, list):
            groups[name] = preset(name, g)
        elif isinstance(g, dict) and "scheme" in g:
            groups[name] = preset(g["scheme"], list(g.get("targets", [])), g.get("group_size"))
            if g.get("format"):
                groups[name]["format"] = g["format"]
        elif isinstance(g, dict):
            parse_config({"config_groups": {name: g}})  # validates
            groups[name] = {"format": None, "input_activations": None, "output_activations": None, **g}
        else:
            raise CodecError(f"recipe group {name!r} is neither a scheme nor a target list")
    return groups


class QuantPlan:
    """Which tensors to quantize with which spec, and the config describing it."""

    def __init__(self, groups: dict[str, dict[str, Any]], ignore: list[str], forced_format: str | None,
                 kv_cache_scheme: dict[str, Any] | None = None):
        self.groups = groups
        self.ignore = ignore
        self.forced_format = forced_format
        # Passed through to config.json: the KV-cache scales are a runtime's business.
        self.kv_cache_scheme = kv_cache_scheme
        self.used: dict[str, str] = {}  # group name -> format
        self.skipped: list[dict[str, str]] = []

    def _group_for(self, module: str, shape: Sequence[int]) -> str | None:
        for i in self.ignore:
            if (i.startswith("re:") and re.match(i[3:], module)) or i == module:
                return None
        best, rank = None, 9
        for name, g in self.groups.items():
            for t in g.get("targets", []):
                if t.startswith("re:"):
                    r = 1 if re.match(t[3:], module) else 9
                elif t == module:
                    r = 0
                elif t == "Linear":
                    r = 2 if looks_linear(module, shape) else 9
                elif "." not in t and t[:1].isupper():
                    raise CodecError(f"target class {t!r} cannot be resolved without a model; "
                                     "use Linear, exact module names or re: patterns")
                else:
                    r = 9
                if r < rank:
                    best, rank = name, r
        return best

    def _format(self, group: dict[str, Any]) -> str:
        fmt = self.forced_format or group.get("format") or infer_format(group)
        fmt = str(fmt).lower().replace("_", "-")
        if fmt not in WRITABLE_QUANTIZED:
            raise CodecError(f"ctcodec cannot write the {fmt!r} format")
        return fmt

    def _fits(self, weights: dict[str, Any], fmt: str, dtype: str, shape: Sequence[int]) -> str | None:
        """Why a weight cannot take this scheme (compressed-tensors would refuse it), or None."""
        if dtype not in QUANTIZABLE_DTYPES:
            return f"{dtype} weights are not quantized"
        if len(shape) not in (2, 3) or (len(shape) == 3 and fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized",
                                                                     "marlin-24")):
            return f"shape {list(shape)} is not a linear weight"
        w = normalize_weights(weights)
        gs = w.get("group_size")
        if w["strategy"] in ("group", "tensor_group") and shape[-1] % gs:
            return f"{shape[-1]} input features are not a multiple of the group size {gs}"
        if w["strategy"] == "block" and len(shape) != 2:
            return "block quantization needs a 2-D weight"
        if fmt == "marlin-24" and (shape[0] % 64 or shape[-1] % 64):
            return f"marlin-24 needs both dimensions divisible by 64, not {list(shape)}"
        return None

    def encodings(self, tensors: list[tuple[str, str, list[int]]]) -> dict[str, tuple]:
        """Native specs for the weights of one shard."""
        out = {}
        for name, dtype, shape in tensors:
            if not name.endswith(".weight"):
                continue
            module = name[: -len(".weight")]
            gname = self._group_for(module, shape)
            if gname is None:
                continue
            group = self.groups[gname]
            if not group.get("weights"):
                continue
            fmt = self._format(group)
            why = self._fits(group["weights"], fmt, dtype, shape)
            if why:
                self.skipped.append({"module": module, "reason": why, "shape": list(shape)})
                continue
            self.used[gname] = fmt
            out[name] = weight_spec(group["weights"], fmt)
        return out

    def refuse_if_nothing_fits(self) -> None:
        """Raises before anything is written when every targeted weight would be left
        dense (a group size that divides no layer's width, say): the output would be a
        plain copy under a quantized name."""
        if self.used or not self.skipped:
            return
        widths = sorted({s["shape"][-1] for s in self.skipped if "group size" in s["reason"]})
        if widths:
            fits = [g for g in (16, 32, 64, 128, 256) if all(w % g == 0 for w in widths)]
            hint = (f"group sizes that fit every layer: {', '.join(map(str, fits))}, or -1 for one scale per "
                    "output channel" if fits else "use -1 for one scale per output channel")
            raise CodecError(f"no targeted weight can be quantized: input widths {', '.join(map(str, widths))} "
                             f"are not multiples of the group size; {hint}")
        raise CodecError(f"no targeted weight can be quantized ({len(self.skipped)} would be left dense): "
                         f"{self.skipped[0]['module']}: {self.skipped[0]['reason']}")

    def formats(self) -> list[str]:
        return sorted(set(self.used.values()))

    def config(self) -> dict[str, Any]:
        """The `quantization_config` compressed-tensors' `update_config` writes."""
        groups = {name: {**self.groups[name], "format": fmt} for name, fmt in self.used.items()}
        formats = set(self.used.values())
        top = formats.pop() if len(formats) == 1 else ("mixed-precision" if formats else "dense")
        ignore = list(dict.fromkeys(self.ignore + [s["module"] for s in self.skipped]))
        return {
            "config_groups": groups,
            "format": top,
            "global_compression_ratio": None,
            "ignore": ignore,
            "kv_cache_scheme": self.kv_cache_scheme,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
            "sparsity_config": {},
            "transform_config": {},
            "version": CT_VERSION,
        }


def plan(scheme: str | None, group_size: int | None, recipe: Any, targets: list[str],
         ignore: list[str], format: str | None) -> QuantPlan:
    if recipe is not None:
        if scheme is not None:
            raise CodecError("give a scheme or a recipe, not both")
        data = _load_recipe(recipe)
        groups = _recipe_groups(data)
        ignore = list(dict.fromkeys(ignore + list(data.get("ignore") or [])))
        return QuantPlan(groups, ignore, format, data.get("kv_cache_scheme"))
    groups = {"group_0": preset(scheme, targets, group_size)}
    return QuantPlan(groups, ignore, format)


# Layers that inference engines fuse into one matmul; NVFP4 gives each fused set one
# global scale (the smallest of its members', as llm-compressor does), since the fused
# weight is dequantized with a single one.
_FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up",
          "w1": "w13", "w3": "w13"}


def _fused_key(weight_name: str) -> tuple[str, str] | None:
    module = weight_name[: -len(".weight")]
    parent, _, leaf = module.rpartition(".")
    kind = _FUSED.get(leaf)
    return (parent, kind) if kind else None


def share_fused_global_scales(jobs: list[tuple[str, str, dict]]) -> int:
    """Sets one NVFP4 global scale per fused set (q/k/v, gate/up), across shards, in the
    jobs' specs; returns how many weights share one."""
    from . import _native

    scales: dict[str, float] = {}
    for src, _dst, encodings in jobs:
        names = [n for n, (spec, _p, _t) in encodings.items() if spec and spec.format == "nvfp4-pack-quantized"]
        if names:
            scales.update(zip(names, _native.nvfp4_global_scales(src, names)))
    shared: dict[tuple[str, str], float] = {}
    for name, g in scales.items():
        key = _fused_key(name)
        if key is not None:
            shared[key] = min(g, shared.get(key, g))
    count = 0
    for _src, _dst, encodings in jobs:
        for name, (spec, prune, two_four) in list(encodings.items()):
            key = _fused_key(name) if name in scales else None
            if key is not None and key in shared:
                encodings[name] = (spec.with_global_scale(shared[key]), prune, two_four)
                count += 1
    return count
