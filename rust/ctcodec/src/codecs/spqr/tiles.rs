//! The parameters of a SpQR weight and the shapes of its stored tensors.

use crate::dtype::Dtype;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierLayout {
    /// One offset per row.
    Csr,
    /// One offset per tile row of `beta1` rows, rows interleaved (the SpQR kernel's).
    Ptcsr,
}

impl OutlierLayout {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csr" => Some(OutlierLayout::Csr),
            "ptcsr" => Some(OutlierLayout::Ptcsr),
            _ => None,
        }
    }

    /// Names of the offsets and col_vals tensors (after the module prefix).
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            OutlierLayout::Csr => ("weight_outlier_row_offsets", "weight_outlier_col_vals"),
            OutlierLayout::Ptcsr => (
                "weight_outlier_tile_offsets",
                "weight_outlier_tile_col_vals",
            ),
        }
    }
}

/// What config.json says about every SpQR weight of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpqrParams {
    /// Bits per weight code.
    pub bits: u32,
    /// Rows sharing one set of second-order statistics.
    pub beta1: usize,
    /// Input columns sharing one first-order scale and zero.
    pub beta2: usize,
    pub qq_scale_bits: u32,
    pub qq_zero_bits: u32,
    /// The dtype weights decode to.
    pub dtype: Dtype,
}

impl SpqrParams {
    pub fn validate(&self) -> Result<(), String> {
        for (name, b) in [
            ("bits", self.bits),
            ("qq_scale_bits", self.qq_scale_bits),
            ("qq_zero_bits", self.qq_zero_bits),
        ] {
            if !(1..=8).contains(&b) {
                return Err(format!("SpQR {name} must be 1..=8, not {b}"));
            }
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(1..=4096).contains(&b) {
                return Err(format!("SpQR {name} must be 1..=4096, not {b}"));
            }
        }
        if !matches!(self.dtype, Dtype::Bf16 | Dtype::F16 | Dtype::F32) {
            return Err(format!(
                "SpQR weights decode to BF16, F16 or F32, not {}",
                self.dtype
            ));
        }
        Ok(())
    }

    pub fn stat_bits(&self) -> u32 {
        self.qq_scale_bits + self.qq_zero_bits
    }
}

/// Sizes derived from the parameters and the dense shape `m × n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub params: SpqrParams,
    pub rows: usize,
    pub cols: usize,
    /// Column groups (the last may be partial).
    pub groups: usize,
    /// Tile rows of `beta1` rows (the last may be partial).
    pub tiles: usize,
}

/// Columns are stored as 16-bit indices in the outlier col_vals.
pub const MAX_COLS: usize = 1 << 16;

impl Geometry {
    pub fn new(params: SpqrParams, rows: usize, cols: usize) -> Result<Self, String> {
        params.validate()?;
        if rows == 0 || cols == 0 {
            return Err(format!("SpQR weight shape [{rows}, {cols}] is empty"));
        }
        if cols > MAX_COLS {
            return Err(format!(
                "SpQR stores columns in 16 bits: {cols} input features is more than {MAX_COLS}"
            ));
        }
        if rows
            .checked_mul(cols)
            .and_then(|x| x.checked_mul(4))
            .is_none()
            || rows > i32::MAX as usize
        {
            return Err(format!("SpQR weight shape [{rows}, {cols}] is too large"));
        }
        Ok(Geometry {
            params,
            rows,
            cols,
            groups: cols.div_ceil(params.beta2),
            tiles: rows.div_ceil(params.beta1),
        })
    }

    /// Bytes of one row of `weight_codes` (whole int32 words).
    pub fn code_row_bytes(&self) -> usize {
        4 * (self.groups * self.params.beta2 * self.params.bits as usize).div_ceil(32)
    }

    /// Bytes of one row of `weight_stats` (whole int32 words).
    pub fn stat_row_bytes(&self) -> usize {
        4 * (self.groups * self.params.stat_bits() as usize).div_ceil(32)
    }

    pub fn codes_shape(&self) -> Vec<usize> {
        vec![self.rows, self.code_row_bytes() / 4]
    }

    pub fn stats_shape(&self) -> Vec<usize> {
        vec![self.rows, self.stat_row_bytes() / 4]
    }

    pub fn second_order_shape(&self) -> Vec<usize> {
        vec![self.tiles, self.groups, 4]
    }
}
