//! What a quantized weight is: bit width, integer or float, symmetric or not, and how
//! scales are shared (compressed-tensors' `QuantizationArgs` for weights).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    Int,
    Float,
}

/// Which elements share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Tensor,
    /// One scale per output row.
    Channel,
    /// One scale per `size` consecutive columns of a row.
    Group(usize),
    /// Groups plus one global scale for the whole tensor (NVFP4).
    TensorGroup(usize),
    /// One scale per `rows x cols` tile.
    Block(usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantArgs {
    pub num_bits: u32,
    pub qtype: QType,
    pub symmetric: bool,
    pub strategy: Strategy,
}

impl QuantArgs {
    /// Checks the combination is one compressed-tensors can write.
    pub fn validate(&self) -> Result<(), String> {
        match (self.qtype, self.num_bits) {
            (QType::Int, 1..=8) | (QType::Float, 4 | 8) => {}
            (t, b) => return Err(format!("{b}-bit {t:?} quantization is not supported")),
        }
        if self.qtype == QType::Float && self.num_bits == 4 && !self.symmetric {
            return Err("asymmetric fp4 is not supported".into());
        }
        match self.strategy {
            Strategy::Group(0) | Strategy::TensorGroup(0) => Err("group size must be > 0".into()),
            Strategy::Block(h, w) if h == 0 || w == 0 => Err("block sizes must be > 0".into()),
            _ => Ok(()),
        }
    }

    /// `(q_min, q_max)` as compressed-tensors' `calculate_range`.
    pub fn range(&self) -> (f32, f32) {
        match self.qtype {
            QType::Int => {
                let half = (1u32 << (self.num_bits - 1)) as f32;
                (-half, half - 1.0)
            }
            QType::Float if self.num_bits == 8 => (-448.0, 448.0),
            QType::Float => (-6.0, 6.0),
        }
    }

    /// Rows and columns of the scale grid for a weight of `rows x cols` (leading dims
    /// folded into rows); tensor strategy is one cell.
    pub fn grid(&self, rows: usize, cols: usize) -> (usize, usize) {
        match self.strategy {
            Strategy::Tensor => (1, 1),
            Strategy::Channel => (rows, 1),
            Strategy::Group(g) | Strategy::TensorGroup(g) => (rows, cols.div_ceil(g)),
            Strategy::Block(h, w) => (rows.div_ceil(h), cols.div_ceil(w)),
        }
    }

    /// The scale cell of element (r, c).
    #[inline(always)]
    pub fn cell(&self, r: usize, c: usize, grid_cols: usize) -> usize {
        match self.strategy {
            Strategy::Tensor => 0,
            Strategy::Channel => r,
            Strategy::Group(g) | Strategy::TensorGroup(g) => r * grid_cols + c / g,
            Strategy::Block(h, w) => (r / h) * grid_cols + c / w,
        }
    }

    /// Columns that share one scale along a row (the whole row for tensor/channel).
    pub fn run_len(&self, cols: usize) -> usize {
        match self.strategy {
            Strategy::Tensor | Strategy::Channel => cols.max(1),
            Strategy::Group(g) | Strategy::TensorGroup(g) => g,
            Strategy::Block(_, w) => w,
        }
    }
}

impl fmt::Display for QuantArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = if self.qtype == QType::Int {
            "int"
        } else {
            "float"
        };
        let s = if self.symmetric { "sym" } else { "asym" };
        write!(f, "{t}{} {s} {:?}", self.num_bits, self.strategy)
    }
}
