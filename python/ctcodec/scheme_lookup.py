"""Reading a `quantization_config`: which scheme (and so which format and spec) each
quantized module of a file has, resolved with compressed-tensors' matching rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import CodecError
from .formats import QUANTIZED
from . import spqr_format
from .scheme_presets import PRESETS, WeightSpec, infer_format, normalize_weights, uses_legacy_packing, weight_spec


@dataclass
class QuantConfig:
    groups: list[dict[str, Any]] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    format: str | None = None
    version: str | None = None
    spqr: spqr_format.SpqrParams | None = None

    def __bool__(self) -> bool:
        return self.spqr is not None or any(g.get("weights") for g in self.groups)


def parse(qc: dict[str, Any] | None) -> QuantConfig:
    """The quantized part of a `quantization_config` (an empty config when it has none)."""
    if not isinstance(qc, dict):
        return QuantConfig()
    if spqr_format.is_spqr_config(qc):
        return QuantConfig(ignore=list(qc.get("ignore") or []), format="spqr", version=qc.get("version"),
                           spqr=spqr_format.params_from_config(qc))
    groups = []
    for name, g in (qc.get("config_groups") or {}).items():
        if isinstance(g, list):  # {"W4A16": ["Linear"]}: a preset over targets
            if name.upper() not in PRESETS:
                raise CodecError(f"config group {name!r} names no known preset")
            g = {"targets": g, **PRESETS[name.upper()]}
        if not isinstance(g, dict) or not isinstance(g.get("targets"), list):
            raise CodecError(f"config group {name!r} has no targets list")
        if g.get("weights"):
            try:
                g = {**g, "weights": normalize_weights(g["weights"])}
            except (TypeError, AttributeError):
                raise CodecError(f"config group {name!r} has malformed weights args") from None
        groups.append(g)
    fmt = qc.get("format")
    return QuantConfig(groups, list(qc.get("ignore") or []), fmt, qc.get("version"))


def _match(module: str, target: str) -> str | None:
    """How `target` matches `module`: "name", "regex", "class" or None. Without a model,
    a class-name target (e.g. `Linear`) matches every module holding quantized weights,
    as compressed-tensors' own model-free dequantizer assumes."""
    if target.startswith("re:"):
        return "regex" if re.match(target[3:], module) else None
    if target == module:
        return "name"
    if "." not in target and target[:1].isupper():
        return "class"
    return None


def _ignored(module: str, ignore: Iterable[str]) -> bool:
    return any(_match(module, i) in ("name", "regex") for i in ignore)


def scheme_for(module: str, config: QuantConfig) -> dict[str, Any] | None:
    """The config group that applies to `module`: exact name beats regex beats class."""
    if _ignored(module, config.ignore):
        return None
    best, rank = None, 9
    order = {"name": 0, "regex": 1, "class": 2}
    for g in config.groups:
        for t in g["targets"]:
            m = _match(module, t)
            if m and order[m] < rank:
                best, rank = g, order[m]
    return best


def module_format(scheme: dict[str, Any], config: QuantConfig) -> str:
    fmt = scheme.get("format")
    if not fmt and config.format not in (None, "mixed-precision", "dense"):
        fmt = config.format
    return str(fmt or infer_format(scheme)).lower().replace("_", "-")


def quantized_modules(names: Iterable[str]) -> list[str]:
    """Modules of a file that hold quantized weights: a `weight_packed`, or a `weight`
    (or 2:4 `compressed` values) stored beside a `weight_scale`."""
    names = set(names)
    mods = []
    for n in names:
        if n.endswith(".weight_packed"):
            mods.append(n[: -len(".weight_packed")])
        for root in (".weight", ".compressed"):
            if n.endswith(root) and n[: -len(root)] + ".weight_scale" in names:
                mods.append(n[: -len(root)])
    return sorted(set(mods))


def file_schemes(names: Iterable[str], config: QuantConfig, where: str = "") -> dict[str, WeightSpec | spqr_format.SpqrParams]:
    """Native specs for the quantized modules among a file's tensor `names`."""
    schemes = {}
    if not config:
        return schemes
    if config.spqr is not None:
        return {m: config.spqr for m in spqr_format.spqr_modules(names)}
    legacy = uses_legacy_packing(config.version)
    for module in quantized_modules(names):
        scheme = scheme_for(module, config)
        if scheme is None or not scheme.get("weights"):
            continue
        fmt = module_format(scheme, config)
        if fmt not in QUANTIZED:
            raise CodecError(f"{where}: module {module!r} is stored as {fmt!r}, which ctcodec does not decode")
        schemes[module] = weight_spec(scheme["weights"], fmt, legacy=legacy)
    return schemes
