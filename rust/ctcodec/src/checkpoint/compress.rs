//! Writing a sparse-bitmask file from dense tensors in two passes over the input:
//! count non-zeros per row (which fixes every output size, so the header can be
//! written first), then encode each tensor into its slot. Memory holds one tensor's
//! output at a time, whatever the file size.

use std::borrow::Cow;
use std::path::Path;

use crate::bitmask::{self, Geometry};
use crate::container::{byte_len, AtomicWriter, Layout, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::background::{write_in_background, Batch, Queue};
use super::decode::in_file;
use super::plan::{BITMASK, COMPRESSED, ROW_OFFSETS, SHAPE};
use super::schedule::for_each_tensor;
use super::source::TensorSource;

/// What happened to one input tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorStat {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub compressed: bool,
    /// Non-zero elements (counted for compressed tensors, numel for the others).
    pub nonzero: usize,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

/// The module path a compressed weight is stored under (`x.weight` -> `x`).
pub fn module_of(name: &str) -> Option<&str> {
    name.strip_suffix(".weight").filter(|m| !m.is_empty())
}

/// Compresses the selected tensors of `src` into `dst`; the rest are copied unchanged.
/// Selected tensors must be named `<module>.weight` with a dtype that has a zero.
/// `progress` is told the input bytes of each tensor once it is written.
pub fn compress_to_file(
    src: &dyn TensorSource,
    dst: &Path,
    select: &[bool],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<TensorStat>> {
    let specs = src.specs();
    assert_eq!(select.len(), specs.len(), "one selection flag per tensor");
    let path = src.path();

    let sizes: Vec<usize> = specs
        .iter()
        .map(|s| byte_len(s.dtype, &s.shape).unwrap_or(usize::MAX))
        .collect();

    // Pass 1: validate and count.
    let counts: Vec<Option<Vec<usize>>> =
        for_each_tensor(&sizes, |i, split| count_tensor(src, i, select[i], split))?;
    src.end_pass();

    // Output layout.
    let mut out_specs = Vec::new();
    for (spec, c) in specs.iter().zip(&counts) {
        match c {
            None => out_specs.push(spec.clone()),
            Some(c) => {
                let m = module_of(&spec.name).expect("checked");
                let g = geometry(path, spec)?;
                let nnz: usize = c.iter().sum();
                out_specs.push(TensorSpec::new(
                    format!("{m}.{COMPRESSED}"),
                    spec.dtype,
                    vec![nnz],
                ));
                out_specs.push(TensorSpec::new(
                    format!("{m}.{BITMASK}"),
                    Dtype::U8,
                    mask_shape(spec, &g),
                ));
                out_specs.push(TensorSpec::new(
                    format!("{m}.{SHAPE}"),
                    Dtype::I64,
                    vec![spec.shape.len()],
                ));
                let lead = spec.shape[..spec.shape.len() - 1].to_vec();
                out_specs.push(TensorSpec::new(
                    format!("{m}.{ROW_OFFSETS}"),
                    Dtype::I64,
                    lead,
                ));
            }
        }
    }
    let layout = Layout::new(out_specs, src.metadata()).map_err(|e| in_file(e, path))?;
    let writer = AtomicWriter::create(dst, layout)?;

    // Pass 2: encode tensors in parallel; one thread writes them out.
    let stats = write_in_background(&writer, |queue| {
        for_each_tensor(&sizes, |i, split| {
            encode_tensor(src, i, counts[i].as_deref(), split, queue, progress)
        })
    })?;
    src.end_pass();
    writer.commit()?;
    Ok(stats)
}

/// Checks one input tensor and, when selected, counts its non-zeros per row.
fn count_tensor(
    src: &dyn TensorSource,
    i: usize,
    selected: bool,
    split: bool,
) -> Result<Option<Vec<usize>>> {
    let spec = &src.specs()[i];
    let path = src.path();
    let bytes = src.bytes(i)?;
    let expected = byte_len(spec.dtype, &spec.shape);
    if expected != Some(bytes.len()) {
        return Err(CodecError::tensor(
            path,
            &spec.name,
            format!(
                "holds {} bytes but {} {:?} needs {expected:?}",
                bytes.len(),
                spec.dtype,
                spec.shape
            ),
        ));
    }
    if !selected {
        // Release it all the same, or the used run from the file start stalls here.
        drop(bytes);
        src.release(i);
        return Ok(None);
    }
    if module_of(&spec.name).is_none() {
        return Err(CodecError::tensor(
            path,
            &spec.name,
            "only `<module>.weight` tensors can be bitmask-compressed",
        ));
    }
    let g = geometry(path, spec)?;
    let counts = bitmask::row_counts(&bytes, &g, split);
    drop(bytes);
    src.release(i);
    Ok(Some(counts))
}

fn geometry(path: &Path, spec: &TensorSpec) -> Result<Geometry> {
    Geometry::new(spec.dtype, &spec.shape).map_err(|e| CodecError::tensor(path, &spec.name, e))
}

/// As numpy's `packbits(axis=-1)` gives it: the leading dims, then bytes per row.
fn mask_shape(spec: &TensorSpec, g: &Geometry) -> Vec<usize> {
    let mut shape = spec.shape[..spec.shape.len() - 1].to_vec();
    shape.push(g.mask_row_bytes());
    shape
}

/// Encodes (or passes through) tensor `i` and queues its output parts.
fn encode_tensor<'a>(
    src: &'a dyn TensorSource,
    i: usize,
    counts: Option<&[usize]>,
    split: bool,
    queue: &Queue<'_, 'a>,
    progress: &'a (dyn Fn(u64) + Sync),
) -> Result<TensorStat> {
    let spec = &src.specs()[i];
    let bytes = src.bytes(i)?;
    let bytes_in = bytes.len();
    let mut stat = TensorStat {
        name: spec.name.clone(),
        dtype: spec.dtype,
        shape: spec.shape.clone(),
        compressed: counts.is_some(),
        nonzero: spec.shape.iter().product(),
        bytes_in,
        bytes_out: bytes_in,
    };
    let parts = match counts {
        // Stored as is: the writer copies straight from the input and then releases it.
        None => vec![(spec.name.clone(), bytes)],
        Some(counts) => {
            let m = module_of(&spec.name).expect("checked in pass 1");
            let g = geometry(src.path(), spec)?;
            let offsets = bitmask::offsets(counts);
            let mut values = vec![0u8; offsets[g.rows] * g.width];
            let mut mask = vec![0u8; g.mask_bytes()];
            bitmask::encode_into(&bytes, &g, counts, &mut values, &mut mask, split);
            drop(bytes);
            let shape: Vec<u8> = spec
                .shape
                .iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect();
            let lead = &spec.shape[..spec.shape.len() - 1];
            let row_offsets: Vec<u8> = bitmask::ct_row_offsets(counts, lead)
                .iter()
                .flat_map(|o| o.to_le_bytes())
                .collect();
            stat.nonzero = offsets[g.rows];
            stat.bytes_out = values.len() + mask.len() + shape.len() + row_offsets.len();
            vec![
                (format!("{m}.{COMPRESSED}"), Cow::Owned(values)),
                (format!("{m}.{BITMASK}"), Cow::Owned(mask)),
                (format!("{m}.{SHAPE}"), Cow::Owned(shape)),
                (format!("{m}.{ROW_OFFSETS}"), Cow::Owned(row_offsets)),
            ]
        }
    };
    queue.send(Batch {
        parts,
        done: Some(Box::new(move || {
            src.release(i);
            progress(bytes_in as u64);
        })),
    })?;
    Ok(stat)
}
