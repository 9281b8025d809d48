//! The per-element loops of quantization and dequantization, written so the compiler
//! vectorizes them: one monomorphized copy per weight dtype, no calls or branches per
//! element, rounding by bit arithmetic instead of libm. [`Simd`] picks an AVX2 build of
//! the same code when the CPU has it.

use super::floats::{bf16_bits, e4m3_from_f32, E4M3_MAX};

/// A weight dtype: how values load, round and store.
pub trait Dt: Copy + Send + Sync + 'static {
    const BYTES: usize;
    /// Rounds an f32 result to this dtype (what torch does after each op).
    fn round(x: f32) -> f32;
    fn load(b: &[u8]) -> f32;
    fn store(x: f32, out: &mut [u8]);
    /// Stores a run of values (rounded to this dtype).
    #[inline(always)]
    fn store_run(vals: &[f32], out: &mut [u8]) {
        for (o, &x) in out.chunks_exact_mut(Self::BYTES).zip(vals) {
            Self::store(x, o);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Bf16;
#[derive(Clone, Copy)]
pub struct F16;
#[derive(Clone, Copy)]
pub struct F32;

impl Dt for Bf16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn round(x: f32) -> f32 {
        let b = x.to_bits();
        let r = f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000);
        if x.is_nan() {
            x
        } else {
            r
        }
    }
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
    }
    #[inline(always)]
    fn store(x: f32, out: &mut [u8]) {
        out[..2].copy_from_slice(&bf16_bits(x).to_le_bytes());
    }
    #[inline(always)]
    fn store_run(vals: &[f32], out: &mut [u8]) {
        // SAFETY: u16 has no invalid bit patterns; misaligned ends fall back below.
        let (pre, mid, post) = unsafe { out.align_to_mut::<u16>() };
        if !pre.is_empty() || !post.is_empty() || cfg!(target_endian = "big") {
            for (o, &x) in out.chunks_exact_mut(2).zip(vals) {
                Self::store(x, o);
            }
            return;
        }
        for (o, &x) in mid.iter_mut().zip(vals) {
            // Nearest-even rounding as bit arithmetic, NaN kept quiet: a select, no branch.
            let b = x.to_bits();
            let r = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
            let n = ((b >> 16) | 0x40) as u16;
            *o = if x.is_nan() { n } else { r };
        }
    }
}

/// f16 rounding of an f32, nearest-even, without a branch per element: normal values
/// keep 10 mantissa bits, values below the smallest normal snap to multiples of 2^-24,
/// values from 65520 up overflow to infinity.
#[inline(always)]
pub fn f16_round(x: f32) -> f32 {
    let b = x.to_bits();
    let normal = f32::from_bits(b.wrapping_add(0x0fff + ((b >> 13) & 1)) & 0xffff_e000);
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let sub = (((x * 16_777_216.0 + MAGIC) - MAGIC) * (1.0 / 16_777_216.0)).copysign(x);
    let a = x.abs();
    let r = if a < 6.103_515_6e-5 { sub } else { normal };
    let r = if a >= 65520.0 {
        f32::INFINITY.copysign(x)
    } else {
        r
    };
    if x.is_nan() {
        x
    } else {
        r
    }
}

impl Dt for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn round(x: f32) -> f32 {
        f16_round(x)
    }
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    }
    #[inline(always)]
    fn store(x: f32, out: &mut [u8]) {
        out[..2].copy_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes());
    }
}

impl Dt for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn round(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline(always)]
    fn store(x: f32, out: &mut [u8]) {
        out[..4].copy_from_slice(&x.to_le_bytes());
    }
}

/// clamp that keeps NaN and compiles to vector min/max.
#[inline(always)]
fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

#[inline(always)]
pub fn load_row<D: Dt>(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(D::BYTES)) {
        *o = D::load(c);
    }
}

/// (min, max) of a run, NaN if any value is NaN (as torch's amin/amax). Eight lanes
/// of accumulators so the loop becomes vector compares and blends.
#[inline(always)]
pub fn min_max(xs: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if xs.len() >= 16 && has_avx2() {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { min_max_avx2(xs) };
    }
    min_max_plain(xs)
}

/// Vector min/max over 8 lanes; NaN is tracked with an unordered compare.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_max_avx2(xs: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let mut lo = _mm256_set1_ps(f32::INFINITY);
    let mut hi = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut nan = _mm256_setzero_ps();
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let x = _mm256_loadu_ps(c.as_ptr());
        lo = _mm256_min_ps(x, lo);
        hi = _mm256_max_ps(x, hi);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
    }
    if _mm256_movemask_ps(nan) != 0 || tail.iter().any(|x| x.is_nan()) {
        return (f32::NAN, f32::NAN);
    }
    let mut l = [0f32; 8];
    let mut h = [0f32; 8];
    _mm256_storeu_ps(l.as_mut_ptr(), lo);
    _mm256_storeu_ps(h.as_mut_ptr(), hi);
    let lo = l
        .iter()
        .chain(tail)
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = h
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (lo, hi)
}

#[inline(always)]
fn min_max_plain(xs: &[f32]) -> (f32, f32) {
    // NaN is found as the largest |bits| above infinity's, an integer max per lane.
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let mut mag = [0u32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[f32; 8] = c.try_into().expect("chunks of 8");
        for k in 0..8 {
            let x = c[k];
            lo[k] = if x < lo[k] { x } else { lo[k] };
            hi[k] = if x > hi[k] { x } else { hi[k] };
            mag[k] = mag[k].max(x.to_bits() & 0x7fff_ffff);
        }
    }
    for (k, &x) in tail.iter().enumerate() {
        lo[k] = if x < lo[k] { x } else { lo[k] };
        hi[k] = if x > hi[k] { x } else { hi[k] };
        mag[k] = mag[k].max(x.to_bits() & 0x7fff_ffff);
    }
    if mag.iter().any(|&m| m > 0x7f80_0000) {
        return (f32::NAN, f32::NAN);
    }
    let lo = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (lo, hi)
}

/// Integer codes of a run sharing scale `s` and zero point `z`:
/// `round(clamp(D(D(x / s) + z)))` plus the packing offset.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn quantize_int<D: Dt>(
    xs: &[f32],
    s: f32,
    z: f32,
    sym: bool,
    lo: f32,
    hi: f32,
    offset: f32,
    out: &mut [u8],
) {
    // Adding 1.5 * 2^23 rounds to an integer half-to-even and leaves it in the low
    // mantissa bits, so the code's byte is read off the bits (two's complement for
    // negative codes), with no float-to-int conversion.
    const MAGIC: f32 = 12_582_912.0;
    if sym {
        for (o, &x) in out.iter_mut().zip(xs) {
            let v = D::round(x / s);
            *o = ((clamp(v, lo, hi) + MAGIC) + offset).to_bits() as u8;
        }
    } else {
        for (o, &x) in out.iter_mut().zip(xs) {
            let v = D::round(D::round(x / s) + z);
            *o = ((clamp(v, lo, hi) + MAGIC) + offset).to_bits() as u8;
        }
    }
}

/// fp8 codes of a run: the zero point (0 when symmetric) is added as compressed-tensors
/// adds the module's, which turns -0.0 into +0.0.
#[inline(always)]
pub fn quantize_fp8<D: Dt>(xs: &[f32], s: f32, z: f32, out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = e4m3_from_f32(D::round(D::round(x / s) + z).clamp(-E4M3_MAX, E4M3_MAX));
    }
}

/// How a stored code becomes the quantized value before zero point and scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Codes {
    /// A signed byte (naive int8 storage).
    Signed,
    /// An unsigned packed code minus the packing offset.
    Offset(f32),
    /// A float code (fp8, fp4) looked up in a table.
    Table,
}

/// Writes `(value(c) - z) * s`, rounded to `D`, for each code `c` of a run; integer
/// codes convert arithmetically (vectorized), float codes go through `table`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_run<D: Dt>(
    codes: &[u8],
    kind: Codes,
    table: &[f32; 256],
    z: f32,
    s: f32,
    vals: &mut [f32],
    out: &mut [u8],
) {
    let vals = &mut vals[..codes.len()];
    match kind {
        Codes::Signed => {
            for (v, &c) in vals.iter_mut().zip(codes) {
                *v = (c as i8 as f32 - z) * s;
            }
        }
        Codes::Offset(off) => {
            for (v, &c) in vals.iter_mut().zip(codes) {
                *v = ((c as f32 - off) - z) * s;
            }
        }
        Codes::Table => {
            for (v, &c) in vals.iter_mut().zip(codes) {
                *v = (table[c as usize] - z) * s;
            }
        }
    }
    D::store_run(vals, out);
}

/// 4-bit codes straight from packed bytes (low nibble first) through a 16-entry table of
/// output values.
#[inline(always)]
pub fn dequantize_nibbles<D: Dt>(packed: &[u8], table: &[[u8; 4]; 16], out: &mut [u8]) {
    let w = D::BYTES;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if w == 2 && has_ssse3() {
        // SAFETY: SSSE3 is present (checked just above).
        done = unsafe { nibbles_to_u16_ssse3(packed, table, out) };
    }
    // The rest (or everything) one byte of codes at a time.
    let (packed, out) = (&packed[done / (2 * w)..], &mut out[done..]);
    for (o, &b) in out.chunks_exact_mut(2 * w).zip(packed) {
        o[..w].copy_from_slice(&table[(b & 15) as usize][..w]);
        o[w..].copy_from_slice(&table[(b >> 4) as usize][..w]);
    }
    if out.len() % (2 * w) != 0 {
        let last = out.len() / (2 * w);
        let o = &mut out[last * 2 * w..];
        o.copy_from_slice(&table[(packed[last] & 15) as usize][..w]);
    }
}

/// SIMD allowed at all (`CTCODEC_NO_SIMD` unset), read once: kernels ask per run.
fn simd_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var_os("CTCODEC_NO_SIMD").is_none())
}

#[cfg(target_arch = "x86_64")]
fn has_ssse3() -> bool {
    simd_allowed() && is_x86_feature_detected!("ssse3")
}

/// 2-byte outputs for 4-bit codes, 16 per step: the 16 table entries split into a
/// low-byte and a high-byte table, looked up with `pshufb` and interleaved back.
/// Returns the output bytes written (whole steps only; the caller does the tail).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn nibbles_to_u16_ssse3(packed: &[u8], table: &[[u8; 4]; 16], out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    for (i, t) in table.iter().enumerate() {
        lo[i] = t[0];
        hi[i] = t[1];
    }
    let tlo = _mm_loadu_si128(lo.as_ptr() as *const __m128i);
    let thi = _mm_loadu_si128(hi.as_ptr() as *const __m128i);
    let mask = _mm_set1_epi8(0x0f);
    let steps = (out.len() / 32).min(packed.len() / 8);
    for s in 0..steps {
        let b = _mm_loadl_epi64(packed.as_ptr().add(8 * s) as *const __m128i);
        let lo_nib = _mm_and_si128(b, mask);
        let hi_nib = _mm_and_si128(_mm_srli_epi16::<4>(b), mask);
        // Element order: low nibble of byte 0, high nibble of byte 0, low of byte 1, ...
        let codes = _mm_unpacklo_epi8(lo_nib, hi_nib);
        let vlo = _mm_shuffle_epi8(tlo, codes);
        let vhi = _mm_shuffle_epi8(thi, codes);
        let dst = out.as_mut_ptr().add(32 * s) as *mut __m128i;
        _mm_storeu_si128(dst, _mm_unpacklo_epi8(vlo, vhi));
        _mm_storeu_si128(dst.add(1), _mm_unpackhi_epi8(vlo, vhi));
    }
    steps * 32
}

/// Whether the AVX2 build of the kernels can run here.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_allowed() && is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_table_lookup_matches_the_plain_loop_at_every_length() {
        let mut table = [[0u8; 4]; 16];
        for (i, t) in table.iter_mut().enumerate() {
            *t = [i as u8 * 3 + 1, 0x80 | i as u8, 0, 0];
        }
        let packed: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..=100usize {
            let mut out = vec![0u8; 2 * n];
            dequantize_nibbles::<Bf16>(&packed, &table, &mut out);
            for j in 0..n {
                let code = (packed[j / 2] >> (4 * (j % 2))) & 15;
                assert_eq!(
                    &out[2 * j..2 * j + 2],
                    &table[code as usize][..2],
                    "n {n} j {j}"
                );
            }
        }
    }

    #[test]
    fn f16_round_matches_half() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for i in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Cover every exponent, subnormals and overflow included.
            let x = if i < 70_000 {
                f32::from_bits(state as u32)
            } else {
                f32::from_bits(
                    (state as u32 & 0x807f_ffff) | (((100 + (state >> 40) % 60) as u32) << 23),
                )
            };
            if x.is_nan() {
                continue;
            }
            let want = half::f16::from_f32(x).to_f32();
            assert_eq!(f16_round(x).to_bits(), want.to_bits(), "{x:e}");
        }
    }
}
