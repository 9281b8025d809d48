//! Quantizer output (codes, statistics, permutation, outliers) to SpQR stored tensors.

use super::bits;
use super::outliers::Outliers;
use super::tiles::{Geometry, OutlierLayout};
use crate::dtype::Dtype;

/// What a SpQR quantizer produced for one weight, in stored (permuted) column order.
pub struct EncodeInput<'a> {
    /// [rows × cols] codes < 2^bits.
    pub codes: &'a [u8],
    /// [rows × groups] first-order scale codes < 2^qq_scale_bits.
    pub scale_codes: &'a [u8],
    /// [rows × groups] first-order zero codes < 2^qq_zero_bits.
    pub zero_codes: &'a [u8],
    /// fp16 bits [tiles × groups × 4]: scale_scale, scale_zero, zero_scale, zero_zero.
    pub second_order: &'a [u16],
    /// [cols]: stored column j is input column perm[j].
    pub perm: &'a [i32],
    pub outliers: &'a Outliers,
    pub layout: OutlierLayout,
}

/// One stored tensor: the name after the module prefix, dtype, shape and bytes.
pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn i32_bytes(xs: &[i32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn check(g: &Geometry, x: &EncodeInput) -> Result<(), String> {
    let p = &g.params;
    let cells = g.rows * g.groups;
    for (name, have, need) in [
        ("codes", x.codes.len(), g.rows * g.cols),
        ("scale codes", x.scale_codes.len(), cells),
        ("zero codes", x.zero_codes.len(), cells),
        (
            "second-order statistics",
            x.second_order.len(),
            g.tiles * g.groups * 4,
        ),
        ("permutation", x.perm.len(), g.cols),
    ] {
        if have != need {
            return Err(format!("{name}: {have} values, needs {need}"));
        }
    }
    for (name, values, width) in [
        ("code", x.codes, p.bits),
        ("scale code", x.scale_codes, p.qq_scale_bits),
        ("zero code", x.zero_codes, p.qq_zero_bits),
    ] {
        if let Some(&v) = values.iter().find(|&&v| (v as u32) >= 1 << width) {
            return Err(format!("{name} {v} does not fit in {width} bits"));
        }
    }
    if let Some(v) = x
        .second_order
        .iter()
        .find(|&&v| !half::f16::from_bits(v).is_finite())
    {
        return Err(format!(
            "second-order statistic {:?} is not finite",
            half::f16::from_bits(*v)
        ));
    }
    let perm_bytes = i32_bytes(x.perm);
    super::decode::read_perm(g, &perm_bytes)?;
    if x.outliers.offsets.len() != g.rows + 1
        || x.outliers.cols.iter().any(|&c| c as usize >= g.cols)
    {
        return Err("outliers do not match the weight shape".into());
    }
    Ok(())
}

/// Packs one weight into its stored tensors.
pub fn encode(g: &Geometry, x: &EncodeInput) -> Result<Vec<Tensor>, String> {
    check(g, x)?;
    let p = &g.params;
    let mut codes = vec![0u8; g.rows * g.code_row_bytes()];
    for (row, out) in x
        .codes
        .chunks_exact(g.cols)
        .zip(codes.chunks_exact_mut(g.code_row_bytes()))
    {
        for (j, &q) in row.iter().enumerate() {
            bits::put(out, j * p.bits as usize, p.bits, q as u32);
        }
    }
    let stat_bits = p.stat_bits();
    let mut stats = vec![0u8; g.rows * g.stat_row_bytes()];
    for (r, out) in stats.chunks_exact_mut(g.stat_row_bytes()).enumerate() {
        for grp in 0..g.groups {
            let i = r * g.groups + grp;
            let v = x.scale_codes[i] as u32 | (x.zero_codes[i] as u32) << p.qq_scale_bits;
            bits::put(out, grp * stat_bits as usize, stat_bits, v);
        }
    }
    let second: Vec<u8> = x
        .second_order
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (offsets, col_vals) = match x.layout {
        OutlierLayout::Csr => x.outliers.to_csr(),
        OutlierLayout::Ptcsr => x.outliers.to_ptcsr(g),
    };
    let (off_name, cv_name) = x.layout.parts();
    Ok(vec![
        (
            "weight_shape".into(),
            Dtype::I64,
            vec![2],
            [g.rows as i64, g.cols as i64]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        ("weight_codes".into(), Dtype::I32, g.codes_shape(), codes),
        ("weight_stats".into(), Dtype::I32, g.stats_shape(), stats),
        (
            "weight_second_order".into(),
            Dtype::F16,
            g.second_order_shape(),
            second,
        ),
        (
            "weight_perm".into(),
            Dtype::I32,
            vec![g.cols],
            i32_bytes(x.perm),
        ),
        (
            off_name.into(),
            Dtype::I32,
            vec![offsets.len()],
            i32_bytes(&offsets),
        ),
        (
            cv_name.into(),
            Dtype::I32,
            vec![col_vals.len()],
            i32_bytes(&col_vals),
        ),
    ])
}
