//! `ctcodec._native`: converts types, releases the GIL, maps errors; nothing else.

mod errors;
mod pool;
mod progress;
mod reader;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<reader::CompressedFile>()?;
    m.add_function(wrap_pyfunction!(writer::compress_files, m)?)?;
    m.add_function(wrap_pyfunction!(writer::decompress_files, m)?)?;
    m.add_function(wrap_pyfunction!(writer::write_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(writer::read_header, m)?)?;
    m.add_function(wrap_pyfunction!(pool::pool_stats, m)?)?;
    Ok(())
}
