//! ctcodec core: compressed-tensors checkpoint formats in safetensors, with no Python.
//!
//! - [`container`]: the safetensors container (validated reads by mmap or pread,
//!   atomic streaming writes in the reference layout);
//! - [`bitmask`]: the sparse-bitmask format, per tensor;
//! - [`checkpoint`]: whole files, compressed or decompressed tensor by tensor with
//!   bounded memory.

pub mod buffer;
pub mod checkpoint;
pub mod codecs;
pub mod container;
pub mod dtype;
pub mod error;
pub mod formats;
pub mod parallel;
pub mod prune;

pub use dtype::Dtype;
pub use error::{CodecError, Result};
