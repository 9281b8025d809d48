//! The core's format table, for Python to read its names from.

use ctcodec::formats::FORMATS;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Every format: `{"name", "family", "writable"}`.
#[pyfunction]
pub fn formats(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    FORMATS
        .iter()
        .map(|f| {
            let d = PyDict::new(py);
            d.set_item("name", f.name)?;
            d.set_item("family", f.family.name())?;
            d.set_item("writable", f.writable)?;
            Ok(d)
        })
        .collect()
}
