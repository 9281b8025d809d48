"""Converting a GPTQ model folder (AutoGPTQ, GPTQModel, transformers/optimum) to
compressed-tensors' pack-quantized, exactly: the same dequantized weights, loadable
by compressed-tensors. The tensor work is the core's (rust/ctcodec/src/formats/gptq.rs);
this module reads the GPTQ settings and runs the model-folder lifecycle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import _native
from .config_models import serialise_quantization_config
from .errors import CodecError
from .model_folder import (CONFIG_NAME, check_input_folder, copy_other_files, input_fingerprint, read_json,
                           run_folder, run_key, shard_paths, write_config, write_index, write_resumably)

QUANTIZE_CONFIG = "quantize_config.json"
CT_VERSION = "0.20.0"


def gptq_settings(src: Path) -> dict[str, Any]:
    """The GPTQ settings of a model folder: quantize_config.json, else config.json's
    `quantization_config` with quant_method "gptq"."""
    qc = None
    if (src / QUANTIZE_CONFIG).is_file():
        qc = read_json(src / QUANTIZE_CONFIG)
    elif (src / CONFIG_NAME).is_file():
        qc = read_json(src / CONFIG_NAME).get("quantization_config")
    if not isinstance(qc, dict) or str(qc.get("quant_method", "gptq")).lower() != "gptq" or "bits" not in qc:
        raise CodecError(f"{src}: not a GPTQ checkpoint (no {QUANTIZE_CONFIG} or GPTQ quantization_config)")
    fmt = str(qc.get("format") or qc.get("checkpoint_format") or "gptq").lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise CodecError(f"{src}: GPTQ checkpoint format {fmt!r} is not converted (gptq and gptq_v2 are)")
    if qc.get("dynamic"):
        raise CodecError(f"{src}: per-module GPTQ overrides (`dynamic`) are not converted")
    if str(qc.get("pack_dtype", "int32")).replace("torch.", "") != "int32":
        raise CodecError(f"{src}: GPTQ pack_dtype {qc['pack_dtype']!r} is not converted (int32 is)")
    try:
        bits, group = int(qc["bits"]), int(qc.get("group_size", -1))
    except (TypeError, ValueError):
        raise CodecError(f"{src}: GPTQ bits and group_size must be integers") from None
    return {"bits": bits, "group_size": group if group > 0 else None, "symmetric": bool(qc.get("sym", True)),
            "zeros_minus_one": fmt == "gptq", "desc_act": bool(qc.get("desc_act", False))}


def ct_quantization_config(settings: dict[str, Any], modules: list[dict], where: Path) -> dict[str, Any]:
    """compressed-tensors' `quantization_config` for the converted modules."""
    group = settings["group_size"]
    weights = {"num_bits": settings["bits"], "type": "int", "symmetric": settings["symmetric"],
               "strategy": "group" if group else "channel", "group_size": group, "dynamic": False,
               "observer": "minmax"}
    if any(m["g_idx"] for m in modules):
        weights["actorder"] = "group"
    qc = {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
          "version": CT_VERSION, "ignore": [], "kv_cache_scheme": None,
          "config_groups": {"group_0": {"targets": sorted({m["module"] for m in modules}), "weights": weights,
                                        "input_activations": None, "output_activations": None,
                                        "format": "pack-quantized"}}}
    return serialise_quantization_config(qc, where)


def convert_gptq(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Writes `dst_dir`: the GPTQ model folder `src_dir` in compressed-tensors'
    pack-quantized format (other tensors, the tokenizer and other files unchanged)."""
    src, dst = Path(src_dir), Path(dst_dir)
    check_input_folder(src)
    settings = gptq_settings(src)
    shards = shard_paths(src)
    jobs = [(os.fspath(s), os.fspath(dst / s.name)) for s in shards]
    native = {k: settings[k] for k in ("bits", "group_size", "symmetric", "zeros_minus_one")}
    key = run_key("convert-gptq", _native.__version__, input_fingerprint(shards), jobs, native)
    with run_folder(src, dst, overwrite, key) as out:
        per_shard = write_resumably(out, jobs, lambda job: _native.convert_gptq_file(*job, **native))
        modules = [m for shard in per_shard for m in shard]
        if not modules:
            raise CodecError(f"{src}: no GPTQ module (`<module>.qweight`) in its shards")
        write_index(src, dst, shards)
        config = read_json(src / CONFIG_NAME) if (src / CONFIG_NAME).is_file() else {}
        config["quantization_config"] = ct_quantization_config(settings, modules, dst / CONFIG_NAME)
        write_config(dst, config)
        copied = copy_other_files(src, dst, shards, skip=(QUANTIZE_CONFIG,))
    return {"modules": len(modules), "g_idx_kept": sum(m["g_idx"] for m in modules), "shards": len(jobs),
            "copied": copied, "settings": settings}
