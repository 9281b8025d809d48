//! Where the tensors to compress come from: a safetensors file or caller memory.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::container::{SafetensorsFile, TensorSpec};
use crate::error::Result;

/// An ordered set of named tensors whose bytes can be fetched one at a time.
pub trait TensorSource: Sync {
    /// Names errors; for memory sources, the file being written.
    fn path(&self) -> &Path;
    fn specs(&self) -> &[TensorSpec];
    fn bytes(&self, index: usize) -> Result<Cow<'_, [u8]>>;
    /// Called once the tensor's bytes are no longer needed.
    fn release(&self, _index: usize) {}
    /// Called after each full pass over the tensors.
    fn end_pass(&self) {}
    fn metadata(&self) -> Option<&[(String, String)]>;
}

/// A safetensors file, in data order, so reads go front to back.
pub struct FileSource {
    file: SafetensorsFile,
    specs: Vec<TensorSpec>,
}

impl FileSource {
    pub fn new(file: SafetensorsFile) -> Self {
        let specs = file
            .header()
            .tensors
            .iter()
            .map(|t| TensorSpec::new(t.name.clone(), t.dtype, t.shape.clone()))
            .collect();
        FileSource { file, specs }
    }
}

impl TensorSource for FileSource {
    fn path(&self) -> &Path {
        self.file.path()
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn bytes(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        self.file.bytes(&self.file.header().tensors[index])
    }
    fn release(&self, index: usize) {
        self.file.release(&self.file.header().tensors[index]);
    }
    fn end_pass(&self) {
        self.file.release_all();
    }
    fn metadata(&self) -> Option<&[(String, String)]> {
        self.file.header().metadata.as_deref()
    }
}

/// Tensors the caller holds in memory (e.g. numpy arrays handed over from Python).
pub struct MemorySource<'a> {
    path: PathBuf,
    specs: Vec<TensorSpec>,
    data: Vec<&'a [u8]>,
    metadata: Option<Vec<(String, String)>>,
}

impl<'a> MemorySource<'a> {
    pub fn new(
        path: &Path,
        tensors: Vec<(TensorSpec, &'a [u8])>,
        metadata: Option<Vec<(String, String)>>,
    ) -> Self {
        let (specs, data) = tensors.into_iter().unzip();
        MemorySource {
            path: path.to_path_buf(),
            specs,
            data,
            metadata,
        }
    }
}

impl TensorSource for MemorySource<'_> {
    fn path(&self) -> &Path {
        &self.path
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn bytes(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(self.data[index]))
    }
    fn metadata(&self) -> Option<&[(String, String)]> {
        self.metadata.as_deref()
    }
}
