"""Quantization schemes as compressed-tensors writes them in config.json: the preset
names, the format each scheme is stored in, and the spec the native codec takes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from .errors import CodecError


@dataclass(frozen=True)
class WeightSpec:
    """One weight's quantization scheme as the native codec takes it (read by
    attribute; the core checks it): config.json's names for the fields."""

    format: str
    num_bits: int
    type: str
    symmetric: bool
    strategy: str
    group_size: int | None = None
    block_structure: tuple[int, int] | None = None
    # NVFP4's tensor-wide scale when fixed by the caller (shared by fused layers).
    global_scale: float | None = None

    def with_global_scale(self, scale: float) -> "WeightSpec":
        return replace(self, global_scale=scale)


def _w(num_bits: int, type: str = "int", strategy: str = "group", group_size: int | None = 128,
       symmetric: bool = True, **extra: Any) -> dict[str, Any]:
    args = {"dynamic": False, "group_size": group_size, "num_bits": num_bits,
            "strategy": strategy, "symmetric": symmetric, "type": type}
    args.update(extra)
    return args


_TOKEN_INT8 = {"dynamic": True, "group_size": None, "num_bits": 8, "strategy": "token", "symmetric": True, "type": "int"}
_TOKEN_FP8 = {**_TOKEN_INT8, "type": "float"}

# compressed-tensors' PRESET_SCHEMES (0.20), weights and input activations as it dumps them.
PRESETS: dict[str, dict[str, Any]] = {
    **{f"W{b}A16": {"weights": _w(b)} for b in range(2, 9)},
    "W4A16_ASYM": {"weights": _w(4, symmetric=False)},
    **{f"W{b}A8": {"weights": _w(b), "input_activations": _TOKEN_INT8} for b in range(2, 8)},
    "W8A8": {"weights": _w(8, strategy="channel", group_size=None), "input_activations": _TOKEN_INT8},
    "INT8": {"weights": _w(8, strategy="channel", group_size=None), "input_activations": _TOKEN_INT8},
    "W4AFP8": {"weights": _w(4), "input_activations": _TOKEN_FP8},
    "FP8": {
        "weights": _w(8, "float", "tensor", None),
        "input_activations": {"dynamic": False, "group_size": None, "num_bits": 8, "observer": "static_minmax",
                              "strategy": "tensor", "symmetric": True, "type": "float"},
    },
    "FP8_DYNAMIC": {"weights": _w(8, "float", "channel", None), "input_activations": _TOKEN_FP8},
    "FP8_BLOCK": {
        "weights": _w(8, "float", "block", None, block_structure=[128, 128]),
        "input_activations": {**_TOKEN_FP8, "group_size": 128, "strategy": "group"},
    },
    "NVFP4A16": {"weights": _w(4, "float", "tensor_group", 16, scale_dtype="torch.float8_e4m3fn")},
    "MXFP4A16": {"weights": _w(4, "float", "group", 32, scale_dtype="torch.uint8")},
}
# Presets whose activations need calibrated static scales, which RTN cannot produce.
NEEDS_CALIBRATION = {"FP8": "static input scales", "NVFP4": "static input global scales"}


def preset(name: str, targets: list[str], group_size: int | None = None) -> dict[str, Any]:
    """A scheme dict (`targets`, `weights`, `input_activations`, ...) for a preset name;
    `group_size` overrides the preset's (-1 means one scale per output channel)."""
    key = name.upper()
    if key in NEEDS_CALIBRATION:
        raise CodecError(f"scheme {name} needs {NEEDS_CALIBRATION[key]} from calibration; "
                         "use its dynamic variant (e.g. FP8_DYNAMIC) for round-to-nearest")
    if key not in PRESETS:
        raise CodecError(f"unknown scheme {name!r} (known: {', '.join(sorted(PRESETS))})")
    scheme = {"format": None, "input_activations": None, "output_activations": None,
              "targets": list(targets), "weights": None}
    scheme.update(copy.deepcopy(PRESETS[key]))
    if group_size is not None:
        w = scheme["weights"]
        if w["strategy"] not in ("group", "channel"):
            raise CodecError(f"scheme {name} does not take a group size")
        if group_size == -1:
            w.update(strategy="channel", group_size=None)
        elif group_size > 0:
            w.update(strategy="group", group_size=int(group_size))
        else:
            raise CodecError(f"group size must be positive or -1, not {group_size}")
    return scheme


def normalize_weights(w: dict[str, Any]) -> dict[str, Any]:
    """Fills in what compressed-tensors' validators infer: the strategy from the group
    size, `block_structure` from its legacy "RxC" string, the type's spelling."""
    w = dict(w)
    w["type"] = str(w.get("type", "int")).lower()
    w.setdefault("num_bits", 8)
    w.setdefault("symmetric", True)
    gs = w.get("group_size")
    strategy = w.get("strategy")
    if strategy is None:
        if gs is None:
            strategy = "block" if w.get("block_structure") else "tensor"
        elif gs == -1:
            strategy = "channel"
        elif gs > 0:
            strategy = "group"
        else:
            raise CodecError(f"invalid group_size {gs}")
    w["strategy"] = str(strategy).lower()
    if w["strategy"] in ("group", "tensor_group") and (not isinstance(w.get("group_size"), int) or w["group_size"] <= 0):
        raise CodecError(f"{w['strategy']} strategy needs a positive group_size, not {w.get('group_size')!r}")
    bs = w.get("block_structure")
    if isinstance(bs, str):
        try:
            w["block_structure"] = [int(x) for x in bs.lower().split("x")]
        except ValueError:
            raise CodecError(f"invalid block_structure {bs!r}") from None
    return w


def infer_format(scheme: dict[str, Any]) -> str:
    """compressed-tensors 0.20's format inference for a Linear layer's scheme."""
    w = scheme.get("weights")
    if not w:
        return "dense"
    w = normalize_weights(w)
    inputs = scheme.get("input_activations")
    bits, typ = w["num_bits"], w["type"]
    if typ == "float" and bits == 4:
        return "mxfp4-pack-quantized" if w.get("group_size") == 32 else "nvfp4-pack-quantized"
    if typ == "float" and bits == 8 and w.get("group_size") == 32 and w.get("scale_dtype") == "torch.uint8":
        return "mxfp8-quantized"
    if typ == "int" and inputs is not None:
        return "int-quantized"
    if typ == "int" and 1 <= bits <= 8:
        return "pack-quantized"
    if typ == "float" and inputs is not None:
        return "float-quantized"
    return "naive-quantized"


def weight_spec(weights: dict[str, Any], fmt: str, legacy: bool = False,
                global_scale: float | None = None) -> WeightSpec:
    """The native codec's spec for one weight."""
    w = normalize_weights(weights)
    if fmt == "pack-quantized" and legacy:
        fmt = "pack-quantized-legacy"
    block = w.get("block_structure")
    # group_size -1 (compressed-tensors' "one group per row") only matters to group strategies,
    # which refuse it above; elsewhere it is not passed on.
    group_size = w.get("group_size")
    group_size = group_size if isinstance(group_size, int) and group_size > 0 else None
    return WeightSpec(fmt, int(w["num_bits"]), w["type"], bool(w["symmetric"]), w["strategy"],
                      group_size, tuple(block) if block else None, global_scale)


def format_version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for p in str(version or "").split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def uses_legacy_packing(version: str | None) -> bool:
    """pack-quantized files written before compressed-tensors 0.18 keep each code
    inside one int32 word (differs for 3, 5, 6 and 7 bits); an unknown version is new."""
    v = format_version_tuple(version)
    return bool(v) and v < (0, 18)
