"""The layer-input Hessian H = 2/N Σ x xᵀ and its preparation for column-wise solvers.

Each calibration batch contributes its own sum Sᵦ = Σ x xᵀ (fp32, as GPTQ and SpQR
accumulate); H adds them in batch order. Where the batches were run (one process, or
partitions on the workers of a cluster) does not change a bit of H."""

from __future__ import annotations

import torch


def gram(inp: torch.Tensor) -> torch.Tensor:
    """Σ x xᵀ over the rows of a layer input [..., columns], in fp32."""
    x = inp.detach().reshape(-1, inp.shape[-1]).float()
    return x.t() @ x


class SharedInputs:
    """The Σ x xᵀ of the last input seen: linear layers fed the very same tensor (q/k/v
    from one norm, gate/up) reuse it instead of recomputing it, with the same bits."""

    def __init__(self):
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def gram(self, inp: torch.Tensor) -> torch.Tensor:
        if self._last is None or self._last[0] is not inp:
            self._last = (inp, gram(inp))  # holding inp keeps its identity from being reused
        return self._last[1]

    def clear(self) -> None:
        self._last = None


class BatchStatistics:
    """One batch's Sᵦ for one linear layer, and how many sequences reached it."""

    def __init__(self, columns: int):
        self.S = torch.zeros(columns, columns)
        self.count = 0

    def add(self, inp: torch.Tensor, product: torch.Tensor | None = None) -> None:
        """Adds the input's Σ x xᵀ (`product`, where it was already computed)."""
        self.count += inp.shape[0] if inp.dim() > 2 else 1
        self.S += gram(inp) if product is None else product


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
