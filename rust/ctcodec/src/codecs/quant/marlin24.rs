//! compressed-tensors' `marlin-24` layout (0.14 and earlier; vLLM's Marlin 2:4 kernel):
//! symmetric int4/int8 codes of a 2:4-sparse weight, quantized in fp16, compressed by
//! CUTLASS' semi-structured rule (2 values of every 4 plus 2-bit indices), transposed,
//! tiled 16x16, permuted for the kernel's access pattern and packed into int32; scales
//! transposed and permuted; the indices ("meta") in CUTLASS' reordered int16 layout.
//! compressed-tensors never decoded it; we do, by inverting each step.

/// Shape constraints of the layout for an `[n, k]` weight.
pub fn check_shape(n: usize, k: usize) -> Result<(), String> {
    if n % 64 != 0 || k % 64 != 0 {
        return Err(format!(
            "marlin-24 needs output features divisible by 64 and input features by 64, not [{n}, {k}]"
        ));
    }
    Ok(())
}

/// The kernel's permutation of each 1024-element run of a tiled row, for `bits` 4 or 8.
fn weight_perm(bits: u32) -> Vec<usize> {
    let mut perm = Vec::with_capacity(1024);
    for i in 0..32usize {
        let col = i / 4;
        let col_o = col / 2;
        let mut first = Vec::with_capacity(8);
        for block in 0..2 {
            for row in [
                2 * (i % 4),
                2 * (i % 4) + 1,
                2 * (i % 4 + 4),
                2 * (i % 4 + 4) + 1,
            ] {
                first.push(16 * row + col_o * 256 + 8 * (col % 2) + 4 * block);
            }
        }
        for j in 0..4 {
            perm.extend(first.iter().map(|p| p + j));
        }
    }
    let interleave: &[usize] = if bits == 4 {
        &[0, 2, 4, 6, 1, 3, 5, 7]
    } else {
        &[0, 2, 1, 3]
    };
    perm.chunks(interleave.len())
        .flat_map(|c| interleave.iter().map(move |&i| c[i]))
        .collect()
}

/// Scale permutation within runs of 64: grouped scales interleave, per-channel ones not.
fn scale_perm(grouped: bool) -> Vec<usize> {
    (0..8)
        .flat_map(|i| {
            let order: [usize; 8] = if grouped {
                [0, 4, 1, 5, 2, 6, 3, 7]
            } else {
                [0, 1, 2, 3, 4, 5, 6, 7]
            };
            order.map(|j| 8 * i + j)
        })
        .collect()
}

/// Where CUTLASS puts meta element (r, c) of an `m x ncols` int16 meta matrix.
fn meta_offset(r: usize, c: usize, m: usize) -> usize {
    let mut row =
        r / 64 * 64 + (r % 2) * 2 + (r % 8) / 4 + ((r % 32) % 4) / 2 * 32 + ((r % 64) / 8) * 4;
    let mut col = c;
    if row % 2 == 0 && col % 2 == 1 {
        row += 1;
        col -= 1;
    } else if row % 2 == 1 && col % 2 == 0 {
        row -= 1;
        col += 1;
    }
    (col / 2) * m * 2 + row * 2 + col % 2
}

/// The two kept positions of a group of 4 (at most 2 non-zero), as CUTLASS picks them.
fn kept(nz: [bool; 4]) -> (usize, usize) {
    let [m0, m1, _m2, m3] = nz;
    let e0 = m0 && m1;
    let e1 = !m0 && m1;
    let e2 = !m0 && !m1;
    let idx0 = (e1 as usize) | ((e2 as usize) << 1);
    let idx1 = ((e0 || e2 || m3) as usize) | (((e1 || !m1) as usize) << 1);
    (idx0, idx1)
}

/// Packs signed codes `q` ([n, k], 2:4) and fp16 scale bits ([n, groups]) into
/// `weight_packed` (int32 `[k/32, n*16*bits/32]`), `scale_packed` (fp16 `[groups, n]`)
/// and `meta` (int16 `[k/32, 2n]`), little-endian bytes.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    q: &[i8],
    scales: &[u16],
    n: usize,
    k: usize,
    bits: u32,
    grouped: bool,
    weight_out: &mut [u8],
    scale_out: &mut [u8],
    meta_out: &mut [u8],
) -> Result<(), String> {
    check_shape(n, k)?;
    let half = k / 2;
    // CUTLASS compression: values [n, k/2] and 4-bit indices per group of 4.
    let mut values = vec![0i32; n * half];
    let mut meta = vec![0u16; n * k / 16];
    for r in 0..n {
        for g in 0..k / 4 {
            let grp = &q[r * k + 4 * g..r * k + 4 * g + 4];
            let nz = [grp[0] != 0, grp[1] != 0, grp[2] != 0, grp[3] != 0];
            if nz.iter().filter(|&&b| b).count() > 2 {
                return Err(format!(
                    "row {r}, columns {}..{} hold more than 2 non-zero codes; marlin-24 needs 2:4",
                    4 * g,
                    4 * g + 4
                ));
            }
            let (i0, i1) = kept(nz);
            values[r * half + 2 * g] = grp[i0] as i32;
            values[r * half + 2 * g + 1] = grp[i1] as i32;
            meta[r * (k / 16) + g / 4] |= ((i0 | (i1 << 2)) as u16) << (4 * (g % 4));
        }
    }
    let ncols = k / 16;
    for r in 0..n {
        for c in 0..ncols {
            let at = meta_offset(r, c, n);
            meta_out[2 * at..2 * at + 2].copy_from_slice(&meta[r * ncols + c].to_le_bytes());
        }
    }
    // Transpose to [k/2, n], offset to unsigned, tile 16x16, permute, pack.
    let offset = 1i32 << (bits - 1);
    let row_len = n * 16;
    let perm = weight_perm(bits);
    let per_word = (32 / bits) as usize;
    let mut tiled = vec![0u32; half * n];
    for t in 0..half / 16 {
        for nt in 0..n / 16 {
            for i in 0..16 {
                for j in 0..16 {
                    let (kk, nn) = (t * 16 + i, nt * 16 + j);
                    tiled[t * row_len + nt * 256 + i * 16 + j] =
                        (values[nn * half + kk] + offset) as u32;
                }
            }
        }
    }
    let words_per_row = row_len / per_word;
    for t in 0..half / 16 {
        let row = &tiled[t * row_len..(t + 1) * row_len];
        for w in 0..words_per_row {
            let mut word = 0u32;
            for i in 0..per_word {
                let col = w * per_word + i;
                let src = (col / 1024) * 1024 + perm[col % 1024];
                word |= row[src] << (bits as usize * i);
            }
            let at = 4 * (t * words_per_row + w);
            weight_out[at..at + 4].copy_from_slice(&word.to_le_bytes());
        }
    }
    // Scales: [n, groups] -> [groups, n], permuted in runs of 64.
    let groups = scales.len() / n;
    let sp = scale_perm(grouped);
    let mut flat = vec![0u16; groups * n];
    for g in 0..groups {
        for r in 0..n {
            flat[g * n + r] = scales[r * groups + g];
        }
    }
    for (run, chunk) in flat.chunks(64).enumerate() {
        for (i, &p) in sp.iter().enumerate() {
            let at = 2 * (run * 64 + i);
            scale_out[at..at + 2].copy_from_slice(&chunk[p].to_le_bytes());
        }
    }
    Ok(())
}

/// Inverts [`encode`]: signed codes `[n, k]` and fp16 scale bits `[n, groups]`.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    weight: &[u8],
    scale: &[u8],
    meta_bytes: &[u8],
    n: usize,
    k: usize,
    groups: usize,
    bits: u32,
    grouped: bool,
) -> Result<(Vec<i8>, Vec<u16>), String> {
    check_shape(n, k)?;
    let half = k / 2;
    let row_len = n * 16;
    let per_word = (32 / bits) as usize;
    let words_per_row = row_len / per_word;
    if weight.len() != 4 * (half / 16) * words_per_row
        || scale.len() != 2 * groups * n
        || meta_bytes.len() != 2 * n * k / 16
    {
        return Err(format!(
            "marlin-24 parts do not fit a [{n}, {k}] weight with {groups} scale rows"
        ));
    }
    let perm = weight_perm(bits);
    let mask = (1u32 << bits) - 1;
    let offset = 1i32 << (bits - 1);
    let mut values = vec![0i32; n * half];
    let mut row = vec![0u32; row_len];
    for t in 0..half / 16 {
        for w in 0..words_per_row {
            let at = 4 * (t * words_per_row + w);
            let word = u32::from_le_bytes(weight[at..at + 4].try_into().expect("4"));
            for i in 0..per_word {
                let col = w * per_word + i;
                row[(col / 1024) * 1024 + perm[col % 1024]] = (word >> (bits as usize * i)) & mask;
            }
        }
        for nt in 0..n / 16 {
            for i in 0..16 {
                for j in 0..16 {
                    let (kk, nn) = (t * 16 + i, nt * 16 + j);
                    values[nn * half + kk] = row[nt * 256 + i * 16 + j] as i32 - offset;
                }
            }
        }
    }
    let ncols = k / 16;
    let mut q = vec![0i8; n * k];
    for r in 0..n {
        for c in 0..ncols {
            let at = meta_offset(r, c, n);
            let m = u16::from_le_bytes([meta_bytes[2 * at], meta_bytes[2 * at + 1]]);
            for s in 0..4 {
                let g = 4 * c + s;
                let nibble = (m >> (4 * s)) & 0xf;
                let (i0, i1) = ((nibble & 3) as usize, (nibble >> 2) as usize);
                if i0 == i1 {
                    return Err(format!(
                        "meta of row {r}, group {g} names one position twice"
                    ));
                }
                let v0 = values[r * half + 2 * g];
                let v1 = values[r * half + 2 * g + 1];
                q[r * k + 4 * g + i0] = v0.clamp(-128, 127) as i8;
                q[r * k + 4 * g + i1] = v1.clamp(-128, 127) as i8;
            }
        }
    }
    let sp = scale_perm(grouped);
    let mut scales = vec![0u16; n * groups];
    for (run, chunk) in scale.chunks(128).enumerate() {
        for (i, &p) in sp.iter().enumerate() {
            let flat = run * 64 + p;
            let (g, r) = (flat / n, flat % n);
            scales[r * groups + g] = u16::from_le_bytes([chunk[2 * i], chunk[2 * i + 1]]);
        }
    }
    Ok((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_encode() {
        let (n, k, bits) = (64, 128, 4);
        let mut q = vec![0i8; n * k];
        for (i, v) in q.iter_mut().enumerate() {
            // Two non-zeros in positions that vary by group.
            let g = i / 4;
            let keep = [(g % 4), (g % 4 + 1 + g % 3) % 4];
            if keep.contains(&(i % 4)) {
                *v = ((i * 7) % 15) as i8 - 7;
            }
        }
        let scales: Vec<u16> = (0..n * 2).map(|i| 0x3c00 + i as u16).collect();
        let mut w = vec![0u8; 4 * (k / 32) * (n * 16 / 8)];
        let mut s = vec![0u8; 2 * 2 * n];
        let mut m = vec![0u8; 2 * n * k / 16];
        encode(&q, &scales, n, k, bits, true, &mut w, &mut s, &mut m).unwrap();
        let (q2, s2) = decode(&w, &s, &m, n, k, 2, bits, true).unwrap();
        assert_eq!(q2, q);
        assert_eq!(s2, scales);
    }
}

use super::floats::Compute;
use super::params::{qparams_into, MinMax, ScaleKind};
use super::simd_loops::{f16_round, load_row, min_max, quantize_int, Bf16, Dt, F16, F32};
use super::{QuantArgs, Strategy};
use crate::dtype::Dtype;

/// `[n, k]` of a 2-D weight shape.
pub fn dims(shape: &[usize]) -> Result<(usize, usize), String> {
    match shape {
        [n, k] => {
            check_shape(*n, *k)?;
            Ok((*n, *k))
        }
        s => Err(format!("marlin-24 weights are 2-D, not of shape {s:?}")),
    }
}

/// Scale rows of the layout: one per 128 input features, or one (per channel).
pub fn scale_groups(args: &QuantArgs, k: usize) -> usize {
    match args.strategy {
        Strategy::Group(g) => k / g,
        _ => 1,
    }
}

/// Whether compressed-tensors permutes the scales as groups (group size under k/2).
fn grouped(args: &QuantArgs, k: usize) -> bool {
    matches!(args.strategy, Strategy::Group(g) if g < k / 2)
}

/// Quantizes a weight as compressed-tensors' marlin-24 compressor does (scales from
/// min/max in the weight's dtype, then the weight and scales cast to fp16 and quantized
/// in fp16) and lays it out; outs = [weight_packed, scale_packed, meta].
pub fn encode_weight(
    args: &QuantArgs,
    dtype: Dtype,
    shape: &[usize],
    input: &[u8],
    outs: &mut [&mut [u8]],
) -> Result<(), String> {
    let (n, k) = dims(shape)?;
    let compute = Compute::of(dtype).ok_or_else(|| format!("cannot quantize {dtype} weights"))?;
    let groups = scale_groups(args, k);
    let run = k / groups;
    let (lo, hi) = args.range();
    let mut xs = vec![0f32; k];
    let mut codes = vec![0u8; run];
    let mut q = vec![0i8; n * k];
    let mut scales16 = vec![0u16; n * groups];
    let mut mm = MinMax::new(groups);
    let (mut s, mut z) = (vec![0f32; groups], vec![0f32; groups]);
    let row_bytes = k * dtype.bits() / 8;
    for r in 0..n {
        let src = &input[r * row_bytes..(r + 1) * row_bytes];
        match compute {
            Compute::BF16 => load_row::<Bf16>(src, &mut xs),
            Compute::F16 => load_row::<F16>(src, &mut xs),
            Compute::F32 => load_row::<F32>(src, &mut xs),
        }
        for (g, chunk) in xs.chunks(run).enumerate() {
            let (a, b) = min_max(chunk);
            mm.min[g] = a;
            mm.max[g] = b;
        }
        qparams_into(
            &mm.min,
            &mm.max,
            args,
            compute,
            None,
            ScaleKind::Weight,
            &mut s,
            &mut z,
        );
        for (g, chunk) in xs.chunks(run).enumerate() {
            let s16 = f16_round(s[g]);
            scales16[r * groups + g] = half::f16::from_f32(s16).to_bits();
            let x16: Vec<f32> = chunk.iter().map(|&x| f16_round(x)).collect();
            quantize_int::<F16>(&x16, s16, 0.0, false, lo, hi, 0.0, &mut codes);
            for (o, &c) in q[r * k + g * run..r * k + (g + 1) * run]
                .iter_mut()
                .zip(&codes)
            {
                *o = c as i8;
            }
        }
    }
    let [w, sc, meta] = outs else {
        return Err("marlin-24 has three parts".into());
    };
    encode(
        &q,
        &scales16,
        n,
        k,
        args.num_bits,
        grouped(args, k),
        w,
        sc,
        meta,
    )
}

/// Dequantizes a marlin-24 weight to fp16 `[n, k]` (`code * scale`, in fp16).
pub fn decode_weight(
    args: &QuantArgs,
    shape: &[usize],
    weight: &[u8],
    scale: &[u8],
    meta: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    let (n, k) = dims(shape)?;
    if let Strategy::Group(g) = args.strategy {
        if k % g != 0 {
            return Err(format!(
                "{k} input features are not a multiple of the group size {g}"
            ));
        }
    }
    let groups = scale_groups(args, k);
    if scale.len() != 2 * groups * n {
        return Err(format!(
            "scale_packed holds {} bytes; {args} on [{n}, {k}] needs {} fp16 values",
            scale.len(),
            groups * n
        ));
    }
    let (q, scales) = decode(
        weight,
        scale,
        meta,
        n,
        k,
        groups,
        args.num_bits,
        grouped(args, k),
    )?;
    let run = k / groups;
    let mut vals = vec![0f32; k];
    for r in 0..n {
        for (c, v) in vals.iter_mut().enumerate() {
            let s = half::f16::from_bits(scales[r * groups + c / run]).to_f32();
            *v = q[r * k + c] as f32 * s;
        }
        F16::store_run(&vals, &mut out[r * k * 2..(r + 1) * k * 2]);
    }
    Ok(())
}
