//! Every format name ctcodec knows, defined once: the Rust parsers and the Python
//! package (through `ctcodec._native.formats()`) both read this table.

use crate::error::CodecError;

/// What kind of thing a format stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Plain tensors.
    Dense,
    /// compressed-tensors' sparsity formats (the file-wide `format`).
    Sparse,
    /// compressed-tensors' quantization formats (per config group).
    Quantized,
    /// ctcodec's own SpQR format.
    Spqr,
    /// Another tool's layout, read to be converted (not written).
    Foreign,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Dense => "dense",
            Family::Sparse => "sparse",
            Family::Quantized => "quantized",
            Family::Spqr => "spqr",
            Family::Foreign => "foreign",
        }
    }
}

/// One format: its registry name, what it stores, and whether a config or recipe may
/// name it (ctcodec then writes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatName {
    pub name: &'static str,
    pub family: Family,
    pub writable: bool,
}

const fn entry(name: &'static str, family: Family, writable: bool) -> FormatName {
    FormatName {
        name,
        family,
        writable,
    }
}

/// The table. compressed-tensors' `naive-`, `int-` and `float-quantized` share one
/// layout; `pack-quantized-legacy` is the word-aligned packing of 0.17 and earlier,
/// chosen from the config's version, never named in a config.
pub const FORMATS: &[FormatName] = &[
    entry("dense", Family::Dense, true),
    entry("sparse-bitmask", Family::Sparse, true),
    entry("sparse-24-bitmask", Family::Sparse, true),
    entry("pack-quantized", Family::Quantized, true),
    entry("pack-quantized-legacy", Family::Quantized, false),
    entry("naive-quantized", Family::Quantized, true),
    entry("int-quantized", Family::Quantized, true),
    entry("float-quantized", Family::Quantized, true),
    entry("nvfp4-pack-quantized", Family::Quantized, true),
    entry("mxfp4-pack-quantized", Family::Quantized, true),
    entry("marlin-24", Family::Quantized, true),
    entry("spqr", Family::Spqr, true),
    entry("gptq", Family::Foreign, false),
];

/// compressed-tensors' registry spelling: lower case, `_` and spaces as `-`.
pub fn canonical(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', ' '], "-")
}

/// The entry for `name` (any registry spelling), or an error listing the `family`'s names.
pub fn lookup(name: &str, families: &[Family]) -> Result<&'static FormatName, CodecError> {
    let norm = canonical(name);
    FORMATS
        .iter()
        .find(|f| f.name == norm && families.contains(&f.family))
        .ok_or_else(|| {
            let known: Vec<&str> = FORMATS
                .iter()
                .filter(|f| families.contains(&f.family))
                .map(|f| f.name)
                .collect();
            CodecError::Invalid(format!(
                "unknown or unsupported format {norm:?} (supported: {})",
                known.join(", ")
            ))
        })
}
