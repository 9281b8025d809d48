//! Quantization specs as Python passes them: plain tuples, resolved from config.json
//! on the Python side.

use std::collections::HashMap;
use std::path::Path;

use ctcodec::checkpoint::Schemes;
use ctcodec::prune::Prune;
use ctcodec::quant::{QType, QuantArgs, QuantFormat, QuantSpec, Strategy};
use ctcodec::CodecError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::spqr::{parse_spqr, SpqrTuple};

/// `(format, num_bits, type, symmetric, strategy, group_size, block, global_scale)`.
pub type SpecTuple = (
    String,
    u32,
    String,
    bool,
    String,
    Option<usize>,
    Option<(usize, usize)>,
    Option<f32>,
);

pub fn parse_spec(t: &SpecTuple) -> Result<QuantSpec, CodecError> {
    let (format, num_bits, qtype, symmetric, strategy, group_size, block, global_scale) = t;
    let format = match format.as_str() {
        "pack-quantized" => QuantFormat::Pack { legacy: false },
        "pack-quantized-legacy" => QuantFormat::Pack { legacy: true },
        "naive-quantized" | "int-quantized" | "float-quantized" => QuantFormat::Naive,
        "nvfp4-pack-quantized" => QuantFormat::Nvfp4,
        "mxfp4-pack-quantized" => QuantFormat::Mxfp4,
        "marlin-24" => QuantFormat::Marlin24,
        other => {
            return Err(CodecError::Invalid(format!(
                "unknown quantized format {other:?}"
            )))
        }
    };
    let qtype = match qtype.as_str() {
        "int" => QType::Int,
        "float" => QType::Float,
        other => {
            return Err(CodecError::Invalid(format!(
                "unknown quantization type {other:?}"
            )))
        }
    };
    let group = || {
        group_size
            .ok_or_else(|| CodecError::Invalid(format!("{strategy} strategy needs a group_size")))
    };
    let strategy = match strategy.as_str() {
        "tensor" => Strategy::Tensor,
        "channel" => Strategy::Channel,
        "group" => Strategy::Group(group()?),
        "tensor_group" => Strategy::TensorGroup(group()?),
        "block" => {
            let (h, w) = block.ok_or_else(|| {
                CodecError::Invalid("block strategy needs block_structure".into())
            })?;
            Strategy::Block(h, w)
        }
        other => {
            return Err(CodecError::Invalid(format!(
                "unsupported weight strategy {other:?}"
            )))
        }
    };
    let spec = QuantSpec {
        format,
        args: QuantArgs {
            num_bits: *num_bits,
            qtype,
            symmetric: *symmetric,
            strategy,
        },
        global_scale: *global_scale,
    };
    spec.validate().map_err(CodecError::Invalid)?;
    Ok(spec)
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

/// One module's scheme: a quantization spec or SpQR params (told apart by length).
#[derive(FromPyObject)]
pub enum SchemeTuple {
    Quant(SpecTuple),
    Spqr(SpqrTuple),
}

/// Schemes for the file at `path` (named in errors with the module at fault).
pub fn parse_schemes(
    path: &Path,
    schemes: Option<HashMap<String, SchemeTuple>>,
) -> PyResult<Schemes> {
    let mut out = Schemes::default();
    for (module, t) in schemes.unwrap_or_default() {
        let at = |e: CodecError| to_py(CodecError::tensor(path, &module, e.to_string()));
        match &t {
            SchemeTuple::Quant(t) => {
                out.quant.insert(module.clone(), parse_spec(t).map_err(at)?);
            }
            SchemeTuple::Spqr(t) => {
                out.spqr.insert(module.clone(), parse_spqr(t).map_err(at)?);
            }
        }
    }
    Ok(out)
}
