//! One module per on-disk format: everything a format knows (its stored parts and
//! their names, how to check them, encode and decode them) sits in its module, behind
//! two traits that `checkpoint` dispatches through once.
//!
//! - [`WeightEncoder`]: how one dense weight becomes the format's stored parts;
//! - [`StoredWeight`]: one compressed weight found in a file, and how it decodes;
//! - [`names`]: the format names, defined once and exported (Python reads them too).
//!
//! The byte transforms themselves live in [`crate::codecs`]; a new format is a module
//! here that implements the traits (see the README's "How to add a format").

pub mod gptq;
pub mod names;
pub mod quantized;
pub mod sparse24;
pub mod sparse_bitmask;
pub mod spqr;

use std::fmt;

use crate::codecs::quant::QuantSpec;
use crate::container::{SafetensorsFile, TensorInfo, TensorSpec};
use crate::error::Result;
use crate::prune::Prune;

pub use names::{Family, FormatName, FORMATS};

/// One stored tensor of a weight: `<module>.<suffix>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub suffix: &'static str,
    pub dtype: crate::dtype::Dtype,
    pub shape: Vec<usize>,
}

/// What sizing a weight learned from its values: the bitmask format's non-zeros per
/// row; nothing for formats whose part sizes follow from the shape alone.
pub type Sizing = Option<Vec<usize>>;

/// What encoding one weight found out about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Non-zero elements (numel where the format does not count them).
    pub nonzero: usize,
    /// At most 2 non-zeros in every 4 consecutive elements of a row.
    pub two_four: bool,
}

/// The writing side of a format, for one dense `<module>.weight`.
pub trait WeightEncoder: Send + Sync {
    /// The format's registry name (as config.json writes it).
    fn format(&self) -> &'static str;
    /// Whether [`size`](Self::size) needs the weight's values (else shape and dtype do).
    fn sizes_from_values(&self) -> bool {
        false
    }
    /// Pass 1: checks the weight can be stored and learns what sizes its parts.
    fn size(
        &self,
        dense: &TensorSpec,
        values: Option<&[u8]>,
        split: bool,
    ) -> Result<Sizing, String>;
    /// The stored parts (`<module>.<suffix>`), in the order `encode` fills them.
    fn parts(&self, dense: &TensorSpec, sizing: &Sizing) -> Result<Vec<Part>, String>;
    /// Pass 2: encodes `values` into `outs` (sized as `parts`, zeroed).
    fn encode(
        &self,
        dense: &TensorSpec,
        values: &[u8],
        sizing: &Sizing,
        split: bool,
        outs: &mut [&mut [u8]],
    ) -> Result<Encoded, String>;
}

/// The reading side of a format: one compressed weight found in a file, its stored
/// tensors checked against each other.
pub trait StoredWeight: Send + Sync + fmt::Debug {
    /// The module the weight belongs to (`<module>.weight` is the dense name).
    fn module(&self) -> &str;
    /// Every stored tensor the weight is made of (none of them is yielded as is).
    fn members(&self) -> Vec<&TensorInfo>;
    /// Decodes into `out` (zeroed, exactly the dense size); the caller releases the
    /// members afterwards.
    fn decode_into(&self, file: &SafetensorsFile, split: bool, out: &mut [u8]) -> Result<()>;
}

/// What to do with one input tensor when a file is compressed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Encoding {
    /// Copy it unchanged.
    Keep,
    /// sparse-bitmask, after optional magnitude pruning.
    Bitmask(Option<Prune>),
    /// Quantize it (`<module>.weight` becomes the format's parts), after optional pruning.
    Quant(QuantSpec, Option<Prune>),
    /// sparse-24-bitmask, of the weight or of its naive-quantized codes, after
    /// optional pruning.
    Sparse24(Option<QuantSpec>, Option<Prune>),
}

impl Encoding {
    /// The encoding of a weight to compress: quantized with `quant`, sparse-bitmask
    /// without, stored as sparse-24-bitmask (of the weight or its codes) with `two_four`.
    pub fn of(quant: Option<QuantSpec>, prune: Option<Prune>, two_four: bool) -> Encoding {
        match (quant, two_four) {
            (quant, true) => Encoding::Sparse24(quant, prune),
            (None, false) => Encoding::Bitmask(prune),
            (Some(q), false) => Encoding::Quant(q, prune),
        }
    }

    /// Magnitude pruning to apply before encoding.
    pub fn prune(self) -> Option<Prune> {
        match self {
            Encoding::Keep => None,
            Encoding::Bitmask(p) | Encoding::Quant(_, p) | Encoding::Sparse24(_, p) => p,
        }
    }

    /// The format module that writes this encoding (None: copied unchanged).
    pub fn encoder(self) -> Option<Box<dyn WeightEncoder>> {
        match self {
            Encoding::Keep => None,
            Encoding::Bitmask(_) => Some(Box::new(sparse_bitmask::Encoder)),
            Encoding::Quant(spec, _) => Some(Box::new(quantized::Encoder(spec))),
            Encoding::Sparse24(quant, prune) => Some(Box::new(sparse24::Encoder {
                quant,
                strict: prune.is_none(),
            })),
        }
    }
}

/// An int64 shape vector's bytes, as the `shape` / `weight_shape` parts store it.
pub(crate) fn shape_bytes(shape: &[usize]) -> Vec<u8> {
    shape
        .iter()
        .flat_map(|&d| (d as i64).to_le_bytes())
        .collect()
}
