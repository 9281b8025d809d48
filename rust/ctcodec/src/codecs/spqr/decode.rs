//! SpQR stored tensors back to the dense weight.

use rayon::prelude::*;

use super::bits;
use super::outliers::Outliers;
use super::tiles::Geometry;
use crate::codecs::quant::floats::{store_row, Compute};

/// The stored tensors of one weight, as bytes, with its outliers already read.
pub struct Stored<'a> {
    pub codes: &'a [u8],
    pub stats: &'a [u8],
    /// F16 [tiles, groups, 4].
    pub second_order: &'a [u8],
    /// I32 [cols].
    pub perm: &'a [u8],
    pub outliers: &'a Outliers,
}

/// The first-order statistics of a group, dequantized exactly as every SpQR decoder
/// of ours does: f32, subtraction then multiplication (no fused multiply-add).
#[inline(always)]
pub fn dequantize_stat(code: u32, scale: f32, zero: f32) -> f32 {
    scale * (code as f32 - zero)
}

fn f16(bytes: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32()
}

/// Checks that `perm` is a permutation of the columns; returns it.
pub fn read_perm(g: &Geometry, perm: &[u8]) -> Result<Vec<u32>, String> {
    if perm.len() != 4 * g.cols {
        return Err(format!(
            "weight_perm holds {} bytes, needs {} I32",
            perm.len(),
            g.cols
        ));
    }
    let mut seen = vec![false; g.cols];
    let mut out = Vec::with_capacity(g.cols);
    for c in perm.chunks_exact(4) {
        let p = i32::from_le_bytes(c.try_into().expect("4 bytes"));
        if p < 0 || p as usize >= g.cols || std::mem::replace(&mut seen[p as usize], true) {
            return Err(format!(
                "weight_perm is not a permutation of 0..{} (entry {p})",
                g.cols
            ));
        }
        out.push(p as u32);
    }
    Ok(out)
}

fn check_sizes(g: &Geometry, s: &Stored) -> Result<(), String> {
    let want = [
        ("weight_codes", s.codes.len(), g.rows * g.code_row_bytes()),
        ("weight_stats", s.stats.len(), g.rows * g.stat_row_bytes()),
        (
            "weight_second_order",
            s.second_order.len(),
            2 * g.tiles * g.groups * 4,
        ),
    ];
    for (name, have, need) in want {
        if have != need {
            return Err(format!("{name} holds {have} bytes, needs {need}"));
        }
    }
    if s.outliers.offsets.len() != g.rows + 1 {
        return Err("outliers do not cover every row".into());
    }
    if let Some(i) = (0..g.tiles * g.groups * 4).find(|&i| !f16(s.second_order, i).is_finite()) {
        return Err(format!("weight_second_order entry {i} is not finite"));
    }
    Ok(())
}

/// Decodes one weight into `out` (the dense `rows × cols` bytes of the params' dtype).
pub fn decode_into(g: &Geometry, s: &Stored, split: bool, out: &mut [u8]) -> Result<(), String> {
    check_sizes(g, s)?;
    let perm = read_perm(g, s.perm)?;
    let dtype = Compute::of(g.params.dtype).ok_or("SpQR output dtype must be a float")?;
    let row_bytes = g.cols * g.params.dtype.byte_size().expect("float dtype");
    if out.len() != g.rows * row_bytes {
        return Err(format!(
            "output holds {} bytes, needs {}",
            out.len(),
            g.rows * row_bytes
        ));
    }
    let decode_rows = |first: usize, chunk: &mut [u8]| {
        let mut values = vec![0f32; g.cols];
        for (i, row_out) in chunk.chunks_exact_mut(row_bytes).enumerate() {
            decode_row(g, s, &perm, first + i, &mut values);
            store_row(dtype, &values, row_out);
        }
    };
    let rows_per_chunk = (1 << 16) / g.cols.max(1) + 1;
    if split && g.rows > rows_per_chunk {
        out.par_chunks_mut(rows_per_chunk * row_bytes)
            .enumerate()
            .for_each(|(k, chunk)| decode_rows(k * rows_per_chunk, chunk));
    } else {
        decode_rows(0, out);
    }
    Ok(())
}

fn decode_row(g: &Geometry, s: &Stored, perm: &[u32], r: usize, values: &mut [f32]) {
    let p = &g.params;
    let codes = &s.codes[r * g.code_row_bytes()..(r + 1) * g.code_row_bytes()];
    let stats = &s.stats[r * g.stat_row_bytes()..(r + 1) * g.stat_row_bytes()];
    let tile = r / p.beta1;
    let stat_bits = p.stat_bits();
    for grp in 0..g.groups {
        let stat = bits::get(stats, grp * stat_bits as usize, stat_bits);
        let (cs, cz) = (stat & ((1 << p.qq_scale_bits) - 1), stat >> p.qq_scale_bits);
        let so = (tile * g.groups + grp) * 4;
        let scale = dequantize_stat(cs, f16(s.second_order, so), f16(s.second_order, so + 1));
        let zero = dequantize_stat(cz, f16(s.second_order, so + 2), f16(s.second_order, so + 3));
        let cols = grp * p.beta2..((grp + 1) * p.beta2).min(g.cols);
        for j in cols {
            let q = bits::get(codes, j * p.bits as usize, p.bits);
            values[perm[j] as usize] = dequantize_stat(q, scale, zero);
        }
    }
    for (c, v) in s.outliers.row(r) {
        values[perm[c as usize] as usize] = half::f16::from_bits(v).to_f32();
    }
}
