//! Reading the companion tensors a compressed weight is stored as: part names, the
//! dense shape they carry, and the `compressed` / `bitmask` pair of sparse formats.

use std::collections::BTreeMap;

use crate::container::{SafetensorsFile, TensorInfo};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

pub const COMPRESSED: &str = "compressed";
pub const BITMASK: &str = "bitmask";
pub const SHAPE: &str = "shape";
pub const ROW_OFFSETS: &str = "row_offsets";

/// A sparse weight's `compressed` and `bitmask` tensors and its dense shape (read here,
/// once, and released: the used-run tracker must see it).
pub(crate) fn sparse_members<'a>(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<&str, &'a TensorInfo>,
    format: &str,
) -> Result<(&'a TensorInfo, &'a TensorInfo, Vec<usize>)> {
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
    Ok((compressed, bitmask, shape))
}

/// The `compressed`, `bitmask` and dense shape of a 2:4 weight, checked against each other.
pub(crate) fn sparse24_members<'a>(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<&str, &'a TensorInfo>,
) -> Result<(&'a TensorInfo, &'a TensorInfo, Vec<usize>)> {
    let path = file.path();
    let (compressed, bitmask, shape) = sparse_members(file, module, parts, "sparse-24-bitmask")?;
    let (rows, cols) =
        crate::sparse24::check_shape(&shape).map_err(|e| CodecError::tensor(path, module, e))?;
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
