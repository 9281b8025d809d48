"""Linear layers that keep their weight compressed: the checkpoint's packed tensors sit
in buffers, CUDA inputs go through the Triton kernels (ctcodec-kernels), anything else
through an exact fallback that dequantizes (as ctcodec's decoder does) and multiplies."""

from __future__ import annotations

import functools
import warnings

import torch

from .unpack import dequantize_pack, dequantize_spqr

PACK_PARTS = ("weight_packed", "weight_scale", "weight_zero_point", "weight_g_idx", "weight_shape")
SPQR_PARTS = ("weight_codes", "weight_stats", "weight_second_order", "weight_perm", "weight_shape",
              "weight_outlier_row_offsets", "weight_outlier_col_vals", "weight_outlier_tile_offsets",
              "weight_outlier_tile_col_vals")


@functools.cache
def _kernels():
    """The Triton kernels, or None (then layers dequantize before each matmul: exact, slower)."""
    try:
        import ctcodec_kernels
    except ImportError:
        warnings.warn('ctcodec-kernels is not installed: compressed layers on the GPU dequantize before each '
                      'matmul; pip install "ctcodec[gpu]" for the Triton kernels', stacklevel=3)
        return None
    return ctcodec_kernels if ctcodec_kernels.available() else None


class CompressedLinear(torch.nn.Module):
    """y = x Wᵀ + b with W stored as `kind` ("pack" or "spqr") parts."""

    def __init__(self, in_features: int, out_features: int, kind: str, params: dict, bias: bool,
                 dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kind, self.params, self.dtype = kind, dict(params), dtype
        self.bias = torch.nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None
        self._prepared = None  # the kernels' repacked form, built on the first CUDA call
        self._names: list[str] = []

    def set_part(self, name: str, tensor: torch.Tensor) -> None:
        self.register_buffer(name, tensor)
        self._names.append(name)
        self._prepared = None

    def parts(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in self._names}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}={self.params}"

    def dequantize(self) -> torch.Tensor:
        p = self.parts()
        if self.kind == "spqr":
            return dequantize_spqr(p, self.params["bits"], self.params["beta1"], self.params["beta2"],
                                   self.params["qq_scale_bits"], self.params["qq_zero_bits"], self.dtype)
        return dequantize_pack(p["weight_packed"], p["weight_scale"], self.params["num_bits"],
                               (self.out_features, self.in_features), p.get("weight_zero_point"),
                               p.get("weight_g_idx"), self.params.get("group_size"))

    def _prepare(self, ck):
        p = self.parts()
        if self.kind == "spqr":
            return ck.prepare_spqr(p, self.params)
        return ck.prepare(p["weight_packed"], p["weight_scale"], self.params["num_bits"],
                          self.params.get("group_size"), self.out_features, self.in_features,
                          weight_zero_point=p.get("weight_zero_point"), weight_g_idx=p.get("weight_g_idx"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ck = _kernels() if x.is_cuda else None
        if ck is not None and x.dtype in (torch.float16, torch.bfloat16):
            if self._prepared is None:
                self._prepared = self._prepare(ck)
            rows = x.numel() // max(x.shape[-1], 1)
            if self.kind == "spqr" and rows > 16:
                y = torch.nn.functional.linear(x, ck.dequantize_spqr(self._prepared, x.dtype))
            elif self.kind == "spqr":
                y = ck.spqr_matvec(x, self._prepared)
            else:
                y = ck.quant_matmul(x, self._prepared)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        return torch.nn.functional.linear(x, self.dequantize().to(x.dtype),
                                          None if self.bias is None else self.bias.to(x.dtype))
