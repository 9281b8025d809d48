use proptest::prelude::*;

use super::decode::Stored;
use super::*;
use crate::dtype::Dtype;

fn params(bits: u32, beta1: usize, beta2: usize, qs: u32, qz: u32) -> SpqrParams {
    SpqrParams {
        bits,
        beta1,
        beta2,
        qq_scale_bits: qs,
        qq_zero_bits: qz,
        dtype: Dtype::F32,
    }
}

struct Case {
    g: Geometry,
    codes: Vec<u8>,
    scale_codes: Vec<u8>,
    zero_codes: Vec<u8>,
    second: Vec<u16>,
    perm: Vec<i32>,
    outliers: Outliers,
}

fn case(p: SpqrParams, rows: usize, cols: usize, seed: u64, outlier_every: usize) -> Case {
    let g = Geometry::new(p, rows, cols).unwrap();
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let codes = (0..rows * cols)
        .map(|_| (next() % (1 << p.bits)) as u8)
        .collect();
    let cells = rows * g.groups;
    let scale_codes = (0..cells)
        .map(|_| (next() % (1 << p.qq_scale_bits)) as u8)
        .collect();
    let zero_codes = (0..cells)
        .map(|_| (next() % (1 << p.qq_zero_bits)) as u8)
        .collect();
    let second = (0..g.tiles * g.groups * 4)
        .map(|_| half::f16::from_f32((next() % 2000) as f32 / 100.0 - 10.0).to_bits())
        .collect();
    let mut perm: Vec<i32> = (0..cols as i32).collect();
    for i in (1..cols).rev() {
        perm.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let (mut rs, mut cs, mut vs) = (vec![], vec![], vec![]);
    for r in 0..rows {
        for c in 0..cols {
            if outlier_every > 0 && next() % outlier_every as u64 == 0 {
                rs.push(r as i32);
                cs.push(c as i32);
                vs.push(half::f16::from_f32((next() % 512) as f32 - 256.0).to_bits());
            }
        }
    }
    let outliers = Outliers::from_coo(&g, &rs, &cs, &vs).unwrap();
    Case {
        g,
        codes,
        scale_codes,
        zero_codes,
        second,
        perm,
        outliers,
    }
}

/// The decode written out longhand from the format's definition.
fn reference(c: &Case) -> Vec<f32> {
    let (g, p) = (&c.g, &c.g.params);
    let mut out = vec![0f32; g.rows * g.cols];
    let so = |t: usize, grp: usize, k: usize| {
        half::f16::from_bits(c.second[(t * g.groups + grp) * 4 + k]).to_f32()
    };
    for r in 0..g.rows {
        for j in 0..g.cols {
            let grp = j / p.beta2;
            let t = r / p.beta1;
            let cell = r * g.groups + grp;
            let s = so(t, grp, 0) * (c.scale_codes[cell] as f32 - so(t, grp, 1));
            let z = so(t, grp, 2) * (c.zero_codes[cell] as f32 - so(t, grp, 3));
            out[r * g.cols + c.perm[j] as usize] = s * (c.codes[r * g.cols + j] as f32 - z);
        }
        for (col, v) in c.outliers.row(r) {
            out[r * g.cols + c.perm[col as usize] as usize] = half::f16::from_bits(v).to_f32();
        }
    }
    out
}

fn roundtrip(c: &Case, layout: OutlierLayout) -> Vec<f32> {
    let input = EncodeInput {
        codes: &c.codes,
        scale_codes: &c.scale_codes,
        zero_codes: &c.zero_codes,
        second_order: &c.second,
        perm: &c.perm,
        outliers: &c.outliers,
        layout,
    };
    let tensors = encode(&c.g, &input).unwrap();
    let get = |name: &str| {
        tensors
            .iter()
            .find(|t| t.0 == name)
            .map(|t| t.3.clone())
            .unwrap()
    };
    let (off, cv) = layout.parts();
    let outliers = match layout {
        OutlierLayout::Csr => Outliers::from_csr(&c.g, &get(off), &get(cv)).unwrap(),
        OutlierLayout::Ptcsr => Outliers::from_ptcsr(&c.g, &get(off), &get(cv)).unwrap(),
    };
    let (codes, stats, second, perm) = (
        get("weight_codes"),
        get("weight_stats"),
        get("weight_second_order"),
        get("weight_perm"),
    );
    let stored = Stored {
        codes: &codes,
        stats: &stats,
        second_order: &second,
        perm: &perm,
        outliers: &outliers,
    };
    let mut out = vec![0u8; c.g.rows * c.g.cols * 4];
    decode_into(&c.g, &stored, true, &mut out).unwrap();
    out.chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn encode_then_decode_is_the_format_definition(
        bits in 1u32..=8, beta1 in 1usize..20, beta2 in 1usize..20, qs in 1u32..=8, qz in 1u32..=8,
        rows in 1usize..40, cols in 1usize..50, seed in any::<u64>(), every in 0usize..12,
        ptcsr in any::<bool>(),
    ) {
        let c = case(params(bits, beta1, beta2, qs, qz), rows, cols, seed, every);
        let layout = if ptcsr { OutlierLayout::Ptcsr } else { OutlierLayout::Csr };
        let got = roundtrip(&c, layout);
        let want = reference(&c);
        // Bit-exact, except that an outlier of +0.0 is stored (and decodes) as -0.0.
        prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0)));
    }
}

#[test]
fn ptcsr_interleaves_rows_and_pads_with_zero() {
    let c = case(params(3, 2, 4, 3, 3), 3, 8, 7, 0);
    let outliers = Outliers::from_coo(
        &c.g,
        &[0, 0, 1, 2],
        &[1, 5, 2, 0],
        &[0x3c00, 0x4000, 0, 0x4200],
    )
    .unwrap();
    let (off, slots) = outliers.to_ptcsr(&c.g);
    // Tile 0 (rows 0-1): row 0 has 2, row 1 has 1 -> width 2, slots k*2 + i.
    assert_eq!(off, vec![0, 4, 6]);
    assert_eq!(slots[0], (0x3c00 << 16) | 1);
    assert_eq!(
        slots[1],
        ((0x8000u32 << 16) | 2) as i32,
        "+0.0 is stored as -0.0"
    );
    assert_eq!(slots[2], (0x4000 << 16) | 5);
    assert_eq!(slots[3], 0, "padding");
    assert_eq!(
        &slots[4..],
        &[(0x4200 << 16), 0],
        "row 2 then the missing row 3"
    );
}

#[test]
fn malformed_outliers_and_permutations_are_refused() {
    let c = case(params(3, 4, 4, 3, 3), 4, 8, 3, 0);
    let g = &c.g;
    let b = |xs: &[i32]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert!(
        Outliers::from_csr(g, &b(&[0, 1, 1, 1]), &b(&[1])).is_err(),
        "too few offsets"
    );
    assert!(
        Outliers::from_csr(g, &b(&[0, 2, 1, 1, 2]), &b(&[1, 2])).is_err(),
        "decreasing"
    );
    assert!(
        Outliers::from_csr(g, &b(&[0, 1, 1, 1, 1]), &b(&[8])).is_err(),
        "column past the end"
    );
    assert!(
        Outliers::from_csr(g, &b(&[0, 2, 2, 2, 2]), &b(&[3, 3])).is_err(),
        "duplicate column"
    );
    assert!(
        Outliers::from_csr(g, &b(&[0, 1, 1, 1, 3]), &b(&[1])).is_err(),
        "ends past col_vals"
    );
    assert!(
        Outliers::from_ptcsr(g, &b(&[0, 3]), &b(&[1, 2, 3])).is_err(),
        "not a multiple of beta1"
    );
    assert!(
        Outliers::from_ptcsr(g, &b(&[0, 8]), &b(&[0, 0, 0, 0, 5, 0, 0, 0])).is_err(),
        "entry after padding"
    );
    assert!(
        Outliers::from_coo(g, &[0, 0], &[1, 1], &[1, 2]).is_err(),
        "duplicate coordinate"
    );
    assert!(
        Outliers::from_coo(g, &[4], &[1], &[1]).is_err(),
        "row outside"
    );
    assert!(decode::read_perm(g, &b(&[0, 1, 2, 3, 4, 5, 6, 6])).is_err());
    assert!(decode::read_perm(g, &b(&[0, 1, 2, 3, 4, 5, 6, -1])).is_err());
    assert!(decode::read_perm(g, &b(&[0, 1, 2])).is_err());
    assert!(Geometry::new(params(9, 4, 4, 3, 3), 4, 8).is_err());
    assert!(Geometry::new(params(3, 4, 4, 3, 3), 4, 70000).is_err());
}
