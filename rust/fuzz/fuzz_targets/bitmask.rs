#![no_main]
//! sparse-bitmask decoding (compressed, bitmask, shape, row_offsets) of arbitrary files.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::decode_all(data, ctcodec::checkpoint::Format::SparseBitmask, |_, _| {});
});
