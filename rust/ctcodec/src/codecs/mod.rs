//! The byte transforms of each format family, tensor by tensor, with no notion of
//! files or names: the bitmask and 2:4 sparse codecs, round-to-nearest quantization
//! and its packings, and SpQR's tiles. `formats` puts names and checks around them.

pub mod bitmask;
pub mod quant;
pub mod sparse24;
pub mod spqr;
