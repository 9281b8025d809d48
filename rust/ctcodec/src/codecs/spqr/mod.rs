//! SpQR weights: b-bit codes in groups of `beta2` (permuted) input columns with
//! asymmetric per-(row, group) statistics, the statistics themselves quantized over
//! groups of `beta1` rows ("bilevel"), and fp16 outliers that replace the dense value.
//!
//! Stored tensors of a module `M` (all little-endian; bit fields LSB-first across
//! consecutive int32 words, as compressed-tensors packs codes):
//!
//! | tensor | dtype | shape | content |
//! |---|---|---|---|
//! | `M.weight_shape` | I64 | [2] | (m, n) |
//! | `M.weight_codes` | I32 | [m, ceil(G·beta2·b/32)] | code of stored column j at bit j·b |
//! | `M.weight_stats` | I32 | [m, ceil(G·(qs+qz)/32)] | group g: scale code at bit g·(qs+qz), zero code after it |
//! | `M.weight_second_order` | F16 | [ceil(m/beta1), G, 4] | scale_scale, scale_zero, zero_scale, zero_zero |
//! | `M.weight_perm` | I32 | [n] | stored column j is input column perm[j] |
//! | `M.weight_outlier_row_offsets` + `M.weight_outlier_col_vals` | I32 | [m+1], [nnz] | CSR |
//! | or `M.weight_outlier_tile_offsets` + `M.weight_outlier_tile_col_vals` | I32 | [ceil(m/beta1)+1], [slots] | PTCSR |
//!
//! A col_val packs the stored column in its low 16 bits and the fp16 value in its high
//! 16 bits. PTCSR pads every row of a tile row to the tile row's longest and interleaves
//! them: the k-th outlier of row i of the tile sits at slot `k·beta1 + i`; a slot of all
//! zero bits is padding (an outlier of value +0.0 is stored as -0.0).
//!
//! Decoding, in f32 with one rounding to the output dtype at the end:
//! `s = ss·(cs − sz)`, `z = zs·(cz − zz)`, `w = s·(q − z)`; an outlier position decodes
//! to the outlier's value, whatever the code there (replace semantics).

pub mod bits;
pub mod decode;
pub mod encode;
pub mod outliers;
pub mod tiles;

pub use decode::decode_into;
pub use encode::{encode, EncodeInput};
pub use outliers::Outliers;
pub use tiles::{Geometry, OutlierLayout, SpqrParams};

#[cfg(test)]
mod tests;
