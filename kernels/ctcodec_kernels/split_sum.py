"""Split-K without a second kernel: each program stores its fp32 partial, and the last
program of an output tile to arrive (an atomic count per tile) adds all the tile's
partials in split order and writes y. The sum is the same fp32 additions in the same
order as a separate summing kernel would do, so results stay deterministic whichever
program arrives last; a decode step saves one launch per split layer.

Ordering, as in CUDA's threadfence reduction: every thread fences its partial's stores
at GPU scope (PTX `fence.acq_rel.gpu`, so NVIDIA GPUs only), the program meets at a
barrier, one thread counts with an acquire-release atomic, and the last program reads the
partials past L1 (`.cg`).

The counters live in one zeroed int32 buffer per device (`semaphores`), made at weight
preparation, before any CUDA graph. The last program of a tile resets its counter, so
every launch leaves the buffer zeroed for the next one, CUDA graph replays included.
Split launches on one GPU must therefore not run at the same time (on two streams at
once): interleaved counts would never reach a tile's last split, and y would be left
unwritten. One stream, as a decode loop or a CUDA graph replay has, is safe.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .dequant_math import round_to

_SEMAPHORES: dict = {}
# K is split only when a launch has fewer output tiles than the GPU has SMs, so a launch
# needs fewer counters than that: one fixed buffer, never replaced (a captured CUDA graph
# keeps its address).
COUNTERS = 1 << 12


def semaphores(device, count: int = 1):
    """The zeroed int32 counters of `device` (COUNTERS of them). Made on first use: call it
    (ctcodec_kernels.prepare and ctcodec.compile_for_decoding do) before any CUDA graph is
    captured or warmed up, whose memory pool would otherwise own the buffer."""
    import torch

    if count > COUNTERS:
        raise ValueError(f"a split launch needs {count} tile counters, more than the {COUNTERS} kept")
    buf = _SEMAPHORES.get(device)
    if buf is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("ctcodec_kernels: the split-K counters of this GPU were not made before CUDA graph "
                               "capture; call ctcodec_kernels.split_sum.semaphores(device) (or prepare a weight "
                               "there) first")
        buf = torch.zeros(COUNTERS, dtype=torch.int32, device=device)
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
