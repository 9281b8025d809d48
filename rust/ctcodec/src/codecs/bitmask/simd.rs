//! SSSE3 row kernels: a byte shuffle expands (decode) or packs (encode) a 16-byte
//! register of elements by one step of mask bits, with a table of shuffle controls per
//! mask value. Each step handles `step::<W>()` columns; row tails fall back to the scalar
//! kernels in `rows`. Results equal the scalar kernels bit for bit (tested).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::row_codec;

/// Columns per step: one mask byte for 1- and 2-byte elements, fewer for wider ones.
pub const fn step<const W: usize>() -> usize {
    if W == 1 {
        8
    } else {
        16 / W
    }
}

/// Shuffle controls for every mask value of an `e`-element step of `w`-byte elements.
/// Expanding places the k-th packed value at the column of the k-th set bit (others
/// zero); packing moves the element of the k-th set bit to position k.
const fn shuffle_table(w: usize, e: usize, expand: bool) -> [[u8; 16]; 256] {
    let mut t = [[0x80u8; 16]; 256];
    let mut m = 0;
    while m < (1 << e) {
        let (mut rank, mut j) = (0, 0);
        while j < e {
            if (m >> j) & 1 == 1 {
                let mut b = 0;
                while b < w {
                    if expand {
                        t[m][j * w + b] = (rank * w + b) as u8;
                    } else {
                        t[m][rank * w + b] = (j * w + b) as u8;
                    }
                    b += 1;
                }
                rank += 1;
            }
            j += 1;
        }
        m += 1;
    }
    t
}

static EXPAND: [[[u8; 16]; 256]; 4] = [
    shuffle_table(1, 8, true),
    shuffle_table(2, 8, true),
    shuffle_table(4, 4, true),
    shuffle_table(8, 2, true),
];
static COMPRESS: [[[u8; 16]; 256]; 4] = [
    shuffle_table(1, 8, false),
    shuffle_table(2, 8, false),
    shuffle_table(4, 4, false),
    shuffle_table(8, 2, false),
];

const fn table_index(w: usize) -> usize {
    match w {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

/// Whether the running CPU has SSSE3 (and SIMD is not switched off by CTCODEC_NO_SIMD).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("CTCODEC_NO_SIMD").is_none() && is_x86_feature_detected!("ssse3")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The W-byte zero-test mask repeated across 8 bytes.
fn splat(zero_mask: u64, w: usize) -> i64 {
    let unit = if w == 8 {
        zero_mask
    } else {
        zero_mask & ((1u64 << (8 * w)) - 1)
    };
    let mut out = 0u64;
    let mut shift = 0;
    while shift < 64 {
        out |= unit << shift;
        shift += 8 * w;
    }
    out as i64
}

/// Like `row_codec::decode_row`, but `values` may run past this row (extra bytes let the
/// 16-byte loads proceed; they are never used). `out` must be zeroed.
///
/// # Safety
/// The CPU must support SSSE3 (see [`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
pub unsafe fn decode_row<const W: usize>(
    mask: &[u8],
    cols: usize,
    values: &[u8],
    out: &mut [u8],
) -> usize {
    let e = step::<W>();
    let table = &EXPAND[table_index(W)];
    let (mut col, mut k) = (0usize, 0usize);
    debug_assert!(out.len() >= cols * W);
    while col + e <= cols && k * W + 16 <= values.len() {
        let bits = ((mask[col / 8] >> (col % 8)) as usize) & ((1 << e) - 1);
        // SAFETY: k*W + 16 <= values.len() and (col + e)*W <= out.len(); loads/stores are unaligned.
        unsafe {
            let v = _mm_loadu_si128(values.as_ptr().add(k * W) as *const __m128i);
            let ctl = _mm_loadu_si128(table[bits].as_ptr() as *const __m128i);
            let r = _mm_shuffle_epi8(v, ctl);
            let dst = out.as_mut_ptr().add(col * W) as *mut __m128i;
            if W == 1 {
                _mm_storel_epi64(dst, r);
            } else {
                _mm_storeu_si128(dst, r);
            }
        }
        k += bits.count_ones() as usize;
        col += e;
    }
    k + row_codec::decode_row_from::<W>(mask, col, cols, &values[k * W..], out)
}

/// Bit j set when element j of `v` (a register of `step::<W>()` elements) is zero
/// under the splatted zero-test mask `zm`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn zero_bits<const W: usize>(v: __m128i, zm: __m128i) -> usize {
    let zero = _mm_setzero_si128();
    let m = _mm_and_si128(v, zm);
    (match W {
        1 => _mm_movemask_epi8(_mm_cmpeq_epi8(m, zero)) & 0xff,
        2 => _mm_movemask_epi8(_mm_packs_epi16(_mm_cmpeq_epi16(m, zero), zero)) & 0xff,
        4 => _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(m, zero))),
        _ => {
            let z = _mm_cmpeq_epi32(m, zero);
            let both = _mm_and_si128(z, _mm_shuffle_epi32(z, 0b10_11_00_01));
            _mm_movemask_pd(_mm_castsi128_pd(both))
        }
    }) as usize
}

/// Like `row_codec::count_nonzero`.
///
/// # Safety
/// The CPU must support SSSE3 (see [`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
pub unsafe fn count_nonzero<const W: usize>(row: &[u8], zero_mask: u64) -> usize {
    let zm = _mm_set1_epi64x(splat(zero_mask, W));
    let full = row.len() / 16 * 16;
    let mut zeros = 0usize;
    let mut at = 0;
    while at < full {
        // SAFETY: at + 16 <= row.len().
        let v = unsafe { _mm_loadu_si128(row.as_ptr().add(at) as *const __m128i) };
        // For W == 1 the helper reports only the low 8 lanes; count the high 8 separately.
        zeros += if W == 1 {
            let z = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(v, zm), _mm_setzero_si128()));
            (z as u32).count_ones() as usize
        } else {
            unsafe { zero_bits::<W>(v, zm) }.count_ones() as usize
        };
        at += 16;
    }
    (full / W - zeros) + row_codec::count_nonzero::<W>(&row[full..], zero_mask)
}

/// Like `row_codec::encode_row`; `mask` must be zeroed.
///
/// # Safety
/// The CPU must support SSSE3 (see [`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
pub unsafe fn encode_row<const W: usize>(
    row: &[u8],
    zero_mask: u64,
    mask: &mut [u8],
    values: &mut [u8],
) -> usize {
    let e = step::<W>();
    let table = &COMPRESS[table_index(W)];
    let zm = _mm_set1_epi64x(splat(zero_mask, W));
    let (mut col, mut written) = (0usize, 0usize);
    // W == 1 loads only 8 bytes, so the row needs 8 bytes left; wider types load 16.
    let load_bytes = if W == 1 { 8 } else { 16 };
    while col * W + load_bytes <= row.len() && written * W + 16 <= values.len() {
        // SAFETY: bounds checked in the loop condition; unaligned loads/stores.
        let (bits, packed) = unsafe {
            let src = row.as_ptr().add(col * W) as *const __m128i;
            let v = if W == 1 {
                _mm_loadl_epi64(src)
            } else {
                _mm_loadu_si128(src)
            };
            let bits = !zero_bits::<W>(v, zm) & ((1 << e) - 1);
            let ctl = _mm_loadu_si128(table[bits].as_ptr() as *const __m128i);
            (bits, _mm_shuffle_epi8(v, ctl))
        };
        // SAFETY: written*W + 16 <= values.len().
        unsafe { _mm_storeu_si128(values.as_mut_ptr().add(written * W) as *mut __m128i, packed) };
        mask[col / 8] |= (bits << (col % 8)) as u8;
        written += bits.count_ones() as usize;
        col += e;
    }
    let rest = values.get_mut(written * W..).unwrap_or_default();
    written + row_codec::encode_row_from::<W>(row, col, zero_mask, mask, rest)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check<const W: usize>(row: &[u8], zm: u64, slack: usize) {
        if !available() {
            return;
        }
        let cols = row.len() / W;
        let mrb = cols.div_ceil(8);
        let n = row_codec::count_nonzero::<W>(row, zm);
        let (mut m1, mut v1) = (vec![0u8; mrb], vec![0u8; n * W]);
        let (mut m2, mut v2) = (vec![0u8; mrb], vec![0u8; n * W + slack]);
        assert_eq!(row_codec::encode_row::<W>(row, zm, &mut m1, &mut v1), n);
        assert_eq!(unsafe { encode_row::<W>(row, zm, &mut m2, &mut v2) }, n);
        assert_eq!(m1, m2);
        assert_eq!(unsafe { count_nonzero::<W>(row, zm) }, n);
        assert_eq!(v1[..], v2[..n * W]);

        let mut vals = v1.clone();
        vals.extend(std::iter::repeat_n(0xAB, slack)); // bytes past the row must not leak in
        let (mut o1, mut o2) = (vec![0u8; cols * W], vec![0u8; cols * W]);
        assert_eq!(row_codec::decode_row::<W>(&m1, cols, &v1, &mut o1), n);
        assert_eq!(unsafe { decode_row::<W>(&m1, cols, &vals, &mut o2) }, n);
        assert_eq!(o1, o2);
    }

    fn sparse_row(bytes: Vec<u8>, zeros: Vec<bool>, w: usize) -> Vec<u8> {
        let mut row = bytes;
        row.truncate(row.len() / w * w);
        for (e, z) in row.chunks_mut(w).zip(zeros) {
            if z {
                e.fill(0);
            }
        }
        row
    }

    proptest! {
        #[test]
        fn matches_scalar(bytes in prop::collection::vec(any::<u8>(), 0..600), zeros in prop::collection::vec(any::<bool>(), 600), slack in 0usize..40) {
            check::<1>(&sparse_row(bytes.clone(), zeros.clone(), 1), 0xff, slack);
            check::<2>(&sparse_row(bytes.clone(), zeros.clone(), 2), 0x7fff, slack);
            check::<2>(&sparse_row(bytes.clone(), zeros.clone(), 2), 0xffff, slack);
            check::<4>(&sparse_row(bytes.clone(), zeros.clone(), 4), 0x7fff_ffff, slack);
            check::<8>(&sparse_row(bytes.clone(), zeros.clone(), 8), 0x7fff_ffff_ffff_ffff, slack);
            check::<8>(&sparse_row(bytes, zeros, 8), 0x7fff_ffff_7fff_ffff, slack);
        }
    }

    #[test]
    fn negative_zero_and_padding() {
        // bf16: -0.0 is zero; 0x8001 is not.
        let row: Vec<u8> = [0x00u8, 0x80, 0x01, 0x80, 0, 0, 5, 0].repeat(5);
        check::<2>(&row, 0x7fff, 0);
        check::<2>(&row, 0x7fff, 16);
    }
}
