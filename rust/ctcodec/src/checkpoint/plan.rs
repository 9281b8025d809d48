//! Reading a compressed file's header into a list of dense tensors to produce, each
//! either stored as is or assembled from its companion tensors.

use std::collections::BTreeMap;

use crate::bitmask::Geometry;
use crate::container::{SafetensorsFile, TensorInfo};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::format::Format;
use super::parts::{sparse24_members, sparse_members, BITMASK, COMPRESSED, ROW_OFFSETS, SHAPE};
use super::quant_plan::{member_names, quant_parts, QuantParts, Schemes};
use super::spqr_plan::{spqr_parts, SpqrParts};

const PARTS: [&str; 4] = [COMPRESSED, BITMASK, SHAPE, ROW_OFFSETS];

/// One dense tensor a reader yields.
#[derive(Clone, Debug)]
pub struct DenseItem {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub source: Source,
}

#[derive(Clone, Debug)]
pub enum Source {
    Stored(TensorInfo),
    Bitmask(Box<BitmaskParts>),
    Quant(Box<QuantParts>),
    Sparse24(Box<Sparse24Parts>),
    Spqr(Box<SpqrParts>),
}

/// The companion tensors of one sparse-24-bitmask weight.
#[derive(Clone, Debug)]
pub struct Sparse24Parts {
    pub module: String,
    pub dense_shape: Vec<usize>,
    pub compressed: TensorInfo,
    pub bitmask: TensorInfo,
}

/// The companion tensors of one bitmask-compressed weight.
#[derive(Clone, Debug)]
pub struct BitmaskParts {
    pub module: String,
    pub dense_shape: Vec<usize>,
    pub geometry: Geometry,
    pub compressed: TensorInfo,
    pub bitmask: TensorInfo,
    pub row_offsets: Option<TensorInfo>,
}

impl BitmaskParts {
    pub fn lead_dims(&self) -> &[usize] {
        &self.dense_shape[..self.dense_shape.len() - 1]
    }
}

/// Lists the dense tensors in `file` for the given format, in the file's order;
/// modules named in `schemes` are dequantized from their stored parts.
pub fn plan(file: &SafetensorsFile, format: Format, schemes: &Schemes) -> Result<Vec<DenseItem>> {
    let header = file.header();
    let quant = quant_parts(file, schemes)?;
    let spqr = spqr_parts(file, &schemes.spqr)?;
    let mut members = member_names(&quant);
    members.extend(
        spqr.values()
            .flat_map(|p| p.members().into_iter().map(|t| t.name.clone())),
    );
    if format == Format::Dense {
        let mut items = Vec::new();
        for t in &header.tensors {
            if let Some(q) = quant.get(&t.name) {
                items.push(quant_item(file, q)?);
            } else if let Some(p) = spqr.get(&t.name) {
                items.push(spqr_item(p));
            } else if !members.contains(&t.name) {
                items.push(stored(t));
            }
        }
        return check_unique(file, items);
    }
    // Group companions by module; a group is compressed when it has `compressed` or `bitmask`.
    let mut groups: BTreeMap<&str, BTreeMap<&str, &TensorInfo>> = BTreeMap::new();
    for t in &header.tensors {
        if let Some((module, part)) = t.name.rsplit_once('.') {
            if PARTS.contains(&part) {
                groups.entry(module).or_default().insert(part, t);
            }
        }
    }
    let is_sparse = |parts: &BTreeMap<&str, &TensorInfo>| {
        parts.contains_key(COMPRESSED) || parts.contains_key(BITMASK)
    };

    let mut items = Vec::new();
    let mut emitted = std::collections::HashSet::new();
    for t in &header.tensors {
        if let Some(q) = quant.get(&t.name) {
            items.push(quant_item(file, q)?);
            continue;
        }
        if let Some(p) = spqr.get(&t.name) {
            items.push(spqr_item(p));
            continue;
        }
        if members.contains(&t.name) {
            continue;
        }
        let sparse_group = t
            .name
            .rsplit_once('.')
            .filter(|(_, part)| PARTS.contains(part))
            .and_then(|(m, _)| groups.get(m).filter(|p| is_sparse(p)).map(|p| (m, p)));
        match sparse_group {
            Some((module, parts)) => {
                if emitted.insert(module) {
                    items.push(match format {
                        Format::Sparse24Bitmask => sparse24_item(file, module, parts)?,
                        _ => bitmask_item(file, module, parts)?,
                    });
                }
            }
            None => items.push(stored(t)),
        }
    }
    check_unique(file, items)
}

fn check_unique(file: &SafetensorsFile, items: Vec<DenseItem>) -> Result<Vec<DenseItem>> {
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = items.iter().find(|i| !names.insert(i.name.as_str())) {
        return Err(CodecError::tensor(
            file.path(),
            &dup.name,
            "is both stored and produced by decoding its compressed companions",
        ));
    }
    Ok(items)
}

fn quant_item(file: &SafetensorsFile, q: &QuantParts) -> Result<DenseItem> {
    let dtype = crate::quant::decode::output_dtype(&q.spec, q.scale.dtype)
        .map_err(|e| CodecError::tensor(file.path(), &q.module, e))?;
    Ok(DenseItem {
        name: format!("{}.weight", q.module),
        dtype,
        shape: q.dense_shape.clone(),
        source: Source::Quant(Box::new(q.clone())),
    })
}

fn spqr_item(p: &SpqrParts) -> DenseItem {
    let g = &p.geometry;
    DenseItem {
        name: format!("{}.weight", p.module),
        dtype: g.params.dtype,
        shape: vec![g.rows, g.cols],
        source: Source::Spqr(Box::new(p.clone())),
    }
}

fn stored(t: &TensorInfo) -> DenseItem {
    DenseItem {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        source: Source::Stored(t.clone()),
    }
}

fn sparse24_item(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<&str, &TensorInfo>,
) -> Result<DenseItem> {
    let (compressed, bitmask, shape) = sparse24_members(file, module, parts)?;
    Ok(DenseItem {
        name: format!("{module}.weight"),
        dtype: compressed.dtype,
        shape: shape.clone(),
        source: Source::Sparse24(Box::new(Sparse24Parts {
            module: module.to_string(),
            dense_shape: shape,
            compressed: compressed.clone(),
            bitmask: bitmask.clone(),
        })),
    })
}

fn bitmask_item(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<&str, &TensorInfo>,
) -> Result<DenseItem> {
    let path = file.path();
    let (compressed, bitmask, shape) = sparse_members(file, module, parts, "sparse-bitmask")?;

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
    Ok(DenseItem {
        name: format!("{module}.weight"),
        dtype: compressed.dtype,
        shape: shape.clone(),
        source: Source::Bitmask(Box::new(BitmaskParts {
            module: module.to_string(),
            dense_shape: shape.clone(),
            geometry,
            compressed: compressed.clone(),
            bitmask: bitmask.clone(),
            row_offsets: row_offsets.cloned(),
        })),
    })
}
