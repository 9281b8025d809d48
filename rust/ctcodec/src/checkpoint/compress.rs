//! Writing a compressed file from dense tensors in two passes over the input: check
//! each tensor and size its stored parts (the bitmask format counts non-zeros per row,
//! which fixes every output size, so the header can be written first), then encode
//! each tensor into its slot. Memory holds one tensor's output at a time, whatever the
//! file size. Each weight's format module does the work ([`crate::formats`]).

use std::borrow::Cow;
use std::path::Path;

use crate::container::{byte_len, AtomicWriter, FilePlan, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};
use crate::formats::{Encoding, Sizing, WeightEncoder};
use crate::prune::prune;

use super::background::{write_in_background, Batch};
use super::schedule::{for_each_job, for_each_tensor};
use super::source::TensorSource;

/// The tensor's bytes as they are to be encoded: pruned first when asked.
fn input_bytes<'a>(
    src: &'a dyn TensorSource,
    i: usize,
    encoding: Encoding,
) -> Result<Cow<'a, [u8]>> {
    let bytes = src.bytes(i)?;
    let Some(how) = encoding.prune() else {
        return Ok(bytes);
    };
    let spec = &src.specs()[i];
    let pruned = prune(&bytes, spec.dtype, how)
        .map_err(|e| CodecError::tensor(src.path(), &spec.name, e))?;
    Ok(Cow::Owned(pruned))
}

/// What happened to one input tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorStat {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub compressed: bool,
    /// Non-zero elements (counted for compressed tensors, numel for the others).
    pub nonzero: usize,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// Compressed, and at most 2 non-zeros in every 4 consecutive elements of a row.
    pub two_four: bool,
}

/// The module path a compressed weight is stored under (`x.weight` -> `x`).
pub fn module_of(name: &str) -> Option<&str> {
    name.strip_suffix(".weight").filter(|m| !m.is_empty())
}

/// Compresses the tensors of `src` into `dst` as `encodings` says (one per tensor).
/// Encoded tensors must be named `<module>.weight`; bitmask ones need a dtype with a
/// zero, quantized ones bf16/f16/f32. `progress` is told the input bytes of each
/// tensor once it is written.
pub fn compress_to_file(
    src: &dyn TensorSource,
    dst: &Path,
    encodings: &[Encoding],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<TensorStat>> {
    let specs = src.specs();
    assert_eq!(encodings.len(), specs.len(), "one encoding per tensor");
    let path = src.path();

    let sizes: Vec<usize> = specs
        .iter()
        .map(|s| byte_len(s.dtype, &s.shape).unwrap_or(usize::MAX))
        .collect();

    let encoders: Vec<Option<Box<dyn WeightEncoder>>> =
        encodings.iter().map(|e| e.encoder()).collect();
    let encoder = |i: usize| encoders[i].as_deref();

    // Pass 1: validate and size.
    let sizings: Vec<Sizing> =
        for_each_tensor(&sizes, |i, split| size_tensor(src, i, encodings[i], split))?;
    src.end_pass();
    let fill = |i: usize, split: bool, parts: &mut [&mut [u8]]| {
        fill_tensor(src, i, encodings[i], encoder(i), &sizings[i], split, parts)
    };

    // Output layout.
    let outputs: Vec<Vec<TensorSpec>> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| output_specs(src, spec, encoder(i), &sizings[i]))
        .collect::<Result<_>>()?;
    let file_plan = FilePlan::new(outputs.iter().flatten().cloned().collect(), src.metadata())
        .map_err(|e| e.in_file(path))?;
    let writer = AtomicWriter::create(dst, file_plan)?;

    // Pass 2: encode tensors in parallel, straight into the mapped output when it can be
    // mapped safely, else into buffers that one thread writes out.
    let stats = match writer.map_output()? {
        Some(mut mapped) => {
            let (mut slots, releaser) = mapped.split();
            let jobs: Vec<(usize, Vec<&mut [u8]>)> = outputs
                .iter()
                .enumerate()
                .map(|(i, outs)| {
                    let parts = outs
                        .iter()
                        .map(|o| {
                            slots
                                .remove(&o.name)
                                .expect("every output is in the layout")
                        })
                        .collect();
                    (i, parts)
                })
                .collect();
            let stats = for_each_job(
                jobs,
                |(i, _)| sizes[*i],
                |(i, mut parts), split| {
                    let stat = fill(i, split, &mut parts)?;
                    parts.iter().for_each(|p| releaser.done(p));
                    src.release(i);
                    progress(stat.bytes_in as u64);
                    Ok(stat)
                },
            )?;
            mapped.finish();
            stats
        }
        None => write_in_background(&writer, |queue| {
            for_each_tensor(&sizes, |i, split| {
                let mut bufs: Vec<Vec<u8>> = outputs[i]
                    .iter()
                    .map(|o| vec![0u8; byte_len(o.dtype, &o.shape).expect("checked by the layout")])
                    .collect();
                let mut parts: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                let stat = fill(i, split, &mut parts)?;
                let names = outputs[i].iter().map(|o| o.name.clone());
                let bytes_in = stat.bytes_in as u64;
                queue.send(Batch {
                    parts: names.zip(bufs.into_iter().map(Cow::Owned)).collect(),
                    done: Some(Box::new(move || {
                        src.release(i);
                        progress(bytes_in);
                    })),
                })?;
                Ok(stat)
            })
        })?,
    };
    src.end_pass();
    writer.commit()?;
    Ok(stats)
}

/// Checks one input tensor and sizes its stored parts.
fn size_tensor(
    src: &dyn TensorSource,
    i: usize,
    encoding: Encoding,
    split: bool,
) -> Result<Sizing> {
    let spec = &src.specs()[i];
    let path = src.path();
    let bytes = src.bytes(i)?;
    let expected = byte_len(spec.dtype, &spec.shape);
    if expected != Some(bytes.len()) {
        return Err(CodecError::tensor(
            path,
            &spec.name,
            format!(
                "holds {} bytes but {} {:?} needs {expected:?}",
                bytes.len(),
                spec.dtype,
                spec.shape
            ),
        ));
    }
    let Some(encoder) = encoding.encoder() else {
        drop(bytes);
        src.release(i);
        return Ok(None);
    };
    if module_of(&spec.name).is_none() {
        return Err(CodecError::tensor(
            path,
            &spec.name,
            "only `<module>.weight` tensors can be compressed",
        ));
    }
    let sizing = if encoder.sizes_from_values() {
        let values = if encoding.prune().is_some() {
            drop(bytes);
            input_bytes(src, i, encoding)?
        } else {
            bytes
        };
        encoder.size(spec, Some(&values), split)
    } else {
        // Release it all the same, or the used run from the file start stalls here.
        drop(bytes);
        encoder.size(spec, None, split)
    }
    .map_err(|e| CodecError::tensor(path, &spec.name, e))?;
    src.release(i);
    Ok(sizing)
}

/// The output tensors one input tensor becomes: itself, or its format's stored parts.
fn output_specs(
    src: &dyn TensorSource,
    spec: &TensorSpec,
    encoder: Option<&dyn WeightEncoder>,
    sizing: &Sizing,
) -> Result<Vec<TensorSpec>> {
    let (Some(encoder), Some(module)) = (encoder, module_of(&spec.name)) else {
        return Ok(vec![spec.clone()]);
    };
    let parts = encoder
        .parts(spec, sizing)
        .map_err(|e| CodecError::tensor(src.path(), &spec.name, e))?;
    Ok(parts
        .into_iter()
        .map(|p| TensorSpec::new(format!("{module}.{}", p.suffix), p.dtype, p.shape))
        .collect())
}

/// Writes tensor `i`'s outputs into `parts` (sized and ordered as [`output_specs`],
/// zeroed): the tensor itself, or its encoding.
fn fill_tensor(
    src: &dyn TensorSource,
    i: usize,
    encoding: Encoding,
    encoder: Option<&dyn WeightEncoder>,
    sizing: &Sizing,
    split: bool,
    parts: &mut [&mut [u8]],
) -> Result<TensorStat> {
    let spec = &src.specs()[i];
    let bytes = input_bytes(src, i, encoding)?;
    let mut stat = TensorStat {
        name: spec.name.clone(),
        dtype: spec.dtype,
        shape: spec.shape.clone(),
        compressed: encoder.is_some(),
        nonzero: spec.shape.iter().product(),
        bytes_in: bytes.len(),
        bytes_out: bytes.len(),
        two_four: false,
    };
    match (encoder, parts) {
        (None, [out]) => out.copy_from_slice(&bytes),
        (Some(encoder), parts) => {
            let done = encoder
                .encode(spec, &bytes, sizing, split, parts)
                .map_err(|e| CodecError::tensor(src.path(), &spec.name, e))?;
            stat.nonzero = done.nonzero;
            stat.two_four = done.two_four;
            stat.bytes_out = parts.iter().map(|p| p.len()).sum();
        }
        _ => unreachable!("a kept tensor is one part"),
    }
    Ok(stat)
}
