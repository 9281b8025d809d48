"""On-device decompression of sparse-bitmask and sparse-24-bitmask weights.

Both formats store the kept values in row-major order and a bitmask with bit c % 8 of
byte c // 8 set where column c is kept (rows are all dims but the last). sparse-bitmask
also stores row_offsets (checked, not used: see decompress_bitmask); in sparse-24-bitmask
every row keeps exactly cols / 2 values (compressed is [rows, cols / 2], kept zeros
included), so row r starts at r * cols / 2.

One program expands one row: it walks the row's bitmask a block of bytes at a time,
places each kept value at the running count of set bits before it, and writes zeros
elsewhere. Values move as integers of the same width, so every bit pattern (-0.0, NaN
payloads) arrives unchanged. The inputs are checked (popcounts against row_offsets and
the number of values) before anything is launched: a bad file raises ValueError instead
of reading out of bounds on the device.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from ._runtime import interpreting, on_device, require_runtime

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@triton.jit
def expand_rows_kernel(vals_ptr, mask_ptr, offs_ptr, out_ptr, COLS, ROW_BYTES, ROW_NNZ,
                       HAS_OFFSETS: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    if HAS_OFFSETS:
        done = tl.load(offs_ptr + row)
    else:
        done = row * ROW_NNZ
    rb = tl.arange(0, BLOCK_BYTES)
    bit = tl.arange(0, 8)
    for b0 in range(0, ROW_BYTES, BLOCK_BYTES):
        idx = b0 + rb
        byte = tl.load(mask_ptr + row * ROW_BYTES + idx, mask=idx < ROW_BYTES, other=0).to(tl.int32)
        flags = (byte[:, None] >> bit[None, :]) & 1  # [bytes, 8]: column idx*8 + bit kept
        count = tl.sum(flags, axis=1)
        before = tl.cumsum(count, axis=0) - count  # kept values in earlier bytes of the block
        within = tl.cumsum(flags, axis=1) - flags  # ... and earlier in the same byte
        col = idx[:, None] * 8 + bit[None, :]
        in_row = col < COLS
        v = tl.load(vals_ptr + (done + before[:, None] + within), mask=in_row & (flags != 0), other=0)
        tl.store(out_ptr + row * COLS + col, v, mask=in_row)
        done += tl.sum(count, axis=0)


def _fail(fmt: str, msg: str) -> None:
    raise ValueError(f"{fmt}: {msg}")


def _shape_of(shape) -> list[int]:
    """The dense shape from the stored `shape` tensor (any layout: sparse-24 stores [2, 1])
    or a sequence of ints."""
    if isinstance(shape, torch.Tensor):
        return [int(s) for s in shape.reshape(-1).tolist()]
    return [int(s) for s in np.asarray(shape).reshape(-1)]


def _row_popcounts(bitmask: torch.Tensor, rows: int, cols: int, fmt: str) -> torch.Tensor:
    """Set bits per row (int64 [rows]); raises if bits beyond the last column are set."""
    b = bitmask.reshape(rows, -(-cols // 8))
    if cols % 8 and rows and bool((b[:, -1] >> (cols % 8)).any()):
        _fail(fmt, f"bitmask has bits set beyond column {cols}")
    b = b - ((b >> 1) & 0x55)
    b = (b & 0x33) + ((b >> 2) & 0x33)
    b = (b + (b >> 4)) & 0x0F
    return b.sum(dim=1, dtype=torch.int64)


def _check_common(compressed, bitmask, dims: list[int], fmt: str) -> tuple[int, int]:
    if not dims or any(d < 0 for d in dims):
        _fail(fmt, f"bad shape {dims}")
    cols = dims[-1]
    rows = 1
    for d in dims[:-1]:
        rows *= d
    if bitmask.dtype != torch.uint8 or list(bitmask.shape) != [*dims[:-1], -(-cols // 8)]:
        _fail(fmt, f"bitmask must be uint8 {[*dims[:-1], -(-cols // 8)]} for shape {dims}, "
                   f"got {bitmask.dtype} {list(bitmask.shape)}")
    if compressed.device != bitmask.device:
        _fail(fmt, f"compressed is on {compressed.device}, bitmask on {bitmask.device}")
    if compressed.element_size() not in _INT_OF_SIZE:
        _fail(fmt, f"unsupported value dtype {compressed.dtype}")
    return rows, cols


def _expand(compressed, bitmask, offsets, rows: int, cols: int, row_nnz: int, dims: list[int]) -> torch.Tensor:
    if compressed.numel() == 0:  # nothing kept (or nothing at all): no kernel to run
        return torch.zeros(dims, dtype=compressed.dtype, device=compressed.device)
    dense = torch.empty(dims, dtype=compressed.dtype, device=compressed.device)
    as_int = _INT_OF_SIZE[compressed.element_size()]
    vals = compressed.contiguous().view(as_int)
    block_bytes = 16 if interpreting() else 128
    with on_device(dense):
        expand_rows_kernel[(rows,)](
            vals, bitmask.contiguous(), offsets if offsets is not None else bitmask, dense.view(as_int),
            cols, -(-cols // 8), row_nnz, HAS_OFFSETS=offsets is not None, BLOCK_BYTES=block_bytes,
            num_warps=1 if interpreting() else 4,
        )
    return dense


def decompress_bitmask(compressed: torch.Tensor, bitmask: torch.Tensor, row_offsets: torch.Tensor,
                       shape: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """A sparse-bitmask weight (its stored tensors, on the device) as a dense tensor there.
    compressed: [nnz] values; bitmask: uint8 [..., ceil(cols/8)]; row_offsets: int [...]
    as compressed-tensors writes them (checked against the bitmask); shape: the dense
    shape (the stored tensor or ints). Synchronizes with the device to validate."""
    fmt = "sparse-bitmask"
    require_runtime(compressed, bitmask, row_offsets)
    dims = _shape_of(shape)
    rows, cols = _check_common(compressed, bitmask, dims, fmt)
    if compressed.dim() != 1:
        _fail(fmt, f"compressed must be 1-D, got {list(compressed.shape)}")
    if row_offsets.dtype.is_floating_point or row_offsets.numel() != rows:
        _fail(fmt, f"row_offsets must be {rows} integers, got {row_offsets.dtype} {list(row_offsets.shape)}")
    counts = _row_popcounts(bitmask, rows, cols, fmt)
    if int(counts.sum()) != compressed.numel():
        _fail(fmt, f"bitmask has {int(counts.sum())} set bits but compressed holds {compressed.numel()} values")
    # compressed-tensors writes cumsum(counts, dim=0) - counts over the leading dims: the
    # exclusive prefix of the rows for 2-D weights, but along the first dim only for
    # rank >= 3 (and 0 for rank 1). Nothing reads them; a file where they disagree with
    # the bitmask is corrupt. The kernel takes the row starts computed here.
    lead = counts.view(dims[:-1]) if len(dims) > 1 else counts.view(())
    stored = row_offsets.to(device=bitmask.device, dtype=torch.int64).reshape(lead.shape)
    if not torch.equal(stored, torch.cumsum(lead, 0) - lead if lead.dim() else torch.zeros_like(lead)):
        _fail(fmt, "row_offsets do not match the bitmask's per-row counts")
    starts = torch.cumsum(counts, 0) - counts
    return _expand(compressed, bitmask, starts, rows, cols, 0, dims)


def decompress_sparse24(compressed: torch.Tensor, bitmask: torch.Tensor,
                        shape: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """A sparse-24-bitmask weight (its stored tensors, on the device) as a dense tensor
    there. compressed: [rows, cols/2] kept values; bitmask: uint8 [rows, ceil(cols/8)];
    shape: the stored tensor ([2, 1]) or ints. Synchronizes with the device to validate."""
    fmt = "sparse-24-bitmask"
    require_runtime(compressed, bitmask)
    dims = _shape_of(shape)
    if len(dims) != 2:
        _fail(fmt, f"shape must be 2-D, got {dims}")
    rows, cols = _check_common(compressed, bitmask, dims, fmt)
    if cols % 4:
        _fail(fmt, f"{cols} columns are not a multiple of 4")
    if list(compressed.shape) != [rows, cols // 2]:
        _fail(fmt, f"compressed must be [{rows}, {cols // 2}], got {list(compressed.shape)}")
    counts = _row_popcounts(bitmask, rows, cols, fmt)
    if rows and not bool((counts == cols // 2).all()):
        bad = int(torch.nonzero(counts != cols // 2)[0, 0])
        _fail(fmt, f"row {bad} of the bitmask keeps {int(counts[bad])} values, not {cols // 2}")
    return _expand(compressed, bitmask, None, rows, cols, cols // 2, dims)


def _upload(t, device: torch.device) -> torch.Tensor:
    """Host tensor (or numpy array) -> device, through pinned memory, without blocking."""
    if not isinstance(t, torch.Tensor):
        t = torch.from_numpy(t)
    if t.device.type != "cpu" or device.type == "cpu":
        return t.to(device)
    if not t.is_pinned():
        t = t.contiguous().pin_memory()  # a pinned copy: pass pinned tensors to skip it
    return t.to(device, non_blocking=True)


def _target(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cpu") if interpreting() else torch.device("cuda", torch.cuda.current_device())


def decompress_bitmask_from_host(compressed, bitmask, row_offsets, shape, *, device=None) -> torch.Tensor:
    """decompress_bitmask from host tensors: only the compressed bytes cross the bus
    (pinned, asynchronous copies), the dense tensor is made on the device."""
    dev = _target(device)
    dims = _shape_of(shape)  # read on the host: no device round trip for it
    return decompress_bitmask(_upload(compressed, dev), _upload(bitmask, dev), _upload(row_offsets, dev), dims)


def decompress_sparse24_from_host(compressed, bitmask, shape, *, device=None) -> torch.Tensor:
    """decompress_sparse24 from host tensors (see decompress_bitmask_from_host)."""
    dev = _target(device)
    dims = _shape_of(shape)
    return decompress_sparse24(_upload(compressed, dev), _upload(bitmask, dev), dims)
