use proptest::prelude::*;

use super::*;

/// Canonical form of a dense tensor after a round trip: zeros (including -0.0) become +0.0.
fn canonical(dense: &[u8], dtype: Dtype) -> Vec<u8> {
    let w = dtype.byte_size().unwrap();
    let zm = dtype.zero_test_mask().unwrap();
    dense
        .chunks_exact(w)
        .flat_map(|e| {
            let mut word = [0u8; 8];
            word[..w].copy_from_slice(e);
            let v = u64::from_le_bytes(word);
            if v & zm == 0 {
                vec![0u8; w]
            } else {
                e.to_vec()
            }
        })
        .collect()
}

fn dtypes() -> impl Strategy<Value = Dtype> {
    prop_oneof![
        Just(Dtype::Bf16),
        Just(Dtype::F16),
        Just(Dtype::F32),
        Just(Dtype::F64),
        Just(Dtype::F8E4M3),
        Just(Dtype::F8E5M2),
        Just(Dtype::I8),
        Just(Dtype::I32),
        Just(Dtype::I64),
        Just(Dtype::C64),
        Just(Dtype::Bool),
    ]
}

/// Dense bytes where roughly `zero_pct` of elements are zero (with both signs).
fn dense_strategy() -> impl Strategy<Value = (Dtype, Vec<usize>, Vec<u8>)> {
    (dtypes(), 0usize..6, 0usize..70, 0u32..=100, any::<u64>()).prop_map(
        |(dtype, rows, cols, zero_pct, seed)| {
            let w = dtype.byte_size().unwrap();
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut data = Vec::with_capacity(rows * cols * w);
            for _ in 0..rows * cols {
                let r = next();
                let bytes = r.to_le_bytes();
                if (r >> 40) % 100 < zero_pct as u64 {
                    let mut z = vec![0u8; w];
                    if dtype.is_float() && r & 1 == 1 {
                        *z.last_mut().unwrap() = 0x80; // -0.0
                    }
                    data.extend_from_slice(&z);
                } else {
                    data.extend_from_slice(&bytes[..w]);
                }
            }
            (dtype, vec![rows, cols], data)
        },
    )
}

proptest! {
    #[test]
    fn round_trip_is_exact((dtype, shape, dense) in dense_strategy()) {
        let g = Geometry::new(dtype, &shape).unwrap();
        let enc = encode(&dense, &g);
        let back = decode(&enc.values, &enc.mask, &g).unwrap();
        prop_assert_eq!(back, canonical(&dense, dtype));
    }

    #[test]
    fn row_offsets_are_exclusive_prefix_sums((dtype, shape, dense) in dense_strategy()) {
        let g = Geometry::new(dtype, &shape).unwrap();
        let enc = encode(&dense, &g);
        let counts = row_counts(&dense, &g, false);
        let mut acc = 0i64;
        for (r, &c) in counts.iter().enumerate() {
            prop_assert_eq!(enc.row_offsets[r], acc);
            acc += c as i64;
        }
        prop_assert_eq!(enc.nnz(&g) as i64, acc);
    }

    #[test]
    fn mask_bits_match_a_plain_reference((dtype, shape, dense) in dense_strategy()) {
        let g = Geometry::new(dtype, &shape).unwrap();
        let enc = encode(&dense, &g);
        let w = g.width;
        let zm = dtype.zero_test_mask().unwrap();
        for r in 0..g.rows {
            for c in 0..g.cols {
                let e = &dense[(r * g.cols + c) * w..(r * g.cols + c + 1) * w];
                let mut word = [0u8; 8];
                word[..w].copy_from_slice(e);
                let nz = u64::from_le_bytes(word) & zm != 0;
                let bit = enc.mask[r * g.mask_row_bytes() + c / 8] >> (c % 8) & 1 == 1;
                prop_assert_eq!(nz, bit);
            }
            // padding bits stay clear
            if g.cols % 8 != 0 {
                let last = enc.mask[(r + 1) * g.mask_row_bytes() - 1];
                prop_assert_eq!(last >> (g.cols % 8), 0);
            }
        }
    }
}

#[test]
fn count_mismatch_is_reported() {
    let g = Geometry::new(Dtype::F32, &[2, 3]).unwrap();
    let mask = [0b101u8, 0b001];
    let values = [0u8; 4 * 2];
    assert!(decode(&values, &mask, &g)
        .unwrap_err()
        .contains("marks 3 non-zeros"));
}

#[test]
fn scalar_and_subbyte_dtypes_are_refused() {
    assert!(Geometry::new(Dtype::F32, &[]).is_err());
    assert!(Geometry::new(Dtype::F4, &[4, 4]).is_err());
    assert!(Geometry::new(Dtype::F8E8M0, &[4, 4]).is_err());
}

#[test]
fn higher_rank_flattens_leading_dims() {
    let g = Geometry::new(Dtype::Bf16, &[3, 4, 10]).unwrap();
    assert_eq!((g.rows, g.cols, g.mask_row_bytes()), (12, 10, 2));
}

#[test]
fn encoding_with_stale_counts_fails_cleanly() {
    // Counts taken before the tensor changed: too few and too many non-zeros per row.
    let g = Geometry::new(Dtype::F32, &[2, 40]).unwrap();
    let dense: Vec<u8> = (0..80u32)
        .flat_map(|i| ((i % 3) as f32).to_le_bytes())
        .collect();
    let real = row_counts(&dense, &g, false);
    for delta in [-1isize, 1] {
        let counts: Vec<usize> = real
            .iter()
            .map(|&c| (c as isize + delta) as usize)
            .collect();
        let total: usize = counts.iter().sum();
        let mut values = vec![0u8; total * 4];
        let mut mask = vec![0u8; g.mask_bytes()];
        let err = encode_into(&dense, &g, &counts, &mut values, &mut mask, false).unwrap_err();
        assert!(err.contains("changed"), "{err}");
    }
}

#[test]
fn two_four_is_read_from_the_mask() {
    let g = Geometry::new(Dtype::F32, &[2, 8]).unwrap();
    let pattern = |keep: [u8; 8]| -> Vec<u8> {
        keep.iter()
            .flat_map(|&k| (k as f32).to_le_bytes())
            .collect()
    };
    let ok: Vec<u8> = [
        pattern([1, 0, 1, 0, 0, 0, 1, 1]),
        pattern([0, 0, 0, 0, 1, 1, 0, 0]),
    ]
    .concat();
    let bad: Vec<u8> = [pattern([1, 1, 1, 0, 0, 0, 0, 0]), pattern([0; 8])].concat();
    assert!(is_two_four(&encode(&ok, &g).mask, &g));
    assert!(!is_two_four(&encode(&bad, &g).mask, &g));
    let odd = Geometry::new(Dtype::F32, &[1, 6]).unwrap(); // groups would straddle rows
    assert!(!is_two_four(&[0], &odd));
}
