"""Small SpQR checkpoints built from random quantizer output, and the format's decode
written out independently in numpy (from the table in rust/ctcodec/src/spqr/mod.rs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ctcodec import _native
from ctcodec.calibrate.export import raw
from ctcodec.spqr_format import SpqrParams, pack


def random_output(params: SpqrParams, m: int, n: int, seed: int, outlier_share: float = 0.02) -> dict:
    rng = np.random.default_rng(seed)
    groups, tiles = -(-n // params.beta2), -(-m // params.beta1)
    so = np.stack([rng.uniform(1e-3, 2e-2, (tiles, groups)), rng.uniform(-3, 1, (tiles, groups)),
                   rng.uniform(0.2, 1.5, (tiles, groups)), rng.uniform(-2, 2, (tiles, groups))], -1)
    mask = rng.random((m, n)) < outlier_share
    rows, cols = np.nonzero(mask)
    return {
        "codes": rng.integers(0, 1 << params.bits, (m, n), dtype=np.uint8),
        "scale_codes": rng.integers(0, 1 << params.qq_scale_bits, (m, groups), dtype=np.uint8),
        "zero_codes": rng.integers(0, 1 << params.qq_zero_bits, (m, groups), dtype=np.uint8),
        "second_order": so.astype(np.float16),
        "perm": rng.permutation(n).astype(np.int32),
        "outlier_rows": rows.astype(np.int32),
        "outlier_cols": cols.astype(np.int32),
        "outlier_values": rng.normal(0, 0.5, len(rows)).astype(np.float16),
    }


def reference_decode(params: SpqrParams, out: dict) -> torch.Tensor:
    """Dense weight in f32, before the final rounding to the params' dtype."""
    codes = out["codes"].astype(np.float32)
    m, n = codes.shape
    so = out["second_order"].astype(np.float32)
    tile = np.arange(m) // params.beta1
    group = np.arange(n) // params.beta2
    scale = so[tile, :, 0] * (out["scale_codes"].astype(np.float32) - so[tile, :, 1])
    zero = so[tile, :, 2] * (out["zero_codes"].astype(np.float32) - so[tile, :, 3])
    w = scale[:, group] * (codes - zero[:, group])
    w[out["outlier_rows"], out["outlier_cols"]] = out["outlier_values"].astype(np.float32)
    dense = np.empty_like(w)
    dense[:, out["perm"]] = w
    return torch.from_numpy(dense)


def write_folder(folder: Path, params: SpqrParams, weights: dict[str, dict], extra: dict | None = None) -> Path:
    """A model folder holding SpQR weights (module -> quantizer output) and `extra`
    dense tensors, with its config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = []
    for module, out in weights.items():
        tensors.extend(pack(params, module, **out))
    tensors.extend(raw(name, t) for name, t in (extra or {}).items())
    _native.write_tensors(str(folder / "model.safetensors"), tensors, [False] * len(tensors))
    (folder / "config.json").write_text(json.dumps({"quantization_config": params.config(ignore=[])}))
    return folder
