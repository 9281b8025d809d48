//! Opening a safetensors file: memory-mapped by default, positioned reads where mmap
//! is a poor fit (network filesystems) or fails.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::header::{header_len, parse_header, Header, TensorInfo};
use super::release::{drop_pages, UsedRanges, RELEASE_RUN};
use crate::error::{CodecError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// mmap, unless the file sits on a network filesystem or mapping fails.
    Auto,
    Mmap,
    Pread,
}

enum Source {
    Mapped(Arc<Mmap>),
    Positioned(File),
}

/// A validated safetensors file whose tensors can be read by name.
pub struct SafetensorsFile {
    path: PathBuf,
    header: Header,
    source: Source,
    released: std::sync::Mutex<UsedRanges>,
}

impl SafetensorsFile {
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self> {
        let file = File::open(path).map_err(|e| CodecError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| CodecError::io(path, e))?.len();
        let use_mmap = match mode {
            ReadMode::Mmap => true,
            ReadMode::Pread => false,
            ReadMode::Auto => {
                !on_network_filesystem(&file) && std::env::var_os("CTCODEC_NO_MMAP").is_none()
            }
        };
        let source = if use_mmap {
            // SAFETY: the map is read-only; like every mmap reader we rely on the file not
            // being truncated underneath us while it is open.
            match unsafe { Mmap::map(&file) } {
                Ok(map) => Source::Mapped(Arc::new(map)),
                Err(e) if mode == ReadMode::Mmap => return Err(CodecError::io(path, e)),
                Err(_) => Source::Positioned(file),
            }
        } else {
            Source::Positioned(file)
        };

        let mut prefix = [0u8; 8];
        read_at(path, &source, &mut prefix, 0, file_len)?;
        let n = header_len(path, &prefix, file_len)?;
        let mut json = vec![0u8; n];
        read_at(path, &source, &mut json, 8, file_len)?;
        let header = parse_header(path, &json, file_len)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            header,
            source,
            released: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The tensor's bytes: borrowed from the map, or read into a fresh buffer.
    pub fn bytes(&self, info: &TensorInfo) -> Result<Cow<'_, [u8]>> {
        let start = self.header.data_start + info.start;
        match &self.source {
            Source::Mapped(map) => Ok(Cow::Borrowed(&map[start..start + info.len()])),
            Source::Positioned(file) => {
                let mut buf = vec![0u8; info.len()];
                file.read_exact_at(&mut buf, start as u64)
                    .map_err(|e| CodecError::io(&self.path, e))?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Marks a tensor's bytes as used. Once enough used bytes have gathered, their pages
    /// are dropped from this process's resident set, so streaming through a file larger
    /// than RAM keeps memory bounded. The pages stay in the page cache; a later read maps
    /// them again.
    pub fn release(&self, info: &TensorInfo) {
        let Source::Mapped(map) = &self.source else {
            return;
        };
        let base = map.as_ptr() as usize + self.header.data_start;
        let mut used = self.released.lock().unwrap_or_else(|e| e.into_inner());
        for (from, to) in used.add(info.start, info.end, RELEASE_RUN) {
            // SAFETY: a range of the read-only map of an unmodified file.
            unsafe { drop_pages(base + from, to - from) };
        }
    }

    /// Ends a pass over the file: drops whatever is still held and starts counting anew.
    pub fn release_all(&self) {
        let Source::Mapped(map) = &self.source else {
            return;
        };
        let mut used = self.released.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the data section of the read-only map of an unmodified file.
        unsafe {
            drop_pages(
                map.as_ptr() as usize + self.header.data_start,
                self.header.data_len(),
            )
        };
        *used = UsedRanges::default();
    }
}

fn read_at(path: &Path, source: &Source, buf: &mut [u8], offset: u64, file_len: u64) -> Result<()> {
    if offset + buf.len() as u64 > file_len {
        return Err(CodecError::container(
            path,
            "file is truncated inside its header",
        ));
    }
    match source {
        Source::Mapped(map) => {
            buf.copy_from_slice(&map[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        Source::Positioned(file) => file
            .read_exact_at(buf, offset)
            .map_err(|e| CodecError::io(path, e)),
    }
}

/// mmap over NFS/SMB/FUSE is many times slower than plain reads and can fault on a
/// network hiccup, so those filesystems get positioned reads.
pub(crate) fn on_network_filesystem(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    const NETWORK_MAGICS: [i64; 6] = [
        0x6969,      // NFS
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x517B,      // SMB
        0x6573_5546, // FUSE
        0x0BD0_0BD0, // Lustre
    ];
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs fills the struct we own for a descriptor we hold open.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return false;
    }
    NETWORK_MAGICS.contains(&(stat.f_type as i64))
}
