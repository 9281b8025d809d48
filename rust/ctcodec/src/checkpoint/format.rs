//! Which on-disk format a file holds.

use std::fmt;
use std::str::FromStr;

use crate::container::Header;
use crate::error::CodecError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Plain tensors, nothing to decode.
    Dense,
    /// compressed-tensors' `sparse-bitmask` (legacy line, 0.9 to 0.14).
    SparseBitmask,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Dense => "dense",
            Format::SparseBitmask => "sparse-bitmask",
        }
    }

    /// Guesses the format from tensor names alone, for files without a config.json.
    pub fn detect(header: &Header) -> Format {
        let has = |suffix: &str| header.tensors.iter().any(|t| t.name.ends_with(suffix));
        // Either part is enough: a file holding only one of them is a broken sparse file
        // (reported as a missing companion), not a dense one.
        if has(".bitmask") || has(".compressed") {
            Format::SparseBitmask
        } else {
            Format::Dense
        }
    }
}

impl FromStr for Format {
    type Err = CodecError;
    /// Accepts the names compressed-tensors' registry accepts (`_` or `-`, any case).
    fn from_str(s: &str) -> Result<Self, CodecError> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['_', ' '], "-")
            .as_str()
        {
            "dense" => Ok(Format::Dense),
            "sparse-bitmask" => Ok(Format::SparseBitmask),
            other => Err(CodecError::Invalid(format!(
                "unknown or unsupported format {other:?} (supported: dense, sparse-bitmask)"
            ))),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
