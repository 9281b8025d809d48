"""Split-K without a second kernel: each program stores its fp32 partial, and the last
program of an output tile to arrive (an atomic count per tile) adds all the tile's
partials in split order and writes y. The sum is the same fp32 additions in the same
order as a separate summing kernel would do, so results stay deterministic whichever
program arrives last; a decode step saves one launch per split layer.

Ordering, as in CUDA's threadfence reduction: every thread fences its partial's stores
at GPU scope (PTX `fence.acq_rel.gpu`, so NVIDIA GPUs only), the program meets at a
barrier, one thread counts with an acquire-release atomic, and the last program reads the
partials past L1 (`.cg`).

The counters live in one zeroed int32 buffer per device (`semaphores`). The last program
of a tile resets its counter, so every launch leaves the buffer zeroed for the next one,
CUDA graph replays included. Launches that share the buffer must not run concurrently
(kernels on other streams at the same time), as with any split-K workspace.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import round_to

_SEMAPHORES: dict = {}
_MIN_COUNTERS = 1 << 16  # 256 KiB: allocated once, before any graph capture in practice


def semaphores(device, count: int):
    """A zeroed int32 buffer of at least `count` counters on `device` (made once, grown
    when a launch needs more)."""
    import torch

    buf = _SEMAPHORES.get(device)
    if buf is None or buf.numel() < count:
        buf = torch.zeros(max(count, _MIN_COUNTERS), dtype=torch.int32, device=device)
        _SEMAPHORES[device] = buf
    return buf


@triton.jit
def store_tile(y, at, ok, y_ptr, part_ptr, sem_ptr, SPLITS, stride_ps, PARTIAL: tl.constexpr,
               INTERPRET: tl.constexpr):
    """Writes a program's fp32 result `y` (at offsets `at`, where `ok`): straight to y_ptr,
    rounded to its dtype, or (PARTIAL) as split program_id(1)'s partial into
    part_ptr[split] (stride_ps apart), the tile's last program adding them all up."""
    if PARTIAL:
        tl.store(part_ptr + tl.program_id(1) * stride_ps + at, y, mask=ok)
        if not INTERPRET:  # every thread's stores made visible GPU-wide (CUDA's __threadfence)
            tl.inline_asm_elementwise("fence.acq_rel.gpu;\n\tmov.b32 $0, $1;", "=r,r", [tl.program_id(0)],
                                      dtype=tl.int32, is_pure=False, pack=1)
        tl.debug_barrier()  # all of this program's stores come before its count
        tile = tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)
        arrived = tl.atomic_add(sem_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLITS - 1:
            total = tl.zeros_like(y)
            for s in range(0, SPLITS):  # split order: the same sum whoever arrives last
                total += tl.load(part_ptr + s * stride_ps + at, mask=ok, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + at, round_to(total, y_ptr.dtype.element_ty, INTERPRET), mask=ok)
            tl.atomic_xchg(sem_ptr + tile, 0)  # zero again for the next launch
    else:
        tl.store(y_ptr + at, round_to(y, y_ptr.dtype.element_ty, INTERPRET), mask=ok)
