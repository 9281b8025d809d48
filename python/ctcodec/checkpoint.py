"""Whole model folders: compress or decompress every shard, rewrite the index and
config.json, copy everything else (the folder's steps are `model_folder`'s). Memory
stays bounded by one tensor at a time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from . import _native, quant_plan
from .config_models import serialise_quantization_config
from .errors import CodecError
from .formats import normalize, normalize_any
from .model_folder import (CONFIG_NAME, check_input_folder, copy_other_files, input_fingerprint, read_json,
                           run_folder, run_key, shard_paths, write_config, write_index, write_resumably)
from .reading import declared_format, declared_quantization, refuse_compressed, shard_schemes
from .targets import is_target
from .tensors import numel

# The compressed-tensors release whose on-disk layout sparse-bitmask output follows;
# readers use `version` only to pick a layout.
FORMAT_VERSION = "0.14.0.1"
DEFAULT_TARGETS = ("Linear",)
DEFAULT_IGNORE = ("lm_head",)


def compress_checkpoint(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    format: str | None = None,
    *,
    scheme: str | None = None,
    group_size: int | None = None,
    recipe: str | os.PathLike | dict | None = None,
    sparsity: str | float | None = None,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    sparsity_structure: str | None = None,
    progress: bool = False,
    overwrite: bool = False,
    cluster: str | None = None,
    rotate: str | None = None,
    online_rotation: bool = False,
) -> dict:
    """Compresses a Hugging Face model folder into `dst_dir`.

    With `scheme` (a compressed-tensors preset such as "W4A16", "W8A8", "FP8_DYNAMIC",
    "NVFP4A16"; `group_size` overrides the preset's) or `recipe` (a quantization_config
    style dict or JSON file with `config_groups` and `ignore`, for per-layer schemes),
    weights are quantized round-to-nearest with compressed-tensors' exact arithmetic and
    stored in the format compressed-tensors would choose. Otherwise (or with
    `format="sparse-bitmask"`) weights are bitmask-compressed losslessly.

    Weights of modules matched by `targets` (default `["Linear"]`: 2-D weights not named
    like embeddings or norms) and by no `ignore` entry (default `["lm_head"]`) are
    compressed; entries are exact module names, `re:` regexes, or `Linear`. config.json
    gets the `quantization_config` compressed-tensors writes. Returns a summary.

    `sparsity` magnitude-prunes those weights first: "2:4" keeps the 2 largest of every
    4 consecutive elements of a row, a fraction (e.g. 0.5) zeroes that share of each
    weight's smallest elements. Pruned weights are then quantized, or bitmask-encoded.

    With `cluster` ("auto", "ray://HOST:PORT" or "local:N") each shard is compressed by a
    task on a Ray cluster's workers (which must see both folders); the output is the same.

    With `rotate` ("hadamard" or "random-hadamard", Llama-family models, with a scheme)
    the residual stream and the attention values are rotated first, folded into the
    weights (see `ctcodec.rotation`), and recorded as the config's transform_config.
    `online_rotation` adds R4, an online Hadamard on down_proj's input (for loaders that
    apply compressed-tensors' online transforms: its `apply_transform_config`, ctcodec's loaders).
    """
    if online_rotation and rotate is None:
        raise CodecError("online_rotation goes with rotate (hadamard or random-hadamard)")
    if rotate is not None:
        if scheme is None and recipe is None:
            raise CodecError("rotate is for quantization (give a scheme): a rotated weight is no longer sparse")
        from .rotation import compress_rotated

        return compress_rotated(compress_checkpoint, src_dir, dst_dir, rotate, online=online_rotation, format=format, scheme=scheme,
                                group_size=group_size, recipe=recipe, sparsity=sparsity, targets=targets,
                                ignore=ignore, sparsity_structure=sparsity_structure, progress=progress,
                                overwrite=overwrite, cluster=cluster)
    src, dst = Path(src_dir), Path(dst_dir)
    check_input_folder(src)
    refuse_compressed(src)
    targets = list(DEFAULT_TARGETS if targets is None else targets)
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    quantize = scheme is not None or recipe is not None
    prune = _prune_arg(sparsity)
    # sparse-24-bitmask stores 2:4 weights, or the int8/fp8 codes of quantized ones.
    two_four = format is not None and normalize_any(format) == "sparse-24-bitmask"
    if quantize:
        forced = None if two_four else format
        if forced is not None and not (str(forced).endswith("quantized") or normalize_any(forced) == "marlin-24"):
            raise CodecError(f"format {format!r} cannot be combined with a quantization scheme")
        plan = quant_plan.plan(scheme, group_size, recipe, targets, ignore, forced)
    else:
        fmt = normalize(format or "sparse-bitmask")
        if fmt not in ("sparse-bitmask", "sparse-24-bitmask"):
            raise CodecError(f"{fmt!r} is not a lossless compression format; give a scheme to quantize")
    shards = shard_paths(src)

    jobs = []
    for shard in shards:
        _meta, tensors = _native.read_header(os.fspath(shard))
        if quantize:
            encodings = {name: (spec, prune, two_four) for name, spec in plan.encodings(tensors).items()}
            if two_four and any(spec.format not in ("naive-quantized", "int-quantized", "float-quantized")
                                for spec, _p, _t in encodings.values()):
                raise CodecError("sparse-24-bitmask stacks on int8/fp8 schemes (int-quantized, float-quantized), "
                                 f"not {plan.formats()}")
        else:
            encodings = {
                name: (None, prune, two_four)
                for name, _dtype, shape in tensors
                if name.endswith(".weight") and is_target(name[: -len(".weight")], shape, targets, ignore)
            }
        jobs.append((os.fspath(shard), os.fspath(dst / shard.name), encodings))
    if quantize:
        plan.refuse_if_nothing_fits()
        quant_plan.share_fused_global_scales(jobs)
    key = run_key("compress", _native.__version__, input_fingerprint(shards), jobs, two_four, sparsity_structure,
                  plan.config() if quantize else None, targets, ignore)
    with run_folder(src, dst, overwrite, key) as out:
        if cluster is None:
            stats = write_resumably(out, jobs, lambda job: _native.compress_files([job], progress)[0])
        else:
            from .cluster.shards import run_jobs

            stats = run_jobs(out, jobs, _compress_one_shard, cluster, progress)
        summary_resumed = list(out.resumed)

        summary = _summarize(stats)
        if prune is not None:
            frac = 0.5 if prune == "2:4" else float(prune)
            pruned = sum(numel(s["shape"]) for s in summary["stats"] if s["compressed"])
            total = sum(numel(s["shape"]) for s in summary["stats"] if s["dtype"].startswith(("F", "BF"))) or 1
            summary["pruned_fraction"] = frac * pruned / total
        write_index(src, dst, shards)
        config_path = src / CONFIG_NAME
        config = read_json(config_path) if config_path.is_file() else {}
        if quantize and two_four:
            # compressed-tensors 0.14's stacking: quantization groups plus a 2:4 sparsity config.
            config["quantization_config"] = plan.config()
            config["quantization_config"]["version"] = FORMAT_VERSION
            config["quantization_config"]["sparsity_config"] = _sparsity_config(
                "sparse-24-bitmask", summary.get("pruned_fraction", summary["global_sparsity"]),
                config["quantization_config"]["ignore"], "2:4", targets)
            summary["skipped"] = plan.skipped
        elif quantize and "marlin-24" in plan.formats():
            # marlin-24 is 0.14's 2:4 + int4/int8 layout, recorded with a dense 2:4 sparsity
            # config. The version stays: it also selects the pack layout of other groups.
            config["quantization_config"] = plan.config()
            config["quantization_config"]["sparsity_config"] = _sparsity_config(
                "dense", summary.get("pruned_fraction", 0.5), config["quantization_config"]["ignore"], "2:4", targets)
            summary["skipped"] = plan.skipped
        elif quantize:
            config["quantization_config"] = plan.config()
            summary["skipped"] = plan.skipped
            if prune is not None:
                # Stacked sparsity: weights are stored quantized (dense layout), the pruning
                # is recorded the way compressed-tensors 0.14 recorded it beside quantization.
                config["quantization_config"]["sparsity_config"] = {
                    "format": "dense",
                    "global_sparsity": summary["pruned_fraction"],
                    "ignore": config["quantization_config"]["ignore"],
                    "registry_requires_subclass": False,
                    "sparsity_structure": "2:4" if prune == "2:4" else "unstructured",
                    "targets": targets,
                }
        else:
            structure = "2:4" if fmt == "sparse-24-bitmask" else sparsity_structure or summary["sparsity_structure"]
            config["quantization_config"] = {
                "version": FORMAT_VERSION,
                "quant_method": "compressed-tensors",
                "sparsity_config": _sparsity_config(fmt, summary["global_sparsity"], ignore, structure, targets),
                "transform_config": {},
            }
        # A dense folder's online transforms (a decompressed rotated checkpoint) go back
        # where compressed-tensors' loaders look for them.
        if config.get("transform_config"):
            config["quantization_config"]["transform_config"] = config.pop("transform_config")
        # Written through the same typed models the reader checks with.
        config["quantization_config"] = serialise_quantization_config(
            config["quantization_config"], dst / CONFIG_NAME)
        write_config(dst, config)
        summary["copied"] = copy_other_files(src, dst, shards)
        summary["resumed_shards"] = summary_resumed
        summary["shards"] = len(jobs)
        return summary


def _sparsity_config(fmt: str, sparsity: float, ignore: list, structure: str, targets: list) -> dict:
    """A `sparsity_config` as compressed-tensors 0.14 dumps it."""
    return {
        "format": fmt,
        "global_sparsity": sparsity,
        "ignore": ignore,
        "registry_requires_subclass": False,
        "sparsity_structure": structure,
        "targets": targets,
    }


def _prune_arg(sparsity: str | float | None) -> str | None:
    if sparsity is None:
        return None
    if str(sparsity).strip() == "2:4":
        return "2:4"
    try:
        frac = float(sparsity)
    except ValueError:
        raise CodecError(f"sparsity must be '2:4' or a fraction, not {sparsity!r}") from None
    if not 0.0 <= frac <= 1.0:
        raise CodecError(f"sparsity {frac} is not a fraction in [0, 1]")
    return repr(frac)


def _summarize(stats: list[list[dict]]) -> dict:
    flat = [s for shard in stats for s in shard]
    compressed = [s for s in flat if s["compressed"]]
    float_params = [s for s in flat if s["dtype"].startswith(("F", "BF"))]
    zeros = sum(numel(s["shape"]) - s["nonzero"] for s in compressed)
    total_params = sum(numel(s["shape"]) for s in float_params) or 1
    return {
        "tensors": len(flat),
        "compressed_tensors": len(compressed),
        "bytes_in": sum(s["bytes_in"] for s in flat),
        "bytes_out": sum(s["bytes_out"] for s in flat),
        "global_sparsity": zeros / total_params,
        "sparsity_structure": "2:4" if compressed and all(s["two_four"] for s in compressed) else "unstructured",
        "stats": flat,
    }


def decompress_checkpoint(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    *,
    progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Writes the dense form of a compressed model folder; config.json loses its
    `quantization_config`, the index is rewritten, other files are copied. Online
    transforms (`--online-rotation`) stay in config.json as `transform_config`: the dense
    model computes its function only through a loader that applies them (ctcodec's;
    summary["online_transforms"] says so)."""
    src, dst = Path(src_dir), Path(dst_dir)
    check_input_folder(src)
    fmt = declared_format(src)
    quant = declared_quantization(src)
    shards = shard_paths(src)
    jobs = [(os.fspath(s), os.fspath(dst / s.name)) for s in shards]
    # One call per shard: each shard holds its own set of quantized modules.
    schemes = [shard_schemes(s, quant) for s in shards]

    scheme_of = {job[1]: sc for job, sc in zip(jobs, schemes)}
    key = run_key("decompress", _native.__version__, input_fingerprint(shards), fmt, jobs, schemes)
    with run_folder(src, dst, overwrite, key) as out:
        count = sum(write_resumably(
            out, jobs, lambda job: _native.decompress_files([job], fmt, progress, "auto", scheme_of[job[1]])))
        resumed = list(out.resumed)
        write_index(src, dst, shards)
        config_path = src / CONFIG_NAME
        transforms = None
        if config_path.is_file():
            config = read_json(config_path)
            transforms = (config.pop("quantization_config", None) or {}).get("transform_config")
            if _has_online_transforms(transforms):
                # Online rotations are part of the model's function and live in no weight:
                # kept where ctcodec's loaders read them (transformers alone ignores them).
                config["transform_config"] = transforms
            write_config(dst, config)
        copied = copy_other_files(src, dst, shards)
    return {"tensors": count, "format": fmt or "detected", "copied": copied, "resumed_shards": resumed,
            "shards": len(jobs), "online_transforms": _has_online_transforms(transforms)}


def _has_online_transforms(transforms: dict | None) -> bool:
    return any(a.get("location") not in ("weight_input", "weight_output")
               for g in ((transforms or {}).get("config_groups") or {}).values() for a in g.get("apply", []))


def _compress_one_shard(job) -> list:
    """One shard's compression: a plain function, so a cluster worker can run it."""
    return _native.compress_files([job])[0]
