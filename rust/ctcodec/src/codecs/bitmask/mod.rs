//! The sparse-bitmask format of compressed-tensors 0.9-0.14, per tensor.
//!
//! A dense tensor of shape `[..., cols]` is seen as `rows = prod(leading dims)` rows.
//! It becomes `compressed` (its non-zeros, row-major, original dtype), `bitmask`
//! (uint8 `[rows, ceil(cols/8)]`, LSB-first, each row padded separately),
//! `row_offsets` (int64 exclusive prefix sum of per-row counts) and `shape` (int64).
//! "Zero" means what torch's `x != 0` means, so -0.0 is dropped and decodes as +0.0.
//! Work is split over rows with rayon; decoding writes straight into the output buffer.

mod row_codec;
mod simd;

use rayon::prelude::*;

use crate::dtype::Dtype;

/// How a dense tensor maps onto bitmask rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub rows: usize,
    pub cols: usize,
    /// Element width in bytes.
    pub width: usize,
    zero_mask: u64,
}

impl Geometry {
    /// Geometry for a dense tensor, or an explanation of why it cannot be bitmasked.
    pub fn new(dtype: Dtype, shape: &[usize]) -> Result<Self, String> {
        let (&cols, lead) = shape
            .split_last()
            .ok_or("a scalar (rank-0) tensor has no rows to mask")?;
        let rows = lead
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("shape overflows")?;
        rows.checked_mul(cols).ok_or("shape overflows")?;
        // Per-row bookkeeping is O(rows); an empty tensor must not claim billions of rows.
        if cols == 0 && rows > 1 << 24 {
            return Err(format!(
                "{rows} rows of zero columns is not a plausible weight"
            ));
        }
        let (Some(width), Some(zero_mask)) = (dtype.byte_size(), dtype.zero_test_mask()) else {
            return Err(format!(
                "dtype {dtype} has no element-wise zero, so it cannot be bitmask-sparse"
            ));
        };
        Ok(Geometry {
            rows,
            cols,
            width,
            zero_mask,
        })
    }

    pub fn mask_row_bytes(&self) -> usize {
        self.cols.div_ceil(8)
    }

    pub fn mask_bytes(&self) -> usize {
        self.rows * self.mask_row_bytes()
    }

    pub fn dense_bytes(&self) -> usize {
        self.rows * self.cols * self.width
    }

    fn row_bytes(&self) -> usize {
        self.cols * self.width
    }

    /// Rows per parallel work item: about 256 KiB of dense data, at least one row.
    fn rows_per_task(&self) -> usize {
        (256 * 1024 / self.row_bytes().max(1)).max(1)
    }
}

/// Runs the SSSE3 kernel when the CPU has it, the scalar one otherwise.
macro_rules! kernel {
    ($w:literal, $f:ident ( $($arg:expr),* )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if simd::available() {
                // SAFETY: available() checked for SSSE3.
                unsafe { simd::$f::<$w>($($arg),*) }
            } else {
                row_codec::$f::<$w>($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            row_codec::$f::<$w>($($arg),*)
        }
    }};
}

macro_rules! by_width {
    ($width:expr, $f:ident ( $($arg:expr),* )) => {
        match $width {
            1 => kernel!(1, $f($($arg),*)),
            2 => kernel!(2, $f($($arg),*)),
            4 => kernel!(4, $f($($arg),*)),
            8 => kernel!(8, $f($($arg),*)),
            w => unreachable!("no element width {w}"),
        }
    };
}

/// Non-zeros per row of a dense tensor, split over cores when `parallel`.
pub fn row_counts(dense: &[u8], g: &Geometry, parallel: bool) -> Vec<usize> {
    assert_eq!(
        dense.len(),
        g.dense_bytes(),
        "dense buffer does not match its geometry"
    );
    if g.row_bytes() == 0 {
        return vec![0; g.rows];
    }
    let count = |row: &[u8]| by_width!(g.width, count_nonzero(row, g.zero_mask));
    if parallel && crate::parallel::enabled() {
        dense
            .par_chunks(g.row_bytes())
            .with_min_len(g.rows_per_task())
            .map(count)
            .collect()
    } else {
        dense.chunks(g.row_bytes()).map(count).collect()
    }
}

/// Exclusive prefix sum of row counts, with the total appended.
pub fn offsets(counts: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(counts.len() + 1);
    let mut acc = 0usize;
    out.push(0);
    for &c in counts {
        acc += c;
        out.push(acc);
    }
    out
}

/// `row_offsets` exactly as compressed-tensors computes them: `cumsum(counts, dim=0) -
/// counts` over the leading dims. For a 2-D weight that is the exclusive prefix sum of
/// the row counts; for rank 1 it is a single 0; for rank >= 3 it runs along the first
/// dim only (a quirk we reproduce for byte equality; no decoder uses these values).
pub fn ct_row_offsets(counts: &[usize], lead_dims: &[usize]) -> Vec<i64> {
    let Some(&first) = lead_dims.first() else {
        return vec![0];
    };
    let inner = counts.len().checked_div(first).unwrap_or(0);
    let mut running = vec![0i64; inner];
    let mut out = Vec::with_capacity(counts.len());
    for (i, &c) in counts.iter().enumerate() {
        let slot = &mut running[i % inner.max(1)];
        out.push(*slot);
        *slot += c as i64;
    }
    out
}

/// Fills `values` (the non-zeros) and `mask` (zeroed) for a dense tensor whose row counts
/// are known, split over cores when `parallel`. `values` must hold exactly the total
/// count of elements. Fails when a row no longer has the counted non-zeros (the input
/// changed between counting and encoding), so no inconsistent file is written.
pub fn encode_into(
    dense: &[u8],
    g: &Geometry,
    counts: &[usize],
    values: &mut [u8],
    mask: &mut [u8],
    parallel: bool,
) -> Result<(), String> {
    let offs = offsets(counts);
    assert_eq!(values.len(), offs[g.rows] * g.width, "values buffer size");
    assert_eq!(mask.len(), g.mask_bytes(), "mask buffer size");
    let step = g.rows_per_task();
    let mut tasks = Vec::with_capacity(g.rows.div_ceil(step));
    let (mut vals_rest, mut mask_rest) = (values, mask);
    for r0 in (0..g.rows).step_by(step) {
        let r1 = (r0 + step).min(g.rows);
        let (v, vr) = vals_rest.split_at_mut((offs[r1] - offs[r0]) * g.width);
        let (m, mr) = mask_rest.split_at_mut((r1 - r0) * g.mask_row_bytes());
        tasks.push((r0, r1, v, m));
        vals_rest = vr;
        mask_rest = mr;
    }
    let run = |(r0, r1, v, m): (usize, usize, &mut [u8], &mut [u8])| -> bool {
        let mut at = 0usize;
        for r in r0..r1 {
            let row = &dense[r * g.row_bytes()..(r + 1) * g.row_bytes()];
            let row_mask = &mut m[(r - r0) * g.mask_row_bytes()..(r - r0 + 1) * g.mask_row_bytes()];
            // Exactly the counted room: the kernels never write past it and report the
            // true count, so a changed row shows up as a mismatch, not an overrun.
            let room = &mut v[at..at + counts[r] * g.width];
            let n = by_width!(g.width, encode_row(row, g.zero_mask, row_mask, room));
            if n != counts[r] {
                return false;
            }
            at += n * g.width;
        }
        true
    };
    let consistent = if parallel && crate::parallel::enabled() {
        tasks
            .into_par_iter()
            .map(run)
            .reduce(|| true, |a, b| a && b)
    } else {
        tasks.into_iter().map(run).all(|ok| ok)
    };
    if consistent {
        Ok(())
    } else {
        Err("the tensor changed while it was being compressed".into())
    }
}

/// Whether a mask keeps at most 2 of every 4 consecutive columns (2:4 sparsity), read
/// from the mask alone: with whole groups of 4 per row, each nibble is one group.
pub fn is_two_four(mask: &[u8], g: &Geometry) -> bool {
    g.cols % 4 == 0
        && mask
            .iter()
            .all(|b| (b & 0x0f).count_ones() <= 2 && (b >> 4).count_ones() <= 2)
}

/// A dense tensor in bitmask form.
pub struct Encoded {
    pub values: Vec<u8>,
    pub mask: Vec<u8>,
    pub row_offsets: Vec<i64>,
}

impl Encoded {
    pub fn nnz(&self, g: &Geometry) -> usize {
        self.values.len() / g.width
    }
}

/// Encodes a dense tensor, counting first so every buffer is allocated once.
pub fn encode(dense: &[u8], g: &Geometry) -> Encoded {
    let counts = row_counts(dense, g, true);
    let offs = offsets(&counts);
    let mut values = vec![0u8; offs[g.rows] * g.width];
    let mut mask = vec![0u8; g.mask_bytes()];
    encode_into(dense, g, &counts, &mut values, &mut mask, true)
        .expect("counted from the same bytes");
    Encoded {
        values,
        mask,
        row_offsets: offs[..g.rows].iter().map(|&o| o as i64).collect(),
    }
}

/// Set bits per row of a packed mask, padding bits excluded; split over cores when `parallel`.
pub fn mask_row_counts(mask: &[u8], g: &Geometry, parallel: bool) -> Vec<usize> {
    assert_eq!(
        mask.len(),
        g.mask_bytes(),
        "mask buffer does not match its geometry"
    );
    if g.mask_row_bytes() == 0 {
        return vec![0; g.rows];
    }
    let count = |m: &[u8]| row_codec::count_mask_bits(m, g.cols);
    if parallel && crate::parallel::enabled() {
        mask.par_chunks(g.mask_row_bytes())
            .with_min_len(g.rows_per_task())
            .map(count)
            .collect()
    } else {
        mask.chunks(g.mask_row_bytes()).map(count).collect()
    }
}

/// Scatters `values` into `out` (dense size, already zeroed) following `mask`, whose
/// per-row counts are `counts`. The caller has checked the counts sum to the values.
/// Split over cores when `parallel`.
pub fn decode_into(
    values: &[u8],
    mask: &[u8],
    g: &Geometry,
    counts: &[usize],
    out: &mut [u8],
    parallel: bool,
) {
    let offs = offsets(counts);
    assert_eq!(
        values.len(),
        offs[g.rows] * g.width,
        "values do not match the mask"
    );
    assert_eq!(out.len(), g.dense_bytes(), "output buffer size");
    if g.row_bytes() == 0 {
        return;
    }
    let step = g.rows_per_task();
    let run = |(task, chunk): (usize, &mut [u8])| {
        let r0 = task * step;
        for (i, row_out) in chunk.chunks_mut(g.row_bytes()).enumerate() {
            let r = r0 + i;
            let row_mask = &mask[r * g.mask_row_bytes()..(r + 1) * g.mask_row_bytes()];
            // The rest of the buffer, not just this row: the SIMD kernel loads 16 bytes
            // at a time and may read (never use) the next row's values.
            let row_vals = &values[offs[r] * g.width..];
            by_width!(g.width, decode_row(row_mask, g.cols, row_vals, row_out));
        }
    };
    if parallel && crate::parallel::enabled() {
        out.par_chunks_mut(step * g.row_bytes())
            .enumerate()
            .for_each(run);
    } else {
        out.chunks_mut(step * g.row_bytes())
            .enumerate()
            .for_each(run);
    }
}

/// Decodes into a fresh zeroed buffer, checking the value count against the mask.
pub fn decode(values: &[u8], mask: &[u8], g: &Geometry) -> Result<Vec<u8>, String> {
    if mask.len() != g.mask_bytes() {
        return Err(format!(
            "bitmask has {} bytes, shape needs {} rows x {} bytes",
            mask.len(),
            g.rows,
            g.mask_row_bytes()
        ));
    }
    let counts = mask_row_counts(mask, g, true);
    let total: usize = counts.iter().sum();
    if values.len() != total * g.width {
        return Err(format!(
            "bitmask marks {total} non-zeros but compressed holds {}",
            values.len() / g.width
        ));
    }
    let mut out = crate::buffer::zeroed(g.dense_bytes());
    decode_into(values, mask, g, &counts, &mut out, true);
    Ok(out)
}

#[cfg(test)]
mod tests;
