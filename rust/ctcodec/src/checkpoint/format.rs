//! Which on-disk format a file holds.

use std::fmt;
use std::str::FromStr;

use crate::container::Header;
use crate::error::CodecError;
use crate::formats::names::{self, Family};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Plain tensors, nothing to decode.
    Dense,
    /// compressed-tensors' `sparse-bitmask` (legacy line, 0.9 to 0.14).
    SparseBitmask,
    /// compressed-tensors' `sparse-24-bitmask` (legacy line, 0.9 to 0.14).
    Sparse24Bitmask,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Dense => "dense",
            Format::SparseBitmask => "sparse-bitmask",
            Format::Sparse24Bitmask => "sparse-24-bitmask",
        }
    }

    /// Guesses the format from tensor names alone, for files without a config.json.
    pub fn detect(header: &Header) -> Format {
        let has = |suffix: &str| header.tensors.iter().any(|t| t.name.ends_with(suffix));
        // Either part is enough: a file holding only one of them is a broken sparse file
        // (reported as a missing companion), not a dense one.
        if has(".bitmask") || has(".compressed") {
            // 2:4 files store `shape` as [2, 1] and have no row_offsets.
            let two_four = header
                .tensors
                .iter()
                .any(|t| t.name.ends_with(".shape") && t.shape == [2, 1])
                && !has(".row_offsets");
            if two_four {
                Format::Sparse24Bitmask
            } else {
                Format::SparseBitmask
            }
        } else {
            Format::Dense
        }
    }
}

impl FromStr for Format {
    type Err = CodecError;
    /// Accepts the names compressed-tensors' registry accepts (`_` or `-`, any case).
    fn from_str(s: &str) -> Result<Self, CodecError> {
        let entry = names::lookup(s, &[Family::Dense, Family::Sparse])?;
        Ok(match entry.name {
            "sparse-bitmask" => Format::SparseBitmask,
            "sparse-24-bitmask" => Format::Sparse24Bitmask,
            _ => Format::Dense,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
