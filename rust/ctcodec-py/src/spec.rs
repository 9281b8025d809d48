//! Schemes as Python passes them: named objects (`ctcodec.schemes.WeightSpec`,
//! `ctcodec.spqr_format.SpqrParams`) read by attribute; the core checks them.

use std::collections::HashMap;
use std::path::Path;

use ctcodec::checkpoint::Schemes;
use ctcodec::codecs::quant::QuantSpec;
use ctcodec::codecs::spqr::SpqrParams;
use ctcodec::formats::quantized::SchemeFields;
use ctcodec::prune::Prune;
use ctcodec::{CodecError, Dtype};
use pyo3::prelude::*;

use crate::errors::to_py;

/// One weight's quantization scheme (`ctcodec.schemes.WeightSpec`).
#[derive(FromPyObject)]
pub struct WeightSpec {
    format: String,
    num_bits: u32,
    #[pyo3(attribute("type"))]
    qtype: String,
    symmetric: bool,
    strategy: String,
    group_size: Option<usize>,
    block_structure: Option<(usize, usize)>,
    global_scale: Option<f32>,
}

impl WeightSpec {
    pub fn spec(&self) -> Result<QuantSpec, CodecError> {
        SchemeFields {
            format: &self.format,
            num_bits: self.num_bits,
            qtype: &self.qtype,
            symmetric: self.symmetric,
            strategy: &self.strategy,
            group_size: self.group_size,
            block_structure: self.block_structure,
            global_scale: self.global_scale,
        }
        .spec()
    }
}

/// SpQR's parameters (`ctcodec.spqr_format.SpqrParams`).
#[derive(FromPyObject)]
pub struct SpqrSpec {
    bits: u32,
    beta1: usize,
    beta2: usize,
    qq_scale_bits: u32,
    qq_zero_bits: u32,
    storage_dtype: String,
}

impl SpqrSpec {
    pub fn params(&self) -> Result<SpqrParams, CodecError> {
        let params = SpqrParams {
            bits: self.bits,
            beta1: self.beta1,
            beta2: self.beta2,
            qq_scale_bits: self.qq_scale_bits,
            qq_zero_bits: self.qq_zero_bits,
            dtype: self
                .storage_dtype
                .parse::<Dtype>()
                .map_err(CodecError::Invalid)?,
        };
        params.validate().map_err(CodecError::Invalid)?;
        Ok(params)
    }
}

/// One module's scheme, told apart by its `format` attribute.
pub enum Scheme {
    Quant(WeightSpec),
    Spqr(SpqrSpec),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Scheme {
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let format: String = ob.getattr("format")?.extract()?;
        Ok(if format == "spqr" {
            Scheme::Spqr(ob.extract()?)
        } else {
            Scheme::Quant(ob.extract()?)
        })
    }
}

/// "2:4", or the fraction of elements to zero.
pub fn parse_prune(s: &str) -> Result<Prune, CodecError> {
    if s.trim() == "2:4" {
        return Ok(Prune::TwoFour);
    }
    match s.trim().parse::<f32>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(Prune::Unstructured(f)),
        _ => Err(CodecError::Invalid(format!(
            "sparsity {s:?} is neither \"2:4\" nor a fraction in [0, 1]"
        ))),
    }
}

/// Schemes for the file at `path` (named in errors with the module at fault).
pub fn parse_schemes(path: &Path, schemes: Option<HashMap<String, Scheme>>) -> PyResult<Schemes> {
    let mut out = Schemes::default();
    for (module, scheme) in schemes.unwrap_or_default() {
        let at = |e: CodecError| to_py(CodecError::tensor(path, &module, e.to_string()));
        match &scheme {
            Scheme::Quant(w) => {
                out.quant.insert(module.clone(), w.spec().map_err(at)?);
            }
            Scheme::Spqr(s) => {
                out.spqr.insert(module.clone(), s.params().map_err(at)?);
            }
        }
    }
    Ok(out)
}
