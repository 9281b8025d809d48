//! SpQR from Python: the params tuple, and packing a quantizer's output.

use ctcodec::spqr::{encode, EncodeInput, Geometry, OutlierLayout, Outliers, SpqrParams};
use ctcodec::{CodecError, Dtype};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::to_py;

/// `("spqr", bits, beta1, beta2, qq_scale_bits, qq_zero_bits, dtype)`.
pub type SpqrTuple = (String, u32, usize, usize, u32, u32, String);

pub fn parse_spqr(t: &SpqrTuple) -> Result<SpqrParams, CodecError> {
    let (format, bits, beta1, beta2, qs, qz, dtype) = t;
    if format != "spqr" {
        return Err(CodecError::Invalid(format!("unknown format {format:?}")));
    }
    let params = SpqrParams {
        bits: *bits,
        beta1: *beta1,
        beta2: *beta2,
        qq_scale_bits: *qs,
        qq_zero_bits: *qz,
        dtype: dtype.parse::<Dtype>().map_err(CodecError::Invalid)?,
    };
    params.validate().map_err(CodecError::Invalid)?;
    Ok(params)
}

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
    params: SpqrTuple,
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
    let params = parse_spqr(&params).map_err(to_py)?;
    let layout = OutlierLayout::parse(layout).ok_or_else(|| {
        to_py(CodecError::Invalid(format!(
            "outlier layout must be csr or ptcsr, not {layout:?}"
        )))
    })?;
    let invalid = |e: String| to_py(CodecError::Invalid(e));
    let g = Geometry::new(params, rows, cols).map_err(invalid)?;
    let outliers = Outliers::from_coo(
        &g,
        slice(&outlier_rows, "outlier rows")?,
        slice(&outlier_cols, "outlier columns")?,
        slice(&outlier_values, "outlier values")?,
    )
    .map_err(invalid)?;
    let input = EncodeInput {
        codes: slice(&codes, "codes")?,
        scale_codes: slice(&scale_codes, "scale codes")?,
        zero_codes: slice(&zero_codes, "zero codes")?,
        second_order: slice(&second_order, "second-order statistics")?,
        perm: slice(&perm, "permutation")?,
        outliers: &outliers,
        layout,
    };
    let tensors = encode(&g, &input).map_err(invalid)?;
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
