"""Turning solver results into stored tensors, and writing the output checkpoint
shard by shard (tensors that were not compressed are copied byte for byte)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .. import _native
from ..model_folder import shard_paths

Raw = tuple[str, str, list[int], np.ndarray]
TORCH_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def raw(name: str, t: torch.Tensor) -> Raw:
    t = t.detach().contiguous().cpu()
    dtype = TORCH_NAMES.get(t.dtype) or {torch.int32: "I32", torch.int64: "I64", torch.int8: "I8"}[t.dtype]
    return name, dtype, list(t.shape), t.reshape(-1).view(torch.uint8).numpy()


def _pack(codes: torch.Tensor, bits: int) -> np.ndarray:
    rows, cols = codes.shape
    flat = np.ascontiguousarray(codes.to(torch.int8).numpy().reshape(-1))
    return _native.pack_int_codes(flat, rows, cols, bits), [rows, (cols * bits + 31) // 32]


def pack_quantized(module: str, result, bits: int, symmetric: bool, dtype: torch.dtype) -> list[Raw]:
    """compressed-tensors' pack-quantized parts for a GPTQ result."""
    rows, cols = result.codes.shape
    packed, shape = _pack(result.codes, bits)
    parts = [
        (f"{module}.weight_packed", "I32", shape, packed),
        raw(f"{module}.weight_scale", result.scale.to(dtype)),
        raw(f"{module}.weight_shape", torch.tensor([rows, cols], dtype=torch.int64)),
    ]
    if not symmetric:
        # Zero points are packed along the output dimension: pack the transpose.
        zp, (g, words) = _pack(result.zero.t().contiguous(), bits)
        zp = zp.view(np.int32).reshape(g, words).T.copy().view(np.uint8).reshape(-1)
        parts.append((f"{module}.weight_zero_point", "I32", [words, g], zp))
    if result.g_idx is not None:
        parts.append(raw(f"{module}.weight_g_idx", result.g_idx.to(torch.int32)))
    return parts


def write_checkpoint(src: Path, dst: Path, replaced: dict[str, list[Raw]], dense: dict[str, torch.Tensor]) -> list:
    """Writes every shard of `src` into `dst`: a weight named in `replaced` (by its
    `.weight` name) becomes those parts, one in `dense` that tensor, anything else is
    copied. Returns the writer's per-tensor stats."""
    stats = []
    for shard in shard_paths(src):
        meta, header = _native.read_header(os.fspath(shard))
        reader = _native.CompressedFile(os.fspath(shard), "dense")
        tensors = []
        for i, (name, dtype, shape) in enumerate(header):
            if name in replaced:
                tensors.extend(replaced[name])
            elif name in dense:
                tensors.append(raw(name, dense[name]))
            else:
                tensors.append((name, dtype, list(shape), reader.read(i)))
        out = dst / shard.name
        try:
            stats.extend(_native.write_tensors(os.fspath(out), tensors, [False] * len(tensors), meta))
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    return stats
