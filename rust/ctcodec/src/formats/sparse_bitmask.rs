//! compressed-tensors' `sparse-bitmask` (legacy line, 0.9 to 0.14): a weight `M.weight`
//! is stored as `M.compressed` (its non-zeros, row-major), `M.bitmask` (one bit per
//! element, numpy `packbits(axis=-1)` order), `M.shape` (I64 dense shape) and
//! `M.row_offsets` (I64, the first value of each row in `compressed`).

use std::collections::BTreeMap;

use crate::codecs::bitmask::{self, Geometry};
use crate::container::{SafetensorsFile, TensorInfo, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::{shape_bytes, Encoded, Part, Sizing, StoredWeight, WeightEncoder};

pub const COMPRESSED: &str = "compressed";
pub const BITMASK: &str = "bitmask";
pub const SHAPE: &str = "shape";
pub const ROW_OFFSETS: &str = "row_offsets";

/// Every part name, in the order they are written.
pub const PARTS: [&str; 4] = [COMPRESSED, BITMASK, SHAPE, ROW_OFFSETS];

/// Writes dense weights as sparse-bitmask.
pub struct Encoder;

impl WeightEncoder for Encoder {
    fn format(&self) -> &'static str {
        "sparse-bitmask"
    }

    fn sizes_from_values(&self) -> bool {
        true
    }

    fn size(
        &self,
        dense: &TensorSpec,
        values: Option<&[u8]>,
        split: bool,
    ) -> Result<Sizing, String> {
        let g = Geometry::new(dense.dtype, &dense.shape)?;
        let values = values.expect("sizes_from_values");
        Ok(Some(bitmask::row_counts(values, &g, split)))
    }

    fn parts(&self, dense: &TensorSpec, sizing: &Sizing) -> Result<Vec<Part>, String> {
        let counts = sizing.as_deref().expect("sized from the values");
        let g = Geometry::new(dense.dtype, &dense.shape)?;
        let lead = dense.shape[..dense.shape.len() - 1].to_vec();
        let mut mask = lead.clone();
        // As numpy's `packbits(axis=-1)` gives it: the leading dims, then bytes per row.
        mask.push(g.mask_row_bytes());
        let nnz = counts.iter().sum();
        let part = |suffix, dtype, shape| Part {
            suffix,
            dtype,
            shape,
        };
        Ok(vec![
            part(COMPRESSED, dense.dtype, vec![nnz]),
            part(BITMASK, Dtype::U8, mask),
            part(SHAPE, Dtype::I64, vec![dense.shape.len()]),
            part(ROW_OFFSETS, Dtype::I64, lead),
        ])
    }

    fn encode(
        &self,
        dense: &TensorSpec,
        values: &[u8],
        sizing: &Sizing,
        split: bool,
        outs: &mut [&mut [u8]],
    ) -> Result<Encoded, String> {
        let counts = sizing.as_deref().expect("sized from the values");
        let [compressed, mask, shape, row_offsets] = outs else {
            return Err("sparse-bitmask writes four parts".into());
        };
        let g = Geometry::new(dense.dtype, &dense.shape)?;
        bitmask::encode_into(values, &g, counts, compressed, mask, split)?;
        shape.copy_from_slice(&shape_bytes(&dense.shape));
        let lead = &dense.shape[..dense.shape.len() - 1];
        let offsets: Vec<u8> = bitmask::ct_row_offsets(counts, lead)
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        row_offsets.copy_from_slice(&offsets);
        Ok(Encoded {
            nonzero: counts.iter().sum(),
            two_four: bitmask::is_two_four(mask, &g),
        })
    }
}

/// The stored parts of one bitmask-compressed weight.
#[derive(Clone, Debug)]
pub struct Stored {
    pub module: String,
    pub dense_shape: Vec<usize>,
    pub geometry: Geometry,
    pub compressed: TensorInfo,
    pub bitmask: TensorInfo,
    pub row_offsets: Option<TensorInfo>,
}

impl Stored {
    /// Checks the parts of `module` (grouped by suffix) against each other; the shape
    /// part is read here and released.
    pub fn find(
        file: &SafetensorsFile,
        module: &str,
        parts: &BTreeMap<&str, &TensorInfo>,
    ) -> Result<Self> {
        let path = file.path();
        let (compressed, bitmask, shape, _) =
            sparse_members(file, module, parts, "sparse-bitmask")?;
        if compressed.shape.len() != 1 {
            return Err(CodecError::tensor(
                path,
                &compressed.name,
                format!("must be 1-D, has shape {:?}", compressed.shape),
            ));
        }
        let geometry = Geometry::new(compressed.dtype, &shape)
            .map_err(|e| CodecError::tensor(path, module, format!("dense shape {shape:?}: {e}")))?;
        if bitmask.dtype != Dtype::U8 {
            return Err(CodecError::tensor(
                path,
                &bitmask.name,
                format!("must be U8, is {}", bitmask.dtype),
            ));
        }
        let mask_ok = bitmask.numel() == geometry.mask_bytes()
            && bitmask.shape.last().copied().unwrap_or(usize::MAX) == geometry.mask_row_bytes();
        if !mask_ok {
            return Err(CodecError::tensor(
                path,
                &bitmask.name,
                format!(
                    "shape {:?} does not fit dense shape {shape:?} (needs {} rows of {} bytes)",
                    bitmask.shape,
                    geometry.rows,
                    geometry.mask_row_bytes()
                ),
            ));
        }
        if compressed.numel() > geometry.rows * geometry.cols {
            return Err(CodecError::tensor(
                path,
                &compressed.name,
                format!(
                    "holds {} values, more than the {} elements of shape {shape:?}",
                    compressed.numel(),
                    geometry.rows * geometry.cols
                ),
            ));
        }
        let row_offsets = parts.get(ROW_OFFSETS).copied();
        if let Some(ro) = row_offsets {
            if ro.dtype != Dtype::I64 || ro.numel() != geometry.rows {
                return Err(CodecError::tensor(
                    path,
                    &ro.name,
                    format!(
                        "must be I64 with {} entries, is {} {:?}",
                        geometry.rows, ro.dtype, ro.shape
                    ),
                ));
            }
        }
        Ok(Stored {
            module: module.to_string(),
            dense_shape: shape,
            geometry,
            compressed: compressed.clone(),
            bitmask: bitmask.clone(),
            row_offsets: row_offsets.cloned(),
        })
    }

    pub fn lead_dims(&self) -> &[usize] {
        &self.dense_shape[..self.dense_shape.len() - 1]
    }

    /// compressed-tensors never reads `row_offsets`, but a file whose offsets disagree
    /// with its mask is corrupt, so we say so rather than guess which one is right.
    fn check_row_offsets(
        &self,
        file: &SafetensorsFile,
        info: &TensorInfo,
        counts: &[usize],
    ) -> Result<()> {
        let bytes = file.bytes(info)?;
        let expected = bitmask::ct_row_offsets(counts, self.lead_dims());
        for (r, (chunk, want)) in bytes.chunks_exact(8).zip(expected).enumerate() {
            let got = i64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            if got != want {
                return Err(CodecError::tensor(
                    file.path(),
                    &self.module,
                    format!("row_offsets[{r}] is {got} but the bitmask gives {want}"),
                ));
            }
        }
        Ok(())
    }
}

impl StoredWeight for Stored {
    fn module(&self) -> &str {
        &self.module
    }

    fn members(&self) -> Vec<&TensorInfo> {
        let mut all = vec![&self.compressed, &self.bitmask];
        all.extend(self.row_offsets.iter());
        all
    }

    fn decode_into(&self, file: &SafetensorsFile, split: bool, out: &mut [u8]) -> Result<()> {
        let g = &self.geometry;
        let mask = file.bytes(&self.bitmask)?;
        let values = file.bytes(&self.compressed)?;
        let counts = bitmask::mask_row_counts(&mask, g, split);
        let total: usize = counts.iter().sum();
        if total != self.compressed.numel() {
            return Err(CodecError::tensor(
                file.path(),
                &self.module,
                format!(
                    "bitmask marks {total} non-zeros but compressed holds {}",
                    self.compressed.numel()
                ),
            ));
        }
        if let Some(ro) = &self.row_offsets {
            self.check_row_offsets(file, ro, &counts)?;
        }
        bitmask::decode_into(&values, &mask, g, &counts, out, split);
        Ok(())
    }
}

/// A sparse weight's `compressed` and `bitmask` tensors, its dense shape (read here,
/// once, and released: the used-run tracker must see it) and the shape tensor.
pub(crate) fn sparse_members<'a>(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<&str, &'a TensorInfo>,
    format: &str,
) -> Result<(&'a TensorInfo, &'a TensorInfo, Vec<usize>, &'a TensorInfo)> {
    let need = |part: &str| {
        parts.get(part).copied().ok_or_else(|| {
            CodecError::tensor(
                file.path(),
                module,
                format!("{format} tensor is missing its companion {module}.{part}"),
            )
        })
    };
    let compressed = need(COMPRESSED)?;
    let bitmask = need(BITMASK)?;
    let shape_info = need(SHAPE)?;
    let shape = read_shape(file, shape_info)?;
    file.release(shape_info);
    Ok((compressed, bitmask, shape, shape_info))
}

/// Reads an int64 (or int32) shape vector.
pub(crate) fn read_shape(file: &SafetensorsFile, info: &TensorInfo) -> Result<Vec<usize>> {
    let path = file.path();
    let width = match info.dtype {
        Dtype::I64 => 8,
        Dtype::I32 => 4,
        d => {
            return Err(CodecError::tensor(
                path,
                &info.name,
                format!("shape must be an integer tensor, is {d}"),
            ))
        }
    };
    let dims = info.numel();
    if info.shape.iter().filter(|&&d| d != 1).count() > 1 || dims == 0 || dims > 16 {
        return Err(CodecError::tensor(
            path,
            &info.name,
            format!("not a shape vector: {:?}", info.shape),
        ));
    }
    let bytes = file.bytes(info)?;
    bytes
        .chunks_exact(width)
        .map(|c| {
            let v = if width == 8 {
                i64::from_le_bytes(c.try_into().expect("8"))
            } else {
                i32::from_le_bytes(c.try_into().expect("4")) as i64
            };
            usize::try_from(v).map_err(|_| {
                CodecError::tensor(path, &info.name, format!("negative dimension {v}"))
            })
        })
        .collect()
}
