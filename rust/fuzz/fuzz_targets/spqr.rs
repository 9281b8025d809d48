#![no_main]
//! SpQR decoding: the first bytes choose bits, beta1, beta2, the statistics' bits and
//! the output dtype; modules are the ones holding `weight_codes`. Outliers in CSR or
//! PTCSR come from the file itself.

use libfuzzer_sys::fuzz_target;

use ctcodec::codecs::spqr::SpqrParams;
use ctcodec::Dtype;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let params = SpqrParams {
        bits: 1 + u32::from(data[0] % 8),
        beta1: [1, 2, 5, 7, 16, 32][usize::from(data[1] % 6)],
        beta2: [1, 3, 5, 8, 16, 64][usize::from(data[1] / 6 % 6)],
        qq_scale_bits: 1 + u32::from(data[2] % 8),
        qq_zero_bits: 1 + u32::from(data[2] / 8 % 8),
        dtype: [Dtype::F16, Dtype::Bf16, Dtype::F32][usize::from(data[2] / 64 % 3)],
    };
    common::decode_all(&data[3..], ctcodec::checkpoint::Format::Dense, |schemes, name| {
        if let Some(module) = common::module_of(name, &[".weight_codes"]) {
            schemes.spqr.insert(module.to_string(), params);
        }
    });
});
