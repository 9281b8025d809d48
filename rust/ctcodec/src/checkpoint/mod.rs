//! Whole files: compress a dense safetensors file (or in-memory tensors) to a
//! compressed one, and read or write the dense form of a compressed file. Each weight
//! goes through its format's module ([`crate::formats`]) by one trait call.

mod background;
mod compress;
mod decode;
mod format;
mod plan;
mod schedule;
mod source;

pub use crate::formats::Encoding;
pub use compress::{compress_to_file, module_of, TensorStat};
pub use decode::{decompress_file, read_dense, read_dense_batch, Slot};
pub use format::Format;
pub use plan::{plan, DenseItem, Schemes, Source};
pub use source::{FileSource, MemorySource, TensorSource};
