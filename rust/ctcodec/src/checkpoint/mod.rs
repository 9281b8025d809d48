//! Whole files: compress a dense safetensors file (or in-memory tensors) to a
//! compressed one, and read or write the dense form of a compressed file.

mod background;
mod compress;
mod decode;
mod format;
mod parts;
mod plan;
mod quant_plan;
mod schedule;
mod source;
mod spqr_plan;

pub use compress::{compress_to_file, module_of, Encoding, TensorStat};
pub use decode::{decompress_file, read_dense, read_dense_batch, Slot};
pub use format::Format;
pub use plan::{plan, BitmaskParts, DenseItem, Source};
pub use quant_plan::{QuantParts, Schemes};
pub use source::{FileSource, MemorySource, TensorSource};
pub use spqr_plan::SpqrParts;
