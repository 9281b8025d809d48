//! Compressing and decompressing whole files, from paths or from caller arrays.

use std::collections::HashMap;
use std::path::PathBuf;

use ctcodec::checkpoint::{
    compress_to_file, decompress_file, Encoding, FileSource, MemorySource, TensorSource, TensorStat,
};
use ctcodec::container::{SafetensorsFile, TensorSpec};
use ctcodec::{CodecError, Dtype};
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{run_detached, to_py};
use crate::progress::bar;
use crate::reader::{parse_format, read_mode};
use crate::spec::{parse_prune, parse_schemes, Scheme, WeightSpec};
use ctcodec::codecs::quant::floats::Compute;
use ctcodec::codecs::quant::params::global_scale;

fn stat_dict<'py>(py: Python<'py>, s: &TensorStat) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &s.name)?;
    d.set_item("dtype", s.dtype.name())?;
    d.set_item("shape", s.shape.clone())?;
    d.set_item("compressed", s.compressed)?;
    d.set_item("nonzero", s.nonzero)?;
    d.set_item("bytes_in", s.bytes_in)?;
    d.set_item("bytes_out", s.bytes_out)?;
    d.set_item("two_four", s.two_four)?;
    Ok(d)
}

/// Compresses each (src, dst, {name: (spec or None, prune or None, two_four)}) job: a
/// None spec bitmask-encodes the tensor, a `WeightSpec` quantizes it, after magnitude
/// pruning when `prune` is "2:4" or a fraction; `two_four` stores the result (or the
/// quantized codes) as sparse-24-bitmask. One progress bar over all input bytes.
#[pyfunction]
#[pyo3(signature = (jobs, progress=false, mode="auto"))]
pub fn compress_files<'py>(
    py: Python<'py>,
    jobs: Vec<(
        PathBuf,
        PathBuf,
        HashMap<String, (Option<WeightSpec>, Option<String>, bool)>,
    )>,
    progress: bool,
    mode: &str,
) -> PyResult<Vec<Vec<Bound<'py, PyDict>>>> {
    let mode = read_mode(mode)?;
    let stats = run_detached(py, move || {
        let jobs: Vec<(PathBuf, PathBuf, HashMap<String, Encoding>)> = jobs
            .into_iter()
            .map(|(src, dst, names)| {
                let encodings = names
                    .into_iter()
                    .map(|(name, (spec, prune, two_four))| {
                        let in_tensor =
                            |e: CodecError| CodecError::tensor(&src, &name, e.to_string());
                        let prune = prune
                            .as_deref()
                            .map(parse_prune)
                            .transpose()
                            .map_err(in_tensor)?;
                        let spec = spec.map(|w| w.spec()).transpose().map_err(in_tensor)?;
                        Ok((name, Encoding::of(spec, prune, two_four)))
                    })
                    .collect::<Result<_, CodecError>>()?;
                Ok((src, dst, encodings))
            })
            .collect::<Result<_, CodecError>>()?;
        let total: u64 = jobs
            .iter()
            .map(|(src, _, _)| std::fs::metadata(src).map_or(0, |m| m.len()))
            .sum();
        let pb = bar(total, "compress", progress);
        let mut all = Vec::with_capacity(jobs.len());
        for (src, dst, names) in &jobs {
            let source = FileSource::new(SafetensorsFile::open(src, mode)?);
            let select: Vec<Encoding> = source
                .specs()
                .iter()
                .map(|s| names.get(&s.name).copied().unwrap_or(Encoding::Keep))
                .collect();
            let found = select.iter().filter(|&&e| e != Encoding::Keep).count();
            if found != names.len() {
                let missing = names
                    .keys()
                    .find(|n| !source.specs().iter().any(|s| &s.name == *n));
                return Err(CodecError::tensor(
                    src,
                    missing.map_or("?", |s| s),
                    "asked to compress a tensor the file does not hold",
                ));
            }
            all.push(compress_to_file(&source, dst, &select, &|n| pb.inc(n))?);
        }
        pb.finish_and_clear();
        Ok(all)
    })?;
    stats
        .iter()
        .map(|file| file.iter().map(|s| stat_dict(py, s)).collect())
        .collect()
}

/// Decompresses each (src, dst) job to dense safetensors.
#[pyfunction]
#[pyo3(signature = (jobs, format=None, progress=false, mode="auto", schemes=None))]
pub fn decompress_files(
    py: Python<'_>,
    jobs: Vec<(PathBuf, PathBuf)>,
    format: Option<&str>,
    progress: bool,
    mode: &str,
    schemes: Option<HashMap<String, Scheme>>,
) -> PyResult<usize> {
    let format = parse_format(format)?;
    let mode = read_mode(mode)?;
    let named = jobs.first().map(|(src, _)| src.clone()).unwrap_or_default();
    let schemes = parse_schemes(&named, schemes)?;
    run_detached(py, move || {
        let total: u64 = jobs
            .iter()
            .map(|(src, _)| std::fs::metadata(src).map_or(0, |m| m.len()))
            .sum();
        let pb = bar(total, "decompress", progress);
        let mut n = 0;
        for (src, dst) in &jobs {
            let size = std::fs::metadata(src).map_or(0, |m| m.len());
            n += decompress_file(src, dst, format, &schemes, mode, &|_| {})?;
            pb.inc(size);
        }
        pb.finish_and_clear();
        Ok(n)
    })
}

/// Writes caller tensors (raw bytes as uint8 arrays) to `path`, bitmask-compressing
/// those flagged in `select` (as sparse-24-bitmask with `two_four`), or quantizing
/// those with a spec in `specs`.
#[pyfunction]
#[pyo3(signature = (path, tensors, select, metadata=None, specs=None, two_four=false))]
pub fn write_tensors<'py>(
    py: Python<'py>,
    path: PathBuf,
    tensors: Vec<(String, String, Vec<usize>, PyReadonlyArray1<'py, u8>)>,
    select: Vec<bool>,
    metadata: Option<Vec<(String, String)>>,
    specs: Option<Vec<Option<WeightSpec>>>,
    two_four: bool,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    if select.len() != tensors.len() {
        return Err(to_py(CodecError::Invalid(
            "one selection flag per tensor".into(),
        )));
    }
    let mut inputs = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, array) in &tensors {
        let dtype: Dtype = dtype
            .parse()
            .map_err(|e: String| to_py(CodecError::tensor(&path, name, e)))?;
        let bytes = array
            .as_slice()
            .map_err(|_| to_py(CodecError::tensor(&path, name, "array is not contiguous")))?;
        inputs.push((TensorSpec::new(name.clone(), dtype, shape.clone()), bytes));
    }
    let specs = specs.unwrap_or_else(|| select.iter().map(|_| None).collect());
    if specs.len() != select.len() {
        return Err(to_py(CodecError::Invalid("one spec per tensor".into())));
    }
    let mut encodings = Vec::with_capacity(select.len());
    for ((&sel, spec), (name, ..)) in select.iter().zip(&specs).zip(&tensors) {
        let in_tensor = |e: CodecError| to_py(CodecError::tensor(&path, name, e.to_string()));
        encodings.push(match spec {
            // A quantized tensor is written as its quantized parts only.
            Some(w) => Encoding::of(Some(w.spec().map_err(in_tensor)?), None, false),
            None if sel => Encoding::of(None, None, two_four),
            None => Encoding::Keep,
        });
    }
    let stats = run_detached(py, || {
        let source = MemorySource::new(&path, inputs, metadata);
        compress_to_file(&source, &path, &encodings, &|_| {})
    })?;
    stats.iter().map(|s| stat_dict(py, s)).collect()
}

/// NVFP4 global scales (`448 * 6 / amax`, in compressed-tensors' arithmetic) of the
/// named bf16/f16/f32 weights of a file, for callers that share one across fused layers.
#[pyfunction]
#[pyo3(signature = (path, names, mode="auto"))]
pub fn nvfp4_global_scales(
    py: Python<'_>,
    path: PathBuf,
    names: Vec<String>,
    mode: &str,
) -> PyResult<Vec<f32>> {
    let mode = read_mode(mode)?;
    run_detached(py, move || {
        let file = SafetensorsFile::open(&path, mode)?;
        names
            .iter()
            .map(|name| {
                let info = file
                    .header()
                    .tensors
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| CodecError::tensor(&path, name, "not in the file"))?;
                let compute = Compute::of(info.dtype).ok_or_else(|| {
                    CodecError::tensor(
                        &path,
                        name,
                        format!("cannot quantize {} weights", info.dtype),
                    )
                })?;
                let bytes = file.bytes(info)?;
                let cols = info.shape.last().copied().unwrap_or(1).max(1);
                let amax = ctcodec::codecs::quant::encode::abs_max(&bytes, compute, cols, true);
                Ok(global_scale(amax, compute))
            })
            .collect()
    })
}
