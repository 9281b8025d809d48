"""Rotations before quantization (`rotate=` / `--rotate hadamard|random-hadamard`):
SpinQuant's R1 (the residual stream) and R2 (each attention head's values) folded into a
Llama-family model's weights, then compressed as usual. The output is a standard
checkpoint: the rotations live in its weights, and `quantization_config.transform_config`
records them in compressed-tensors' layout (weight_output / weight_input pairs, which
loaders fold at save time and never apply again), so compressed-tensors, transformers
and vLLM load it like any other.

With `online=True` SpinQuant's R4 is added: down_proj's input turns by a block Hadamard
at run time (`online.py`), an `input` transform that compressed-tensors' `apply_transform_config` and
ctcodec's loaders apply and transformers 4.57 does not. Models outside the Llama family (BERT) get online input
rotations on every Linear layer instead (`linear_inputs.py`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from ..config_models import TransformConfig
from ..errors import CodecError
from ..model_folder import CONFIG_NAME, check_input_folder, read_json, write_config
from ..reading import refuse_compressed
from .fold import FAMILIES, Rotations, rotate_folder
from .hadamard import hadamard, rotation
from .linear_inputs import rotate_linear_inputs
from .online import DOWN_TARGETS, attach_online_rotations, declared_transforms, input_rotation_group

KINDS = ("hadamard", "random-hadamard")

__all__ = ["FAMILIES", "KINDS", "Rotations", "attach_online_rotations", "compress_rotated", "declared_transforms",
           "hadamard", "rotate_folder", "rotate_linear_inputs", "rotation",
           "transform_config"]


def transform_config(rot: Rotations) -> dict:
    """compressed-tensors' transform_config for the folded R1 and R2 (and R4, online)."""
    readers = ["re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$", "re:.*up_proj$", "re:.*gate_proj$", "lm_head"]
    common = {"type": rot.kind, "randomize": False, "requires_grad": False, "precision": "torch.float64"}
    groups = {
        "R1": {**common, "head_dim": None, "apply": [
            {"targets": ["re:.*embed_tokens$", "re:.*o_proj$", "re:.*down_proj$"], "location": "weight_output",
             "inverse": False, "ignore": []},
            {"targets": readers, "location": "weight_input", "inverse": True, "ignore": []}]},
        "R2": {**common, "head_dim": rot.head_dim, "apply": [
            {"targets": ["re:.*v_proj$"], "location": "weight_output", "inverse": False, "ignore": []},
            {"targets": ["re:.*o_proj$"], "location": "weight_input", "inverse": True, "ignore": []}]},
    }
    if rot.down_block:
        groups["R4"] = input_rotation_group(rot.down_block, DOWN_TARGETS)
    return TransformConfig.model_validate({"config_groups": groups}).model_dump(mode="json")


def compress_rotated(compress: Callable[..., dict], src: str | os.PathLike, dst: str | os.PathLike, kind: str,
                     rotation_seed: int = 0, online: bool = False, **kwargs) -> dict:
    """`compress(rotated_src, dst, **kwargs)` on `src` with R1/R2 (and R4 with `online`)
    folded in (in a temporary folder beside `dst`), then `transform_config` added to
    dst's config."""
    if kind not in KINDS:
        raise CodecError(f"rotate must be one of {KINDS}, not {kind!r}")
    src, dst = Path(src), Path(dst)
    check_input_folder(src)
    refuse_compressed(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    config = read_json(src / CONFIG_NAME)
    if declared_transforms(config):
        # Rotating again would drop (or, for R4, cancel) the transforms already there.
        raise CodecError(f"{src}: the model is already rotated (its config.json has a transform_config)")
    inputs_only = online and config.get("model_type") not in FAMILIES
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.rotated-") as tmp:
        rotated = Path(tmp) / "model"
        if inputs_only:  # BERT and other norms a folded rotation cannot pass
            transforms = rotate_linear_inputs(src, rotated)
        else:
            transforms = transform_config(rotate_folder(src, rotated, kind, rotation_seed, online))
        summary = compress(rotated, dst, **kwargs)
    out = read_json(dst / CONFIG_NAME)
    out.pop("transform_config", None)  # the dense rotated folder's; the checkpoint's goes below
    out["quantization_config"]["transform_config"] = transforms
    write_config(dst, out)
    summary["rotate"] = "hadamard (online inputs)" if inputs_only else kind
    summary["online_rotation"] = online
    return summary
