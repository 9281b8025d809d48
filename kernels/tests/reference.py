"""What kernel results are checked against: bit equality, and a float64 matmul with an
error bound derived from how the kernels accumulate.

Error bound. Every path forms exact products in fp32: x (fp16/bf16) times a weight
rounded to x's dtype (tensor-core paths: <= 11 + 11 significant bits) or times q - zp
(GEMV: <= 11 + 9 bits, the scale applied to a partial sum afterwards). They are summed in
fp32 in some order: at most K + (splits, runs, final reduction) additions per output, each
adding a relative error <= 2**-24 of a partial sum, so |fp32 sum - exact| <=
(K + 64) * 2**-24 * sum_k |x_k w_k| (the classic worst-case bound for recursive
summation; 64 covers the extra additions). The output is rounded once to x's dtype:
relative error <= 2**-11 (fp16) or 2**-8 (bf16) of the fp32 value, plus fp16's subnormal
spacing near zero. Hence tolerance = u_out * |exact| + 2 * (K + 64) * 2**-24 * sum|x w| + tiny.
"""

from __future__ import annotations

import torch

UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (torch.equal treats -0.0 == 0.0 and NaN != NaN)."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().cpu().contiguous().view(ints[a.element_size()]),
                       b.detach().cpu().contiguous().view(ints[b.element_size()]))


def assert_matmul_close(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """y (the kernel's x @ W.T in x's dtype) against float64, within the bound above.
    `weight` is the weight the path multiplies by: exact (q - zp) * s for GEMV, the
    decoded weight rounded to x's dtype for the tensor-core paths."""
    k = x.shape[-1]
    xd = x.detach().cpu().double().reshape(-1, k)
    wd = weight.detach().cpu().double()
    exact = xd @ wd.T
    size = xd.abs() @ wd.abs().T
    tol = UNIT_ROUNDOFF[x.dtype] * exact.abs() + 2 * (k + 64) * 2.0**-24 * size + 2.0**-24
    got = y.detach().cpu().double().reshape(exact.shape)
    err = (got - exact).abs()
    worst = int(torch.argmax(err - tol))
    assert bool((err <= tol).all()), (
        f"max excess at {divmod(worst, exact.shape[1])}: got {got.flatten()[worst].item()}, "
        f"exact {exact.flatten()[worst].item()}, tolerance {tol.flatten()[worst].item()}")
