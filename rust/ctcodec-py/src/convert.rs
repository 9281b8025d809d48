//! Converting other tools' checkpoints, file by file.

use std::path::PathBuf;

use ctcodec::formats::gptq::{convert_file, GptqSettings};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::run_detached;
use crate::reader::read_mode;

/// Writes `dst`: the GPTQ file `src` with every quantized module in pack-quantized;
/// returns `{"module", "in_features", "out_features", "g_idx"}` per converted module.
#[pyfunction]
#[pyo3(signature = (src, dst, bits, group_size, symmetric, zeros_minus_one, mode="auto"))]
#[allow(clippy::too_many_arguments)]
pub fn convert_gptq_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    bits: u32,
    group_size: Option<usize>,
    symmetric: bool,
    zeros_minus_one: bool,
    mode: &str,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let mode = read_mode(mode)?;
    let settings = GptqSettings {
        bits,
        group_size,
        symmetric,
        zeros_minus_one,
    };
    let done = run_detached(py, move || convert_file(&src, &dst, &settings, mode))?;
    done.iter()
        .map(|c| {
            let d = PyDict::new(py);
            d.set_item("module", &c.module)?;
            d.set_item("in_features", c.in_features)?;
            d.set_item("out_features", c.out_features)?;
            d.set_item("g_idx", c.g_idx)?;
            Ok(d)
        })
        .collect()
}
