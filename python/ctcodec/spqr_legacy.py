"""Converting the original SpQR repository's saved output (`main.py --save DIR`: one
torch.save'd dict per quantized linear layer under `DIR/<layer>/<sublayer>`, plus
`args.pt` and `not_quantized_weights.pt`) into a ctcodec SpQR checkpoint.

The legacy dict holds codes, 3-bit statistic codes with fp16 second-order statistics,
the permutation and COO outliers that replace the dense value (its reference
dequantizer's semantics), so the conversion is lossless up to the fp16 roundings of
the original's own dequantization arithmetic, which ctcodec does in f32."""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import _native
from .config_models import serialise_quantization_config
from .errors import CodecError
from .model_folder import (CONFIG_NAME, check_input_folder, copy_other_files, output_folder, read_json, shard_paths,
                           write_config, write_index)
from .spqr_format import SpqrParams, pack


def _load(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input
        raise CodecError(f"{path}: cannot read a torch.save file: {e}") from None


def _stack(layer: dict, key: str, where: str):
    import torch

    items = layer.get(key)
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise CodecError(f"{where}: {key} must be a non-empty list of tensors")
    return items


def convert_layer(layer: dict, params: SpqrParams, module: str, where: str) -> tuple[list, int, int]:
    """The stored tensors of one legacy layer dict; returns (parts, outliers, params)."""
    import torch

    codes = layer.get("quant_weights")
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.is_floating_point():
        raise CodecError(f"{where}: quant_weights must be a 2-D integer tensor")
    if codes.dtype == torch.int8:
        codes = codes.to(torch.int16) & 0xFF  # 8-bit codes wrap negative in int8
    m, n = codes.shape
    scales = _stack(layer, "quant_layer_scale", where)
    if any(t.dtype != torch.int8 for t in scales):
        raise CodecError(f"{where}: first-order scales are not second-order quantized (qq_scale_bits unset); "
                         "the SpQR format stores 3-bit statistic codes")
    zeros = _stack(layer, "quant_layer_zeros", where)
    groups = len(scales)
    if len(zeros) != groups or groups != -(-n // params.beta2):
        raise CodecError(f"{where}: {groups} statistic groups for {n} columns in groups of {params.beta2}")

    def plane(items, what):
        try:
            return torch.stack([t.reshape(-1) for t in items], dim=1)  # [m, G]
        except RuntimeError as e:
            raise CodecError(f"{where}: {what}: {e}") from None

    def second(key, what):
        items = _stack(layer, key, where)
        if len(items) != groups:
            raise CodecError(f"{where}: {key} has {len(items)} groups, needs {groups}")
        return plane(items, what).half()  # [tiles, G]

    scale_codes, zero_codes = plane(scales, "scales"), plane(zeros, "zeros")
    if zeros[0].dtype == torch.int8:
        zero_scale, zero_zero = second("quant_layer_zero_qq_scale", "zero scales"), second("quant_layer_zero_qq_zero", "zero zeros")
    else:
        # round_zero: integer zeros, stored as codes with unit second-order statistics.
        if not torch.equal(zero_codes, zero_codes.round()):
            raise CodecError(f"{where}: first-order zeros are neither second-order quantized nor integers; "
                             "the SpQR format stores them as codes")
        zero_scale = torch.ones(-(-m // params.beta1), groups, dtype=torch.float16)
        zero_zero = torch.zeros_like(zero_scale)
    so = torch.stack([second("quant_layer_scale_qq_scale", "scale scales"),
                      second("quant_layer_scale_qq_zero", "scale zeros"), zero_scale, zero_zero], dim=-1)
    if scale_codes.shape[0] != m or so.shape[0] != -(-m // params.beta1):
        raise CodecError(f"{where}: statistics do not cover {m} rows in groups of {params.beta1}")
    perm = layer.get("perm")
    if perm is not None and not (isinstance(perm, torch.Tensor) and perm.numel() == n and not perm.is_floating_point()):
        raise CodecError(f"{where}: perm must be an integer tensor of {n} entries")
    perm = torch.arange(n) if perm is None else perm.reshape(-1)
    outliers = layer.get("outliers_matrix")
    if outliers is None:
        rows = cols = torch.zeros(0, dtype=torch.int32)
        values = torch.zeros(0, dtype=torch.float16)
    elif isinstance(outliers, torch.Tensor) and outliers.layout == torch.sparse_coo and tuple(outliers.shape) == (m, n):
        outliers = outliers.coalesce()
        rows, cols = outliers.indices()
        values = outliers.values().half()
    else:
        raise CodecError(f"{where}: outliers_matrix must be a sparse COO tensor of shape [{m}, {n}]")
    for name, t, hi in (("code", codes, 1 << params.bits), ("scale code", scale_codes, 1 << params.qq_scale_bits),
                        ("zero code", zero_codes, 1 << params.qq_zero_bits)):
        if t.numel() and (t.min() < 0 or t.max() >= hi):
            raise CodecError(f"{where}: a {name} is outside [0, {hi})")
    parts = pack(params, module, codes.to(torch.uint8).numpy(), scale_codes.to(torch.uint8).numpy(),
                 zero_codes.to(torch.uint8).numpy(), so.numpy(), perm.to(torch.int32).numpy(),
                 rows.to(torch.int32).numpy(), cols.to(torch.int32).numpy(), values.numpy())
    return parts, len(values), m * n


def convert_legacy(legacy_dir: str | os.PathLike, base_model: str | os.PathLike, dst_dir: str | os.PathLike,
                   *, outlier_layout: str = "csr", overwrite: bool = False) -> dict:
    """Writes a ctcodec SpQR checkpoint from the original SpQR's saved layers and the
    base model they were quantized from (which supplies every other tensor)."""
    legacy, base, dst = Path(legacy_dir), Path(base_model), Path(dst_dir)
    check_input_folder(legacy)
    check_input_folder(base)
    if not (legacy / "args.pt").is_file():
        raise CodecError(f"{legacy}: no args.pt (not an SpQR --save folder)")
    args = _load(legacy / "args.pt")
    if not isinstance(args, dict):
        raise CodecError(f"{legacy / 'args.pt'}: expected a dict of arguments")
    base_config = read_json(base / CONFIG_NAME)
    dtype = str(base_config.get("torch_dtype") or base_config.get("dtype") or "float16")
    if args.get("groupsize") is None:
        raise CodecError(f"{legacy / 'args.pt'}: groupsize is unset (one group per row); the SpQR format needs groups")
    try:
        params = SpqrParams(int(args["wbits"]), int(args["qq_groupsize"]), int(args["groupsize"]),
                            int(args["qq_scale_bits"]), int(args.get("qq_zero_bits") or args["wbits"]),
                            dtype if dtype in ("bfloat16", "float16", "float32") else "float16", outlier_layout)
    except (KeyError, TypeError, ValueError) as e:
        raise CodecError(f"{legacy / 'args.pt'}: missing or malformed {e}") from None

    shards = shard_paths(base)
    names = {}
    for shard in shards:
        for name, _dtype, _shape in _native.read_header(os.fspath(shard))[1]:
            names[name] = shard
    replaced: dict[str, list] = {}
    outliers = total = 0
    layer_dirs = sorted((d for d in legacy.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    for d in layer_dirs:
        for f in sorted(d.iterdir()):
            pattern = re.compile(rf"(^|.*\.){d.name}\.{re.escape(f.name)}\.weight$")
            hits = [n for n in names if pattern.match(n)]
            if len(hits) != 1:
                raise CodecError(f"{f}: matches {len(hits)} weights of the base model, not one")
            module = hits[0][: -len(".weight")]
            parts, k, size = convert_layer(_load(f), params, module, str(f))
            replaced[hits[0]] = parts
            outliers, total = outliers + k, total + size
    if not replaced:
        raise CodecError(f"{legacy}: holds no quantized layers")

    from .calibrate.export import write_checkpoint

    with output_folder(base, dst, overwrite):
        write_checkpoint(base, dst, replaced, {})
        write_index(base, dst, shards)
        share = outliers / max(total, 1)
        base_config["quantization_config"] = params.config(
            ignore=[], outlier_fraction=share, average_bits=params.average_bits(share),
            calibration={"algorithm": "spqr", "converted_from": "SpQR main.py --save",
                         **{k: args[k] for k in ("nsamples", "percdamp", "outlier_threshold", "permutation_order")
                            if k in args and isinstance(args[k], (int, float, str))}})
        # Written through the same typed models the reader checks with.
        base_config["quantization_config"] = serialise_quantization_config(
            base_config["quantization_config"], dst / CONFIG_NAME)
        write_config(dst, base_config)
        copy_other_files(base, dst, shards)
    return {"layers": len(replaced), "outlier_fraction": share, "average_bits": params.average_bits(share)}
