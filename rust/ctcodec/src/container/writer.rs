//! Writing safetensors files: the layout is fixed up front (so tensors can be written
//! out of order, in parallel, by positioned writes) and the file appears under its
//! final name only once complete.
//!
//! The layout follows the reference serializer exactly (tensors ordered by dtype,
//! largest alignment first, then by name; the JSON header padded with spaces to a
//! multiple of 8), so for the same tensors our bytes equal `safetensors.save_file`'s.
//! We write our own instead of `safetensors::serialize_to_file` because that takes
//! every tensor in memory at once; we stream one tensor at a time from a mmap.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::header::{byte_len, MAX_HEADER_SIZE};
use super::mapped::MappedOutput;
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

/// A tensor to be written: its bytes come later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }
}

/// Where every tensor goes in the output file.
pub struct FilePlan {
    header: Vec<u8>,
    slots: HashMap<String, (usize, usize)>,
    total_len: u64,
}

impl FilePlan {
    pub fn new(mut specs: Vec<TensorSpec>, metadata: Option<&[(String, String)]>) -> Result<Self> {
        specs.sort_by(|a, b| b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name)));
        let metadata = metadata.map(|meta| {
            let m: Map<String, Value> = meta
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            serde_json::to_string(&m).expect("json")
        });
        let mut slots = HashMap::with_capacity(specs.len());
        let mut offset = 0usize;
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let n = byte_len(spec.dtype, &spec.shape).ok_or_else(|| {
                CodecError::Invalid(format!(
                    "tensor {:?}: shape {:?} is too large",
                    spec.name, spec.shape
                ))
            })?;
            if spec.name == "__metadata__" || slots.insert(spec.name.clone(), (offset, n)).is_some()
            {
                return Err(CodecError::Invalid(format!(
                    "tensor name {:?} is used twice",
                    spec.name
                )));
            }
            let shape: Vec<String> = spec.shape.iter().map(|d| d.to_string()).collect();
            // Field order as the reference writes it: dtype, shape, data_offsets.
            let entry = format!(
                r#"{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}}"#,
                spec.dtype.name(),
                shape.join(","),
                offset,
                offset + n
            );
            entries.push((spec.name, entry));
            offset += n;
        }
        let json_text = header_json(metadata, entries);
        let mut header_bytes = json_text.into_bytes();
        let padded = header_bytes.len().div_ceil(8) * 8;
        header_bytes.resize(padded, b' ');
        if header_bytes.len() > MAX_HEADER_SIZE {
            return Err(CodecError::Invalid(
                "header would exceed the safetensors size limit".into(),
            ));
        }
        let mut header = (header_bytes.len() as u64).to_le_bytes().to_vec();
        header.extend_from_slice(&header_bytes);
        let total_len = header.len() as u64 + offset as u64;
        Ok(FilePlan {
            header,
            slots,
            total_len,
        })
    }

    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    pub(crate) fn header_len(&self) -> usize {
        self.header.len()
    }

    /// (name, offset from the data start, byte length) of every tensor.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (&str, usize, usize)> {
        self.slots
            .iter()
            .map(|(n, &(off, len))| (n.as_str(), off, len))
    }

    /// (offset in file, byte length) of a tensor.
    pub fn slot(&self, name: &str) -> Option<(u64, usize)> {
        self.slots
            .get(name)
            .map(|&(off, n)| (self.header.len() as u64 + off as u64, n))
    }
}

/// The reference writes `__metadata__` first and then tensors in offset order, while
/// serde_json sorts keys, so the object is assembled by hand.
fn header_json(metadata: Option<String>, entries: Vec<(String, String)>) -> String {
    let mut out = String::from("{");
    let mut first = true;
    let mut push = |k: &str, v: &str, out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::to_string(k).expect("string"));
        out.push(':');
        out.push_str(v);
    };
    if let Some(meta) = metadata {
        push("__metadata__", &meta, &mut out);
    }
    for (k, v) in &entries {
        push(k, v, &mut out);
    }
    out.push('}');
    out
}

/// An output file under a temporary name in the destination folder; `commit` renames it
/// into place, dropping it unfinished removes it.
pub struct AtomicWriter {
    layout: FilePlan,
    file: tempfile::NamedTempFile,
    dest: PathBuf,
    preallocated: bool,
}

impl AtomicWriter {
    pub fn create(dest: &Path, layout: FilePlan) -> Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".ctcodec-")
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(|e| CodecError::io(dest, e))?;
        let preallocated =
            preallocate(file.as_file(), layout.total_len).map_err(|e| CodecError::io(dest, e))?;
        file.write_all(&layout.header)
            .map_err(|e| CodecError::io(dest, e))?;
        Ok(AtomicWriter {
            layout,
            file,
            dest: dest.to_path_buf(),
            preallocated,
        })
    }

    /// Writes `bytes` at `offset` within the named tensor; safe to call from many threads.
    pub fn write_part(&self, name: &str, offset: usize, bytes: &[u8]) -> Result<()> {
        let (start, len) = self.layout.slot(name).ok_or_else(|| {
            CodecError::Invalid(format!("tensor {name:?} is not in the output layout"))
        })?;
        if offset + bytes.len() > len {
            return Err(CodecError::Invalid(format!(
                "write past the end of tensor {name:?}"
            )));
        }
        self.raw_file()
            .write_all_at(bytes, start + offset as u64)
            .map_err(|e| CodecError::io(&self.dest, e))
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let (_, len) = self.layout.slot(name).ok_or_else(|| {
            CodecError::Invalid(format!("tensor {name:?} is not in the output layout"))
        })?;
        if bytes.len() != len {
            return Err(CodecError::Invalid(format!(
                "tensor {name:?} has {} bytes, layout expects {len}",
                bytes.len()
            )));
        }
        self.write_part(name, 0, bytes)
    }

    /// The output file mapped for writing in place, when that is safe: only if its blocks
    /// are reserved (a write through a map to a full disk would kill the process with
    /// SIGBUS rather than return an error), and not on network filesystems, where a
    /// mapped write can fail the same way. `CTCODEC_NO_MMAP` turns it off.
    pub fn map_output(&self) -> Result<Option<MappedOutput>> {
        if !self.preallocated
            || std::env::var_os("CTCODEC_NO_MMAP").is_some()
            || super::reader::on_network_filesystem(self.file.as_file())
        {
            return Ok(None);
        }
        // SAFETY: the temporary file has a fresh name only we know, and nothing else
        // resizes it while mapped.
        let map = unsafe { memmap2::MmapMut::map_mut(self.file.as_file()) }
            .map_err(|e| CodecError::io(&self.dest, e))?;
        let slots = self
            .layout
            .slots()
            .map(|(n, off, len)| (n.to_string(), off, len))
            .collect();
        Ok(Some(MappedOutput::new(
            map,
            self.layout.header_len(),
            slots,
        )))
    }

    fn raw_file(&self) -> &File {
        self.file.as_file()
    }

    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        self.file
            .persist(&dest)
            .map_err(|e| CodecError::io(&dest, e.error))?;
        Ok(())
    }
}

/// Reserves the file's blocks in one call (the filesystem then need not reserve them
/// page by page, and a full disk fails here, before any work). Falls back to a sparse
/// `set_len` where unsupported; returns whether the blocks are reserved.
fn preallocate(file: &File, len: u64) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if len > 0 {
            // SAFETY: plain syscall on a descriptor we own.
            if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) } == 0 {
                return Ok(true);
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOSPC) {
                return Err(err);
            }
        }
    }
    file.set_len(len)?;
    Ok(false)
}
