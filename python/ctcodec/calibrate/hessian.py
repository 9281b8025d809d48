"""The layer-input Hessian H = 2/N Σ x xᵀ and its preparation for column-wise solvers.

Each calibration batch contributes its own sum Sᵦ = Σ x xᵀ (fp32, as GPTQ and SpQR
accumulate); H adds them in batch order. Where the batches were run (one process, or
partitions on the workers of a cluster) does not change a bit of H."""

from __future__ import annotations

import torch


class BatchStatistics:
    """One batch's Sᵦ for one linear layer, and how many sequences reached it."""

    def __init__(self, columns: int):
        self.S = torch.zeros(columns, columns)
        self.count = 0

    def add(self, inp: torch.Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).float()
        self.count += inp.shape[0] if inp.dim() > 2 else 1
        self.S += x.t() @ x


def reduce_statistics(columns: int, batches: list[BatchStatistics]) -> torch.Tensor | None:
    """H from the batches' statistics in batch order; None when no input reached it."""
    count = sum(b.count for b in batches)
    if count == 0:
        return None
    H = torch.zeros(columns, columns)
    for b in batches:
        if b.count:
            H += b.S
    return H * (2 / count)


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
