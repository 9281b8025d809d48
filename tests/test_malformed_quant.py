"""Malformed quantized checkpoints: each must be refused with `CodecError` naming the
file and the module, leaving the input unchanged and no partial output (the contract of
test_malformed.py, applied to pack-quantized, naive/int/float-quantized, NVFP4 and
stacked 2:4 files). Files are built by hand with numpy, independently of our encoder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import ctcodec
from helpers_safetensors import build, tensor
from test_malformed import check_rejected, make_model

MODULE = "model.layers.0.mlp.down_proj"
ROWS, COLS, GROUP = 4, 16, 8


def _w4_parts(symmetric: bool = True) -> dict[str, list]:
    """A W4 group-8 pack-quantized weight: {suffix: [dtype, shape, array]}."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(ROWS, COLS)).astype(np.uint32)  # already offset by +8
    words = np.zeros((ROWS, COLS // 8), np.uint32)
    for j in range(COLS):
        words[:, j // 8] |= codes[:, j] << (4 * (j % 8))
    parts = {
        "weight_packed": ["I32", [ROWS, COLS // 8], words.view(np.int32)],
        "weight_scale": ["F32", [ROWS, COLS // GROUP], rng.random((ROWS, COLS // GROUP)).astype(np.float32) + 0.1],
        "weight_shape": ["I64", [2], np.array([ROWS, COLS], np.int64)],
    }
    if not symmetric:
        zp = np.zeros((1, COLS // GROUP), np.uint32)  # 4 rows x 4 bits fit one word per group
        for r in range(ROWS):
            zp[0] |= np.uint32(8 + r - 2) << (4 * r)
        parts["weight_zero_point"] = ["I32", [1, COLS // GROUP], zp.view(np.int32)]
    return parts


def _config(weights: dict, fmt: str, version: str = "0.20.0") -> dict:
    return {
        "architectures": ["Dummy"],
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "version": version,
            "format": fmt,
            "quantization_status": "compressed",
            "ignore": [],
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "format": fmt}},
        },
    }


W4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": GROUP}
W4_ASYM = {**W4, "symmetric": False}


def _file(parts: dict[str, list]) -> bytes:
    tensors = [tensor("model.norm.weight", np.ones(COLS, np.float32))]
    for suffix, (dtype, shape, array) in parts.items():
        tensors.append(tensor(f"{MODULE}.{suffix}", np.ascontiguousarray(array), dtype=dtype, shape=shape))
    return build(tensors)


def _set(suffix: str, dtype=None, shape=None, array=None) -> Callable[[dict], None]:
    def edit(parts):
        if dtype is not None:
            parts[suffix][0] = dtype
        if shape is not None:
            parts[suffix][1] = shape
        if array is not None:
            parts[suffix][2] = array
    return edit


def _drop(suffix: str) -> Callable[[dict], None]:
    return lambda parts: parts.pop(suffix)


def _add_zero_point(parts):
    parts["weight_zero_point"] = ["I32", [1, COLS // GROUP], np.zeros((1, COLS // GROUP), np.int32)]


def _bad_g_idx(values):
    def edit(parts):
        parts["weight_g_idx"] = ["I32", [len(values)], np.array(values, np.int32)]
    return edit


# case: (edit, weights args, format, needles)
CASES: dict[str, tuple] = {
    "scale_shape_mismatch": (_set("weight_scale", shape=[ROWS, 1], array=np.ones((ROWS, 1), np.float32)), W4, "pack-quantized", ["scale"]),
    "scale_not_float": (_set("weight_scale", dtype="I32", array=np.ones((ROWS, 2), np.int32)), W4, "pack-quantized", ["scale"]),
    "packed_width_mismatch": (_set("weight_packed", shape=[ROWS, 3], array=np.zeros((ROWS, 3), np.int32)), W4, "pack-quantized", ["packed"]),
    "packed_not_int32": (_set("weight_packed", dtype="F32", array=np.zeros((ROWS, 2), np.float32)), W4, "pack-quantized", ["I32"]),
    "weight_shape_missing": (_drop("weight_shape"), W4, "pack-quantized", ["weight_shape"]),
    "weight_shape_negative": (_set("weight_shape", array=np.array([ROWS, -16], np.int64)), W4, "pack-quantized", ["negative"]),
    "weight_shape_disagrees": (_set("weight_shape", array=np.array([ROWS, 40], np.int64)), W4, "pack-quantized", ["packed"]),
    "weight_shape_rank_1": (_set("weight_shape", shape=[1], array=np.array([64], np.int64)), W4, "pack-quantized", ["shape"]),
    "scale_missing": (_drop("weight_scale"), W4, "pack-quantized", ["weight_scale"]),
    "zero_point_on_symmetric": (_add_zero_point, W4, "pack-quantized", ["symmetric"]),
    "zero_point_missing_asymmetric": (lambda p: None, W4_ASYM, "pack-quantized", ["zero_point"]),
    "zero_point_wrong_size": (lambda p: p.__setitem__("weight_zero_point", ["I32", [2, 2], np.zeros((2, 2), np.int32)]),
                              W4_ASYM, "pack-quantized", ["weight_zero_point"]),
    "g_idx_out_of_range": (_bad_g_idx([0] * 15 + [7]), W4, "pack-quantized", ["g_idx"]),
    "g_idx_wrong_length": (_bad_g_idx([0] * 5), W4, "pack-quantized", ["g_idx"]),
    "g_idx_with_tensor_strategy": (lambda p: (_set("weight_scale", shape=[1], array=np.ones(1, np.float32))(p),
                                              _bad_g_idx([0] * COLS)(p)),
                                   {**W4, "strategy": "tensor", "group_size": None}, "pack-quantized", ["g_idx"]),
    "weight_shape_huge": (_set("weight_shape", array=np.array([1 << 40, 1 << 40], np.int64)), W4, "pack-quantized",
                          ["large"]),
    "weight_shape_wraps_around": (_set("weight_shape", array=np.array([1 << 62, 16], np.int64)), W4, "pack-quantized",
                                  ["large"]),
    "packed_rows_disagree": (_set("weight_packed", shape=[2, 4], array=np.zeros((2, 4), np.int32)), W4, "pack-quantized",
                             ["weight_packed"]),
    "group_size_does_not_divide": (lambda p: None, {**W4, "group_size": 5}, "pack-quantized", ["group size"]),
    "wrong_format_for_args": (lambda p: None, W4, "nvfp4-pack-quantized", ["nvfp4"]),
}


def _base(case: str) -> bytes:
    edit, weights, _fmt, _needles = CASES[case]
    parts = _w4_parts(symmetric=weights.get("symmetric", True) or case == "zero_point_wrong_size")
    if case == "zero_point_missing_asymmetric":
        parts.pop("weight_zero_point", None)
    edit(parts)
    return _file(parts)


ENTRIES = ["decompress_file", "decompress_file_pread", "load_compressed", "decompress_checkpoint"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_quantized(case: str, entry: str, tmp_path: Path) -> None:
    _edit, weights, fmt, needles = CASES[case]
    shard = make_model(tmp_path, _base(case), _config(weights, fmt))
    check_rejected(entry, shard, tmp_path, MODULE, *needles)


@pytest.mark.parametrize("symmetric", [True, False])
def test_baseline_decodes(symmetric: bool, tmp_path: Path) -> None:
    """The hand-built file is valid: codes decode to (q - zero) * scale."""
    parts = _w4_parts(symmetric)
    shard = make_model(tmp_path, _file(parts), _config(W4 if symmetric else W4_ASYM, "pack-quantized"))
    out = dict(ctcodec.decompress_file(shard, framework="numpy"))
    w = out[f"{MODULE}.weight"]
    words = parts["weight_packed"][2].view(np.uint32)
    codes = np.array([[(words[r, j // 8] >> (4 * (j % 8))) & 15 for j in range(COLS)] for r in range(ROWS)], np.float32) - 8
    zeros = np.array([r - 2 for r in range(ROWS)], np.float32)[:, None] if not symmetric else 0.0
    scale = np.repeat(parts["weight_scale"][2], GROUP, axis=1)
    np.testing.assert_array_equal(w, ((codes - zeros) * scale).astype(np.float32))


# NVFP4 and naive files, and a stacked 2:4 file with a broken mask.
NV = {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group", "group_size": 16,
      "scale_dtype": "torch.float8_e4m3fn"}
FP8 = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"}


def _nvfp4_parts():
    return {
        "weight_packed": ["U8", [ROWS, COLS // 2], np.zeros((ROWS, COLS // 2), np.uint8)],
        "weight_scale": ["F8_E4M3", [ROWS, 1], np.full((ROWS, 1), 0x38, np.uint8)],
        "weight_global_scale": ["F32", [1], np.ones(1, np.float32)],
    }


def _fp8_parts():
    return {
        "weight": ["F8_E4M3", [ROWS, COLS], np.full((ROWS, COLS), 0x38, np.uint8)],
        "weight_scale": ["F32", [ROWS, 1], np.ones((ROWS, 1), np.float32)],
    }


OTHER = {
    "nvfp4_global_scale_missing": (_nvfp4_parts, _drop("weight_global_scale"), NV, "nvfp4-pack-quantized", ["weight_global_scale"]),
    "nvfp4_global_scale_two_values": (_nvfp4_parts, _set("weight_global_scale", shape=[2], array=np.ones(2, np.float32)),
                                      NV, "nvfp4-pack-quantized", ["one F32"]),
    "nvfp4_scale_not_fp8": (_nvfp4_parts, _set("weight_scale", dtype="F32", array=np.ones((ROWS, 1), np.float32)),
                            NV, "nvfp4-pack-quantized", ["scale"]),
    "fp8_weight_stored_as_f32": (_fp8_parts, _set("weight", dtype="F32", array=np.ones((ROWS, COLS), np.float32)),
                                 FP8, "float-quantized", ["F8_E4M3"]),
    "fp8_scale_rows_mismatch": (_fp8_parts, _set("weight_scale", shape=[ROWS + 1, 1], array=np.ones((ROWS + 1, 1), np.float32)),
                                FP8, "float-quantized", ["scale"]),
}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("case", list(OTHER))
def test_bad_other_formats(case: str, entry: str, tmp_path: Path) -> None:
    make, edit, weights, fmt, needles = OTHER[case]
    parts = make()
    edit(parts)
    shard = make_model(tmp_path, _file(parts), _config(weights, fmt))
    check_rejected(entry, shard, tmp_path, MODULE, *needles)


def test_stacked_two_four_mask_count(tmp_path: Path) -> None:
    """int8 codes stored 2:4 whose bitmask marks 3 of a group: refused, not misread."""
    values = np.ones((ROWS, COLS // 2), np.int8)
    mask = np.full((ROWS, COLS // 8), 0b00110011, np.uint8)
    mask[0, 0] = 0b00110111
    parts = {
        "compressed": ["I8", [ROWS, COLS // 2], values],
        "bitmask": ["U8", [ROWS, COLS // 8], mask],
        "shape": ["I64", [2, 1], np.array([ROWS, COLS], np.int64)],
        "weight_scale": ["F32", [ROWS, 1], np.ones((ROWS, 1), np.float32)],
    }
    config = _config({"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}, "int-quantized", "0.14.0.1")
    config["quantization_config"]["sparsity_config"] = {"format": "sparse-24-bitmask", "sparsity_structure": "2:4"}
    shard = make_model(tmp_path, _file(parts), config)
    for entry in ENTRIES:
        check_rejected(entry, shard, tmp_path, MODULE, "bitmask")
