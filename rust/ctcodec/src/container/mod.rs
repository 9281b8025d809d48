//! The safetensors container: header rules, reading, atomic writing.

mod header;
mod mapped;
mod reader;
mod release;
mod writer;

pub use header::{byte_len, header_len, parse_header, Header, TensorInfo, MAX_HEADER_SIZE};
pub use mapped::{MappedOutput, Releaser};
pub use reader::{ReadMode, SafetensorsFile};
pub use writer::{AtomicWriter, FilePlan, TensorSpec};
