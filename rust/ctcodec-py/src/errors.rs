//! The one place core errors and panics become Python exceptions.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ctcodec::CodecError as CoreError;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError};
use pyo3::prelude::*;

pyo3::import_exception!(ctcodec.errors, CodecError);

pub fn to_py(err: CoreError) -> PyErr {
    let msg = err.to_string();
    match err {
        CoreError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            // A full disk is part of the run's story, not an I/O fault: one CodecError
            // naming the file, like every other reason a run stops.
            std::io::ErrorKind::StorageFull => CodecError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        _ => CodecError::new_err(msg),
    }
}

/// Runs heavy work with the GIL released, turning core errors and panics (which would
/// otherwise surface as a BaseException) into `CodecError`.
pub fn run_detached<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> ctcodec::Result<T> + Send,
{
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(work)));
    match outcome {
        Ok(result) => result.map_err(to_py),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(CodecError::new_err(format!(
                "internal error in ctcodec: {what}"
            )))
        }
    }
}
