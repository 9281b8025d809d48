//! Dequantizing a stored weight back to dense, in the dtype and with the roundings of
//! compressed-tensors' `dequantize`: `(q - zero) * scale` in the scale's dtype (fp4
//! formats: bf16 out, NVFP4 through an fp32 scale divided by the global scale).

use crate::dtype::Dtype;

use super::args::{QType, Strategy};
use super::encode::with_dt;
use super::encode::{view, View};
use super::floats::{self, e2m1_value, e4m3_to_f32, e8m0_to_f32, Compute};
use super::pack::{packed_words, unpack_codes, unpack_nibbles};
use super::row_split::each_row_chunk;
use super::simd_loops::{dequantize_nibbles, dequantize_run, has_avx2, Bf16, Codes, Dt, F16, F32};
use super::{QuantFormat, QuantSpec};

/// The stored parts of one weight, as raw little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct DecodeInput<'a> {
    /// `weight_packed` (or `weight` for naive formats).
    pub weight: &'a [u8],
    pub scale: &'a [u8],
    pub scale_dtype: Dtype,
    pub zero_point: Option<(&'a [u8], Dtype)>,
    /// `weight_g_idx`: the group of each column (activation order), int32.
    pub g_idx: Option<&'a [u8]>,
    pub global_scale: Option<f32>,
    /// marlin-24's index tensor.
    pub meta: Option<&'a [u8]>,
}

/// The dense dtype a weight decodes to.
pub fn output_dtype(spec: &QuantSpec, scale_dtype: Dtype) -> Result<Dtype, String> {
    match spec.format {
        QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => Ok(Dtype::Bf16),
        QuantFormat::Marlin24 => Ok(Dtype::F16),
        _ => Compute::of(scale_dtype)
            .map(Compute::dtype)
            .ok_or_else(|| format!("scale dtype {scale_dtype} is not bf16, f16 or f32")),
    }
}

/// Expected byte sizes of the parts, checked before decoding.
fn check_sizes(
    spec: &QuantSpec,
    shape: &[usize],
    v: &View,
    input: &DecodeInput,
) -> Result<(), String> {
    let a = &spec.args;
    let weight_bytes = match spec.format {
        QuantFormat::Marlin24 => unreachable!("decoded on its own path"),
        QuantFormat::Pack { legacy } => v.rows * 4 * packed_words(v.cols, a.num_bits, legacy),
        QuantFormat::Naive => v.rows * v.cols,
        QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => v.rows * v.cols / 2,
    };
    if input.weight.len() != weight_bytes {
        return Err(format!(
            "packed weight holds {} bytes; {} {a} weights of shape {shape:?} need {weight_bytes}",
            input.weight.len(),
            spec.format.name()
        ));
    }
    let cells = v.grid_rows * v.grid_cols;
    let scale_bytes = cells * input.scale_dtype.bits() / 8;
    if input.scale.len() != scale_bytes {
        return Err(format!(
            "scale holds {} bytes; {a} on shape {shape:?} needs {cells} {} values",
            input.scale.len(),
            input.scale_dtype
        ));
    }
    if let Some(g_idx) = input.g_idx {
        if !matches!(a.strategy, Strategy::Group(_) | Strategy::TensorGroup(_)) {
            return Err(format!("g_idx only goes with group strategies, not {a}"));
        }
        if g_idx.len() != 4 * v.cols {
            return Err(format!(
                "g_idx holds {} bytes, needs {} int32 values",
                g_idx.len(),
                v.cols
            ));
        }
        let bad = g_idx
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4")))
            .find(|&g| g < 0 || g as usize >= v.grid_cols);
        if let Some(g) = bad {
            return Err(format!("g_idx names group {g}, outside 0..{}", v.grid_cols));
        }
    }
    Ok(())
}

/// Zero points of every cell, unpacked (all zero when symmetric).
fn zero_points(spec: &QuantSpec, v: &View, input: &DecodeInput) -> Result<Vec<f32>, String> {
    let a = &spec.args;
    let cells = v.grid_rows * v.grid_cols;
    let Some((bytes, dtype)) = input.zero_point else {
        if !a.symmetric {
            return Err("asymmetric weights need a weight_zero_point".into());
        }
        return Ok(vec![0.0; cells]);
    };
    if a.symmetric {
        return Err("symmetric weights must not carry a weight_zero_point".into());
    }
    match (spec.format, dtype) {
        (QuantFormat::Pack { legacy }, Dtype::I32)
            if matches!(a.strategy, Strategy::Group(_) | Strategy::Channel) =>
        {
            let words = packed_words(v.out, a.num_bits, legacy);
            let slices = v.rows / v.out.max(1);
            if bytes.len() != 4 * slices * words * v.grid_cols {
                return Err(format!(
                    "packed zero point holds {} bytes, needs {} int32 words",
                    bytes.len(),
                    slices * words * v.grid_cols
                ));
            }
            let offset = (1i32 << (a.num_bits - 1)) as f32;
            let mut zeros = vec![0f32; cells];
            let mut column_words = vec![0u8; 4 * words];
            let mut codes = vec![0u8; v.out];
            for e in 0..slices {
                for g in 0..v.grid_cols {
                    for w in 0..words {
                        let at = 4 * ((e * words + w) * v.grid_cols + g);
                        column_words[4 * w..4 * w + 4].copy_from_slice(&bytes[at..at + 4]);
                    }
                    unpack_codes(&column_words, a.num_bits, legacy, &mut codes);
                    for (o, &c) in codes.iter().enumerate() {
                        zeros[(e * v.out + o) * v.grid_cols + g] = c as f32 - offset;
                    }
                }
            }
            Ok(zeros)
        }
        (_, Dtype::I8) if bytes.len() == cells => {
            Ok(bytes.iter().map(|&b| b as i8 as f32).collect())
        }
        (_, d) => Err(format!(
            "zero point of {} {d} bytes does not fit {} cells",
            bytes.len(),
            cells
        )),
    }
}

fn scales(input: &DecodeInput, spec: &QuantSpec) -> Result<Vec<f32>, String> {
    let n = input.scale.len() / (input.scale_dtype.bits() / 8).max(1);
    let mut out = vec![0f32; n];
    match (spec.format, input.scale_dtype) {
        (QuantFormat::Nvfp4, Dtype::F8E4M3) => {
            let g = input
                .global_scale
                .ok_or("nvfp4 weights need a weight_global_scale")?;
            // fp8 -> bf16 is exact; dividing by the fp32 global scale gives an fp32 scale.
            for (o, &b) in out.iter_mut().zip(input.scale) {
                *o = e4m3_to_f32(b) / g;
            }
        }
        (QuantFormat::Mxfp4, Dtype::U8) => {
            for (o, &b) in out.iter_mut().zip(input.scale) {
                *o = floats::bf16_round(e8m0_to_f32(b));
            }
        }
        (QuantFormat::Pack { .. } | QuantFormat::Naive, d) => {
            let c =
                Compute::of(d).ok_or_else(|| format!("scale dtype {d} is not bf16, f16 or f32"))?;
            floats::load_row(c, input.scale, &mut out);
        }
        (f, d) => return Err(format!("{} scales must not be {d}", f.name())),
    }
    Ok(out)
}

/// Dequantizes one weight of dense `shape` into `out` (sized for [`output_dtype`]).
pub fn decode_into(
    spec: &QuantSpec,
    shape: &[usize],
    input: &DecodeInput,
    split: bool,
    out: &mut [u8],
) -> Result<(), String> {
    spec.validate()?;
    if spec.format == QuantFormat::Marlin24 {
        if input.scale_dtype != Dtype::F16 {
            return Err(format!(
                "marlin-24 scales must be F16, are {}",
                input.scale_dtype
            ));
        }
        let meta = input.meta.ok_or("marlin-24 weight has no meta")?;
        return super::marlin24::decode_weight(
            &spec.args,
            shape,
            input.weight,
            input.scale,
            meta,
            out,
        );
    }
    let v = view(spec, shape)?;
    check_sizes(spec, shape, &v, input)?;
    let out_dtype = output_dtype(spec, input.scale_dtype)?;
    let compute = Compute::of(out_dtype).expect("bf16, f16 or f32");
    if out.len() != v.rows * v.cols * out_dtype.bits() / 8 {
        return Err("output buffer has the wrong size".into());
    }
    let scales = scales(input, spec)?;
    let zeros = zero_points(spec, &v, input)?;
    let g_idx: Option<Vec<usize>> = input.g_idx.map(|b| {
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as usize)
            .collect()
    });
    let a = spec.args;
    let offset = match spec.format {
        QuantFormat::Pack { .. } => (1i32 << (a.num_bits - 1)) as f32,
        _ => 0.0,
    };
    // What each stored code means before the zero point and scale apply.
    let mut table = [0f32; 256];
    for (c, t) in table.iter_mut().enumerate() {
        *t = match (spec.format, a.qtype) {
            (QuantFormat::Nvfp4 | QuantFormat::Mxfp4, _) => e2m1_value(c as u8 & 15),
            (_, QType::Float) => e4m3_to_f32(c as u8),
            (QuantFormat::Pack { .. }, QType::Int) => c as f32 - offset,
            (_, QType::Int) => c as u8 as i8 as f32,
        };
    }
    let run = if g_idx.is_some() {
        1
    } else {
        a.run_len(v.cols)
    };
    let kind = match (spec.format, a.qtype) {
        (QuantFormat::Nvfp4 | QuantFormat::Mxfp4, _) | (_, QType::Float) => Codes::Table,
        (QuantFormat::Pack { .. }, QType::Int) => Codes::Offset(offset),
        (_, QType::Int) => Codes::Signed,
    };
    // fp4 codes go through a 16-entry table of outputs per run (pshufb for 2-byte
    // outputs) when runs are long enough to pay for the table; int4 converts directly.
    let nibbles = g_idx.is_none()
        && run % 2 == 0
        && run >= 64
        && match spec.format {
            QuantFormat::Pack { .. } => false,
            QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => true,
            QuantFormat::Naive | QuantFormat::Marlin24 => false,
        };
    let d = Dec {
        spec,
        v,
        weight: input.weight,
        in_row: input.weight.len() / v.rows.max(1),
        out_row: v.cols * out_dtype.bits() / 8,
        run,
        nibbles,
        kind,
        table,
        scales: &scales,
        zeros: &zeros,
        g_idx: g_idx.as_deref(),
    };
    let avx2 = has_avx2();
    with_dt!(compute, D => each_row_chunk(split, out, d.out_row, |r0, chunk| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            unsafe { decode_chunk_avx2::<D>(&d, r0, chunk) };
            return;
        }
        let _ = avx2;
        decode_chunk::<D>(&d, r0, chunk);
    }));
    Ok(())
}

/// What every row of one weight's decoding shares.
struct Dec<'a> {
    spec: &'a QuantSpec,
    v: View,
    weight: &'a [u8],
    in_row: usize,
    out_row: usize,
    run: usize,
    /// 4-bit codes two per byte, decoded through a per-run table of 16 outputs.
    nibbles: bool,
    kind: Codes,
    table: [f32; 256],
    scales: &'a [f32],
    zeros: &'a [f32],
    g_idx: Option<&'a [usize]>,
}

#[inline(always)]
fn decode_chunk<D: Dt>(d: &Dec, r0: usize, out: &mut [u8]) {
    let a = &d.spec.args;
    let gc = d.v.grid_cols;
    let mut codes = vec![0u8; d.v.cols];
    let mut vals = vec![0f32; d.run];
    let mut lut = [[0u8; 4]; 16];
    for (i, dst) in out.chunks_exact_mut(d.out_row).enumerate() {
        let r = r0 + i;
        let src = &d.weight[r * d.in_row..(r + 1) * d.in_row];
        let cell_of = |c0: usize| match d.g_idx {
            Some(g) => r * gc + g[c0],
            None => a.cell(r, c0, gc),
        };
        if d.nibbles {
            for (k, (bytes, o)) in src
                .chunks(d.run / 2)
                .zip(dst.chunks_mut(d.run * D::BYTES))
                .enumerate()
            {
                let cell = cell_of(k * d.run);
                let (s, z) = (d.scales[cell], d.zeros[cell]);
                for (c, entry) in lut.iter_mut().enumerate() {
                    D::store((d.table[c] - z) * s, entry);
                }
                dequantize_nibbles::<D>(bytes, &lut, o);
            }
            continue;
        }
        let codes: &[u8] = match d.spec.format {
            QuantFormat::Pack { legacy } if a.num_bits != 8 => {
                unpack_codes(src, a.num_bits, legacy, &mut codes);
                &codes
            }
            QuantFormat::Nvfp4 | QuantFormat::Mxfp4 => {
                unpack_nibbles(src, &mut codes);
                &codes
            }
            _ => &src[..d.v.cols],
        };
        for (k, (cs, o)) in codes
            .chunks(d.run)
            .zip(dst.chunks_mut(d.run * D::BYTES))
            .enumerate()
        {
            let cell = cell_of(k * d.run);
            dequantize_run::<D>(
                cs,
                d.kind,
                &d.table,
                d.zeros[cell],
                d.scales[cell],
                &mut vals,
                o,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_chunk_avx2<D: Dt>(d: &Dec, r0: usize, out: &mut [u8]) {
    decode_chunk::<D>(d, r0, out)
}
