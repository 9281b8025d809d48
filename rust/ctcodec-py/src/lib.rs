//! `ctcodec._native`: converts types, releases the GIL, maps errors; nothing else.

mod convert;
mod errors;
mod names;
mod packing;
mod pool;
mod progress;
mod reader;
mod spec;
mod spqr;
mod writer;

use pyo3::prelude::*;

/// In a forked child the rayon pool has no threads; run everything on the caller.
extern "C" fn child_after_fork() {
    ctcodec::parallel::disable();
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SAFETY: registers a handler that only performs an atomic store.
    unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<reader::CompressedFile>()?;
    m.add_function(wrap_pyfunction!(writer::compress_files, m)?)?;
    m.add_function(wrap_pyfunction!(writer::decompress_files, m)?)?;
    m.add_function(wrap_pyfunction!(writer::write_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(reader::read_header, m)?)?;
    m.add_function(wrap_pyfunction!(names::formats, m)?)?;
    m.add_function(wrap_pyfunction!(convert::convert_gptq_file, m)?)?;
    m.add_function(wrap_pyfunction!(writer::nvfp4_global_scales, m)?)?;
    m.add_function(wrap_pyfunction!(pool::pool_stats, m)?)?;
    m.add_function(wrap_pyfunction!(spqr::spqr_pack, m)?)?;
    m.add_function(wrap_pyfunction!(packing::pack_int_codes, m)?)?;
    Ok(())
}
