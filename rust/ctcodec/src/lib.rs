//! ctcodec core: compressed-tensors checkpoint formats in safetensors, with no Python.
//!
//! - [`container`]: the safetensors container (validated reads by mmap or pread,
//!   atomic streaming writes in the reference layout);
//! - [`codecs`]: the byte transforms of each format family, with no names;
//! - [`formats`]: one module per on-disk format behind two traits, and the one table
//!   of format names;
//! - [`checkpoint`]: whole files, compressed or decompressed tensor by tensor with
//!   bounded memory, dispatching each weight to its format once.

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
