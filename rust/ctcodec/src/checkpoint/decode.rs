//! Producing dense tensors from a compressed file: into memory, or into a new file.

use std::path::Path;

use crate::bitmask;
use crate::container::{AtomicWriter, Layout, SafetensorsFile, TensorSpec};
use crate::error::{CodecError, Result};

use super::format::Format;
use super::plan::{plan, BitmaskParts, DenseItem, Source};

/// The dense bytes of one planned tensor.
pub fn read_dense(file: &SafetensorsFile, item: &DenseItem) -> Result<Vec<u8>> {
    let out = match &item.source {
        Source::Stored(info) => {
            let bytes = file.bytes(info)?.into_owned();
            file.release(info);
            bytes
        }
        Source::Bitmask(parts) => decode_bitmask(file, parts)?,
    };
    Ok(out)
}

fn decode_bitmask(file: &SafetensorsFile, parts: &BitmaskParts) -> Result<Vec<u8>> {
    let path = file.path();
    let g = &parts.geometry;
    let mask = file.bytes(&parts.bitmask)?;
    let values = file.bytes(&parts.compressed)?;
    let counts = bitmask::mask_row_counts(&mask, g);
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
    let mut out = vec![0u8; g.dense_bytes()];
    bitmask::decode_into(&values, &mask, g, &counts, &mut out);
    drop((mask, values));
    file.release(&parts.bitmask);
    file.release(&parts.compressed);
    Ok(out)
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
    mode: crate::container::ReadMode,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<usize> {
    let file = SafetensorsFile::open(src, mode)?;
    let format = format.unwrap_or_else(|| Format::detect(file.header()));
    let items = plan(&file, format)?;
    let specs = items
        .iter()
        .map(|i| TensorSpec::new(i.name.clone(), i.dtype, i.shape.clone()))
        .collect();
    let layout =
        Layout::new(specs, file.header().metadata.as_deref()).map_err(|e| in_file(e, src))?;
    let writer = AtomicWriter::create(dst, layout)?;
    for item in &items {
        let dense = read_dense(&file, item)?;
        writer.write(&item.name, &dense)?;
        progress(dense.len() as u64);
    }
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
