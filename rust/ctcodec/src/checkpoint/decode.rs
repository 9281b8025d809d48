//! Producing dense tensors from a compressed file: into memory, or into a new file.

use std::borrow::Cow;
use std::path::Path;

use crate::container::{byte_len, AtomicWriter, FilePlan, SafetensorsFile, TensorSpec};
use crate::error::Result;

use super::background::{write_in_background, Batch};
use super::format::Format;
use super::plan::{plan, DenseItem, Schemes, Source};
use super::schedule::{for_each_job, for_each_tensor};

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
        Source::Encoded(weight) => {
            weight.decode_into(file, split, out)?;
            weight.members().into_iter().for_each(|t| file.release(t));
            Ok(())
        }
    }
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
        FilePlan::new(specs, file.header().metadata.as_deref()).map_err(|e| e.in_file(src))?;
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
