"""Test tensors for the sparse formats: random bit patterns (so NaN, inf and -0.0 occur),
a chosen share of exact zeros of both signs, and the round-trip result torch predicts."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

# torch dtype -> unsigned integer dtype of the same width, to draw raw bit patterns
BITS = {
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float8_e4m3fn: torch.int8,
    torch.float8_e5m2: torch.int8,
    torch.int8: torch.int8,
    torch.int16: torch.int16,
    torch.int32: torch.int32,
    torch.int64: torch.int64,
    torch.uint8: torch.uint8,
    torch.bool: torch.bool,
}
ALL_DTYPES = list(BITS)
FLOATS = [d for d in ALL_DTYPES if d.is_floating_point]


def make_tensor(dtype, shape, zero_share: float, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    width = torch.empty(0, dtype=dtype).element_size()
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.from_numpy(g.integers(0, 256, size=n * width, dtype=np.uint8))
    t = raw.view(dtype).reshape(shape).clone()
    zero = torch.from_numpy(g.random(n) < zero_share).reshape(shape)
    if dtype == torch.bool:
        t[zero] = False
        return t
    # Write zeros through the integer view: fp8 has no masked_fill on the CPU.
    bits = t.view(BITS[dtype])
    bits[zero] = 0
    if dtype.is_floating_point:
        sign = torch.tensor(1, dtype=BITS[dtype]) << (8 * width - 1)  # wraps to the sign bit
        neg = torch.from_numpy(g.random(n) < 0.5).reshape(shape)
        bits[zero & neg] = sign
    return t


def canonical(t: torch.Tensor) -> torch.Tensor:
    """What a bitmask round trip must return: torch's own `x != 0` decides what is kept,
    and dropped elements come back as +0."""
    # fp8 has no CPU comparison ops; float32 holds every fp8 value exactly.
    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    keep = (t.float() != 0) if t.dtype in fp8 else (t != 0)
    return torch.where(keep, t, torch.zeros((), dtype=t.dtype))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def same_values_up_to_nan_payload(theirs: torch.Tensor, expected: torch.Tensor) -> bool:
    """For another library's decoder: bit equality everywhere but at NaNs, which must be
    NaN there too. A decoder that moves values through torch arithmetic (compressed-tensors'
    scatter) may quiet NaNs and drop their payload (torch 2.15 turns f16 0xFEEC into 0xFE00);
    the IEEE standard leaves payload propagation to the implementation, so only NaN-ness is
    a fact of the format. Our own decoder is held to every bit elsewhere."""
    if theirs.dtype != expected.dtype or theirs.shape != expected.shape:
        return False
    if not expected.dtype.is_floating_point or expected.numel() == 0:
        return same_bits(theirs, expected)
    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    nan = (expected.float() if expected.dtype in fp8 else expected).isnan()
    their_nan = (theirs.float() if theirs.dtype in fp8 else theirs).isnan()
    if not torch.equal(nan, their_nan):
        return False
    width = expected.element_size()
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width]
    return torch.equal(theirs.contiguous().view(as_int)[~nan], expected.contiguous().view(as_int)[~nan])


shapes = st.one_of(
    st.tuples(st.integers(0, 9), st.integers(0, 70)).map(list),  # 2-D, cols often not a multiple of 8
    st.tuples(st.integers(1, 70)).map(list),  # rank 1
    st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(1, 20)).map(list),  # MoE-like rank 3
)
zero_shares = st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0])
seeds = st.integers(0, 2**32 - 1)
