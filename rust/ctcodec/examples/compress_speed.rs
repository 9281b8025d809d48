//! Time compress_to_file on one file, every 2-D `proj.weight` compressed.
//! cargo run --release --example compress_speed -- IN.safetensors OUT.safetensors

use std::time::Instant;

use ctcodec::checkpoint::{compress_to_file, Encoding, FileSource, TensorSource};
use ctcodec::codecs::quant::{QType, QuantArgs, QuantFormat, QuantSpec, Strategy};
use ctcodec::container::{ReadMode, SafetensorsFile};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    for _ in 0..3 {
        let src = FileSource::new(SafetensorsFile::open(args[1].as_ref(), ReadMode::Auto).unwrap());
        // A third argument `w4a16` quantizes (group 128) instead of bitmask-compressing.
        let encoding = match args.get(3).map(String::as_str) {
            Some("w4a16") => Encoding::Quant(
                QuantSpec {
                    format: QuantFormat::Pack { legacy: false },
                    args: QuantArgs {
                        num_bits: 4,
                        qtype: QType::Int,
                        symmetric: true,
                        strategy: Strategy::Group(128),
                    },
                    global_scale: None,
                },
                None,
            ),
            _ => Encoding::Bitmask(None),
        };
        let select: Vec<Encoding> = src
            .specs()
            .iter()
            .map(|s| {
                if s.name.ends_with("proj.weight") && s.shape.len() == 2 {
                    encoding
                } else {
                    Encoding::Keep
                }
            })
            .collect();
        let bytes: u64 = std::fs::metadata(&args[1]).unwrap().len();
        let _ = std::fs::remove_file(&args[2]);
        let t = Instant::now();
        compress_to_file(&src, args[2].as_ref(), &select, &|_| {}).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("{:.3} s, {:.2} GB/s", s, bytes as f64 / 1e9 / s);
    }
}
