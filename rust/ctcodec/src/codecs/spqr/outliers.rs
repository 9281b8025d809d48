//! SpQR outliers: sparse fp16 values in stored (permuted) column order, held as CSR and
//! read from or written to the CSR and per-tile-row (PTCSR) layouts.

use super::tiles::Geometry;

/// Outliers in CSR form: row r owns entries `offsets[r]..offsets[r + 1]`, columns
/// strictly increasing within a row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outliers {
    pub offsets: Vec<usize>,
    pub cols: Vec<u16>,
    /// fp16 bits.
    pub values: Vec<u16>,
}

/// fp16 +0.0 would pack to an all-zero col_val in column 0, which PTCSR reads as
/// padding; -0.0 decodes to the same weight.
fn storable(value: u16) -> u16 {
    if value == 0 {
        0x8000
    } else {
        value
    }
}

fn col_val(col: u16, value: u16) -> i32 {
    ((storable(value) as u32) << 16 | col as u32) as i32
}

fn read_i32s(bytes: &[u8]) -> impl Iterator<Item = i32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
}

fn offsets_from(
    bytes: &[u8],
    expect: usize,
    total: usize,
    what: &str,
) -> Result<Vec<usize>, String> {
    let raw: Vec<i32> = read_i32s(bytes).collect();
    if raw.len() != expect {
        return Err(format!("{what} has {} entries, needs {expect}", raw.len()));
    }
    if raw[0] != 0 || raw.windows(2).any(|w| w[1] < w[0]) {
        return Err(format!("{what} must start at 0 and never decrease"));
    }
    let last = *raw.last().expect("non-empty") as usize;
    if last != total {
        return Err(format!(
            "{what} ends at {last} but {total} col_vals are stored"
        ));
    }
    Ok(raw.into_iter().map(|x| x as usize).collect())
}

impl Outliers {
    pub fn none(rows: usize) -> Self {
        Outliers {
            offsets: vec![0; rows + 1],
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    pub fn row(&self, r: usize) -> impl Iterator<Item = (u16, u16)> + '_ {
        let (a, b) = (self.offsets[r], self.offsets[r + 1]);
        self.cols[a..b]
            .iter()
            .copied()
            .zip(self.values[a..b].iter().copied())
    }

    /// From coordinates in any order; duplicates and positions outside `g` are errors.
    pub fn from_coo(
        g: &Geometry,
        rows: &[i32],
        cols: &[i32],
        values: &[u16],
    ) -> Result<Self, String> {
        if rows.len() != cols.len() || rows.len() != values.len() {
            return Err("outlier rows, columns and values differ in length".into());
        }
        if values.iter().any(|&v| !half::f16::from_bits(v).is_finite()) {
            return Err("an outlier value is not finite (fp16 holds at most 65504)".into());
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        for (&r, &c) in rows.iter().zip(cols) {
            if r < 0 || r as usize >= g.rows || c < 0 || c as usize >= g.cols {
                return Err(format!(
                    "outlier ({r}, {c}) is outside [{}, {}]",
                    g.rows, g.cols
                ));
            }
        }
        order.sort_unstable_by_key(|&i| (rows[i], cols[i]));
        let mut out = Outliers::none(g.rows);
        for (k, &i) in order.iter().enumerate() {
            if k > 0 && rows[order[k - 1]] == rows[i] && cols[order[k - 1]] == cols[i] {
                return Err(format!("outlier ({}, {}) is given twice", rows[i], cols[i]));
            }
            out.offsets[rows[i] as usize + 1] += 1;
            out.cols.push(cols[i] as u16);
            out.values.push(values[i]);
        }
        for r in 0..g.rows {
            out.offsets[r + 1] += out.offsets[r];
        }
        Ok(out)
    }

    fn check_row(&self, g: &Geometry, r: usize) -> Result<(), String> {
        let cols = &self.cols[self.offsets[r]..self.offsets[r + 1]];
        if let Some(&c) = cols.iter().find(|&&c| c as usize >= g.cols) {
            return Err(format!(
                "outlier column {c} of row {r} is past the {} columns",
                g.cols
            ));
        }
        if cols.windows(2).any(|w| w[1] <= w[0]) {
            return Err(format!(
                "outlier columns of row {r} are not strictly increasing"
            ));
        }
        let values = &self.values[self.offsets[r]..self.offsets[r + 1]];
        if values.iter().any(|&v| !half::f16::from_bits(v).is_finite()) {
            return Err(format!("an outlier value of row {r} is not finite"));
        }
        Ok(())
    }

    /// Reads the CSR layout (offsets [m+1], col_vals [nnz]).
    pub fn from_csr(g: &Geometry, offsets: &[u8], col_vals: &[u8]) -> Result<Self, String> {
        let n = col_vals.len() / 4;
        let offsets = offsets_from(offsets, g.rows + 1, n, "outlier row offsets")?;
        let (mut cols, mut values) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for v in read_i32s(col_vals) {
            cols.push(v as u32 as u16);
            values.push((v as u32 >> 16) as u16);
        }
        let out = Outliers {
            offsets,
            cols,
            values,
        };
        (0..g.rows).try_for_each(|r| out.check_row(g, r))?;
        Ok(out)
    }

    /// Reads the PTCSR layout (offsets [tiles+1], interleaved col_vals).
    pub fn from_ptcsr(g: &Geometry, offsets: &[u8], col_vals: &[u8]) -> Result<Self, String> {
        let beta1 = g.params.beta1;
        let slots: Vec<i32> = read_i32s(col_vals).collect();
        let offsets = offsets_from(offsets, g.tiles + 1, slots.len(), "outlier tile offsets")?;
        let mut rows: Vec<Vec<(u16, u16)>> = vec![Vec::new(); g.rows];
        for t in 0..g.tiles {
            let tile = &slots[offsets[t]..offsets[t + 1]];
            if tile.len() % beta1 != 0 {
                return Err(format!(
                    "outlier tile row {t} holds {} slots, not a multiple of {beta1}",
                    tile.len()
                ));
            }
            for i in 0..beta1 {
                let r = t * beta1 + i;
                let mut ended = false;
                for &v in tile.iter().skip(i).step_by(beta1) {
                    if v == 0 {
                        ended = true;
                    } else if ended || r >= g.rows {
                        return Err(format!(
                            "outlier tile row {t}: entry after padding in row {r}"
                        ));
                    } else {
                        rows[r].push((v as u32 as u16, (v as u32 >> 16) as u16));
                    }
                }
            }
        }
        let mut out = Outliers::none(g.rows);
        for (r, entries) in rows.into_iter().enumerate() {
            out.offsets[r + 1] = out.offsets[r] + entries.len();
            for (c, v) in entries {
                out.cols.push(c);
                out.values.push(v);
            }
        }
        (0..g.rows).try_for_each(|r| out.check_row(g, r))?;
        Ok(out)
    }

    /// CSR tensors: (offsets, col_vals).
    pub fn to_csr(&self) -> (Vec<i32>, Vec<i32>) {
        let offsets = self.offsets.iter().map(|&o| o as i32).collect();
        let col_vals = self
            .cols
            .iter()
            .zip(&self.values)
            .map(|(&c, &v)| col_val(c, v))
            .collect();
        (offsets, col_vals)
    }

    /// PTCSR tensors: (tile offsets, interleaved col_vals).
    pub fn to_ptcsr(&self, g: &Geometry) -> (Vec<i32>, Vec<i32>) {
        let beta1 = g.params.beta1;
        let mut offsets = vec![0i32];
        let mut slots = Vec::new();
        for t in 0..g.tiles {
            let rows = t * beta1..((t + 1) * beta1).min(g.rows);
            let width = rows
                .clone()
                .map(|r| self.offsets[r + 1] - self.offsets[r])
                .max()
                .unwrap_or(0);
            let base = slots.len();
            slots.resize(base + width * beta1, 0);
            for r in rows {
                for (k, (c, v)) in self.row(r).enumerate() {
                    slots[base + k * beta1 + (r - t * beta1)] = col_val(c, v);
                }
            }
            offsets.push(slots.len() as i32);
        }
        (offsets, slots)
    }
}
