//! Reading a compressed file's header into a list of dense tensors to produce, each
//! either stored as is or decoded by its format's module from its stored parts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::codecs::quant::QuantSpec;
use crate::codecs::spqr::SpqrParams;
use crate::container::{SafetensorsFile, TensorInfo};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};
use crate::formats::{quantized, sparse24, sparse_bitmask, spqr, StoredWeight};

use super::format::Format;

/// How each compressed module of a file decodes, keyed by module path (resolved from
/// config.json by the caller).
#[derive(Clone, Debug, Default)]
pub struct Schemes {
    pub quant: HashMap<String, QuantSpec>,
    pub spqr: HashMap<String, SpqrParams>,
}

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
    /// Stored as is.
    Stored(TensorInfo),
    /// Decoded from its stored parts by its format's module.
    Encoded(Arc<dyn StoredWeight>),
}

/// Lists the dense tensors in `file` for the given format, in the file's order;
/// modules named in `schemes` are decoded from their stored parts.
pub fn plan(file: &SafetensorsFile, format: Format, schemes: &Schemes) -> Result<Vec<DenseItem>> {
    let header = file.header();
    // Weights found by their scheme, keyed by the stored tensor that stands for them.
    let mut by_root: BTreeMap<String, DenseItem> = BTreeMap::new();
    for (root, q) in quantized::find(file, &schemes.quant)? {
        let dtype = crate::codecs::quant::decode::output_dtype(&q.spec, q.scale.dtype)
            .map_err(|e| CodecError::tensor(file.path(), &q.module, e))?;
        let shape = q.dense_shape.clone();
        by_root.insert(root, encoded(q, dtype, shape));
    }
    for (root, p) in spqr::find(file, &schemes.spqr)? {
        let g = p.geometry;
        by_root.insert(root, encoded(p, g.params.dtype, vec![g.rows, g.cols]));
    }
    let members: HashSet<String> = by_root
        .values()
        .flat_map(|i| match &i.source {
            Source::Encoded(w) => w.members().into_iter().map(|t| t.name.clone()).collect(),
            Source::Stored(_) => Vec::new(),
        })
        .collect();

    // Sparse formats are found by their part names: a module is compressed when it has
    // `compressed` or `bitmask`.
    let mut groups: BTreeMap<&str, BTreeMap<&str, &TensorInfo>> = BTreeMap::new();
    if format != Format::Dense {
        for t in &header.tensors {
            if let Some((module, part)) = t.name.rsplit_once('.') {
                if sparse_bitmask::PARTS.contains(&part) {
                    groups.entry(module).or_default().insert(part, t);
                }
            }
        }
        groups.retain(|_, parts| {
            parts.contains_key(sparse_bitmask::COMPRESSED)
                || parts.contains_key(sparse_bitmask::BITMASK)
        });
    }

    let mut items = Vec::new();
    let mut emitted = HashSet::new();
    for t in &header.tensors {
        if let Some(item) = by_root.remove(&t.name) {
            items.push(item);
            continue;
        }
        if members.contains(&t.name) {
            continue;
        }
        let group = t
            .name
            .rsplit_once('.')
            .filter(|(_, part)| sparse_bitmask::PARTS.contains(part))
            .and_then(|(m, _)| groups.get_key_value(m));
        match group {
            Some((&module, parts)) => {
                if emitted.insert(module) {
                    items.push(sparse_item(file, format, module, parts)?);
                }
            }
            None => items.push(DenseItem {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                source: Source::Stored(t.clone()),
            }),
        }
    }
    check_unique(file, items)
}

fn encoded(weight: impl StoredWeight + 'static, dtype: Dtype, shape: Vec<usize>) -> DenseItem {
    DenseItem {
        name: format!("{}.weight", weight.module()),
        dtype,
        shape,
        source: Source::Encoded(Arc::new(weight)),
    }
}

fn sparse_item(
    file: &SafetensorsFile,
    format: Format,
    module: &str,
    parts: &BTreeMap<&str, &TensorInfo>,
) -> Result<DenseItem> {
    Ok(match format {
        Format::Sparse24Bitmask => {
            let s = sparse24::Stored::find(file, module, parts)?;
            let (dtype, shape) = (s.compressed.dtype, s.dense_shape.clone());
            encoded(s, dtype, shape)
        }
        _ => {
            let s = sparse_bitmask::Stored::find(file, module, parts)?;
            let (dtype, shape) = (s.compressed.dtype, s.dense_shape.clone());
            encoded(s, dtype, shape)
        }
    })
}

fn check_unique(file: &SafetensorsFile, items: Vec<DenseItem>) -> Result<Vec<DenseItem>> {
    let mut names = HashSet::new();
    if let Some(dup) = items.iter().find(|i| !names.insert(i.name.as_str())) {
        return Err(CodecError::tensor(
            file.path(),
            &dup.name,
            "is both stored and produced by decoding its compressed companions",
        ));
    }
    Ok(items)
}
