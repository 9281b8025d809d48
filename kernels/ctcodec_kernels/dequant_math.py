"""Triton helpers every quantized kernel shares, so all paths dequantize the same way.

(q - zp) is made exactly in fp32 from the packed words with one AND and one FMA per code,
and no int->float conversion (a slow instruction on NVIDIA GPUs): see code_floats and
code_minus_zero. Times an fp16/bf16 scale the product is exact in fp32 (<= 9 + 11
significant bits), so rounding it once to the activation dtype gives ctcodec's decode.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def code_floats(words, BITS: tl.constexpr):
    """Two views of the words that each code is read from with one AND: the codes wholly
    below bit 20 (`low`), and the rest shifted down there (`high`), each under the
    exponent of 2**23. Done once per word; code_minus_zero then costs an AND and an FMA."""
    LOW: tl.constexpr = 20 // BITS  # codes wholly below bit 20: 5 of 4 bits, 2 of 8 bits
    SHIFT: tl.constexpr = (32 // BITS - LOW) * BITS
    low = (words & 0xFFFFF) | 0x4B000000
    high = ((words >> SHIFT) & 0xFFFFF) | 0x4B000000
    return low, high


@triton.jit
def _code_at(src, POS: tl.constexpr, zero, BITS: tl.constexpr):
    # The code's bits at position POS under the exponent of 2**23: the float is
    # 2**23 + u * 2**POS, so f * 2**-POS - (2**(23-POS) + u_zp) = u - u_zp, an integer,
    # which one FMA gets exactly.
    f = (src & (0x4B000000 | (((1 << BITS) - 1) << POS))).to(tl.float32, bitcast=True)
    return tl.fma(f, 1.0 / (1 << POS), -((1 << (23 - POS)) + zero))


@triton.jit
def code_minus_zero(low, high, i: tl.constexpr, zero, BITS: tl.constexpr):
    """q - zp for code i of the words `low` and `high` came from (code_floats), exact in
    fp32; `zero` (from zero_codes) broadcasts to them."""
    LOW: tl.constexpr = 20 // BITS
    if i < LOW:
        d = _code_at(low, i * BITS, zero, BITS)
    else:
        d = _code_at(high, i * BITS - (32 // BITS - LOW) * BITS, zero, BITS)
    return d


@triton.jit
def zero_codes(z_ptrs, mask, HAS_ZP: tl.constexpr, BITS: tl.constexpr):
    """The stored zero-point codes as fp32, shaped like `mask` (2**(b-1) when symmetric)."""
    if HAS_ZP:
        z = tl.load(z_ptrs, mask=mask, other=0).to(tl.float32)
    else:
        z = tl.full(mask.shape, 1 << (BITS - 1), tl.float32)
    return z


@triton.jit
def dequant_slice(low, high, i: tl.constexpr, zero, scale, BITS: tl.constexpr):
    """(q - zp) * scale in fp32 for code i; `zero` and `scale` broadcast to the words.
    Exact for fp16/bf16 scales; the caller rounds it once to the activation dtype."""
    return code_minus_zero(low, high, i, zero, BITS) * scale


@triton.jit
def _code_plus_1024(bits, BITS: tl.constexpr):
    """The fp16 1024 + q of the code in the low BITS bits of int32 `bits`."""
    return (((bits & ((1 << BITS) - 1)) | 0x6400).to(tl.int16)).to(tl.float16, bitcast=True)


@triton.jit
def decoded_fp16(words, i: tl.constexpr, zero16, scale16, BITS: tl.constexpr):
    """The decoded weight of code i in fp16, computed with fp16 arithmetic (packed: two
    weights per HADD2/HMUL2 on sm_90), for fp16 scales. `zero16` is 1024 + zp in fp16.
    The code's bits under 0x6400 are the fp16 1024 + q (exact: the spacing in [1024, 2048)
    is 1); minus 1024 + zp leaves q - zp exactly; times the scale is one correctly
    rounded product. The exact product rounded once is also what the fp32 path gives
    (dequant_slice then round_to), so both are ctcodec's decode, bit for bit."""
    return (_code_plus_1024(words >> (i * BITS), BITS) - zero16) * scale16


@triton.jit
def decoded_block_fp16(words, zero16, scale16, BITS: tl.constexpr):
    """decoded_fp16 for every code of a block at once: words [32, N] -> [32 * PPW, N],
    row i * 32 + j from code i of word j (the kernel layout's column order); `zero16` and
    `scale16` are [PPW, N]. One tile for one tl.dot over the whole block."""
    PPW: tl.constexpr = 32 // BITS
    shifts = (tl.arange(0, PPW) * BITS)[:, None, None]
    w = (_code_plus_1024(words[None, :, :] >> shifts, BITS) - zero16[:, None, :]) * scale16[:, None, :]
    return tl.reshape(w, (PPW * 32, words.shape[1]))


@triton.jit
def exact_dot(a, b, acc, INTERPRET: tl.constexpr):
    """acc + a @ b on tensor cores. The interpreter (numpy) has no bf16 matmul: there the
    16-bit operands go to fp32 first, which is exact, and the product is IEEE fp32."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def round_to(v, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 -> dtype, round to nearest even. The interpreter's own fp32 -> bf16 cast does
    not round to nearest even (triton 3.9), so there the rounding is done on the bits;
    the GPU path is the plain cast (cvt.rn)."""
    if INTERPRET:
        if dtype == tl.bfloat16:
            b = v.to(tl.int32, bitcast=True)
            b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
            v = b.to(tl.float32, bitcast=True)
    return v.to(dtype)
