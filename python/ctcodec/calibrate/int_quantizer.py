"""compressed-tensors' integer quantization arithmetic, in torch, for solvers that
choose codes column by column (GPTQ, SparseGPT): min/max observer, scale and zero
point, round-to-nearest codes in the signed range."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IntQuantizer:
    num_bits: int
    symmetric: bool
    group_size: int | None  # None: one scale per output channel
    dtype: torch.dtype  # scales are stored (so rounded) in the weight's dtype

    @property
    def qmin(self) -> int:
        return -(1 << (self.num_bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.num_bits - 1)) - 1

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for each row of `x` (fp32), as calculate_qparams gives
        them: the range always includes 0; symmetric scales are max|x| / (range / 2)."""
        lo = torch.clamp(x.amin(dim=1), max=0.0)
        hi = torch.clamp(x.amax(dim=1), min=0.0)
        span = float(self.qmax - self.qmin)
        if self.symmetric:
            scale = torch.maximum(lo.abs(), hi) / (span / 2)
            zero = torch.zeros_like(scale)
        else:
            scale = (hi - lo) / span
        eps = torch.finfo(self.dtype).eps
        scale = torch.where(scale == 0, torch.full_like(scale, eps), scale)
        scale = scale.to(self.dtype).float()
        if not self.symmetric:
            zero = torch.clamp(torch.round(self.qmin - lo / scale), self.qmin, self.qmax)
        return scale, zero

    def codes(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(w / scale + zero), self.qmin, self.qmax)

    @staticmethod
    def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return (q - zero) * scale
