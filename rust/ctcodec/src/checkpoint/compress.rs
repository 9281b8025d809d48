//! Writing a sparse-bitmask file from dense tensors in two passes over the input:
//! count non-zeros per row (which fixes every output size, so the header can be
//! written first), then encode each tensor into its slot. Memory holds one tensor's
//! output at a time, whatever the file size.

use std::borrow::Cow;
use std::path::Path;

use crate::bitmask::{self, Geometry};
use crate::container::{byte_len, AtomicWriter, Layout, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};
use crate::prune::{prune, Prune};
use crate::quant::{self, QuantSpec};

use super::background::{write_in_background, Batch};
use super::decode::in_file;
use super::parts::{BITMASK, COMPRESSED, ROW_OFFSETS, SHAPE};
use super::schedule::{for_each_job, for_each_tensor};
use super::source::TensorSource;

/// What to do with one input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Encoding {
    /// Copy it unchanged.
    Keep,
    /// sparse-bitmask, after optional magnitude pruning.
    Bitmask(Option<Prune>),
    /// Quantize it (`<module>.weight` becomes the format's parts), after optional pruning.
    Quant(QuantSpec, Option<Prune>),
    /// sparse-24-bitmask, of the weight or of its naive-quantized codes, after
    /// optional pruning.
    Sparse24(Option<QuantSpec>, Option<Prune>),
}

impl Encoding {
    fn prune(self) -> Option<Prune> {
        match self {
            Encoding::Keep => None,
            Encoding::Bitmask(p) | Encoding::Quant(_, p) | Encoding::Sparse24(_, p) => p,
        }
    }
}

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

    // Pass 1: validate and count.
    let counts: Vec<Option<Vec<usize>>> =
        for_each_tensor(&sizes, |i, split| count_tensor(src, i, encodings[i], split))?;
    src.end_pass();

    // Output layout.
    let mut out_specs = Vec::new();
    for ((spec, c), &enc) in specs.iter().zip(&counts).zip(encodings) {
        out_specs.extend(output_specs(path, spec, enc, c.as_deref())?);
    }
    let layout = Layout::new(out_specs, src.metadata()).map_err(|e| in_file(e, path))?;
    let writer = AtomicWriter::create(dst, layout)?;

    // Pass 2: encode tensors in parallel, straight into the mapped output when it can be
    // mapped safely, else into buffers that one thread writes out.
    let stats = match writer.map_output()? {
        Some(mut mapped) => {
            let (mut slots, releaser) = mapped.split();
            let jobs: Vec<(usize, Vec<&mut [u8]>)> = specs
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let parts = output_names(path, spec, encodings[i])?
                        .iter()
                        .map(|n| slots.remove(n).expect("every output is in the layout"))
                        .collect();
                    Ok((i, parts))
                })
                .collect::<Result<_>>()?;
            let stats = for_each_job(
                jobs,
                |(i, _)| sizes[*i],
                |(i, mut parts), split| {
                    let stat = fill_tensor(
                        src,
                        i,
                        encodings[i],
                        counts[i].as_deref(),
                        split,
                        &mut parts,
                    )?;
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
                let spec = &specs[i];
                let mut bufs: Vec<Vec<u8>> =
                    output_specs(path, spec, encodings[i], counts[i].as_deref())?
                        .iter()
                        .map(|o| {
                            vec![0u8; byte_len(o.dtype, &o.shape).expect("checked by the layout")]
                        })
                        .collect();
                let mut parts: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                let stat = fill_tensor(
                    src,
                    i,
                    encodings[i],
                    counts[i].as_deref(),
                    split,
                    &mut parts,
                )?;
                let names = output_names(path, spec, encodings[i])?;
                let bytes_in = stat.bytes_in as u64;
                queue.send(Batch {
                    parts: names
                        .into_iter()
                        .zip(bufs.into_iter().map(Cow::Owned))
                        .collect(),
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

/// Checks one input tensor and, for bitmask encoding, counts its non-zeros per row.
fn count_tensor(
    src: &dyn TensorSource,
    i: usize,
    encoding: Encoding,
    split: bool,
) -> Result<Option<Vec<usize>>> {
    let spec = &src.specs()[i];
    let path = src.path();
    let bytes = src.bytes(i)?;
    let expected = byte_len(spec.dtype, &spec.shape);
    let bytes = if expected == Some(bytes.len()) && matches!(encoding, Encoding::Bitmask(Some(_))) {
        drop(bytes);
        input_bytes(src, i, encoding)?
    } else {
        bytes
    };
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
    if encoding != Encoding::Keep && module_of(&spec.name).is_none() {
        return Err(CodecError::tensor(
            path,
            &spec.name,
            "only `<module>.weight` tensors can be compressed",
        ));
    }
    if !matches!(encoding, Encoding::Bitmask(_)) {
        if let Encoding::Quant(q, _) | Encoding::Sparse24(Some(q), _) = encoding {
            quant::output_parts(&q, spec.dtype, &spec.shape)
                .map_err(|e| CodecError::tensor(path, &spec.name, e))?;
        }
        if let Encoding::Sparse24(q, _) = encoding {
            sparse24_parts(&spec.dtype, &spec.shape, q.as_ref())
                .map_err(|e| CodecError::tensor(path, &spec.name, e))?;
        }
        // Release it all the same, or the used run from the file start stalls here.
        drop(bytes);
        src.release(i);
        return Ok(None);
    }
    let g = geometry(path, spec)?;
    let counts = bitmask::row_counts(&bytes, &g, split);
    drop(bytes);
    src.release(i);
    Ok(Some(counts))
}

fn geometry(path: &Path, spec: &TensorSpec) -> Result<Geometry> {
    Geometry::new(spec.dtype, &spec.shape).map_err(|e| CodecError::tensor(path, &spec.name, e))
}

/// As numpy's `packbits(axis=-1)` gives it: the leading dims, then bytes per row.
fn mask_shape(spec: &TensorSpec, g: &Geometry) -> Vec<usize> {
    let mut shape = spec.shape[..spec.shape.len() - 1].to_vec();
    shape.push(g.mask_row_bytes());
    shape
}

/// The output tensors one input tensor becomes: itself, its four bitmask parts, or
/// its quantized parts.
fn output_specs(
    path: &Path,
    spec: &TensorSpec,
    encoding: Encoding,
    counts: Option<&[usize]>,
) -> Result<Vec<TensorSpec>> {
    if let Encoding::Sparse24(q, _) = encoding {
        let module = module_of(&spec.name).expect("checked in pass 1");
        let parts = sparse24_parts(&spec.dtype, &spec.shape, q.as_ref())
            .map_err(|e| CodecError::tensor(path, &spec.name, e))?;
        return Ok(parts
            .into_iter()
            .map(|(n, d, sh)| TensorSpec::new(format!("{module}.{n}"), d, sh))
            .collect());
    }
    if let Encoding::Quant(q, _) = encoding {
        let module = module_of(&spec.name).expect("checked in pass 1");
        let parts = quant::output_parts(&q, spec.dtype, &spec.shape)
            .map_err(|e| CodecError::tensor(path, &spec.name, e))?;
        return Ok(parts
            .into_iter()
            .map(|p| TensorSpec::new(format!("{module}.{}", p.suffix), p.dtype, p.shape))
            .collect());
    }
    let Some(counts) = counts else {
        return Ok(vec![spec.clone()]);
    };
    let g = geometry(path, spec)?;
    let nnz: usize = counts.iter().sum();
    let lead = spec.shape[..spec.shape.len() - 1].to_vec();
    let [compressed, bitmask, shape, row_offsets] =
        output_names(path, spec, Encoding::Bitmask(None))?
            .try_into()
            .expect("four parts");
    Ok(vec![
        TensorSpec::new(compressed, spec.dtype, vec![nnz]),
        TensorSpec::new(bitmask, Dtype::U8, mask_shape(spec, &g)),
        TensorSpec::new(shape, Dtype::I64, vec![spec.shape.len()]),
        TensorSpec::new(row_offsets, Dtype::I64, lead),
    ])
}

/// Names of the outputs of one input tensor, in the order of [`output_specs`].
fn output_names(path: &Path, spec: &TensorSpec, encoding: Encoding) -> Result<Vec<String>> {
    let module = module_of(&spec.name);
    Ok(match (encoding, module) {
        (Encoding::Keep, _) | (_, None) => vec![spec.name.clone()],
        (Encoding::Bitmask(_), Some(m)) => [COMPRESSED, BITMASK, SHAPE, ROW_OFFSETS]
            .iter()
            .map(|p| format!("{m}.{p}"))
            .collect(),
        (Encoding::Sparse24(q, _), Some(m)) => sparse24_parts(&spec.dtype, &spec.shape, q.as_ref())
            .map_err(|e| CodecError::tensor(path, &spec.name, e))?
            .into_iter()
            .map(|(n, ..)| format!("{m}.{n}"))
            .collect(),
        (Encoding::Quant(q, _), Some(m)) => quant::output_parts(&q, spec.dtype, &spec.shape)
            .map_err(|e| CodecError::tensor(path, &spec.name, e))?
            .iter()
            .map(|p| format!("{m}.{}", p.suffix))
            .collect(),
    })
}

/// Writes tensor `i`'s outputs into `parts` (sized and ordered as [`output_specs`];
/// the bitmask part zeroed): the tensor itself, or its bitmask encoding.
fn fill_tensor(
    src: &dyn TensorSource,
    i: usize,
    encoding: Encoding,
    counts: Option<&[usize]>,
    split: bool,
    parts: &mut [&mut [u8]],
) -> Result<TensorStat> {
    let spec = &src.specs()[i];
    let bytes = input_bytes(src, i, encoding)?;
    let mut stat = TensorStat {
        name: spec.name.clone(),
        dtype: spec.dtype,
        shape: spec.shape.clone(),
        compressed: encoding != Encoding::Keep,
        nonzero: spec.shape.iter().product(),
        bytes_in: bytes.len(),
        bytes_out: bytes.len(),
        two_four: false,
    };
    if let Encoding::Sparse24(q, prune) = encoding {
        // Unpruned input must already be 2:4; pruned input is by construction.
        fill_sparse24(&bytes, spec, q.as_ref(), prune.is_none(), split, parts)
            .map_err(|e| CodecError::tensor(src.path(), &spec.name, e))?;
        stat.bytes_out = parts.iter().map(|p| p.len()).sum();
        stat.two_four = true;
        stat.nonzero /= 2;
        return Ok(stat);
    }
    if let Encoding::Quant(q, _) = encoding {
        quant::encode_into(&q, spec.dtype, &spec.shape, &bytes, split, parts)
            .map_err(|e| CodecError::tensor(src.path(), &spec.name, e))?;
        stat.bytes_out = parts.iter().map(|p| p.len()).sum();
        return Ok(stat);
    }
    match (counts, parts) {
        (None, [out]) => out.copy_from_slice(&bytes),
        (Some(counts), [values, mask, shape, row_offsets]) => {
            let g = geometry(src.path(), spec)?;
            bitmask::encode_into(&bytes, &g, counts, values, mask, split)
                .map_err(|e| CodecError::tensor(src.path(), &spec.name, e))?;
            let dims: Vec<u8> = spec
                .shape
                .iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect();
            shape.copy_from_slice(&dims);
            let lead = &spec.shape[..spec.shape.len() - 1];
            let offsets: Vec<u8> = bitmask::ct_row_offsets(counts, lead)
                .iter()
                .flat_map(|o| o.to_le_bytes())
                .collect();
            row_offsets.copy_from_slice(&offsets);
            stat.nonzero = counts.iter().sum();
            stat.two_four = bitmask::is_two_four(mask, &g);
            stat.bytes_out = values.len() + mask.len() + shape.len() + row_offsets.len();
        }
        _ => unreachable!("output parts do not match the tensor"),
    }
    Ok(stat)
}

/// (suffix, dtype, shape) of a 2:4 weight's outputs: `compressed`, `bitmask`, `shape`,
/// then the quantization parts (scale, zero point) when its codes are quantized.
fn sparse24_parts(
    dtype: &Dtype,
    shape: &[usize],
    quant: Option<&QuantSpec>,
) -> std::result::Result<Vec<(String, Dtype, Vec<usize>)>, String> {
    let (rows, cols) = crate::sparse24::check_shape(shape)?;
    let (values_dtype, extra) = match quant {
        None => (*dtype, Vec::new()),
        Some(q) => {
            if !q.args.symmetric {
                return Err(
                    "2:4 storage of quantized codes needs a symmetric scheme (a zero weight must be code 0)".into(),
                );
            }
            if q.format != crate::quant::QuantFormat::Naive {
                return Err(format!(
                    "2:4 storage stacks on int8/fp8 (naive) quantization, not {}",
                    q.format.name()
                ));
            }
            let parts = quant::output_parts(q, *dtype, shape)?;
            let codes = parts[0].dtype;
            (
                codes,
                parts[1..]
                    .iter()
                    .map(|p| (p.suffix.to_string(), p.dtype, p.shape.clone()))
                    .collect(),
            )
        }
    };
    let mut out = vec![
        (COMPRESSED.to_string(), values_dtype, vec![rows, cols / 2]),
        (BITMASK.to_string(), Dtype::U8, vec![rows, cols.div_ceil(8)]),
        (SHAPE.to_string(), Dtype::I64, vec![2, 1]),
    ];
    out.extend(extra);
    Ok(out)
}

/// Encodes a 2:4 weight (quantizing it first when asked) into its parts.
fn fill_sparse24(
    bytes: &[u8],
    spec: &TensorSpec,
    quant: Option<&QuantSpec>,
    strict: bool,
    split: bool,
    parts: &mut [&mut [u8]],
) -> std::result::Result<(), String> {
    let (head, extra) = parts.split_at_mut(3);
    let [values, mask, shape] = head else {
        unreachable!("three sparse parts")
    };
    let dims: Vec<u8> = spec
        .shape
        .iter()
        .flat_map(|&d| (d as i64).to_le_bytes())
        .collect();
    shape.copy_from_slice(&dims);
    match quant {
        None => crate::sparse24::encode(bytes, spec.dtype, &spec.shape, strict, values, mask),
        Some(q) => {
            let qparts = quant::output_parts(q, spec.dtype, &spec.shape)?;
            let mut codes = vec![0u8; byte_len(qparts[0].dtype, &qparts[0].shape).unwrap_or(0)];
            {
                let mut outs: Vec<&mut [u8]> = vec![&mut codes];
                outs.extend(extra.iter_mut().map(|p| &mut **p));
                quant::encode_into(q, spec.dtype, &spec.shape, bytes, split, &mut outs)?;
            }
            crate::sparse24::encode(&codes, qparts[0].dtype, &spec.shape, strict, values, mask)
        }
    }
}
