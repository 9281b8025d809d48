"""compressed-tensors' integer quantization arithmetic, in torch, for solvers that
choose codes column by column (GPTQ, SparseGPT): the min/max or MSE observer, scale and
zero point, round-to-nearest codes in the signed range."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IntQuantizer:
    num_bits: int
    symmetric: bool
    group_size: int | None  # None: one scale per output channel
    dtype: torch.dtype  # scales are stored (so rounded) in the weight's dtype
    observer: str = "minmax"  # or "mse": the range shrunk to what quantizes each row best

    # The MSE observer's search, as compressed-tensors' and GPTQ's: ranges shrunk by
    # 1 - i/GRID for i < MAXSHRINK·GRID, the error measured as Σ|error|^NORM per row.
    GRID, MAXSHRINK, NORM = 100, 0.2, 2.4

    @property
    def qmin(self) -> int:
        return -(1 << (self.num_bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.num_bits - 1)) - 1

    def params(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for each row of `x` (fp32) from the observer's range; the
        MSE search weighs column j's error by `weights[j]` where given (GPTQ gives its
        loss's column weights; min/max ignores them)."""
        lo = torch.clamp(x.amin(dim=1), max=0.0)
        hi = torch.clamp(x.amax(dim=1), min=0.0)
        if self.observer == "minmax":
            return self._from_range(lo, hi)
        if self.observer != "mse":
            raise ValueError(f"observer must be minmax or mse, not {self.observer!r}")
        best_scale, best_zero = self._from_range(lo, hi)
        best = self._error(x, best_scale, best_zero, weights)
        for i in range(1, int(self.MAXSHRINK * self.GRID)):
            shrink = 1 - i / self.GRID
            scale, zero = self._from_range(lo * shrink, hi * shrink)
            err = self._error(x, scale, zero, weights)
            better = err < best
            best = torch.where(better, err, best)
            best_scale = torch.where(better, scale, best_scale)
            best_zero = torch.where(better, zero, best_zero)
        return best_scale, best_zero

    def _error(self, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
               weights: torch.Tensor | None) -> torch.Tensor:
        s, z = scale.unsqueeze(1), zero.unsqueeze(1)
        err = (self.dequantize(self.codes(x, s, z), s, z) - x).abs().pow(self.NORM)
        return (err if weights is None else err * weights).sum(1)

    def _from_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As calculate_qparams gives them: the range always includes 0; symmetric scales
        are max|x| / (range / 2)."""
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
