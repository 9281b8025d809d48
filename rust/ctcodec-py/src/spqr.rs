//! SpQR from Python: packing a quantizer's output into the stored tensors.

use ctcodec::codecs::spqr::{encode, EncodeInput, Geometry, OutlierLayout, Outliers};
use ctcodec::CodecError;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::{run_detached, to_py};
use crate::spec::SpqrSpec;

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        to_py(CodecError::Invalid(format!(
            "{what} must be a contiguous array"
        )))
    })
}

/// Packs one weight's codes, statistics, permutation and outliers (COO, stored column
/// order) into its stored tensors: `[(suffix, dtype, shape, bytes)]`.
#[pyfunction]
#[pyo3(signature = (params, rows, cols, codes, scale_codes, zero_codes, second_order, perm,
                    outlier_rows, outlier_cols, outlier_values, layout="csr"))]
#[allow(clippy::too_many_arguments)]
pub fn spqr_pack<'py>(
    py: Python<'py>,
    params: SpqrSpec,
    rows: usize,
    cols: usize,
    codes: PyReadonlyArray1<'py, u8>,
    scale_codes: PyReadonlyArray1<'py, u8>,
    zero_codes: PyReadonlyArray1<'py, u8>,
    second_order: PyReadonlyArray1<'py, u16>,
    perm: PyReadonlyArray1<'py, i32>,
    outlier_rows: PyReadonlyArray1<'py, i32>,
    outlier_cols: PyReadonlyArray1<'py, i32>,
    outlier_values: PyReadonlyArray1<'py, u16>,
    layout: &str,
) -> PyResult<Vec<(String, String, Vec<usize>, Bound<'py, PyArray1<u8>>)>> {
    let params = params.params().map_err(to_py)?;
    let layout = OutlierLayout::parse(layout).ok_or_else(|| {
        to_py(CodecError::Invalid(format!(
            "outlier layout must be csr or ptcsr, not {layout:?}"
        )))
    })?;
    let codes = slice(&codes, "codes")?;
    let scale_codes = slice(&scale_codes, "scale codes")?;
    let zero_codes = slice(&zero_codes, "zero codes")?;
    let second_order = slice(&second_order, "second-order statistics")?;
    let perm = slice(&perm, "permutation")?;
    let outlier_rows = slice(&outlier_rows, "outlier rows")?;
    let outlier_cols = slice(&outlier_cols, "outlier columns")?;
    let outlier_values = slice(&outlier_values, "outlier values")?;
    let tensors = run_detached(py, move || {
        let g = Geometry::new(params, rows, cols).map_err(CodecError::Invalid)?;
        let outliers = Outliers::from_coo(&g, outlier_rows, outlier_cols, outlier_values)
            .map_err(CodecError::Invalid)?;
        let input = EncodeInput {
            codes,
            scale_codes,
            zero_codes,
            second_order,
            perm,
            outliers: &outliers,
            layout,
        };
        encode(&g, &input).map_err(CodecError::Invalid)
    })?;
    Ok(tensors
        .into_iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name,
                dtype.name().to_string(),
                shape,
                bytes.into_pyarray(py),
            )
        })
        .collect())
}
