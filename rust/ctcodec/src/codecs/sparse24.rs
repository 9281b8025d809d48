//! compressed-tensors' `sparse-24-bitmask` (legacy line, 0.9 to 0.14): exactly 2 of
//! every 4 consecutive elements (row-major) are kept, those of largest magnitude, and
//! stored as a dense `[rows, cols / 2]` tensor beside a per-row bitmask. Magnitude ties
//! are broken as torch's CPU `topk` breaks them; fp8 values are compared by their raw
//! byte as compressed-tensors does (`view(int8).abs()`). One deliberate difference:
//! compressed-tensors' int8 `abs` wraps -128 to -128, the smallest key, so it drops
//! int8 -128 (the code of a row's most negative weight under symmetric quantization)
//! even from a 2:4 weight; we compare int8 by true magnitude and keep it.

use crate::dtype::Dtype;

/// The comparison key of each element: larger keys are kept.
fn keys(bytes: &[u8], dtype: Dtype) -> Result<Vec<f64>, String> {
    let n = dtype.bits() / 8;
    let key = |c: &[u8]| -> f64 {
        match dtype {
            Dtype::Bf16 => {
                f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16).abs() as f64
            }
            Dtype::F16 => half::f16::from_bits(u16::from_le_bytes([c[0], c[1]]))
                .to_f32()
                .abs() as f64,
            Dtype::F32 => f32::from_le_bytes(c.try_into().expect("4")).abs() as f64,
            Dtype::F64 => f64::from_le_bytes(c.try_into().expect("8")).abs(),
            Dtype::I8 => (c[0] as i8 as f64).abs(),
            // fp8 as compressed-tensors compares it: the raw byte as int8, `abs`.
            _ => (c[0] as i8).wrapping_abs() as f64,
        }
    };
    match dtype {
        Dtype::Bf16 | Dtype::F16 | Dtype::F32 | Dtype::F64 | Dtype::I8 | Dtype::F8E4M3 => {
            Ok(bytes.chunks_exact(n).map(key).collect())
        }
        d => Err(format!("sparse-24-bitmask cannot hold {d} values")),
    }
}

/// The order torch's CPU `topk(2)` leaves 4 elements in: it runs `std::nth_element`
/// (libstdc++'s introselect: a median-of-three pivot, one unguarded partition, then an
/// insertion sort of what remains) with "NaN or greater" as the comparison. Equal
/// magnitudes are therefore kept by position in that exact way, which decides the
/// bitmask of groups with fewer than 2 non-zeros.
fn top2_like_torch(key: [f64; 4]) -> [usize; 4] {
    let mut q = [0usize, 1, 2, 3];
    let comp = |a: usize, b: usize| (key[a].is_nan() && !key[b].is_nan()) || key[a] > key[b];
    // __unguarded_partition_pivot(first = 0, last = 4): median of q[1], q[2], q[3] to q[0].
    let (a, b, c) = (1, 2, 3);
    let m = if comp(q[a], q[b]) {
        if comp(q[b], q[c]) {
            b
        } else if comp(q[a], q[c]) {
            c
        } else {
            a
        }
    } else if comp(q[a], q[c]) {
        a
    } else if comp(q[b], q[c]) {
        c
    } else {
        b
    };
    q.swap(0, m);
    // __unguarded_partition(first = 1, last = 4, pivot = 0).
    let (mut first, mut last) = (1usize, 4usize);
    let cut = loop {
        while comp(q[first], q[0]) {
            first += 1;
        }
        last -= 1;
        while comp(q[0], q[last]) {
            last -= 1;
        }
        if first >= last {
            break first;
        }
        q.swap(first, last);
        first += 1;
    };
    // nth = 1: keep the side holding it, then insertion-sort that side (at most 3 long).
    let (lo, hi) = if cut <= 1 { (cut, 4) } else { (0, cut) };
    if hi - lo > 3 {
        unreachable!("one partition of 4 leaves at most 3");
    }
    for i in lo + 1..hi {
        let v = q[i];
        if comp(v, q[lo]) {
            q.copy_within(lo..i, lo + 1);
            q[lo] = v;
        } else {
            let mut j = i;
            while comp(v, q[j - 1]) {
                q[j] = q[j - 1];
                j -= 1;
            }
            q[j] = v;
        }
    }
    q
}

/// Checks a dense shape can be stored: 2-D, whole groups of 4, an even row length.
pub fn check_shape(shape: &[usize]) -> Result<(usize, usize), String> {
    match shape {
        [rows, cols] if (rows * cols) % 4 == 0 && cols % 2 == 0 => Ok((*rows, *cols)),
        _ => Err(format!(
            "sparse-24-bitmask needs a 2-D weight with a multiple of 4 elements and an even row length, not {shape:?}"
        )),
    }
}

/// Bytes of the packed bitmask of a `rows x cols` weight.
pub fn mask_bytes(rows: usize, cols: usize) -> usize {
    rows * cols.div_ceil(8)
}

/// Encodes a dense weight into its kept `values` (`rows * cols / 2` elements) and
/// little-endian row `mask`. With `strict`, a group holding more than 2 non-zeros is an
/// error instead of silently losing its smallest values (compressed-tensors drops them).
pub fn encode(
    bytes: &[u8],
    dtype: Dtype,
    shape: &[usize],
    strict: bool,
    values: &mut [u8],
    mask: &mut [u8],
) -> Result<(), String> {
    let (rows, cols) = check_shape(shape)?;
    let width = dtype.bits() / 8;
    let keys = keys(bytes, dtype)?;
    // Zero for the 2:4 check means value zero: -0.0 counts, whatever its key.
    let is_zero = |i: usize| -> bool {
        let c = &bytes[i * width..(i + 1) * width];
        match dtype {
            Dtype::I8 => c[0] == 0,
            _ => {
                let mut b = c.to_vec();
                let last = b.len() - 1;
                b[last] &= 0x7f; // drop the sign bit (little-endian: top byte)
                b.iter().all(|&x| x == 0)
            }
        }
    };
    let mut keep = vec![false; keys.len()];
    for (g, k) in keys.chunks_exact(4).enumerate() {
        let order = top2_like_torch([k[0], k[1], k[2], k[3]]);
        keep[4 * g + order[0]] = true;
        keep[4 * g + order[1]] = true;
        if strict && (!is_zero(4 * g + order[2]) || !is_zero(4 * g + order[3])) {
            let (r, c) = (4 * g / cols, 4 * g % cols);
            return Err(format!(
                "is not 2:4 sparse: the 4 elements from row {r}, column {c} hold more than 2 non-zeros (prune with sparsity \"2:4\")"
            ));
        }
    }
    mask.fill(0);
    let row_bytes = cols.div_ceil(8);
    let mut v = 0;
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            if keep[i] {
                mask[r * row_bytes + c / 8] |= 1 << (c % 8);
                values[v * width..(v + 1) * width]
                    .copy_from_slice(&bytes[i * width..(i + 1) * width]);
                v += 1;
            }
        }
    }
    debug_assert_eq!(v * width, values.len());
    Ok(())
}

/// Decodes `values` and `mask` into the dense weight `out` (zeroed, dense size).
pub fn decode(
    values: &[u8],
    mask: &[u8],
    dtype: Dtype,
    shape: &[usize],
    out: &mut [u8],
) -> Result<(), String> {
    let (rows, cols) = check_shape(shape)?;
    let width = dtype.bits() / 8;
    let row_bytes = cols.div_ceil(8);
    if mask.len() != rows * row_bytes {
        return Err(format!(
            "bitmask holds {} bytes, {rows} rows of {cols} need {}",
            mask.len(),
            rows * row_bytes
        ));
    }
    if values.len() != rows * cols / 2 * width {
        return Err(format!(
            "compressed holds {} bytes, needs {} values",
            values.len(),
            rows * cols / 2
        ));
    }
    let set: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
    if set != rows * cols / 2 {
        return Err(format!(
            "bitmask marks {set} values, a 2:4 weight of shape {shape:?} keeps {}",
            rows * cols / 2
        ));
    }
    let mut v = 0;
    for r in 0..rows {
        let m = &mask[r * row_bytes..(r + 1) * row_bytes];
        if cols % 8 != 0 && m[row_bytes - 1] >> (cols % 8) != 0 {
            return Err(format!("bitmask row {r} sets bits past column {cols}"));
        }
        for c in 0..cols {
            if m[c / 8] >> (c % 8) & 1 == 1 {
                let i = r * cols + c;
                out[i * width..(i + 1) * width]
                    .copy_from_slice(&values[v * width..(v + 1) * width]);
                v += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect()
    }

    #[test]
    fn keeps_two_largest_ties_to_the_later() {
        let dense = bf16(&[
            0.0, 5.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 1.0, -4.0, 2.0, 0.5, 0.0, 0.0, 0.0, 0.0,
        ]);
        let mut values = vec![0u8; 8 * 2];
        let mut mask = vec![0u8; 2];
        encode(&dense, Dtype::Bf16, &[2, 8], false, &mut values, &mut mask).unwrap();
        assert!(encode(&dense, Dtype::Bf16, &[2, 8], true, &mut values, &mut mask).is_err());
        // Row 0: [0,5,0,0 | 3,3,3,3] keeps 1,3 and 6,7; row 1: [1,-4,2,.5 | 0,0,0,0] keeps 1,2 and 6,7.
        assert_eq!(mask, vec![0b1100_1010, 0b1100_0110]);
        let mut back = vec![0u8; dense.len()];
        decode(&values, &mask, Dtype::Bf16, &[2, 8], &mut back).unwrap();
        // What is not kept comes back as zero (two of the 3s, and 1.0 and 0.5).
        let pruned = bf16(&[
            0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 0.0, -4.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ]);
        assert_eq!(back, pruned);
    }

    #[test]
    fn refuses_a_mask_with_the_wrong_count() {
        let err = decode(&[0u8; 8], &[0xff, 0], Dtype::Bf16, &[2, 4], &mut [0u8; 16]).unwrap_err();
        assert!(err.contains("marks"), "{err}");
    }
}
