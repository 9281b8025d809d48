"""compressed-tensors' pack-quantized layout and the kernels' own layout, as torch ops.

pack-quantized (what checkpoints store): code k of a row sits in int32 word k*b//32 at
bit (k*b)%32, least significant first, as u = q + 2**(b-1). Zero points are packed the
same way down the columns (along dim 0).

Kernel layout (made once by `prepare`): columns are cut into blocks of `block_columns(b)`
= 32 * (32 // b) columns, and word j of a block holds columns j, 32 + j, 64 + j, ... So
code i of the 32 words of a block covers 32 consecutive columns: a kernel reads a row's
block as one contiguous 128-byte run and pairs code i with a contiguous slice of x.
"""

from __future__ import annotations

import torch

SUPPORTED_BITS = (4, 8)
SLICE = 32  # words per row in a block; also the columns one code position covers


def codes_per_word(bits: int) -> int:
    return 32 // bits


def block_columns(bits: int) -> int:
    return SLICE * codes_per_word(bits)


def packed_width(cols: int, bits: int) -> int:
    """int32 words of a packed row of `cols` codes."""
    return -(-cols * bits // 32)


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) to int32 with the same bits (explicit two's complement
    wrap: a plain cast of out-of-range values is not something to rely on everywhere)."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_rows(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """int32 [R, W] pack-quantized rows -> uint8 [R, cols] stored codes."""
    ppw = codes_per_word(bits)
    shifts = torch.arange(ppw, device=packed.device, dtype=torch.int32) * bits
    codes = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # arithmetic shift, then masked
    return codes.reshape(packed.shape[0], -1)[:, :cols].to(torch.uint8)


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint [R, C] stored codes -> int32 [R, ceil(C*b/32)], compressed-tensors' packing."""
    ppw = codes_per_word(bits)
    rows, cols = codes.shape
    width = packed_width(cols, bits)
    padded = torch.zeros(rows, width * ppw, dtype=torch.int64, device=codes.device)
    padded[:, :cols] = codes.to(torch.int64)
    shifts = torch.arange(ppw, device=codes.device, dtype=torch.int64) * bits
    return _to_int32((padded.view(rows, width, ppw) << shifts).sum(-1))


def pack_blocks(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint [R, Kp] codes (Kp a multiple of block_columns) -> int32 [R, Kp/ppw] in the
    kernel layout: word j of block blk holds column blk*KB + i*32 + j at bits i*b."""
    ppw = codes_per_word(bits)
    rows, cols = codes.shape
    blocks = cols // block_columns(bits)
    c = codes.to(torch.int64).view(rows, blocks, ppw, SLICE)
    shifts = (torch.arange(ppw, device=codes.device, dtype=torch.int64) * bits).view(1, 1, ppw, 1)
    return _to_int32((c << shifts).sum(2)).view(rows, blocks * SLICE)


def k_order_columns(bits: int, device=None) -> torch.Tensor:
    """The block column behind each k of the bit-unpacking kernels' MMAs (gemv_tc._k_order,
    the same map): position k = p*64 + ch*16 + sec*8 + c*2 + h holds code p + h*PPW/2 of
    word c*8 + ch*2 + sec, i.e. column (p + h*PPW/2)*32 + c*8 + ch*2 + sec. int64 [KB]."""
    k = torch.arange(block_columns(bits), device=device)
    rem = k % 64
    code = k // 64 + (rem % 2) * (codes_per_word(bits) // 2)
    word = ((rem % 8) // 2) * 8 + (rem // 16) * 2 + (rem % 16) // 8
    return code * SLICE + word
