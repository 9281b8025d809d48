//! One error type for the whole core: what went wrong, in which file and tensor.

use std::path::{Path, PathBuf};

pub type Result<T, E = CodecError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes break the safetensors container rules.
    #[error("{file}: invalid safetensors file: {reason}")]
    Container { file: PathBuf, reason: String },

    /// One tensor (or a group of companion tensors) is malformed for its format.
    #[error("{file}: tensor {tensor:?}: {reason}")]
    Tensor {
        file: PathBuf,
        tensor: String,
        reason: String,
    },

    /// A request the codec cannot serve (unknown format, unsupported dtype, bad argument).
    #[error("{0}")]
    Invalid(String),

    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CodecError {
    pub fn container(file: &Path, reason: impl Into<String>) -> Self {
        CodecError::Container {
            file: file.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn tensor(file: &Path, tensor: &str, reason: impl Into<String>) -> Self {
        CodecError::Tensor {
            file: file.to_path_buf(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    /// Attaches the file name to an error raised before it was known.
    pub fn in_file(self, file: &Path) -> Self {
        match self {
            CodecError::Invalid(reason) => CodecError::container(file, reason),
            other => other,
        }
    }

    pub fn io(file: &Path, source: std::io::Error) -> Self {
        CodecError::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}
