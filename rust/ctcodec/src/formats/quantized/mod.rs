//! compressed-tensors' quantization formats (`pack-quantized`, `naive-`/`int-`/
//! `float-quantized`, `nvfp4-`/`mxfp4-pack-quantized`, `marlin-24`): a weight `M.weight`
//! becomes the format's parts (`M.weight_packed` or `M.weight`, `M.weight_scale`,
//! `M.weight_zero_point`, `M.weight_shape`, `M.weight_g_idx`, `M.weight_global_scale`,
//! marlin's `M.scale_packed` and `M.meta`). [`crate::codecs::quant`] does the
//! arithmetic and packing and lays the parts out; this module names them.

mod find;

use std::borrow::Cow;

use crate::codecs::quant::{
    self, DecodeInput, QType, QuantArgs, QuantFormat, QuantSpec, Role, Strategy,
};
use crate::container::{SafetensorsFile, TensorInfo, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::{Encoded, Part, Sizing, StoredWeight, WeightEncoder};

pub use find::{find, Stored};

/// `weight_g_idx`: the group of each input column (activation ordering "group").
pub const G_IDX: &str = "weight_g_idx";

/// The name of a part of a weight stored in `format`.
pub fn suffix(format: QuantFormat, role: Role) -> &'static str {
    match (format, role) {
        (QuantFormat::Naive, Role::Codes) => "weight",
        (_, Role::Codes) => "weight_packed",
        (QuantFormat::Marlin24, Role::Scale) => "scale_packed",
        (_, Role::Scale) => "weight_scale",
        (_, Role::Shape) => "weight_shape",
        (_, Role::ZeroPoint) => "weight_zero_point",
        (_, Role::GlobalScale) => "weight_global_scale",
        (_, Role::Meta) => "meta",
    }
}

/// The stored parts of a weight of `dtype`/`shape`, named, in the order encoding fills them.
pub fn parts(spec: &QuantSpec, dtype: Dtype, shape: &[usize]) -> Result<Vec<Part>, String> {
    Ok(quant::output_parts(spec, dtype, shape)?
        .into_iter()
        .map(|p| Part {
            suffix: suffix(spec.format, p.role),
            dtype: p.dtype,
            shape: p.shape,
        })
        .collect())
}

/// The layout a quantized format name stands for (any registry spelling).
pub fn quant_format(name: &str) -> Result<QuantFormat> {
    let entry = super::names::lookup(name, &[super::Family::Quantized])?;
    Ok(match entry.name {
        "pack-quantized" => QuantFormat::Pack { legacy: false },
        "pack-quantized-legacy" => QuantFormat::Pack { legacy: true },
        "nvfp4-pack-quantized" => QuantFormat::Nvfp4,
        "mxfp4-pack-quantized" => QuantFormat::Mxfp4,
        "marlin-24" => QuantFormat::Marlin24,
        _ => QuantFormat::Naive,
    })
}

/// One weight's scheme by name, as config.json spells its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemeFields<'a> {
    pub format: &'a str,
    pub num_bits: u32,
    pub qtype: &'a str,
    pub symmetric: bool,
    pub strategy: &'a str,
    pub group_size: Option<usize>,
    pub block_structure: Option<(usize, usize)>,
    pub global_scale: Option<f32>,
}

impl SchemeFields<'_> {
    /// The checked spec the codec runs on.
    pub fn spec(&self) -> Result<QuantSpec> {
        let invalid = |m: String| CodecError::Invalid(m);
        let qtype = match self.qtype {
            "int" => QType::Int,
            "float" => QType::Float,
            other => return Err(invalid(format!("unknown quantization type {other:?}"))),
        };
        let group = || {
            self.group_size
                .ok_or_else(|| invalid(format!("{} strategy needs a group_size", self.strategy)))
        };
        let strategy = match self.strategy {
            "tensor" => Strategy::Tensor,
            "channel" => Strategy::Channel,
            "group" => Strategy::Group(group()?),
            "tensor_group" => Strategy::TensorGroup(group()?),
            "block" => {
                let (h, w) = self
                    .block_structure
                    .ok_or_else(|| invalid("block strategy needs block_structure".into()))?;
                Strategy::Block(h, w)
            }
            other => return Err(invalid(format!("unsupported weight strategy {other:?}"))),
        };
        let spec = QuantSpec {
            format: quant_format(self.format)?,
            args: QuantArgs {
                num_bits: self.num_bits,
                qtype,
                symmetric: self.symmetric,
                strategy,
            },
            global_scale: self.global_scale,
        };
        spec.validate().map_err(invalid)?;
        Ok(spec)
    }
}

/// Quantizes dense weights with round-to-nearest, in compressed-tensors' arithmetic.
pub struct Encoder(pub QuantSpec);

impl WeightEncoder for Encoder {
    fn format(&self) -> &'static str {
        self.0.format.name()
    }

    fn size(&self, dense: &TensorSpec, _: Option<&[u8]>, _: bool) -> Result<Sizing, String> {
        self.parts(dense, &None).map(|_| None)
    }

    fn parts(&self, dense: &TensorSpec, _: &Sizing) -> Result<Vec<Part>, String> {
        parts(&self.0, dense.dtype, &dense.shape)
    }

    fn encode(
        &self,
        dense: &TensorSpec,
        values: &[u8],
        _: &Sizing,
        split: bool,
        outs: &mut [&mut [u8]],
    ) -> Result<Encoded, String> {
        quant::encode_into(&self.0, dense.dtype, &dense.shape, values, split, outs)?;
        Ok(Encoded {
            nonzero: dense.shape.iter().product(),
            two_four: false,
        })
    }
}

impl StoredWeight for Stored {
    fn module(&self) -> &str {
        &self.module
    }

    fn members(&self) -> Vec<&TensorInfo> {
        self.all_members()
    }

    fn decode_into(&self, file: &SafetensorsFile, split: bool, out: &mut [u8]) -> Result<()> {
        let mut weight = file.bytes(&self.weight)?;
        if let Some(mask_info) = &self.sparse24_mask {
            // Stacked 2:4: expand the kept codes to the dense code tensor first.
            let mask = file.bytes(mask_info)?;
            let width = self.weight.dtype.bits() / 8;
            let mut codes = vec![0u8; self.dense_shape.iter().product::<usize>() * width];
            crate::codecs::sparse24::decode(
                &weight,
                &mask,
                self.weight.dtype,
                &self.dense_shape,
                &mut codes,
            )
            .map_err(|e| CodecError::tensor(file.path(), &self.module, e))?;
            weight = Cow::Owned(codes);
        }
        let scale = file.bytes(&self.scale)?;
        let zero = self
            .zero_point
            .as_ref()
            .map(|z| file.bytes(z))
            .transpose()?;
        let g_idx = self.g_idx.as_ref().map(|g| file.bytes(g)).transpose()?;
        if let Some(info) = &self.g_idx {
            if info.dtype != Dtype::I32 {
                return Err(CodecError::tensor(
                    file.path(),
                    &info.name,
                    format!("must be I32, is {}", info.dtype),
                ));
            }
        }
        let meta = self
            .marlin_meta
            .as_ref()
            .map(|m| file.bytes(m))
            .transpose()?;
        let global = match &self.global_scale {
            Some(info) if self.spec.format == QuantFormat::Nvfp4 => {
                let b = file.bytes(info)?;
                Some(f32::from_le_bytes(
                    b[..4].try_into().expect("checked to hold one f32"),
                ))
            }
            _ => None,
        };
        let input = DecodeInput {
            weight: &weight,
            scale: &scale,
            scale_dtype: self.scale.dtype,
            zero_point: zero
                .as_deref()
                .zip(self.zero_point.as_ref().map(|z| z.dtype)),
            g_idx: g_idx.as_deref(),
            global_scale: global,
            meta: meta.as_deref(),
        };
        quant::decode_into(&self.spec, &self.dense_shape, &input, split, out)
            .map_err(|e| CodecError::tensor(file.path(), &self.module, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_parts_have_compressed_tensors_shapes() {
        let spec = QuantSpec {
            format: QuantFormat::Pack { legacy: false },
            args: QuantArgs {
                num_bits: 4,
                qtype: QType::Int,
                symmetric: false,
                strategy: Strategy::Group(32),
            },
            global_scale: None,
        };
        let parts = parts(&spec, Dtype::Bf16, &[12, 64]).unwrap();
        let got: Vec<(&str, Dtype, Vec<usize>)> = parts
            .iter()
            .map(|p| (p.suffix, p.dtype, p.shape.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("weight_packed", Dtype::I32, vec![12, 8]),
                ("weight_scale", Dtype::Bf16, vec![12, 2]),
                ("weight_shape", Dtype::I64, vec![2]),
                ("weight_zero_point", Dtype::I32, vec![2, 2]),
            ]
        );
    }
}
