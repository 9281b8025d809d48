"""ctcodec-kernels: Triton GPU kernels over ctcodec's checkpoint formats.

- W4A16 / W8A16 matmul straight from compressed-tensors' pack-quantized tensors:
  `prepare` (a one-time exact repack) then `quant_matmul` (GEMV, split-K or tiled
  tensor-core path, chosen by M); `dequantize` gives the dense weight the paths use.
- sparse-bitmask and sparse-24-bitmask decompression on the device, from device tensors
  or from host tensors (only the compressed bytes cross the bus).
- SpQR (ctcodec's format): `prepare_spqr` (a one-time exact repack; outliers become f32
  corrections) then `spqr_matvec` for a few rows of x (M <= 16, M = 1 the main case);
  `dequantize_spqr` gives the dense weight, equal to ctcodec's decode bit for bit.

Importing this package needs neither a GPU nor Triton (nor torch): names are loaded on
first use, and `available()` says whether the kernels can run here.
"""

from __future__ import annotations

import importlib

from ._runtime import available, interpreting, triton_available

_LAZY = {
    "PreparedWeight": "repack",
    "prepare": "repack",
    "quant_matmul": "matmul",
    "dequant_matmul": "matmul",
    "choose_path": "matmul",
    "dequantize": "decode",
    "decompress_bitmask": "bitmask",
    "decompress_sparse24": "bitmask",
    "decompress_bitmask_from_host": "bitmask",
    "decompress_sparse24_from_host": "bitmask",
    "PreparedSpqr": "spqr_repack",
    "prepare_spqr": "spqr_repack",
    "SpqrConfig": "spqr",
    "spqr_matvec": "spqr",
    "dequantize_spqr": "spqr",
}

__all__ = ["available", "interpreting", "triton_available", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ImportError as e:
        raise ImportError(f"{__name__}.{name} needs torch and Triton "
                          f"(pip install 'ctcodec-kernels[gpu]'): {e}") from e
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
