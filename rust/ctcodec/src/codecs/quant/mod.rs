//! Quantized weight formats of compressed-tensors: round-to-nearest quantization with
//! its exact arithmetic, the packed layouts, and dequantization back to dense.
//!
//! - [`args`]: bit width, type and scale sharing of a weight;
//! - [`floats`]: bf16/f16/fp8/fp4 roundings as torch performs them;
//! - [`params`]: scales and zero points from min/max;
//! - [`pack`]: int32 word packing (dense and pre-0.18 layouts) and fp4 nibbles;
//! - [`encode`] / [`decode`]: whole tensors to and from their on-disk parts.

pub mod args;
pub mod decode;
pub mod encode;
pub mod floats;
pub mod marlin24;
pub mod pack;
pub mod params;
mod row_split;
mod simd_loops;

pub use args::{QType, QuantArgs, Strategy};
pub use decode::{decode_into, DecodeInput};
pub use encode::{encode_into, output_parts, Part, Role};

/// How a quantized weight is laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantFormat {
    /// `pack-quantized`: codes packed in int32 words; `legacy` is the word-aligned
    /// layout of compressed-tensors 0.17 and earlier (differs for 3, 5, 6, 7 bits).
    Pack { legacy: bool },
    /// `naive-quantized` / `int-quantized` / `float-quantized`: one int8 or fp8 per weight.
    Naive,
    /// `nvfp4-pack-quantized`: fp4 nibbles, fp8 group scales, an fp32 global scale.
    Nvfp4,
    /// `mxfp4-pack-quantized`: fp4 nibbles with E8M0 exponent scales per 32 columns.
    Mxfp4,
    /// `marlin-24`: 2:4-sparse int4/int8 in the Marlin kernel's tiled layout (legacy).
    Marlin24,
}

impl QuantFormat {
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Pack { .. } => "pack-quantized",
            QuantFormat::Naive => "naive-quantized",
            QuantFormat::Nvfp4 => "nvfp4-pack-quantized",
            QuantFormat::Mxfp4 => "mxfp4-pack-quantized",
            QuantFormat::Marlin24 => "marlin-24",
        }
    }
}

/// Everything needed to encode or decode one quantized weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantSpec {
    pub format: QuantFormat,
    pub args: QuantArgs,
    /// NVFP4's tensor-wide scale when the caller fixes it (shared by fused layers);
    /// computed from the weight otherwise.
    pub global_scale: Option<f32>,
}

impl QuantSpec {
    /// Checks that the format can hold these args.
    pub fn validate(&self) -> Result<(), String> {
        self.args.validate()?;
        let a = &self.args;
        let ok = match self.format {
            QuantFormat::Pack { .. } => {
                a.qtype == QType::Int && !matches!(a.strategy, Strategy::Block(..))
            }
            QuantFormat::Naive => a.num_bits == 8 || a.qtype == QType::Int,
            QuantFormat::Nvfp4 => {
                a.qtype == QType::Float
                    && a.num_bits == 4
                    && a.strategy == Strategy::TensorGroup(16)
            }
            QuantFormat::Marlin24 => {
                a.qtype == QType::Int
                    && matches!(a.num_bits, 4 | 8)
                    && a.symmetric
                    && matches!(a.strategy, Strategy::Channel | Strategy::Group(128))
            }
            QuantFormat::Mxfp4 => {
                a.qtype == QType::Float && a.num_bits == 4 && a.strategy == Strategy::Group(32)
            }
        };
        if !ok {
            return Err(format!("{} cannot hold {a} weights", self.format.name()));
        }
        if a.qtype == QType::Float && !a.symmetric {
            return Err("asymmetric float quantization is not supported".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
