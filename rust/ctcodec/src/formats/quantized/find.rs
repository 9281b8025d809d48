//! Finding the stored parts of each quantized weight in a file, for the modules whose
//! scheme the caller resolved from config.json, checked against what the scheme implies.

use std::collections::{BTreeMap, HashMap};

use crate::codecs::quant::decode::output_dtype;
use crate::codecs::quant::{QuantFormat, QuantSpec, Role};
use crate::container::{SafetensorsFile, TensorInfo};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

/// The stored parts of one quantized weight.
#[derive(Clone, Debug)]
pub struct Stored {
    pub module: String,
    pub spec: QuantSpec,
    pub dense_shape: Vec<usize>,
    pub weight: TensorInfo,
    pub scale: TensorInfo,
    pub zero_point: Option<TensorInfo>,
    pub g_idx: Option<TensorInfo>,
    pub global_scale: Option<TensorInfo>,
    /// For 2:4 weights stacked on naive quantization: `weight` is the `compressed`
    /// values and this is the bitmask; the codes are expanded before dequantizing.
    pub sparse24_mask: Option<TensorInfo>,
    /// marlin-24's 2:4 index tensor.
    pub marlin_meta: Option<TensorInfo>,
    /// Parts read while planning (the shape), or that decoding does not need.
    pub consumed: Vec<TensorInfo>,
}

impl Stored {
    /// Every stored tensor this weight is made of.
    pub fn all_members(&self) -> Vec<&TensorInfo> {
        let mut all = vec![&self.weight, &self.scale];
        all.extend(self.zero_point.iter());
        all.extend(self.g_idx.iter());
        all.extend(self.global_scale.iter());
        all.extend(self.sparse24_mask.iter());
        all.extend(self.marlin_meta.iter());
        all.extend(self.consumed.iter());
        all
    }
}

/// The tensor whose presence marks a module as quantized in this file.
fn root(format: QuantFormat) -> &'static str {
    super::suffix(format, Role::Codes)
}

/// The quantized weights of `file` among the modules of `schemes` (keyed by the root
/// tensor's name).
pub fn find(
    file: &SafetensorsFile,
    schemes: &HashMap<String, QuantSpec>,
) -> Result<BTreeMap<String, Stored>> {
    let header = file.header();
    let by_name: HashMap<&str, &TensorInfo> = header
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut found = BTreeMap::new();
    for (module, spec) in schemes {
        let root_name = format!("{module}.{}", root(spec.format));
        let part = |p: &str| {
            by_name
                .get(format!("{module}.{p}").as_str())
                .map(|t| (*t).clone())
        };
        let err = |reason: String| CodecError::tensor(file.path(), module, reason);
        // Quantized weights stored 2:4-compressed (compressed-tensors 0.14 stacking).
        let stacked = spec.format == QuantFormat::Naive
            && !by_name.contains_key(root_name.as_str())
            && by_name.contains_key(format!("{module}.compressed").as_str());
        let mut consumed = Vec::new();
        let mut sparse24_mask = None;
        let mut stacked_shape = None;
        let weight = if stacked {
            let mut members = BTreeMap::new();
            for p in ["compressed", "bitmask", "shape"] {
                if let Some(t) = by_name.get(format!("{module}.{p}").as_str()) {
                    members.insert(p, *t);
                }
            }
            let (values, mask, shape) = crate::formats::sparse24::members(file, module, &members)?;
            consumed.push(members["shape"].clone());
            sparse24_mask = Some(mask.clone());
            stacked_shape = Some(shape);
            values
        } else {
            match by_name.get(root_name.as_str()) {
                Some(w) => *w,
                None => continue,
            }
        };
        let name = |role| super::suffix(spec.format, role);
        let scale_name = name(Role::Scale);
        let scale = part(scale_name)
            .ok_or_else(|| err(format!("{} weight has no {scale_name}", spec.format.name())))?;
        let marlin_meta = if spec.format == QuantFormat::Marlin24 {
            Some(part(name(Role::Meta)).ok_or_else(|| err("marlin-24 weight has no meta".into()))?)
        } else {
            None
        };
        let dense_shape = match spec.format {
            _ if stacked => stacked_shape.clone().expect("read above"),
            // meta is [k / 32, 2 n] int16.
            QuantFormat::Marlin24 => {
                match marlin_meta.as_ref().map(|m| (m.dtype, m.shape.as_slice())) {
                    Some((Dtype::I16, [a, b])) => vec![b / 2, a * 32],
                    _ => return Err(err("marlin-24 meta must be a 2-D I16 tensor".into())),
                }
            }
            QuantFormat::Pack { .. } => {
                let info = part(name(Role::Shape))
                    .ok_or_else(|| err("pack-quantized weight has no weight_shape".into()))?;
                let shape = crate::formats::sparse_bitmask::read_shape(file, &info)?;
                file.release(&info);
                consumed.push(info);
                shape
            }
            QuantFormat::Naive => weight.shape.clone(),
            QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => match weight.shape.as_slice() {
                [rows, half] => vec![*rows, 2 * half],
                s => return Err(err(format!("fp4 weight_packed must be 2-D, is {s:?}"))),
            },
        };
        let expect_dtype = match spec.format {
            QuantFormat::Pack { .. } | QuantFormat::Marlin24 => Some(Dtype::I32),
            QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => Some(Dtype::U8),
            QuantFormat::Naive if spec.args.qtype == crate::codecs::quant::QType::Float => {
                Some(Dtype::F8E4M3)
            }
            QuantFormat::Naive => Some(Dtype::I8),
        };
        if expect_dtype.is_some_and(|d| d != weight.dtype) {
            return Err(CodecError::tensor(
                file.path(),
                &weight.name,
                format!(
                    "{} weights must be {}, found {}",
                    spec.format.name(),
                    expect_dtype.unwrap(),
                    weight.dtype
                ),
            ));
        }
        let global_scale = part(name(Role::GlobalScale));
        if spec.format == QuantFormat::Nvfp4 {
            match &global_scale {
                Some(g) if g.dtype == Dtype::F32 && g.numel() == 1 => {}
                Some(g) => {
                    return Err(CodecError::tensor(
                        file.path(),
                        &g.name,
                        format!("must be one F32 value, is {} {:?}", g.dtype, g.shape),
                    ))
                }
                None => return Err(err("nvfp4 weight has no weight_global_scale".into())),
            }
        }
        let out_dtype = output_dtype(spec, scale.dtype)
            .map_err(|e| CodecError::tensor(file.path(), &scale.name, e))?;
        check_stored_shapes(
            file,
            module,
            spec,
            out_dtype,
            &dense_shape,
            weight,
            &scale,
            stacked,
            &part,
        )?;
        found.insert(
            weight.name.clone(),
            Stored {
                module: module.clone(),
                spec: *spec,
                dense_shape,
                weight: (*weight).clone(),
                scale,
                zero_point: part(name(Role::ZeroPoint)),
                g_idx: part(super::G_IDX),
                global_scale,
                sparse24_mask,
                marlin_meta,
                consumed,
            },
        );
    }
    Ok(found)
}

/// The stored tensors must be exactly what the dense shape implies: a `weight_shape`
/// that disagrees with `weight_packed` (or would overflow) is refused here, before any
/// buffer is sized from it; scales and zero points must hold one value per cell.
#[allow(clippy::too_many_arguments)]
fn check_stored_shapes(
    file: &SafetensorsFile,
    module: &str,
    spec: &QuantSpec,
    out_dtype: Dtype,
    dense: &[usize],
    weight: &TensorInfo,
    scale: &TensorInfo,
    stacked: bool,
    part: &dyn Fn(&str) -> Option<TensorInfo>,
) -> Result<()> {
    let path = file.path();
    if crate::container::byte_len(out_dtype, dense).is_none() {
        return Err(CodecError::tensor(
            path,
            module,
            format!("dense shape {dense:?} is too large"),
        ));
    }
    // The part layout depends on the weight's dtype only through the scale dtype.
    let weight_dtype = match spec.format {
        QuantFormat::Pack { .. } | QuantFormat::Naive => out_dtype,
        _ => Dtype::Bf16,
    };
    let parts = super::parts(spec, weight_dtype, dense)
        .map_err(|e| CodecError::tensor(path, module, format!("dense shape {dense:?}: {e}")))?;
    let want = |suffix: &str| parts.iter().find(|p| p.suffix == suffix);
    let numel = |shape: &[usize]| shape.iter().product::<usize>();
    if !stacked && parts[0].shape != weight.shape {
        return Err(CodecError::tensor(
            path,
            &weight.name,
            format!(
                "has shape {:?}; dense shape {dense:?} as {} needs {:?}",
                weight.shape,
                spec.format.name(),
                parts[0].shape
            ),
        ));
    }
    let name = |role| super::suffix(spec.format, role);
    if let Some(p) = want(name(Role::Scale)) {
        if numel(&p.shape) != scale.numel() {
            return Err(CodecError::tensor(
                path,
                &scale.name,
                format!(
                    "has shape {:?}; {} on {dense:?} needs {:?}",
                    scale.shape, spec.args, p.shape
                ),
            ));
        }
    }
    if let (Some(p), Some(z)) = (want(name(Role::ZeroPoint)), part(name(Role::ZeroPoint))) {
        if numel(&p.shape) != z.numel() {
            return Err(CodecError::tensor(
                path,
                &z.name,
                format!(
                    "has shape {:?}; {} on {dense:?} needs {:?}",
                    z.shape, spec.args, p.shape
                ),
            ));
        }
    }
    Ok(())
}
