//! GPTQ checkpoints as AutoGPTQ, GPTQModel and transformers write them, read to be
//! converted exactly to compressed-tensors' `pack-quantized`.
//!
//! A quantized Linear `M` (K inputs, N outputs, b bits, G groups) is stored as
//! `M.qweight` (I32 [K·b/32, N]: codes packed along K, as one little-endian bit stream
//! per output column), `M.qzeros` (I32 [G, N·b/32]: zero points packed along N the same
//! way), `M.scales` ([G, N]) and `M.g_idx` (I32 [K], the group of each input column).
//! `W[n, k] = scales[g, n] · (q[k, n] − z[g, n])` with `g = g_idx[k]`; the "gptq" (v1)
//! checkpoint format stores `z − 1` in `qzeros`, "gptq_v2" stores `z`.
//!
//! compressed-tensors stores the same numbers: its packed code is the signed code plus
//! 2^(b−1), which is GPTQ's unsigned `q`, and its packed zero point is `z`; so the
//! conversion only re-packs along the other dimension and transposes the scales. A
//! `g_idx` other than `k / group_size` is kept as `weight_g_idx` (compressed-tensors'
//! activation ordering "group", read by 0.14 to 0.18 and by ctcodec).

use std::path::Path;

use crate::codecs::quant::pack::{pack_codes, packed_words, unpack_codes};
use crate::codecs::quant::{QuantFormat, Role};
use crate::container::{AtomicWriter, FilePlan, ReadMode, SafetensorsFile, TensorInfo, TensorSpec};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::{quantized, shape_bytes};

pub const QWEIGHT: &str = "qweight";
pub const QZEROS: &str = "qzeros";
pub const SCALES: &str = "scales";
pub const G_IDX: &str = "g_idx";

/// What quantize_config.json says about every quantized module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptqSettings {
    pub bits: u32,
    /// Input columns per group; None is one group over the whole row (`-1`).
    pub group_size: Option<usize>,
    pub symmetric: bool,
    /// The "gptq" (v1) checkpoint format: `qzeros` hold `z − 1`.
    pub zeros_minus_one: bool,
}

/// One converted module: its name and whether it kept a non-trivial `g_idx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    pub module: String,
    pub in_features: usize,
    pub out_features: usize,
    pub g_idx: bool,
}

/// The compressed-tensors tensors of one GPTQ module: `(suffix, dtype, shape, bytes)`.
type Parts = Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)>;

fn i32s(bytes: &[u8]) -> impl Iterator<Item = i32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// Converts one module's GPTQ tensors (bytes as stored) to pack-quantized parts.
pub fn convert_module(
    s: &GptqSettings,
    qweight: (&TensorInfo, &[u8]),
    qzeros: (&TensorInfo, &[u8]),
    scales: (&TensorInfo, &[u8]),
    g_idx: Option<(&TensorInfo, &[u8])>,
) -> Result<(Parts, bool), String> {
    let b = s.bits;
    if !matches!(b, 2 | 3 | 4 | 8) {
        return Err(format!("GPTQ stores 2, 3, 4 or 8 bits, not {b}"));
    }
    let (qw, qz, sc) = (qweight.0, qzeros.0, scales.0);
    for (t, want) in [(qw, Dtype::I32), (qz, Dtype::I32)] {
        if t.dtype != want || t.shape.len() != 2 {
            return Err(format!(
                "{} must be 2-D {want}, is {} {:?}",
                t.name, t.dtype, t.shape
            ));
        }
    }
    if !matches!(sc.dtype, Dtype::F16 | Dtype::Bf16 | Dtype::F32) || sc.shape.len() != 2 {
        return Err(format!(
            "{} must be 2-D F16, BF16 or F32, is {} {:?}",
            sc.name, sc.dtype, sc.shape
        ));
    }
    let (words_k, n) = (qw.shape[0], qw.shape[1]);
    let k = match g_idx {
        Some((t, _)) => t.numel(),
        None => words_k * 32 / b as usize,
    };
    if packed_words(k, b, false) != words_k || k == 0 || n == 0 {
        return Err(format!(
            "{} has shape {:?}, which does not hold {k} {b}-bit rows",
            qw.name, qw.shape
        ));
    }
    let group = s.group_size.unwrap_or(k);
    if k % group != 0 {
        return Err(format!(
            "{k} input columns are not a multiple of the group size {group}"
        ));
    }
    let groups = k / group;
    if sc.shape != [groups, n] {
        return Err(format!(
            "{} must be [{groups}, {n}], is {:?}",
            sc.name, sc.shape
        ));
    }
    if qz.shape != [groups, packed_words(n, b, false)] {
        let want = [groups, packed_words(n, b, false)];
        return Err(format!("{} must be {want:?}, is {:?}", qz.name, qz.shape));
    }

    // Codes: column n of qweight is a bit stream along K; compressed-tensors packs rows.
    let words: Vec<i32> = i32s(qweight.1).collect();
    let row_bytes = 4 * packed_words(k, b, false);
    let mut packed = vec![0u8; n * row_bytes];
    let mut column = vec![0u8; 4 * words_k];
    let mut codes = vec![0u8; k];
    for (c, out) in packed.chunks_exact_mut(row_bytes).enumerate() {
        for (r, dst) in column.chunks_exact_mut(4).enumerate() {
            dst.copy_from_slice(&words[r * n + c].to_le_bytes());
        }
        unpack_codes(&column, b, false, &mut codes);
        pack_codes(&codes, b, false, out);
    }

    // Zero points: a bit stream along N per group, as compressed-tensors packs them,
    // but stored [G, words] where compressed-tensors stores [words, G].
    let max = (1u32 << b) - 1;
    let mid = 1u8 << (b - 1);
    let zw = packed_words(n, b, false);
    let mut zeros = vec![0u8; groups * n];
    for (g, row) in qzeros.1.chunks_exact(4 * zw).enumerate() {
        let z = &mut zeros[g * n..(g + 1) * n];
        unpack_codes(row, b, false, z);
        if s.zeros_minus_one {
            for (i, v) in z.iter_mut().enumerate() {
                if u32::from(*v) == max {
                    // v1 wrote z − 1 = −1 for z = 0, which spills ones over the word.
                    return Err(format!(
                        "{}: zero point of group {g}, column {i} is stored as -1 (a v1 checkpoint cannot hold a zero of 0; use one saved as gptq_v2)",
                        qz.name
                    ));
                }
                *v += 1;
            }
        }
    }
    if s.symmetric {
        if let Some(i) = zeros.iter().position(|&z| z != mid) {
            return Err(format!(
                "{}: symmetric GPTQ has every zero point at {mid}, but group {}, column {} holds {}",
                qz.name,
                i / n,
                i % n,
                zeros[i]
            ));
        }
    }

    // g_idx: kept only when it is not plain `k / group`.
    let mut keep_g_idx = false;
    if let Some((t, bytes)) = g_idx {
        if t.dtype != Dtype::I32 {
            return Err(format!("{} must be I32, is {}", t.name, t.dtype));
        }
        for (i, g) in i32s(bytes).enumerate() {
            if g < 0 || g as usize >= groups {
                return Err(format!(
                    "{}[{i}] is {g}, outside the {groups} groups",
                    t.name
                ));
            }
            keep_g_idx |= g as usize != i / group;
        }
    }

    // Scales: [G, N] -> [N, G], element bytes as they are.
    let width = sc.dtype.bits() / 8;
    let mut scale_t = vec![0u8; groups * n * width];
    for g in 0..groups {
        for c in 0..n {
            let from = (g * n + c) * width;
            let to = (c * groups + g) * width;
            scale_t[to..to + width].copy_from_slice(&scales.1[from..from + width]);
        }
    }

    // Named as compressed-tensors' pack-quantized names them.
    let name = |role| quantized::suffix(QuantFormat::Pack { legacy: false }, role);
    let mut parts: Parts = vec![
        (
            name(Role::Codes),
            Dtype::I32,
            vec![n, row_bytes / 4],
            packed,
        ),
        (name(Role::Scale), sc.dtype, vec![n, groups], scale_t),
        (name(Role::Shape), Dtype::I64, vec![2], shape_bytes(&[n, k])),
    ];
    if !s.symmetric {
        let zrow = 4 * zw;
        let mut zp = vec![0u8; groups * zrow];
        let mut packed_col = vec![0u8; zrow];
        for g in 0..groups {
            pack_codes(&zeros[g * n..(g + 1) * n], b, false, &mut packed_col);
            for w in 0..zw {
                let at = 4 * (w * groups + g);
                zp[at..at + 4].copy_from_slice(&packed_col[4 * w..4 * w + 4]);
            }
        }
        parts.push((name(Role::ZeroPoint), Dtype::I32, vec![zw, groups], zp));
    }
    if keep_g_idx {
        let (t, bytes) = g_idx.expect("checked above");
        parts.push((
            quantized::G_IDX,
            Dtype::I32,
            vec![t.numel()],
            bytes.to_vec(),
        ));
    }
    Ok((parts, keep_g_idx))
}

/// Writes `dst`: `src` with every GPTQ module converted to pack-quantized (other
/// tensors, such as biases, unchanged and in place). Holds one file's output in memory.
pub fn convert_file(
    src: &Path,
    dst: &Path,
    settings: &GptqSettings,
    mode: ReadMode,
) -> Result<Vec<Converted>> {
    let file = SafetensorsFile::open(src, mode)?;
    let header = file.header();
    let mut out: Vec<(TensorSpec, Vec<u8>)> = Vec::new();
    let mut converted = Vec::new();
    for t in &header.tensors {
        let Some(module) = t.name.strip_suffix(&format!(".{QWEIGHT}")) else {
            let is_part = [QZEROS, SCALES, G_IDX].iter().any(|p| {
                t.name
                    .strip_suffix(&format!(".{p}"))
                    .is_some_and(|m| header.get(&format!("{m}.{QWEIGHT}")).is_some())
            });
            if !is_part {
                out.push((
                    TensorSpec::new(t.name.clone(), t.dtype, t.shape.clone()),
                    file.bytes(t)?.into_owned(),
                ));
            }
            continue;
        };
        let err = |e: String| CodecError::tensor(src, module, e);
        let need = |p: &str| {
            header
                .get(&format!("{module}.{p}"))
                .ok_or_else(|| err(format!("GPTQ module has {QWEIGHT} but no {p}")))
        };
        let (qz, sc) = (need(QZEROS)?, need(SCALES)?);
        let gi = header.get(&format!("{module}.{G_IDX}"));
        let (qw_b, qz_b, sc_b) = (file.bytes(t)?, file.bytes(qz)?, file.bytes(sc)?);
        let gi_b = gi.map(|g| file.bytes(g)).transpose()?;
        let (parts, g_idx) = convert_module(
            settings,
            (t, &qw_b),
            (qz, &qz_b),
            (sc, &sc_b),
            gi.zip(gi_b.as_deref()),
        )
        .map_err(err)?;
        let dims: Vec<usize> = parts[2]
            .3
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8")) as usize)
            .collect();
        converted.push(Converted {
            module: module.to_string(),
            in_features: dims[1],
            out_features: dims[0],
            g_idx,
        });
        for (suffix, dtype, shape, bytes) in parts {
            out.push((
                TensorSpec::new(format!("{module}.{suffix}"), dtype, shape),
                bytes,
            ));
        }
    }
    let specs = out.iter().map(|(s, _)| s.clone()).collect();
    let plan = FilePlan::new(specs, header.metadata.as_deref()).map_err(|e| e.in_file(src))?;
    let writer = AtomicWriter::create(dst, plan)?;
    for (spec, bytes) in &out {
        writer.write(&spec.name, bytes)?;
    }
    writer.commit()?;
    Ok(converted)
}
