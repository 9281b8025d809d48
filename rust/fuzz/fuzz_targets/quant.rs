#![no_main]
//! Every quantized format: the first two bytes choose the format (pack-quantized in both
//! layouts, naive int8/fp8, NVFP4, MXFP4, marlin-24), the bit width (odd widths
//! included), symmetry and strategy (tensor, channel, group sizes, tensor-group, block);
//! the rest is the file. Modules are the ones holding a `weight_packed`, `weight`,
//! `B_24` or `compressed` beside a `weight_scale`; `weight_g_idx` is read when present.

use libfuzzer_sys::fuzz_target;

use ctcodec::codecs::quant::{QType, QuantArgs, QuantFormat, QuantSpec, Strategy};

#[path = "common.rs"]
mod common;

fn spec(a: u8, b: u8) -> QuantSpec {
    let format = match a % 6 {
        0 => QuantFormat::Pack { legacy: false },
        1 => QuantFormat::Pack { legacy: true },
        2 => QuantFormat::Naive,
        3 => QuantFormat::Nvfp4,
        4 => QuantFormat::Mxfp4,
        _ => QuantFormat::Marlin24,
    };
    let num_bits = 1 + u32::from(b % 8);
    let strategy = match (a / 6) % 6 {
        0 => Strategy::Tensor,
        1 => Strategy::Channel,
        2 => Strategy::Group([1, 3, 8, 16, 32, 128][usize::from(b / 8) % 6]),
        3 => Strategy::TensorGroup(16),
        4 => Strategy::Block(1 + usize::from(b / 8) % 4, 1 + usize::from(b / 32) % 4),
        _ => Strategy::Group(32),
    };
    let qtype = if matches!(format, QuantFormat::Nvfp4 | QuantFormat::Mxfp4) || (a / 36) % 2 == 1 {
        QType::Float
    } else {
        QType::Int
    };
    QuantSpec {
        format,
        args: QuantArgs { num_bits, qtype, symmetric: (a / 72) % 2 == 0, strategy },
        global_scale: None,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let spec = spec(data[0], data[1]);
    if spec.validate().is_err() {
        return; // the binding refuses such a spec before any file is read
    }
    common::decode_all(&data[2..], ctcodec::checkpoint::Format::Dense, |schemes, name| {
        if let Some(module) = common::module_of(name, &[".weight_scale"]) {
            schemes.quant.insert(module.to_string(), spec.clone());
        }
    });
});
