//! Producing dense tensors from a compressed file: into memory, or into a new file.

use std::borrow::Cow;
use std::path::Path;

use crate::bitmask;
use crate::container::{byte_len, AtomicWriter, Layout, SafetensorsFile, TensorSpec};
use crate::error::{CodecError, Result};

use super::background::{write_in_background, Batch};
use super::format::Format;
use super::plan::{plan, BitmaskParts, DenseItem, Source};
use super::quant_plan::{QuantParts, Schemes};
use super::schedule::{for_each_job, for_each_tensor};
use crate::quant::DecodeInput;

/// The dense bytes of one planned tensor, in a buffer of its own, decoded on all cores.
pub fn read_dense(file: &SafetensorsFile, item: &DenseItem) -> Result<Vec<u8>> {
    let mut out = crate::buffer::zeroed(byte_len(item.dtype, &item.shape).unwrap_or(0));
    dense_into(file, item, true, &mut out)?;
    Ok(out)
}

/// Where each tensor of a batch sits in the batch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    pub offset: usize,
    pub len: usize,
}

/// Slots are aligned so every dtype (and SIMD) is happy with its start.
const SLOT_ALIGN: usize = 64;

/// Decodes consecutive tensors from `start` into one shared buffer: as many as fit in
/// `max_bytes` (always at least one). One allocation, backed by huge pages when large,
/// replaces a page-faulted allocation per tensor, and small tensors decode in parallel.
/// `alloc(n)` supplies the buffer: `n` zeroed bytes (e.g. recycled from a pool).
pub fn read_dense_batch(
    file: &SafetensorsFile,
    items: &[DenseItem],
    start: usize,
    max_bytes: usize,
    alloc: impl FnOnce(usize) -> Vec<u8>,
) -> Result<(Vec<u8>, Vec<Slot>)> {
    let mut slots = Vec::new();
    let mut total = 0usize;
    for (index, item) in items.iter().enumerate().skip(start) {
        let len = byte_len(item.dtype, &item.shape).unwrap_or(usize::MAX);
        let offset = total.div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        if !slots.is_empty() && offset.saturating_add(len) > max_bytes {
            break;
        }
        slots.push(Slot { index, offset, len });
        total = offset.saturating_add(len);
    }
    let mut buf = alloc(total);
    assert_eq!(buf.len(), total, "allocator returned the wrong size");
    let mut jobs = Vec::with_capacity(slots.len());
    let mut rest: &mut [u8] = &mut buf;
    let mut at = 0;
    for slot in &slots {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(slot.offset - at);
        let (out, tail) = tail.split_at_mut(slot.len);
        jobs.push((&items[slot.index], out));
        rest = tail;
        at = slot.offset + slot.len;
    }
    for_each_job(
        jobs,
        |(_, out)| out.len(),
        |(item, out), split| dense_into(file, item, split, out),
    )?;
    Ok((buf, slots))
}

/// Writes one tensor's dense bytes into `out` (zeroed, exactly its size).
fn dense_into(file: &SafetensorsFile, item: &DenseItem, split: bool, out: &mut [u8]) -> Result<()> {
    match &item.source {
        Source::Stored(info) => {
            out.copy_from_slice(&file.bytes(info)?);
            file.release(info);
            Ok(())
        }
        Source::Bitmask(parts) => decode_bitmask_into(file, parts, split, out),
        Source::Quant(parts) => decode_quant_into(file, parts, split, out),
        Source::Spqr(parts) => super::spqr_plan::decode_spqr_into(file, parts, split, out),
        Source::Sparse24(parts) => {
            let values = file.bytes(&parts.compressed)?;
            let mask = file.bytes(&parts.bitmask)?;
            crate::sparse24::decode(&values, &mask, item.dtype, &parts.dense_shape, out)
                .map_err(|e| CodecError::tensor(file.path(), &parts.module, e))?;
            drop((values, mask));
            file.release(&parts.compressed);
            file.release(&parts.bitmask);
            Ok(())
        }
    }
}

/// Dequantizes one weight from its stored parts into `out`.
fn decode_quant_into(
    file: &SafetensorsFile,
    parts: &QuantParts,
    split: bool,
    out: &mut [u8],
) -> Result<()> {
    let mut weight = file.bytes(&parts.weight)?;
    if let Some(mask_info) = &parts.sparse24_mask {
        // Stacked 2:4: expand the kept codes to the dense code tensor first.
        let mask = file.bytes(mask_info)?;
        let width = parts.weight.dtype.bits() / 8;
        let mut codes = vec![0u8; parts.dense_shape.iter().product::<usize>() * width];
        crate::sparse24::decode(
            &weight,
            &mask,
            parts.weight.dtype,
            &parts.dense_shape,
            &mut codes,
        )
        .map_err(|e| CodecError::tensor(file.path(), &parts.module, e))?;
        weight = Cow::Owned(codes);
    }
    let scale = file.bytes(&parts.scale)?;
    let zero = parts
        .zero_point
        .as_ref()
        .map(|z| file.bytes(z))
        .transpose()?;
    let g_idx = parts.g_idx.as_ref().map(|g| file.bytes(g)).transpose()?;
    if let (Some(info), Some(_)) = (&parts.g_idx, &g_idx) {
        if info.dtype != crate::dtype::Dtype::I32 {
            return Err(CodecError::tensor(
                file.path(),
                &info.name,
                format!("must be I32, is {}", info.dtype),
            ));
        }
    }
    let meta = parts
        .marlin_meta
        .as_ref()
        .map(|m| file.bytes(m))
        .transpose()?;
    let global = match &parts.global_scale {
        Some(info) if parts.spec.format == crate::quant::QuantFormat::Nvfp4 => {
            let b = file.bytes(info)?;
            Some(f32::from_le_bytes(
                b[..4].try_into().expect("checked to hold one f32"),
            ))
        }
        _ => None,
    };
    let input = DecodeInput {
        weight: &weight,
        scale: &scale,
        scale_dtype: parts.scale.dtype,
        zero_point: zero
            .as_deref()
            .zip(parts.zero_point.as_ref().map(|z| z.dtype)),
        g_idx: g_idx.as_deref(),
        global_scale: global,
        meta: meta.as_deref(),
    };
    crate::quant::decode_into(&parts.spec, &parts.dense_shape, &input, split, out)
        .map_err(|e| CodecError::tensor(file.path(), &parts.module, e))?;
    drop((weight, scale, zero, g_idx, meta));
    parts.members().into_iter().for_each(|t| file.release(t));
    Ok(())
}

/// Decodes into `out`, which must be zeroed and exactly the dense size.
fn decode_bitmask_into(
    file: &SafetensorsFile,
    parts: &BitmaskParts,
    split: bool,
    out: &mut [u8],
) -> Result<()> {
    let path = file.path();
    let g = &parts.geometry;
    let mask = file.bytes(&parts.bitmask)?;
    let values = file.bytes(&parts.compressed)?;
    let counts = bitmask::mask_row_counts(&mask, g, split);
    let total: usize = counts.iter().sum();
    if total != parts.compressed.numel() {
        return Err(CodecError::tensor(
            path,
            &parts.module,
            format!(
                "bitmask marks {total} non-zeros but compressed holds {}",
                parts.compressed.numel()
            ),
        ));
    }
    if let Some(ro) = &parts.row_offsets {
        check_row_offsets(file, ro, &counts, parts.lead_dims(), &parts.module)?;
    }
    bitmask::decode_into(&values, &mask, g, &counts, out, split);
    drop((mask, values));
    file.release(&parts.bitmask);
    file.release(&parts.compressed);
    if let Some(ro) = &parts.row_offsets {
        file.release(ro);
    }
    Ok(())
}

/// compressed-tensors never reads `row_offsets`, but a file whose offsets disagree with
/// its mask is corrupt, so we say so rather than guess which one is right.
fn check_row_offsets(
    file: &SafetensorsFile,
    info: &crate::container::TensorInfo,
    counts: &[usize],
    lead_dims: &[usize],
    module: &str,
) -> Result<()> {
    let bytes = file.bytes(info)?;
    let expected = bitmask::ct_row_offsets(counts, lead_dims);
    for (r, (chunk, want)) in bytes.chunks_exact(8).zip(expected).enumerate() {
        let got = i64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if got != want {
            return Err(CodecError::tensor(
                file.path(),
                module,
                format!("row_offsets[{r}] is {got} but the bitmask gives {want}"),
            ));
        }
    }
    Ok(())
}

/// Writes the dense form of `src` to `dst` (atomically), keeping `__metadata__`.
/// Returns the number of tensors written; `progress` is told each tensor's dense bytes.
pub fn decompress_file(
    src: &Path,
    dst: &Path,
    format: Option<Format>,
    schemes: &Schemes,
    mode: crate::container::ReadMode,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<usize> {
    let file = SafetensorsFile::open(src, mode)?;
    let format = format.unwrap_or_else(|| Format::detect(file.header()));
    let items = plan(&file, format, schemes)?;
    let specs = items
        .iter()
        .map(|i| TensorSpec::new(i.name.clone(), i.dtype, i.shape.clone()))
        .collect();
    let layout =
        Layout::new(specs, file.header().metadata.as_deref()).map_err(|e| in_file(e, src))?;
    let writer = AtomicWriter::create(dst, layout)?;
    let sizes: Vec<usize> = items
        .iter()
        .map(|i| byte_len(i.dtype, &i.shape).unwrap_or(usize::MAX))
        .collect();
    let file = &file;
    if let Some(mut mapped) = writer.map_output()? {
        // Decode straight into the mapped output (fresh, so already zeroed).
        let (mut slots, releaser) = mapped.split();
        let jobs: Vec<(&DenseItem, &mut [u8])> = items
            .iter()
            .map(|i| {
                (
                    i,
                    slots
                        .remove(&i.name)
                        .expect("every output is in the layout"),
                )
            })
            .collect();
        for_each_job(
            jobs,
            |(_, out)| out.len(),
            |(item, out), split| {
                dense_into(file, item, split, out)?;
                releaser.done(out);
                progress(out.len() as u64);
                Ok(())
            },
        )?;
        mapped.finish();
        writer.commit()?;
        return Ok(items.len());
    }
    write_in_background(&writer, |queue| {
        for_each_tensor(&sizes, |i, split| {
            let item = &items[i];
            // Stored tensors go from the input map straight to the writer.
            let (bytes, stored) = match &item.source {
                Source::Stored(info) => (file.bytes(info)?, Some(info)),
                _ => {
                    let mut out = crate::buffer::zeroed(sizes[i]);
                    dense_into(file, item, split, &mut out)?;
                    (Cow::Owned(out), None)
                }
            };
            let n = bytes.len() as u64;
            queue.send(Batch {
                parts: vec![(item.name.clone(), bytes)],
                done: Some(Box::new(move || {
                    if let Some(info) = stored {
                        file.release(info);
                    }
                    progress(n);
                })),
            })
        })
    })?;
    writer.commit()?;
    Ok(items.len())
}

/// Attaches the file name to an error raised before it was known.
pub(crate) fn in_file(e: CodecError, file: &Path) -> CodecError {
    match e {
        CodecError::Invalid(reason) => CodecError::container(file, reason),
        other => other,
    }
}
