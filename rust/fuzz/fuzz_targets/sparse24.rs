#![no_main]
//! sparse-24-bitmask decoding, alone (first byte even) and stacked on int8 / fp8
//! quantization (odd: the modules with a `weight_scale` get a naive-quantized scheme).

use libfuzzer_sys::fuzz_target;

use ctcodec::codecs::quant::{QType, QuantArgs, QuantFormat, QuantSpec, Strategy};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else { return };
    let stacked = selector & 1 == 1;
    let qtype = if selector & 2 == 0 { QType::Int } else { QType::Float };
    common::decode_all(file, ctcodec::checkpoint::Format::Sparse24Bitmask, |schemes, name| {
        if let Some(module) = common::module_of(name, &[".weight_scale"]).filter(|_| stacked) {
            let spec = QuantSpec {
                format: QuantFormat::Naive,
                args: QuantArgs { num_bits: 8, qtype, symmetric: true, strategy: Strategy::Channel },
                global_scale: None,
            };
            schemes.quant.insert(module.to_string(), spec);
        }
    });
});
