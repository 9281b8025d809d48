//! Quantizing a dense weight into its on-disk parts, exactly as compressed-tensors'
//! compressors do after its min/max observer and `calculate_qparams`.

use crate::dtype::Dtype;

use super::args::{QType, Strategy};
use super::floats::{self, bf16_round, e2m1_code, e4m3_from_f32, Compute};
use super::pack::{pack_codes, pack_nibbles, packed_row_bytes, packed_words};
use super::params::{calculate_qparams, global_scale, MinMax, QParams, ScaleKind};
use super::rows::{each_row_chunk, map_rows};
use super::{QuantFormat, QuantSpec};

/// One on-disk tensor of a quantized weight: `<module>.<suffix>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub suffix: &'static str,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// Rows (leading dims folded) and columns of a weight, with its slice structure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub rows: usize,
    pub cols: usize,
    /// Rows per slice: the output dim (3-D MoE weights hold several slices).
    pub out: usize,
    pub grid_rows: usize,
    pub grid_cols: usize,
}

pub(crate) fn view(spec: &QuantSpec, shape: &[usize]) -> Result<View, String> {
    let rank_ok = match (spec.format, spec.args.strategy) {
        (_, Strategy::Block(..)) | (QuantFormat::Nvfp4 | QuantFormat::Mxfp4, _) => shape.len() == 2,
        _ => shape.len() == 2 || shape.len() == 3,
    };
    if !rank_ok {
        return Err(format!(
            "cannot quantize a weight of shape {shape:?} as {}",
            spec.format.name()
        ));
    }
    let cols = shape[shape.len() - 1];
    let out = shape[shape.len() - 2];
    let rows: usize = shape[..shape.len() - 1].iter().product();
    if let Strategy::Group(g) | Strategy::TensorGroup(g) = spec.args.strategy {
        if cols % g != 0 {
            return Err(format!(
                "{cols} columns are not a multiple of the group size {g} (compressed-tensors refuses such weights)"
            ));
        }
    }
    if matches!(spec.format, QuantFormat::Nvfp4 | QuantFormat::Mxfp4) && cols % 2 != 0 {
        return Err(format!(
            "fp4 packing needs an even number of columns, not {cols}"
        ));
    }
    let (grid_rows, grid_cols) = spec.args.grid(rows, cols);
    Ok(View {
        rows,
        cols,
        out,
        grid_rows,
        grid_cols,
    })
}

/// The scale (and zero point) shape: leading dims kept, the last replaced by the groups.
fn scale_shape(spec: &QuantSpec, shape: &[usize], v: &View) -> Vec<usize> {
    let lead = &shape[..shape.len() - 1];
    match spec.args.strategy {
        Strategy::Tensor => vec![1],
        Strategy::Block(..) => vec![v.grid_rows, v.grid_cols],
        _ => lead.iter().copied().chain([v.grid_cols]).collect(),
    }
}

/// Whether zero points are packed into int32 along the output dim.
fn packs_zero_points(spec: &QuantSpec) -> bool {
    matches!(spec.format, QuantFormat::Pack { .. })
        && !spec.args.symmetric
        && matches!(spec.args.strategy, Strategy::Group(_) | Strategy::Channel)
}

/// The on-disk parts of a weight of `dtype`/`shape`, in the order [`encode_into`] fills them.
pub fn output_parts(spec: &QuantSpec, dtype: Dtype, shape: &[usize]) -> Result<Vec<Part>, String> {
    spec.validate()?;
    let compute = Compute::of(dtype)
        .ok_or_else(|| format!("cannot quantize {dtype} weights (bf16, f16 or f32 only)"))?;
    let v = view(spec, shape)?;
    let a = &spec.args;
    let lead = &shape[..shape.len() - 1];
    let sshape = scale_shape(spec, shape, &v);
    let part = |suffix, dtype, shape| Part {
        suffix,
        dtype,
        shape,
    };
    let mut parts = Vec::new();
    match spec.format {
        QuantFormat::Pack { legacy } => {
            let words = packed_words(v.cols, a.num_bits, legacy);
            parts.push(part(
                "weight_packed",
                Dtype::I32,
                lead.iter().copied().chain([words]).collect(),
            ));
            parts.push(part("weight_scale", compute.dtype(), sshape.clone()));
            parts.push(part("weight_shape", Dtype::I64, vec![shape.len()]));
            if !a.symmetric {
                if packs_zero_points(spec) {
                    let zshape = shape[..shape.len() - 2]
                        .iter()
                        .copied()
                        .chain([packed_words(v.out, a.num_bits, legacy), v.grid_cols])
                        .collect();
                    parts.push(part("weight_zero_point", Dtype::I32, zshape));
                } else {
                    parts.push(part("weight_zero_point", Dtype::I8, sshape));
                }
            }
        }
        QuantFormat::Naive => {
            let wdt = if a.qtype == QType::Float {
                Dtype::F8E4M3
            } else {
                Dtype::I8
            };
            parts.push(part("weight", wdt, shape.to_vec()));
            parts.push(part("weight_scale", compute.dtype(), sshape.clone()));
            if !a.symmetric {
                parts.push(part("weight_zero_point", Dtype::I8, sshape));
            }
        }
        QuantFormat::Nvfp4 => {
            parts.push(part("weight_packed", Dtype::U8, vec![v.rows, v.cols / 2]));
            parts.push(part("weight_scale", Dtype::F8E4M3, sshape));
            parts.push(part("weight_global_scale", Dtype::F32, vec![1]));
        }
        QuantFormat::Mxfp4 => return Err("mxfp4 encoding is not supported (decoding is)".into()),
    }
    Ok(parts)
}

/// The largest |x| of a weight (NaN if any element is NaN).
pub fn abs_max(input: &[u8], compute: Compute, cols: usize, split: bool) -> f32 {
    let rows = input.len() / (cols.max(1) * compute.dtype().bits() / 8).max(1);
    let row_bytes = cols * compute.dtype().bits() / 8;
    map_rows(split, rows, |r| {
        let mut xs = vec![0f32; cols];
        floats::load_row(compute, &input[r * row_bytes..(r + 1) * row_bytes], &mut xs);
        xs.iter().fold(0f32, |m, &x| {
            if x.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(x.abs())
            }
        })
    })
    .into_iter()
    .fold(0f32, |m, x| {
        if x.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(x)
        }
    })
}

/// Scales and zero points for every cell: row by row for per-row strategies, from
/// whole-tensor statistics otherwise.
fn qparams(
    spec: &QuantSpec,
    compute: Compute,
    input: &[u8],
    v: &View,
    split: bool,
    global: Option<f32>,
) -> QParams {
    let a = &spec.args;
    let kind = if spec.format == QuantFormat::Nvfp4 {
        ScaleKind::Fp8
    } else {
        ScaleKind::Weight
    };
    let row_bytes = v.cols * compute.dtype().bits() / 8;
    let run = a.run_len(v.cols);
    let per_row = matches!(
        a.strategy,
        Strategy::Channel | Strategy::Group(_) | Strategy::TensorGroup(_)
    );
    if per_row {
        let rows: Vec<QParams> = map_rows(split, v.rows, |r| {
            let mut xs = vec![0f32; v.cols];
            floats::load_row(compute, &input[r * row_bytes..(r + 1) * row_bytes], &mut xs);
            let cells = v.grid_cols;
            let mut mm = MinMax::new(cells);
            for (g, chunk) in xs.chunks(run).enumerate() {
                mm.add_run(g, chunk);
            }
            calculate_qparams(&mm, a, compute, global, kind)
        });
        let mut all = QParams {
            scales: Vec::with_capacity(v.rows * v.grid_cols),
            zeros: Vec::new(),
        };
        for p in rows {
            all.scales.extend(p.scales);
            all.zeros.extend(p.zeros);
        }
        return all;
    }
    let cells = v.grid_rows * v.grid_cols;
    let partial: Vec<MinMax> = map_rows(split, v.rows, |r| {
        let mut xs = vec![0f32; v.cols];
        floats::load_row(compute, &input[r * row_bytes..(r + 1) * row_bytes], &mut xs);
        let mut mm = MinMax::new(cells);
        for (k, chunk) in xs.chunks(run).enumerate() {
            mm.add_run(a.cell(r, k * run, v.grid_cols), chunk);
        }
        mm
    });
    let mut total = MinMax::new(cells);
    partial.iter().for_each(|m| total.merge(m));
    calculate_qparams(&total, a, compute, global, kind)
}

/// Quantizes `input` (a weight of `dtype`/`shape`) into `outs`, sized and ordered as
/// [`output_parts`]. Returns the scales it used, for callers that report statistics.
pub fn encode_into(
    spec: &QuantSpec,
    dtype: Dtype,
    shape: &[usize],
    input: &[u8],
    split: bool,
    outs: &mut [&mut [u8]],
) -> Result<(), String> {
    let parts = output_parts(spec, dtype, shape)?;
    let compute = Compute::of(dtype).expect("checked by output_parts");
    let v = view(spec, shape)?;
    if input.len() != v.rows * v.cols * dtype.bits() / 8 {
        return Err(format!(
            "holds {} bytes, not a {dtype} {shape:?} tensor",
            input.len()
        ));
    }
    if outs.len() != parts.len() {
        return Err("output parts do not match the format".into());
    }
    let global = match spec.format {
        QuantFormat::Nvfp4 => Some(
            spec.global_scale
                .unwrap_or_else(|| global_scale(abs_max(input, compute, v.cols, split), compute)),
        ),
        _ => None,
    };
    let qp = qparams(spec, compute, input, &v, split, global);
    let a = spec.args;
    let row_in = v.cols * dtype.bits() / 8;
    let run = a.run_len(v.cols);
    let (q_min, q_max) = a.range();
    // Packed codes are unsigned (+2^(bits-1)); naive int8 codes are stored signed.
    let offset = match (spec.format, a.qtype) {
        (QuantFormat::Pack { .. }, QType::Int) => (1i32 << (a.num_bits - 1)) as f32,
        _ => 0.0,
    };

    // Codes of one row, for the packing that follows.
    let row_codes = |r: usize, xs: &mut [f32], codes: &mut [u8]| {
        floats::load_row(compute, &input[r * row_in..(r + 1) * row_in], xs);
        for (k, (x, c)) in xs.chunks(run).zip(codes.chunks_mut(run)).enumerate() {
            let cell = a.cell(r, k * run, v.grid_cols);
            let s = qp.scales[cell];
            let z = qp.zeros[cell];
            match (spec.format, a.qtype) {
                (QuantFormat::Nvfp4, _) => {
                    let s = s / global.expect("nvfp4 has a global scale");
                    for (o, &x) in c.iter_mut().zip(x) {
                        *o = e2m1_code((x / s).clamp(q_min, q_max));
                    }
                }
                (_, QType::Float) => match compute {
                    Compute::BF16 => fp8_run(x, s, z, c, bf16_round),
                    Compute::F16 => fp8_run(x, s, z, c, |y| compute.round(y)),
                    Compute::F32 => fp8_run(x, s, z, c, |y| y),
                },
                (_, QType::Int) => {
                    let sym = a.symmetric;
                    match compute {
                        Compute::BF16 => int_run(x, s, z, sym, q_min, q_max, offset, c, bf16_round),
                        Compute::F16 => {
                            int_run(x, s, z, sym, q_min, q_max, offset, c, |y| compute.round(y))
                        }
                        Compute::F32 => int_run(x, s, z, sym, q_min, q_max, offset, c, |y| y),
                    }
                }
            }
        }
    };

    let (first, rest) = outs.split_first_mut().expect("a weight part");
    let out_row = first.len() / v.rows.max(1);
    each_row_chunk(split, first, out_row, |r0, chunk| {
        let mut xs = vec![0f32; v.cols];
        let mut codes = vec![0u8; v.cols];
        for (i, out) in chunk.chunks_exact_mut(out_row).enumerate() {
            row_codes(r0 + i, &mut xs, &mut codes);
            match spec.format {
                QuantFormat::Pack { legacy } => pack_codes(&codes, a.num_bits, legacy, out),
                QuantFormat::Nvfp4 => pack_nibbles(&codes, out),
                _ => out.copy_from_slice(&codes),
            }
        }
    });

    // Scales, then whatever else the format stores.
    let (scale_out, rest) = rest.split_first_mut().expect("a scale part");
    match spec.format {
        QuantFormat::Nvfp4 => {
            for (o, &s) in scale_out.iter_mut().zip(&qp.scales) {
                *o = e4m3_from_f32(s);
            }
            rest[0].copy_from_slice(&global.expect("nvfp4").to_le_bytes());
        }
        QuantFormat::Pack { legacy } => {
            floats::store_row(compute, &qp.scales, scale_out);
            let (shape_out, rest) = rest.split_first_mut().expect("a shape part");
            let dims: Vec<u8> = shape
                .iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect();
            shape_out.copy_from_slice(&dims);
            if let Some(zero_out) = rest.first_mut() {
                if packs_zero_points(spec) {
                    pack_zero_points(&qp.zeros, &v, a.num_bits, legacy, offset, zero_out);
                } else {
                    write_i8(&qp.zeros, zero_out);
                }
            }
        }
        _ => {
            floats::store_row(compute, &qp.scales, scale_out);
            if let Some(zero_out) = rest.first_mut() {
                write_i8(&qp.zeros, zero_out);
            }
        }
    }
    Ok(())
}

fn write_i8(zeros: &[f32], out: &mut [u8]) {
    for (o, &z) in out.iter_mut().zip(zeros) {
        *o = z as i8 as u8;
    }
}

/// Zero points packed like weights but along the output dim, per slice:
/// `[slices, words(out), groups]`.
fn pack_zero_points(zeros: &[f32], v: &View, bits: u32, legacy: bool, offset: f32, out: &mut [u8]) {
    let words = packed_words(v.out, bits, legacy);
    let slices = v.rows / v.out.max(1);
    let mut column = vec![0u8; v.out];
    let mut packed = vec![0u8; packed_row_bytes(v.out, bits, legacy)];
    for e in 0..slices {
        for g in 0..v.grid_cols {
            for (o, c) in column.iter_mut().enumerate() {
                *c = (zeros[(e * v.out + o) * v.grid_cols + g] + offset) as u8;
            }
            pack_codes(&column, bits, legacy, &mut packed);
            for w in 0..words {
                let at = 4 * ((e * words + w) * v.grid_cols + g);
                out[at..at + 4].copy_from_slice(&packed[4 * w..4 * w + 4]);
            }
        }
    }
}

/// `round(clamp(x / s (+ z)))` with each op rounded to the weight's dtype, plus the
/// packing offset.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn int_run(
    xs: &[f32],
    s: f32,
    z: f32,
    sym: bool,
    lo: f32,
    hi: f32,
    offset: f32,
    out: &mut [u8],
    r: impl Fn(f32) -> f32,
) {
    if sym {
        for (o, &x) in out.iter_mut().zip(xs) {
            let q = r(x / s).clamp(lo, hi).round_ties_even();
            *o = (q + offset) as i32 as u8;
        }
    } else {
        for (o, &x) in out.iter_mut().zip(xs) {
            let q = r(r(x / s) + z).clamp(lo, hi).round_ties_even();
            *o = (q + offset) as i32 as u8;
        }
    }
}

/// The zero point is added even when it is 0 (compressed-tensors passes the module's
/// zero point through), which turns -0.0 into +0.0.
#[inline(always)]
fn fp8_run(xs: &[f32], s: f32, z: f32, out: &mut [u8], r: impl Fn(f32) -> f32) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = e4m3_from_f32(r(r(x / s) + z).clamp(-floats::E4M3_MAX, floats::E4M3_MAX));
    }
}
