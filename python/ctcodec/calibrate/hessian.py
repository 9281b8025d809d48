"""The layer-input Hessian H = 2/N Σ x xᵀ and its preparation for column-wise solvers."""

from __future__ import annotations

import torch


class HessianAccumulator:
    """Running average over calibration sequences, in fp32 (as GPTQ and SpQR do)."""

    def __init__(self, columns: int):
        self.H = torch.zeros(columns, columns)
        self.count = 0

    def add(self, inp: torch.Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).float()
        batch = inp.shape[0] if inp.dim() > 2 else 1
        self.H *= self.count / (self.count + batch)
        self.count += batch
        x = x * (2 / self.count) ** 0.5
        self.H += x.t() @ x


def prepare(W: torch.Tensor, H: torch.Tensor, percdamp: float, act_order: bool):
    """Permutation (activation order: diag(H) descending), dead columns zeroed, damping
    `percdamp · mean(diag H)`, and U = the upper Cholesky factor of H⁻¹.
    Returns (perm, U, W permuted)."""
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    n = H.shape[0]
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    W = W[:, perm]
    H = H[perm][:, perm]
    H += percdamp * torch.diag(H).mean() * torch.eye(n)
    L = torch.linalg.cholesky(H)
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    return perm, U, W
