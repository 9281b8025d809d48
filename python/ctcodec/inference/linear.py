"""Linear layers that keep their weight compressed: the checkpoint's packed tensors sit
in buffers, CUDA inputs go through the Triton kernels (ctcodec-kernels), anything else
through an exact fallback that dequantizes (as ctcodec's decoder does) and multiplies."""

from __future__ import annotations

import functools
import warnings

import torch

from . import ops  # noqa: F401  (registers torch.ops.ctcodec.*)
from .ops import (SPQR_ARGS, call_kernel_linear, call_pack_linear, call_spqr_linear, dequantize_kernel_layout,
                  prepare_spqr_kernels)
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


def _on_kernels(x: torch.Tensor) -> bool:
    """Whether x goes to the Triton kernels: half precision on a GPU that has them."""
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _kernels() is not None


class CompressedLinear(torch.nn.Module):
    """y = x Wᵀ + b with W stored as `kind` ("pack" or "spqr") parts. A pack-quantized
    weight is multiplied by a torch custom op (`ops.py`, traced by torch.compile and
    captured by CUDA graphs): `ctcodec::pack_linear` on the checkpoint's tensors, or, once
    `prepare_kernels()` has repacked them at load time, `ctcodec::kernel_linear` (the
    Triton kernels on CUDA)."""

    def __init__(self, in_features: int, out_features: int, kind: str, params: dict, bias: bool,
                 dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kind, self.params, self.dtype = kind, dict(params), dtype
        self.bias = torch.nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None
        self.kernel_group = 0  # > 0 once the weight is in the kernels' layout
        self._kernel_weight = None  # its PreparedWeight view, for eager calls
        self._prepared = None  # SpQR kernels' repacked form (prepare_kernels, on CUDA)
        self._names: list[str] = []

    @property
    def kernel_layout(self) -> bool:
        return self.kernel_group > 0

    def set_part(self, name: str, tensor: torch.Tensor) -> None:
        self.register_buffer(name, tensor)
        self._names.append(name)
        self._prepared = None

    def parts(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in self._names}

    def extra_repr(self) -> str:
        layout = ", kernel layout" if self.kernel_layout else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}={self.params}{layout}"

    def dequantize(self) -> torch.Tensor:
        p = self.parts()
        if self.kind == "spqr":
            return dequantize_spqr(p, self.params["bits"], self.params["beta1"], self.params["beta2"],
                                   self.params["qq_scale_bits"], self.params["qq_zero_bits"], self.dtype)
        if self.kernel_layout:
            return dequantize_kernel_layout(p["qweight"], p["scales"], p.get("zeros"), p.get("perm"),
                                            self.params["num_bits"], self.kernel_group, self.out_features,
                                            self.in_features)
        return dequantize_pack(p["weight_packed"], p["weight_scale"], self.params["num_bits"],
                               (self.out_features, self.in_features), p.get("weight_zero_point"),
                               p.get("weight_g_idx"), self.params.get("group_size"))

    def prepare_kernels(self) -> bool:
        """Repacks a pack-quantized weight, on the device it sits on, into the kernels'
        layout, replacing the checkpoint's tensors; a SpQR weight on CUDA gets the kernels'
        form beside its tensors. Done once, at load time: nothing is decided per call.
        False where that cannot be done (ctcodec-kernels not installed; SpQR off CUDA)."""
        if self.kind == "spqr":
            if self._prepared is None and self.weight_codes.is_cuda and _kernels() is not None:
                tensors, *params = self._spqr_args()
                self._prepared = prepare_spqr_kernels(tensors, *params[:-1])
            return self._prepared is not None
        if self.kernel_layout:
            return True
        try:
            from ctcodec_kernels.repack import prepare
        except ImportError:
            warnings.warn('ctcodec-kernels is not installed: compressed layers dequantize before each matmul; '
                          'pip install "ctcodec[gpu]" for the Triton kernels', stacklevel=2)
            return False
        p = self.parts()
        w = prepare(p["weight_packed"], p["weight_scale"], self.params["num_bits"], self.params.get("group_size"),
                    self.out_features, self.in_features, weight_zero_point=p.get("weight_zero_point"),
                    weight_g_idx=p.get("weight_g_idx"))
        for name in self._names:
            del self._buffers[name]
        self._names = []
        for name, tensor in (("qweight", w.qweight), ("scales", w.scales), ("zeros", w.zeros), ("perm", w.perm),
                             ("x_order", w.x_order)):
            if tensor is not None:
                self.set_part(name, tensor)
        self.kernel_group = w.group
        self._kernel_weight = None
        return True

    def _spqr_args(self) -> tuple:
        p, q = self.parts(), self.params
        return ([p.get(name) for name in SPQR_ARGS], q["bits"], q["beta1"], q["beta2"], q["qq_scale_bits"],
                q["qq_zero_bits"], self.dtype)

    def _eager_kernel_weight(self):
        """The kernels' PreparedWeight over this module's buffers, made once (again only
        if `.to()` replaced the buffers): the eager path then builds nothing per call."""
        w, b = self._kernel_weight, self._buffers
        if w is None or w.qweight is not b["qweight"] or w.scales is not b["scales"]:
            w = _kernels().PreparedWeight(b["qweight"], b["scales"], b.get("zeros"), b.get("perm"),
                                          self.params["num_bits"], self.out_features, self.in_features,
                                          self.kernel_group, b.get("x_order"))
            self._kernel_weight = w
        return w

    def _apply(self, fn, *args, **kwargs):
        # Moved or cast: forms made for the old tensors must not outlive them.
        self._kernel_weight = None
        self._prepared = None
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eager_gpu = not torch.compiler.is_compiling() and _on_kernels(x)
        if eager_gpu and not self.kernel_layout and (self.kind == "pack" or self._prepared is None):
            self.prepare_kernels()  # moved to the GPU by hand: ready it on its first call there
        if eager_gpu and self.kernel_group:
            # Eager on the GPU: straight to the launch path (no dispatcher, no per-call objects).
            y = _kernels().quant_matmul(x, self._eager_kernel_weight())
            bias = self.bias
            if bias is None:
                return y
            return y + (bias if bias.dtype == y.dtype else bias.to(y.dtype))
        p = self.parts()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.kind == "pack":
            n, k, bits = self.out_features, self.in_features, self.params["num_bits"]
            if self.kernel_layout:
                y = call_kernel_linear(x, p["qweight"], p["scales"], p.get("zeros"), p.get("perm"),
                                       p.get("x_order"), bits, self.kernel_group, n, k)
            else:
                y = call_pack_linear(x, p["weight_packed"], p["weight_scale"], p.get("weight_zero_point"),
                                     p.get("weight_g_idx"), bits, self.params.get("group_size") or 0, n, k)
            return y if bias is None else y + bias
        y = call_spqr_linear(x, *self._spqr_args())
        return y if bias is None else y + bias


def prepare_kernels(model: torch.nn.Module) -> int:
    """Readies every CompressedLinear of `model` for the kernels, once, after the model is
    on its device: pack-quantized weights move into the kernels' layout (any device),
    SpQR weights on CUDA get the kernels' repacked form. Returns how many."""
    return sum(m.prepare_kernels() for m in model.modules() if isinstance(m, CompressedLinear))
