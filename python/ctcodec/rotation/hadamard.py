"""Orthogonal Hadamard rotations of any size k · 2^m where k is 1, 2 or a Paley order
(the hidden sizes of real models: 576 = 36 · 16, 1536 = 12 · 128, 384 = 12 · 32, ...).

A Hadamard matrix H of order n has ±1 entries and H Hᵀ = n I, so H / √n is
orthogonal and spreads every input coordinate evenly over all outputs: an outlier
channel becomes a small change to all channels, which is what makes weights rotated by
it easier to quantize (QuIP#, QuaRot, SpinQuant)."""

from __future__ import annotations

import torch

from ..errors import CodecError


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q ** 0.5) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = χ(j − i), χ the quadratic character mod the prime q."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    return chi[(idx.unsqueeze(0) - idx.unsqueeze(1)) % q]


def _paley(order: int) -> torch.Tensor | None:
    """Paley's constructions: order q + 1 (q ≡ 3 mod 4) or 2(q + 1) (q ≡ 1 mod 4), q prime."""
    q = order - 1
    if _is_prime(q) and q % 4 == 3:
        S = torch.zeros(order, order, dtype=torch.float64)
        S[0, 1:], S[1:, 0], S[1:, 1:] = 1, -1, _jacobsthal(q)
        return S + torch.eye(order, dtype=torch.float64)
    q = order // 2 - 1
    if order % 2 == 0 and _is_prime(q) and q % 4 == 1:
        C = torch.zeros(q + 1, q + 1, dtype=torch.float64)
        C[0, 1:], C[1:, 0], C[1:, 1:] = 1, 1, _jacobsthal(q)
        plus = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        minus = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(C, plus) + torch.kron(torch.eye(q + 1, dtype=torch.float64), minus)
    return None


def _sylvester(n: int) -> torch.Tensor:
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def hadamard(n: int) -> torch.Tensor:
    """A ±1 Hadamard matrix of order n (float64), Paley base ⊗ Sylvester."""
    if n < 1:
        raise CodecError(f"no Hadamard matrix of order {n}")
    for k in range(1, n + 1):
        if n % k or (n // k) & (n // k - 1):
            continue  # n / k must be a power of two
        base = _sylvester(k) if k <= 2 else _paley(k)
        if base is not None:
            # The Kronecker product of Hadamard matrices is one; checking the base suffices.
            if not torch.equal(base @ base.T, k * torch.eye(k, dtype=torch.float64)):
                raise AssertionError(f"Paley construction of order {k} is not a Hadamard matrix")
            return torch.kron(base, _sylvester(n // k))
    raise CodecError(f"no Hadamard matrix of order {n} from Paley ⊗ Sylvester constructions "
                     "(sizes k·2^m with k = q + 1 or 2(q + 1), q prime, are supported)")


def rotation(n: int, kind: str, seed: int = 0) -> torch.Tensor:
    """The orthogonal n × n rotation (float64): `hadamard` is H / √n, `random-hadamard`
    is diag(±1) · H / √n with signs drawn from `seed`."""
    R = hadamard(n) / n ** 0.5
    if kind == "hadamard":
        return R
    if kind == "random-hadamard":
        g = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
        return signs.unsqueeze(1) * R
    raise CodecError(f"rotation must be hadamard or random-hadamard, not {kind!r}")
