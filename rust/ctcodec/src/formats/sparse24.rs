//! compressed-tensors' `sparse-24-bitmask` (legacy line, 0.9 to 0.14): a 2:4 weight
//! `M.weight` of shape [rows, cols] is stored as `M.compressed` ([rows, cols/2], the
//! kept values), `M.bitmask` (U8 [rows, ceil(cols/8)]) and `M.shape` (I64 [2, 1]).
//! Stacked on int8/fp8 naive quantization, `compressed` holds the codes and the
//! quantization's scale (and zero point) parts follow; the quantized module decodes those.

use std::collections::BTreeMap;

use crate::codecs::quant::{self, QuantFormat, QuantSpec};
use crate::codecs::sparse24;
use crate::container::{byte_len, SafetensorsFile, TensorInfo, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::sparse_bitmask::{sparse_members, BITMASK, COMPRESSED, SHAPE};
use super::{shape_bytes, Encoded, Part, Sizing, StoredWeight, WeightEncoder};

/// Writes 2:4 weights (or their naive-quantized codes, with `quant`) as sparse-24-bitmask.
pub struct Encoder {
    pub quant: Option<QuantSpec>,
    /// Refuse a group of 4 with more than 2 non-zeros (unpruned input must already be
    /// 2:4; pruned input is by construction).
    pub strict: bool,
}

impl WeightEncoder for Encoder {
    fn format(&self) -> &'static str {
        "sparse-24-bitmask"
    }

    fn size(&self, dense: &TensorSpec, _: Option<&[u8]>, _: bool) -> Result<Sizing, String> {
        self.parts(dense, &None).map(|_| None)
    }

    /// `compressed`, `bitmask`, `shape`, then the quantization's scale (and zero point).
    fn parts(&self, dense: &TensorSpec, _: &Sizing) -> Result<Vec<Part>, String> {
        let (rows, cols) = sparse24::check_shape(&dense.shape)?;
        let (values_dtype, extra) = match &self.quant {
            None => (dense.dtype, Vec::new()),
            Some(q) => {
                if !q.args.symmetric {
                    return Err("2:4 storage of quantized codes needs a symmetric scheme (a zero weight must be code 0)".into());
                }
                if q.format != QuantFormat::Naive {
                    return Err(format!(
                        "2:4 storage stacks on int8/fp8 (naive) quantization, not {}",
                        q.format.name()
                    ));
                }
                let mut parts = super::quantized::parts(q, dense.dtype, &dense.shape)?;
                let codes = parts.remove(0).dtype;
                (codes, parts)
            }
        };
        let part = |suffix, dtype, shape| Part {
            suffix,
            dtype,
            shape,
        };
        let mut out = vec![
            part(COMPRESSED, values_dtype, vec![rows, cols / 2]),
            part(BITMASK, Dtype::U8, vec![rows, cols.div_ceil(8)]),
            part(SHAPE, Dtype::I64, vec![2, 1]),
        ];
        out.extend(extra);
        Ok(out)
    }

    fn encode(
        &self,
        dense: &TensorSpec,
        values: &[u8],
        _: &Sizing,
        split: bool,
        outs: &mut [&mut [u8]],
    ) -> Result<Encoded, String> {
        let (head, extra) = outs.split_at_mut(3);
        let [compressed, mask, shape] = head else {
            unreachable!("three sparse parts")
        };
        shape.copy_from_slice(&shape_bytes(&dense.shape));
        match &self.quant {
            None => sparse24::encode(
                values,
                dense.dtype,
                &dense.shape,
                self.strict,
                compressed,
                mask,
            )?,
            Some(q) => {
                let qparts = super::quantized::parts(q, dense.dtype, &dense.shape)?;
                let mut codes = vec![0u8; byte_len(qparts[0].dtype, &qparts[0].shape).unwrap_or(0)];
                {
                    let mut outs: Vec<&mut [u8]> = vec![&mut codes];
                    outs.extend(extra.iter_mut().map(|p| &mut **p));
                    quant::encode_into(q, dense.dtype, &dense.shape, values, split, &mut outs)?;
                }
                sparse24::encode(
                    &codes,
                    qparts[0].dtype,
                    &dense.shape,
                    self.strict,
                    compressed,
                    mask,
                )?
            }
        }
        Ok(Encoded {
            nonzero: dense.shape.iter().product::<usize>() / 2,
            two_four: true,
        })
    }
}

/// The stored parts of one sparse-24-bitmask weight.
#[derive(Clone, Debug)]
pub struct Stored {
    pub module: String,
    pub dense_shape: Vec<usize>,
    pub compressed: TensorInfo,
    pub bitmask: TensorInfo,
}

impl Stored {
    /// Checks the parts of `module` (grouped by suffix) against each other.
    pub fn find(
        file: &SafetensorsFile,
        module: &str,
        parts: &BTreeMap<&str, &TensorInfo>,
    ) -> Result<Self> {
        let (compressed, bitmask, shape) = members(file, module, parts)?;
        Ok(Stored {
            module: module.to_string(),
            dense_shape: shape,
            compressed: compressed.clone(),
            bitmask: bitmask.clone(),
        })
    }
}

impl StoredWeight for Stored {
    fn module(&self) -> &str {
        &self.module
    }

    fn members(&self) -> Vec<&TensorInfo> {
        vec![&self.compressed, &self.bitmask]
    }

    fn decode_into(&self, file: &SafetensorsFile, _split: bool, out: &mut [u8]) -> Result<()> {
        let values = file.bytes(&self.compressed)?;
        let mask = file.bytes(&self.bitmask)?;
        sparse24::decode(
            &values,
            &mask,
            self.compressed.dtype,
            &self.dense_shape,
            out,
        )
        .map_err(|e| CodecError::tensor(file.path(), &self.module, e))?;
        Ok(())
    }
}

/// The `compressed`, `bitmask` and dense shape of a 2:4 weight, checked against each
/// other (also for 2:4 storage of quantized codes).
pub(crate) fn members<'a>(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<&str, &'a TensorInfo>,
) -> Result<(&'a TensorInfo, &'a TensorInfo, Vec<usize>)> {
    let path = file.path();
    let (compressed, bitmask, shape, _) = sparse_members(file, module, parts, "sparse-24-bitmask")?;
    let (rows, cols) =
        sparse24::check_shape(&shape).map_err(|e| CodecError::tensor(path, module, e))?;
    if compressed.shape != [rows, cols / 2] {
        return Err(CodecError::tensor(
            path,
            &compressed.name,
            format!(
                "must be [{rows}, {}] for dense shape {shape:?}, is {:?}",
                cols / 2,
                compressed.shape
            ),
        ));
    }
    if bitmask.dtype != Dtype::U8 || bitmask.shape != [rows, cols.div_ceil(8)] {
        return Err(CodecError::tensor(
            path,
            &bitmask.name,
            format!(
                "must be U8 [{rows}, {}] for dense shape {shape:?}, is {} {:?}",
                cols.div_ceil(8),
                bitmask.dtype,
                bitmask.shape
            ),
        ));
    }
    Ok((compressed, bitmask, shape))
}
