"""The load-time repack of a pack-quantized weight into the kernels' layout (exact: codes,
scales and zero points are moved, never recomputed). Done once per weight; keep the result.

What the kernels need, and why the repack gives it:
- each row's codes as contiguous 128-byte runs with code i of 32 words covering 32
  consecutive columns (`layout.pack_blocks`), padded to whole blocks so rows stay aligned
  for 16-byte loads;
- one scale row per `group` consecutive kernel columns, `group` a multiple of 32 that
  divides a block or is a multiple of one, so a kernel loads each scale once per block
  run instead of once per weight. Activation order (g_idx) is turned into that by sorting
  the columns by group and reading x through `perm`; groups the kernels cannot take as
  they are (sizes not a multiple of 32, uneven act-order groups) are padded to 32-column
  pieces, each with a copy of its group's scale;
- scales and zero points as [groups, N] so a tile's scales are one contiguous load.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .word_packing import (SLICE, SUPPORTED_BITS, block_columns, codes_per_word, k_order_columns, pack_blocks,
                           packed_width, unpack_rows)

# Kernel group size of per-channel weights: larger than any K, so every column is group 0.
CHANNEL_GROUP = 1 << 30
# Codes unpacked per chunk of rows during the repack (bounds its temporary memory).
_CHUNK_CODES = 1 << 24


@dataclass(eq=False, repr=False)
class PreparedWeight:
    """A quantized Linear weight W [n, k] in the kernels' layout; `quant_matmul(x, w)` is x @ W.T."""

    qweight: torch.Tensor  # int32 [n, blocks * 32]
    scales: torch.Tensor  # model dtype [groups, n]
    zeros: torch.Tensor | None  # uint8 [groups, n]: stored zero-point codes (zp + 2**(b-1))
    perm: torch.Tensor | None  # int32 [blocks * block_columns]: x column of each kernel column, -1 = padding
    num_bits: int
    n: int
    k: int
    group: int  # kernel columns per scale row
    # int32 [blocks * block_columns]: x's column at each position of the bit-unpacked GEMM's
    # k order (gemm_tc.py), `perm` folded in, k at padding (a zero column appended to x).
    x_order: torch.Tensor | None = None

    @property
    def blocks(self) -> int:
        return self.qweight.shape[1] // SLICE

    @property
    def k_padded(self) -> int:
        return self.blocks * block_columns(self.num_bits)

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @cached_property
    def shape_key(self) -> tuple:
        """What of this weight decides a kernel config (part of the tuner's key); made once."""
        return (self.n, self.k_padded, self.num_bits, self.group, self.zeros is not None, self.perm is not None,
                self.scales.dtype)

    def x_order_index(self) -> torch.Tensor:
        """`x_order`, made now if this weight was built without it (prepare makes it): not
        during CUDA graph capture, where its values would not be computed until replay."""
        if self.x_order is None:
            if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("ctcodec_kernels: this PreparedWeight has no x_order (made by prepare); it cannot "
                                   "be made during CUDA graph capture")
            self.x_order = x_order_of(self.num_bits, self.blocks, self.k, self.perm, self.device)
        return self.x_order

    @property
    def run(self) -> int:
        """Code positions of a block that share a scale row (the kernels' RUN)."""
        return min(codes_per_word(self.num_bits), self.group // SLICE)

    def __repr__(self) -> str:
        return (f"PreparedWeight(n={self.n}, k={self.k}, num_bits={self.num_bits}, group={self.group}, "
                f"zero_points={self.zeros is not None}, permuted={self.perm is not None}, "
                f"scale_dtype={self.scales.dtype}, device={self.device})")


def x_order_of(bits: int, blocks: int, k: int, perm: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """PreparedWeight.x_order, on `device`: block by block, the k order's kernel columns
    (word_packing.k_order_columns), through `perm` when there is one; k at padding."""
    cols = (torch.arange(blocks, device=device)[:, None] * block_columns(bits)
            + k_order_columns(bits, device)[None, :]).reshape(-1)
    src = cols if perm is None else perm.to(torch.int64)[cols]
    return torch.where((src < 0) | (src >= k), k, src).to(torch.int32)


def _fail(msg: str) -> None:
    raise ValueError(f"pack-quantized weight: {msg}")


def _check_inputs(packed, scale, bits, group_size, n, k, zero_point, g_idx) -> int:
    """Validates shapes and dtypes; returns the number of groups."""
    if bits not in SUPPORTED_BITS:
        _fail(f"num_bits={bits} is not supported (only {SUPPORTED_BITS})")
    if n < 1 or k < 1:
        _fail(f"shape ({n}, {k}) is empty")
    if packed.dtype != torch.int32 or tuple(packed.shape) != (n, packed_width(k, bits)):
        _fail(f"weight_packed must be int32 [{n}, {packed_width(k, bits)}], got {packed.dtype} {list(packed.shape)}")
    if not scale.is_floating_point() or scale.dim() != 2 or scale.shape[0] != n:
        _fail(f"weight_scale must be a float [{n}, groups] tensor, got {scale.dtype} {list(scale.shape)}")
    groups = scale.shape[1]
    if g_idx is None:
        if group_size is None or group_size < 1:
            if groups != 1:
                _fail(f"per-channel weights (group_size {group_size}) have one scale column, got {groups}")
        elif groups != -(-k // group_size):
            _fail(f"{groups} scale columns, but {k} columns in groups of {group_size} make {-(-k // group_size)}")
    if zero_point is not None:
        want = (packed_width(n, bits), groups)
        if zero_point.dtype != torch.int32 or tuple(zero_point.shape) != want:
            _fail(f"weight_zero_point must be int32 {list(want)}, got {zero_point.dtype} {list(zero_point.shape)}")
    if g_idx is not None:
        if g_idx.dtype.is_floating_point or g_idx.dim() != 1 or g_idx.shape[0] != k:
            _fail(f"weight_g_idx must be an integer [{k}] tensor, got {g_idx.dtype} {list(g_idx.shape)}")
        if k and (int(g_idx.min()) < 0 or int(g_idx.max()) >= groups):
            _fail(f"weight_g_idx names groups outside [0, {groups})")
    devices = {t.device for t in (packed, scale, zero_point, g_idx) if t is not None}
    if len(devices) != 1:
        _fail(f"tensors are on different devices: {sorted(map(str, devices))}")
    if packed.numel() >= 2**31:
        _fail("more than 2**31 packed words (kernel offsets are 32-bit)")
    return groups


def _column_plan(k: int, bits: int, groups: int, group_size: int | None, g_idx: torch.Tensor | None,
                 device: torch.device):
    """Where each input column goes: returns (positions, sources, group_of_piece, kernel group,
    padded columns). `sources[j]` (a column of W and of x) moves to kernel column
    `positions[j]`; scale row r of the kernel is group `group_of_piece[r]` of the file."""
    kb = block_columns(bits)
    cols = torch.arange(k, device=device)
    if groups == 1:  # per channel: one scale for the whole row, any column order
        order = cols if g_idx is None else torch.argsort(g_idx.to(torch.int64), stable=True)
        kp = -(-k // kb) * kb
        return cols, order, torch.zeros(1, dtype=torch.int64, device=device), CHANNEL_GROUP, kp
    if g_idx is None:
        order, grp = cols, cols // group_size
    else:
        order = torch.argsort(g_idx.to(torch.int64), stable=True)
        grp = g_idx.to(torch.int64)[order]
    gs = group_size or 0
    fits = gs > 0 and gs % SLICE == 0 and (kb % gs == 0 or gs % kb == 0)
    if fits and torch.equal(grp, cols // gs):
        kp = -(-k // kb) * kb
        used = -(-kp // gs)
        return cols, order, torch.arange(used, device=device).clamp_(max=groups - 1), gs, kp
    # Pieces of 32 columns: each group starts on a piece boundary, padded to whole pieces.
    counts = torch.bincount(grp, minlength=groups)
    pieces = (counts + SLICE - 1) // SLICE
    start_col = torch.cumsum(pieces * SLICE, 0) - pieces * SLICE
    first_src = torch.cumsum(counts, 0) - counts
    positions = start_col[grp] + (cols - first_src[grp])
    total = int(pieces.sum()) * SLICE
    kp = -(-total // kb) * kb
    piece_group = torch.repeat_interleave(torch.arange(groups, device=device), pieces)
    spare = kp // SLICE - piece_group.numel()  # pieces of the last block's padding
    piece_group = torch.cat([piece_group, piece_group.new_full((spare,), groups - 1)])
    return positions, order, piece_group, SLICE, kp


def prepare(
    weight_packed: torch.Tensor,
    weight_scale: torch.Tensor,
    num_bits: int,
    group_size: int | None,
    n: int,
    k: int,
    *,
    weight_zero_point: torch.Tensor | None = None,
    weight_g_idx: torch.Tensor | None = None,
) -> PreparedWeight:
    """Repacks a compressed-tensors pack-quantized weight (tensors as stored, on the device
    the kernels will run on) for `quant_matmul`. `group_size` is None (or <= 0) for
    per-channel weights, whose scale has one column; `weight_zero_point` only for
    asymmetric schemes; `weight_g_idx` only for activation-order checkpoints (its groups
    are then those of the scale's columns, whatever their sizes)."""
    groups = _check_inputs(weight_packed, weight_scale, num_bits, group_size, n, k, weight_zero_point, weight_g_idx)
    device = weight_packed.device
    positions, sources, piece_group, group, kp = _column_plan(k, num_bits, groups, group_size, weight_g_idx, device)
    identity = torch.equal(positions, sources)

    qweight = torch.empty(n, kp // codes_per_word(num_bits), dtype=torch.int32, device=device)
    rows_per_chunk = max(1, _CHUNK_CODES // kp)
    for r0 in range(0, n, rows_per_chunk):
        r1 = min(n, r0 + rows_per_chunk)
        codes = unpack_rows(weight_packed[r0:r1], num_bits, k)
        moved = torch.zeros(r1 - r0, kp, dtype=torch.uint8, device=device)
        moved[:, positions] = codes[:, sources]
        qweight[r0:r1] = pack_blocks(moved, num_bits)

    scales = weight_scale.t()[piece_group].contiguous()
    zeros = None
    if weight_zero_point is not None:
        zp = unpack_rows(weight_zero_point.t().contiguous(), num_bits, n)  # [groups, n]
        zeros = zp[piece_group].contiguous()
    perm = None
    if not identity:
        perm = torch.full((kp,), -1, dtype=torch.int32, device=device)
        perm[positions] = sources.to(torch.int32)
    if device.type == "cuda":
        _make_split_counters(device)
    x_order = x_order_of(num_bits, kp // block_columns(num_bits), k, perm, device)
    return PreparedWeight(qweight, scales, zeros, perm, num_bits, n, k, group, x_order)


def _make_split_counters(device: torch.device) -> None:
    # The split kernels' counters, made now (load time), not inside a CUDA graph later.
    try:
        from .split_sum import semaphores
    except ImportError:  # no Triton: no kernel will run
        return
    semaphores(device)
