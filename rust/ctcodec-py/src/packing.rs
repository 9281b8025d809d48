//! Packing integer codes a Python quantizer produced (GPTQ) into compressed-tensors'
//! int32 words, with the same core routine the RTN encoder uses.

use ctcodec::codecs::quant::pack::{pack_codes, packed_row_bytes};
use ctcodec::CodecError;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::{run_detached, to_py};

/// Packs `rows × cols` signed codes (int8, within `bits` bits) along each row, adding
/// the `2^(bits-1)` offset, in the dense (0.18+) layout; returns the int32 words' bytes.
#[pyfunction]
pub fn pack_int_codes<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, i8>,
    rows: usize,
    cols: usize,
    bits: u32,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let codes = codes.as_slice().map_err(|_| {
        to_py(CodecError::Invalid(
            "codes must be a contiguous array".into(),
        ))
    })?;
    let out = run_detached(py, move || {
        pack_rows(codes, rows, cols, bits).map_err(CodecError::Invalid)
    })?;
    Ok(out.into_pyarray(py))
}

/// The int32 words of `rows × cols` signed codes, packed along each row.
fn pack_rows(codes: &[i8], rows: usize, cols: usize, bits: u32) -> Result<Vec<u8>, String> {
    if !(1..=8).contains(&bits) {
        return Err(format!("cannot pack {bits}-bit codes"));
    }
    if codes.len() != rows * cols {
        return Err(format!("{} codes for a {rows}×{cols} weight", codes.len()));
    }
    let (lo, hi) = (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1);
    if let Some(&c) = codes.iter().find(|&&c| (c as i32) < lo || (c as i32) > hi) {
        return Err(format!("code {c} does not fit in {bits} bits"));
    }
    let offset = 1i32 << (bits - 1);
    let row_bytes = packed_row_bytes(cols, bits, false);
    let mut out = vec![0u8; rows * row_bytes];
    let mut unsigned = vec![0u8; cols];
    for (row, dst) in codes
        .chunks(cols.max(1))
        .zip(out.chunks_exact_mut(row_bytes.max(1)))
    {
        for (u, &c) in unsigned.iter_mut().zip(row) {
            *u = (c as i32 + offset) as u8;
        }
        pack_codes(&unsigned, bits, false, dst);
    }
    Ok(out)
}
