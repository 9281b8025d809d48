//! Quantizing a dense weight into its on-disk parts, exactly as compressed-tensors'
//! compressors do after its min/max observer and `calculate_qparams`.

use crate::dtype::Dtype;

use super::args::{QType, Strategy};
use super::floats::{self, e2m1_code, e4m3_from_f32, Compute};
use super::pack::{pack_codes, pack_nibbles, packed_row_bytes, packed_words};
use super::params::{calculate_qparams, global_scale, qparams_into, MinMax, QParams, ScaleKind};
use super::row_split::map_rows;
use super::simd_loops::{
    has_avx2, load_row, min_max, quantize_fp8, quantize_int, Bf16, Dt, F16, F32,
};
use super::{QuantFormat, QuantSpec};

/// What one stored tensor of a quantized weight holds (its format names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The codes: packed int32 words, fp4 nibbles, or one int8/fp8 per weight.
    Codes,
    Scale,
    /// The dense shape (int64), where codes are packed.
    Shape,
    ZeroPoint,
    /// NVFP4's tensor-wide fp32 scale.
    GlobalScale,
    /// marlin-24's 2:4 indices.
    Meta,
}

/// One stored tensor of a quantized weight, unnamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub role: Role,
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
            "{} weights are 2-D ([out, in]){}, not of shape {shape:?}",
            spec.format.name(),
            if shape.len() == 3 {
                ""
            } else {
                " or 3-D for pack/naive formats"
            }
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

/// The stored parts of a weight of `dtype`/`shape`, in the order [`encode_into`] fills them.
pub fn output_parts(spec: &QuantSpec, dtype: Dtype, shape: &[usize]) -> Result<Vec<Part>, String> {
    spec.validate()?;
    let compute = Compute::of(dtype)
        .ok_or_else(|| format!("cannot quantize {dtype} weights (bf16, f16 or f32 only)"))?;
    let v = view(spec, shape)?;
    let a = &spec.args;
    let lead = &shape[..shape.len() - 1];
    let sshape = scale_shape(spec, shape, &v);
    let part = |role, dtype, shape| Part { role, dtype, shape };
    let mut parts = Vec::new();
    match spec.format {
        QuantFormat::Pack { legacy } => {
            let words = packed_words(v.cols, a.num_bits, legacy);
            parts.push(part(
                Role::Codes,
                Dtype::I32,
                lead.iter().copied().chain([words]).collect(),
            ));
            parts.push(part(Role::Scale, compute.dtype(), sshape.clone()));
            parts.push(part(Role::Shape, Dtype::I64, vec![shape.len()]));
            if !a.symmetric {
                if packs_zero_points(spec) {
                    let zshape = shape[..shape.len() - 2]
                        .iter()
                        .copied()
                        .chain([packed_words(v.out, a.num_bits, legacy), v.grid_cols])
                        .collect();
                    parts.push(part(Role::ZeroPoint, Dtype::I32, zshape));
                } else {
                    parts.push(part(Role::ZeroPoint, Dtype::I8, sshape));
                }
            }
        }
        QuantFormat::Naive => {
            let wdt = if a.qtype == QType::Float {
                Dtype::F8E4M3
            } else {
                Dtype::I8
            };
            parts.push(part(Role::Codes, wdt, shape.to_vec()));
            parts.push(part(Role::Scale, compute.dtype(), sshape.clone()));
            if !a.symmetric {
                parts.push(part(Role::ZeroPoint, Dtype::I8, sshape));
            }
        }
        QuantFormat::Nvfp4 => {
            parts.push(part(Role::Codes, Dtype::U8, vec![v.rows, v.cols / 2]));
            parts.push(part(Role::Scale, Dtype::F8E4M3, sshape));
            parts.push(part(Role::GlobalScale, Dtype::F32, vec![1]));
        }
        QuantFormat::Mxfp4 => {
            parts.push(part(Role::Codes, Dtype::U8, vec![v.rows, v.cols / 2]));
            parts.push(part(Role::Scale, Dtype::U8, sshape));
        }
        QuantFormat::Marlin24 => {
            let (n, k) = super::marlin24::dims(shape)?;
            let groups = super::marlin24::scale_groups(a, k);
            let per_word = (32 / a.num_bits) as usize;
            parts.push(part(
                Role::Codes,
                Dtype::I32,
                vec![k / 32, n * 16 / per_word],
            ));
            parts.push(part(Role::Scale, Dtype::F16, vec![groups, n]));
            parts.push(part(Role::Meta, Dtype::I16, vec![k / 32, 2 * n]));
        }
    }
    Ok(parts)
}

/// The largest |x| of a weight (NaN if any element is NaN).
pub fn abs_max(input: &[u8], compute: Compute, cols: usize, split: bool) -> f32 {
    with_dt!(compute, D => abs_max_typed::<D>(input, cols, split))
}

fn abs_max_typed<D: Dt>(input: &[u8], cols: usize, split: bool) -> f32 {
    let row_bytes = cols * D::BYTES;
    let rows = input.len() / row_bytes.max(1);
    let per_row = map_rows(split, rows, |r| {
        let mut xs = vec![0f32; cols];
        load_row::<D>(&input[r * row_bytes..(r + 1) * row_bytes], &mut xs);
        let (lo, hi) = min_max(&xs);
        nan_max(lo.abs(), hi.abs())
    });
    per_row.into_iter().fold(0f32, nan_max)
}

fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// Dispatches on the weight dtype to a monomorphized (vectorizable) copy of the code.
macro_rules! with_dt {
    ($compute:expr, $d:ident => $body:expr) => {
        match $compute {
            Compute::BF16 => {
                type $d = Bf16;
                $body
            }
            Compute::F16 => {
                type $d = F16;
                $body
            }
            Compute::F32 => {
                type $d = F32;
                $body
            }
        }
    };
}
pub(crate) use with_dt;

/// Scales and zero points of strategies whose cells span rows (tensor, block), from
/// whole-tensor statistics.
fn spanning_qparams<D: Dt>(e: &Enc, split: bool) -> QParams {
    let a = &e.spec.args;
    let v = &e.v;
    let (band, cells) = match a.strategy {
        Strategy::Block(h, _) => (h, v.grid_cols),
        _ => (v.rows.max(1).div_ceil(64).max(1), 1),
    };
    let bands = v.rows.div_ceil(band);
    let stats: Vec<MinMax> = map_rows(split, bands, |b| {
        let mut xs = vec![0f32; v.cols];
        let mut mm = MinMax::new(cells);
        for r in b * band..((b + 1) * band).min(v.rows) {
            load_row::<D>(&e.input[r * e.row_in..(r + 1) * e.row_in], &mut xs);
            for (k, chunk) in xs.chunks(e.run).enumerate() {
                let (lo, hi) = min_max(chunk);
                let cell = if cells == 1 { 0 } else { k };
                mm.add(cell, lo);
                mm.add(cell, hi);
            }
        }
        mm
    });
    let total = match a.strategy {
        Strategy::Block(..) => MinMax {
            min: stats.iter().flat_map(|m| m.min.iter().copied()).collect(),
            max: stats.iter().flat_map(|m| m.max.iter().copied()).collect(),
        },
        _ => {
            let mut t = MinMax::new(1);
            stats.iter().for_each(|m| t.merge(m));
            t
        }
    };
    calculate_qparams(&total, a, e.compute, e.global, e.kind)
}

/// What every row of one weight's encoding shares.
struct Enc<'a> {
    spec: &'a QuantSpec,
    v: View,
    input: &'a [u8],
    row_in: usize,
    out_row: usize,
    run: usize,
    q_min: f32,
    q_max: f32,
    offset: f32,
    global: Option<f32>,
    compute: Compute,
    kind: ScaleKind,
}

/// Encodes the rows from `r0` into `out`; per-row strategies also fill `scales` and
/// `zeros` for those rows, others read the whole-tensor `fixed` parameters.
#[inline(always)]
fn encode_chunk<D: Dt>(
    e: &Enc,
    r0: usize,
    out: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [f32],
    fixed: Option<&QParams>,
) {
    let a = &e.spec.args;
    let gc = e.v.grid_cols;
    let mut xs = vec![0f32; e.v.cols];
    let mut codes = vec![0u8; e.v.cols];
    let mut mm = MinMax::new(gc);
    for (i, orow) in out.chunks_exact_mut(e.out_row).enumerate() {
        let r = r0 + i;
        load_row::<D>(&e.input[r * e.row_in..(r + 1) * e.row_in], &mut xs);
        if fixed.is_none() {
            for (g, chunk) in xs.chunks(e.run).enumerate() {
                let (lo, hi) = min_max(chunk);
                mm.min[g] = lo;
                mm.max[g] = hi;
            }
            let cells = i * gc..(i + 1) * gc;
            qparams_into(
                &mm.min,
                &mm.max,
                a,
                e.compute,
                e.global,
                e.kind,
                &mut scales[cells.clone()],
                &mut zeros[cells],
            );
        }
        for (k, (x, c)) in xs.chunks(e.run).zip(codes.chunks_mut(e.run)).enumerate() {
            let (s, z) = match fixed {
                Some(qp) => {
                    let cell = a.cell(r, k * e.run, gc);
                    (qp.scales[cell], qp.zeros[cell])
                }
                None => (scales[i * gc + k], zeros[i * gc + k]),
            };
            match (e.spec.format, a.qtype) {
                (QuantFormat::Nvfp4, _) => {
                    let s = s / e.global.expect("nvfp4 has a global scale");
                    for (o, &x) in c.iter_mut().zip(x) {
                        *o = e2m1_code((x / s).clamp(e.q_min, e.q_max));
                    }
                }
                (QuantFormat::Mxfp4, _) => {
                    // x / scale in the weight's dtype (no fp32 global scale here).
                    for (o, &x) in c.iter_mut().zip(x) {
                        *o = e2m1_code(D::round(x / s).clamp(e.q_min, e.q_max));
                    }
                }
                (_, QType::Float) => quantize_fp8::<D>(x, s, z, c),
                (_, QType::Int) => {
                    quantize_int::<D>(x, s, z, a.symmetric, e.q_min, e.q_max, e.offset, c)
                }
            }
        }
        match e.spec.format {
            QuantFormat::Pack { legacy } => pack_codes(&codes, a.num_bits, legacy, orow),
            QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => pack_nibbles(&codes, orow),
            _ => orow.copy_from_slice(&codes),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn encode_chunk_avx2<D: Dt>(
    e: &Enc,
    r0: usize,
    out: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [f32],
    fixed: Option<&QParams>,
) {
    encode_chunk::<D>(e, r0, out, scales, zeros, fixed)
}

/// Runs [`encode_chunk`] over chunks of rows, in parallel when `split`; returns every
/// cell's parameters.
fn encode_rows<D: Dt>(e: &Enc, out: &mut [u8], split: bool) -> QParams {
    let per_row = matches!(
        e.spec.args.strategy,
        Strategy::Channel | Strategy::Group(_) | Strategy::TensorGroup(_)
    );
    let fixed = (!per_row).then(|| spanning_qparams::<D>(e, split));
    let gc = e.v.grid_cols;
    let rows_per_chunk = (256 * 1024 / e.out_row.max(1)).max(1);
    let chunk_bytes = rows_per_chunk * e.out_row;
    // Per-row strategies fill their rows' cells; fixed parameters get one unused cell
    // per chunk, so both walk the same zipped chunks.
    let (cells, cell_chunk) = if per_row {
        (e.v.rows * gc, (rows_per_chunk * gc).max(1))
    } else {
        (out.len().div_ceil(chunk_bytes.max(1)), 1)
    };
    let mut scales = vec![0f32; cells];
    let mut zeros = vec![0f32; cells];
    let avx2 = has_avx2();
    let fixed_ref = fixed.as_ref();
    type Chunk<'c> = (usize, ((&'c mut [u8], &'c mut [f32]), &'c mut [f32]));
    let job = |(n, ((o, s), z)): Chunk| {
        let r0 = n * rows_per_chunk;
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU supports AVX2 (checked at run time just above).
            unsafe { encode_chunk_avx2::<D>(e, r0, o, s, z, fixed_ref) };
            return;
        }
        let _ = avx2;
        encode_chunk::<D>(e, r0, o, s, z, fixed_ref);
    };
    if split && crate::parallel::enabled() {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk_bytes.max(1))
            .zip(scales.par_chunks_mut(cell_chunk))
            .zip(zeros.par_chunks_mut(cell_chunk))
            .enumerate()
            .for_each(job);
    } else {
        out.chunks_mut(chunk_bytes.max(1))
            .zip(scales.chunks_mut(cell_chunk))
            .zip(zeros.chunks_mut(cell_chunk))
            .enumerate()
            .for_each(job);
    }
    fixed.unwrap_or(QParams { scales, zeros })
}

/// Quantizes `input` (a weight of `dtype`/`shape`) into `outs`, sized and ordered as
/// [`output_parts`].
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
    if spec.format == QuantFormat::Marlin24 {
        return super::marlin24::encode_weight(&spec.args, dtype, shape, input, outs);
    }
    let global = match spec.format {
        QuantFormat::Nvfp4 => Some(
            spec.global_scale
                .unwrap_or_else(|| global_scale(abs_max(input, compute, v.cols, split), compute)),
        ),
        _ => None,
    };
    let a = spec.args;
    let (q_min, q_max) = a.range();
    // Packed codes are unsigned (+2^(bits-1)); naive int8 codes are stored signed.
    let offset = match (spec.format, a.qtype) {
        (QuantFormat::Pack { .. }, QType::Int) => (1i32 << (a.num_bits - 1)) as f32,
        _ => 0.0,
    };
    let (first, rest) = outs.split_first_mut().expect("a weight part");
    let e = Enc {
        spec,
        v,
        input,
        row_in: v.cols * dtype.bits() / 8,
        out_row: first.len() / v.rows.max(1),
        run: a.run_len(v.cols),
        q_min,
        q_max,
        offset,
        global,
        compute,
        kind: match spec.format {
            QuantFormat::Nvfp4 => ScaleKind::Fp8,
            QuantFormat::Mxfp4 => ScaleKind::E8m0,
            _ => ScaleKind::Weight,
        },
    };
    let qp = with_dt!(compute, D => encode_rows::<D>(&e, first, split));

    // Scales, then whatever else the format stores.
    let (scale_out, rest) = rest.split_first_mut().expect("a scale part");
    match spec.format {
        QuantFormat::Mxfp4 => {
            // 127 + log2(scale): the f32 exponent field of a power of two.
            for (o, &s) in scale_out.iter_mut().zip(&qp.scales) {
                *o = ((s.to_bits() >> 23) & 0xff) as u8;
            }
        }
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
