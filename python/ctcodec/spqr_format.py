"""The ctcodec SpQR format: its config.json entry, and packing a quantizer's output.

A SpQR checkpoint's `quantization_config` is
`{"quant_method": "ctcodec", "format": "spqr", "bits", "beta1", "beta2",
"qq_scale_bits", "qq_zero_bits", "dtype", "outlier_layout", ...}`; every module with a
`<module>.weight_codes` tensor is stored in it (rust/ctcodec/src/spqr/mod.rs documents
the tensors). Outliers replace the dense value at their position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import _native
from .errors import CodecError

QUANT_METHOD = "ctcodec"
FORMAT = "spqr"
VERSION = "1"
TORCH_TO_SAFETENSORS = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


@dataclass(frozen=True)
class SpqrParams:
    bits: int = 3
    beta1: int = 16  # rows sharing second-order statistics
    beta2: int = 16  # input columns sharing a first-order scale and zero
    qq_scale_bits: int = 3
    qq_zero_bits: int = 3
    dtype: str = "bfloat16"
    outlier_layout: str = "csr"

    # The native codec tells a module's scheme apart by its format.
    format: ClassVar[str] = FORMAT

    @property
    def storage_dtype(self) -> str:
        """The dtype the weight decodes to, as safetensors names it."""
        return TORCH_TO_SAFETENSORS[self.dtype]

    def average_bits(self, outlier_fraction: float) -> float:
        """The SpQR paper's accounting (its Eq. 4): codes, 3-bit first-order statistics
        per group, four 16-bit second-order numbers per tile, 32 bits per outlier."""
        return (self.bits + (self.qq_scale_bits + self.qq_zero_bits) / self.beta2
                + 64 / (self.beta1 * self.beta2) + 32 * outlier_fraction)

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "quant_method": QUANT_METHOD,
            "format": FORMAT,
            "version": VERSION,
            "bits": self.bits,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "qq_scale_bits": self.qq_scale_bits,
            "qq_zero_bits": self.qq_zero_bits,
            "dtype": self.dtype,
            "outlier_layout": self.outlier_layout,
            "outlier_semantics": "replace",
            **extra,
        }


def is_spqr_config(qc: Any) -> bool:
    return isinstance(qc, dict) and qc.get("quant_method") == QUANT_METHOD and qc.get("format") == FORMAT


def params_from_config(qc: dict[str, Any]) -> SpqrParams:
    try:
        p = SpqrParams(int(qc["bits"]), int(qc["beta1"]), int(qc["beta2"]), int(qc["qq_scale_bits"]),
                       int(qc["qq_zero_bits"]), str(qc.get("dtype", "bfloat16")),
                       str(qc.get("outlier_layout", "csr")))
    except (KeyError, TypeError, ValueError) as e:
        raise CodecError(f"SpQR quantization_config is missing or has a malformed {e}") from None
    if p.dtype not in TORCH_TO_SAFETENSORS:
        raise CodecError(f"SpQR dtype must be one of {sorted(TORCH_TO_SAFETENSORS)}, not {p.dtype!r}")
    if p.outlier_layout not in ("csr", "ptcsr"):
        raise CodecError(f"SpQR outlier_layout must be csr or ptcsr, not {p.outlier_layout!r}")
    return p


def spqr_modules(names) -> list[str]:
    return sorted(n[: -len(".weight_codes")] for n in names if n.endswith(".weight_codes"))


def pack(params: SpqrParams, module: str, codes, scale_codes, zero_codes, second_order, perm,
         outlier_rows, outlier_cols, outlier_values) -> list[tuple[str, str, list[int], np.ndarray]]:
    """Stored tensors of one weight from a quantizer's output (numpy arrays, stored
    column order): codes [m, n] uint8, scale/zero codes [m, G] uint8, second order
    [tiles, G, 4] float16, perm [n], outliers as COO with float16 values."""
    rows, cols = codes.shape

    def flat(a, dtype):
        return np.ascontiguousarray(np.asarray(a).reshape(-1).astype(dtype, copy=False))

    try:
        parts = _native.spqr_pack(
            params, rows, cols, flat(codes, np.uint8), flat(scale_codes, np.uint8),
            flat(zero_codes, np.uint8), flat(np.asarray(second_order, np.float16).view(np.uint16), np.uint16),
            flat(perm, np.int32), flat(outlier_rows, np.int32), flat(outlier_cols, np.int32),
            flat(np.asarray(outlier_values, np.float16).view(np.uint16), np.uint16), params.outlier_layout)
    except CodecError as e:
        raise CodecError(f"module {module!r}: {e}") from None
    return [(f"{module}.{suffix}", dtype, list(shape), raw) for suffix, dtype, shape, raw in parts]
