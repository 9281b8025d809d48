#![no_main]
//! The safetensors header parser on arbitrary bytes (prefix, JSON, offsets), and both
//! readers on the same bytes as a file.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    let len = data.len() as u64;
    if let Ok(n) = ctcodec::container::header_len(path, data, len) {
        if let Some(json) = data.get(8..8 + n) {
            let _ = ctcodec::container::parse_header(path, json, len);
        }
    }
    common::decode_all(data, ctcodec::checkpoint::Format::Dense, |_, _| {});
});
