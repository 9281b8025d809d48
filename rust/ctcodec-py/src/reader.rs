//! `CompressedFile`: a validated, mapped file whose dense tensors are decoded one at a
//! time into fresh numpy buffers (no copy on the way to Python).

use std::collections::HashMap;
use std::path::PathBuf;

use ctcodec::checkpoint::{plan, read_dense, read_dense_batch, DenseItem, Format};
use ctcodec::container::{ReadMode, SafetensorsFile};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::errors::{run_detached, to_py};
use crate::spec::{parse_schemes, Scheme};

pub fn read_mode(mode: &str) -> PyResult<ReadMode> {
    match mode {
        "auto" => Ok(ReadMode::Auto),
        "mmap" => Ok(ReadMode::Mmap),
        "pread" => Ok(ReadMode::Pread),
        other => Err(crate::errors::CodecError::new_err(format!(
            "unknown read mode {other:?} (auto, mmap, pread)"
        ))),
    }
}

pub fn parse_format(format: Option<&str>) -> PyResult<Option<Format>> {
    format
        .map(|f| f.parse::<Format>().map_err(to_py))
        .transpose()
}

#[pyclass(frozen, module = "ctcodec._native")]
pub struct CompressedFile {
    file: SafetensorsFile,
    items: Vec<DenseItem>,
    format: Format,
}

#[pymethods]
impl CompressedFile {
    #[new]
    #[pyo3(signature = (path, format=None, mode="auto", schemes=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        format: Option<&str>,
        mode: &str,
        schemes: Option<HashMap<String, Scheme>>,
    ) -> PyResult<Self> {
        let format = parse_format(format)?;
        let mode = read_mode(mode)?;
        let schemes = parse_schemes(&path, schemes)?;
        run_detached(py, move || {
            let file = SafetensorsFile::open(&path, mode)?;
            let format = format.unwrap_or_else(|| Format::detect(file.header()));
            let items = plan(&file, format, &schemes)?;
            Ok(CompressedFile {
                file,
                items,
                format,
            })
        })
    }

    #[getter]
    fn format(&self) -> &'static str {
        self.format.name()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    #[getter]
    fn metadata(&self) -> Option<Vec<(String, String)>> {
        self.file.header().metadata.clone()
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    /// (name, dtype, shape, compressed) for every dense tensor, in file order.
    fn entries(&self) -> Vec<(String, String, Vec<usize>, bool)> {
        self.items
            .iter()
            .map(|i| {
                let compressed = !matches!(i.source, ctcodec::checkpoint::Source::Stored(_));
                (
                    i.name.clone(),
                    i.dtype.name().to_string(),
                    i.shape.clone(),
                    compressed,
                )
            })
            .collect()
    }

    /// Decodes tensors from `start` on into one shared uint8 buffer, as many as fit in
    /// `max_bytes` (at least one). Returns the buffer and (index, offset, nbytes) slots.
    #[pyo3(signature = (start, max_bytes=64 << 20))]
    fn read_batch<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        max_bytes: usize,
    ) -> PyResult<(Bound<'py, PyArray1<u8>>, Vec<(usize, usize, usize)>)> {
        if start >= self.items.len() {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "no tensor {start}"
            )));
        }
        let (buf, slots) = run_detached(py, || {
            read_dense_batch(&self.file, &self.items, start, max_bytes, crate::pool::take)
        })?;
        let slots = slots.iter().map(|s| (s.index, s.offset, s.len)).collect();
        Ok((crate::pool::into_numpy(py, buf)?, slots))
    }

    /// The raw little-endian bytes of dense tensor `index`, as a 1-D uint8 array.
    fn read<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let item = self
            .items
            .get(index)
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err(format!("no tensor {index}")))?;
        let bytes = run_detached(py, || read_dense(&self.file, item))?;
        Ok(bytes.into_pyarray(py))
    }
}

/// (metadata, [(name, dtype, shape)]) of a safetensors file, validated.
#[pyfunction]
#[pyo3(signature = (path, mode="auto"))]
pub fn read_header(
    py: Python<'_>,
    path: PathBuf,
    mode: &str,
) -> PyResult<(
    Option<Vec<(String, String)>>,
    Vec<(String, String, Vec<usize>)>,
)> {
    let mode = read_mode(mode)?;
    run_detached(py, move || {
        let file = SafetensorsFile::open(&path, mode)?;
        let h = file.header();
        let tensors = h
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.dtype.name().to_string(), t.shape.clone()))
            .collect();
        Ok((h.metadata.clone(), tensors))
    })
}
