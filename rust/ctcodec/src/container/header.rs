//! Parsing and validating a safetensors header, with the reference parser's rules:
//! capped size, checked arithmetic, contiguous non-overlapping offsets from 0,
//! byte length = dtype x shape, and a file that ends exactly at the last tensor.
//!
//! We parse the header ourselves instead of calling `safetensors::SafeTensors::read_metadata`
//! because that function needs the whole file as one slice; the pread fallback has only
//! the header bytes and the file length. The tests check both parsers agree.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

/// The reference implementation refuses headers larger than this.
pub const MAX_HEADER_SIZE: usize = 100_000_000;

/// Where one tensor lives, with offsets relative to the start of the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Header {
    /// `__metadata__`, kept in file order.
    pub metadata: Option<Vec<(String, String)>>,
    /// Tensors sorted by their data offsets.
    pub tensors: Vec<TensorInfo>,
    /// Byte offset of the data section in the file (8 + header length).
    pub data_start: usize,
    index: HashMap<String, usize>,
}

impl Header {
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn data_len(&self) -> usize {
        self.tensors.last().map_or(0, |t| t.end)
    }
}

/// Reads the 8-byte prefix and returns the header length it announces, checked
/// against the cap and the file length.
pub fn header_len(file: &Path, prefix: &[u8], file_len: u64) -> Result<usize> {
    if prefix.len() < 8 || file_len < 8 {
        return Err(CodecError::container(
            file,
            "file is shorter than the 8-byte header size",
        ));
    }
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_SIZE as u64 {
        return Err(CodecError::container(
            file,
            format!("header size {n} exceeds the {MAX_HEADER_SIZE}-byte limit"),
        ));
    }
    if 8 + n > file_len {
        return Err(CodecError::container(
            file,
            format!("header size {n} runs past the end of the {file_len}-byte file"),
        ));
    }
    Ok(n as usize)
}

/// Parses the JSON header (the bytes after the 8-byte prefix) and validates it against
/// the total file length.
pub fn parse_header(file: &Path, json: &[u8], file_len: u64) -> Result<Header> {
    let bad = |reason: String| CodecError::container(file, reason);
    let text = std::str::from_utf8(json).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let entries: Entries =
        serde_json::from_str(text).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;

    let mut metadata = None;
    let mut tensors = Vec::with_capacity(entries.0.len());
    let mut seen = std::collections::HashSet::new();
    for (name, value) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(bad(format!("duplicate key {name:?} in header")));
        }
        if name == "__metadata__" {
            if value.get().trim() == "null" {
                continue; // the reference reader takes a null as no metadata
            }
            let map: indexmap_free::StringMap = serde_json::from_str(value.get())
                .map_err(|e| bad(format!("__metadata__ must map strings to strings: {e}")))?;
            metadata = Some(map.0);
            continue;
        }
        tensors.push(tensor_info(file, name, &value)?);
    }

    tensors.sort_by_key(|t| (t.start, t.end));
    let mut expected_start = 0usize;
    for t in &tensors {
        if t.start != expected_start || t.end < t.start {
            return Err(CodecError::tensor(
                file,
                &t.name,
                format!(
                    "data offsets [{}, {}] are not contiguous (expected start {expected_start})",
                    t.start, t.end
                ),
            ));
        }
        let nbytes = byte_len(t.dtype, &t.shape).ok_or_else(|| {
            CodecError::tensor(
                file,
                &t.name,
                format!(
                    "shape {:?} x {} overflows or is not whole bytes",
                    t.shape, t.dtype
                ),
            )
        })?;
        if t.len() != nbytes {
            return Err(CodecError::tensor(
                file,
                &t.name,
                format!(
                    "holds {} bytes but {} {:?} needs {nbytes}",
                    t.len(),
                    t.dtype,
                    t.shape
                ),
            ));
        }
        expected_start = t.end;
    }

    let data_start = 8 + json.len();
    let expected_len = (data_start as u64).checked_add(expected_start as u64);
    if expected_len != Some(file_len) {
        return Err(bad(format!(
            "file is {file_len} bytes but the header describes {}",
            data_start as u64 + expected_start as u64
        )));
    }

    let index = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    Ok(Header {
        metadata,
        tensors,
        data_start,
        index,
    })
}

/// Bytes needed for `shape` elements of `dtype`, or None on overflow or a partial byte.
pub fn byte_len(dtype: Dtype, shape: &[usize]) -> Option<usize> {
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bits = numel.checked_mul(dtype.bits())?;
    (bits % 8 == 0).then_some(bits / 8)
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

fn tensor_info(file: &Path, name: String, value: &RawValue) -> Result<TensorInfo> {
    // Straight from the text (not via serde_json::Value) so duplicate fields are refused.
    let raw: RawTensor = serde_json::from_str(value.get())
        .map_err(|e| CodecError::tensor(file, &name, format!("bad header entry: {e}")))?;
    let dtype = raw
        .dtype
        .parse::<Dtype>()
        .map_err(|e| CodecError::tensor(file, &name, e))?;
    Ok(TensorInfo {
        name,
        dtype,
        shape: raw.shape,
        start: raw.data_offsets.0,
        end: raw.data_offsets.1,
    })
}

/// The header's top-level object as ordered entries, so duplicate keys can be refused.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

mod indexmap_free {
    //! A string-to-string map that keeps its order, without pulling in a map crate.
    use super::*;

    pub struct StringMap(pub Vec<(String, String)>);

    impl<'de> Deserialize<'de> for StringMap {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = StringMap;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object of strings")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<StringMap, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, String>()? {
                        if out.iter().any(|(seen, _)| *seen == k) {
                            return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                        }
                        out.push((k, v));
                    }
                    Ok(StringMap(out))
                }
            }
            d.deserialize_map(V)
        }
    }
}
