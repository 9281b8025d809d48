//! Where decode time goes: the bitmask kernel into a warm buffer vs a fresh allocation.
//! cargo run --release --example decode_speed -- FILE.safetensors

use std::time::Instant;

use std::collections::BTreeMap;

use ctcodec::checkpoint::{plan, Format};
use ctcodec::codecs::bitmask;
use ctcodec::container::{ReadMode, SafetensorsFile};
use ctcodec::formats::sparse_bitmask::{self, Stored};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("a compressed .safetensors file");
    let file = SafetensorsFile::open(path.as_ref(), ReadMode::Mmap).unwrap();
    let items = plan(&file, Format::SparseBitmask, &Default::default()).unwrap();
    let mut groups: BTreeMap<&str, BTreeMap<&str, _>> = BTreeMap::new();
    for t in &file.header().tensors {
        if let Some((module, part)) = t.name.rsplit_once('.') {
            if sparse_bitmask::PARTS.contains(&part) {
                groups.entry(module).or_default().insert(part, t);
            }
        }
    }
    let parts: Vec<Stored> = groups
        .iter()
        .map(|(m, p)| Stored::find(&file, m, p).unwrap())
        .collect();
    let dense: usize = parts.iter().map(|p| p.geometry.dense_bytes()).sum();
    let prepared: Vec<_> = parts
        .iter()
        .map(|p| {
            let mask = file.bytes(&p.bitmask).unwrap().into_owned();
            let vals = file.bytes(&p.compressed).unwrap().into_owned();
            let counts = bitmask::mask_row_counts(&mask, &p.geometry, true);
            (p.geometry, mask, vals, counts)
        })
        .collect();
    let mut warm: Vec<Vec<u8>> = prepared
        .iter()
        .map(|(g, ..)| vec![1u8; g.dense_bytes()])
        .collect();
    for round in 0..3 {
        let t = Instant::now();
        for ((g, m, v, c), out) in prepared.iter().zip(warm.iter_mut()) {
            out.fill(0);
            bitmask::decode_into(v, m, g, c, out, true);
        }
        let warm_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (g, m, v, c) in &prepared {
            let mut out = ctcodec::buffer::zeroed(g.dense_bytes());
            bitmask::decode_into(v, m, g, c, &mut out, true);
            std::hint::black_box(&out);
        }
        let fresh_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (g, m, _, _) in &prepared {
            std::hint::black_box(bitmask::mask_row_counts(m, g, true));
        }
        let count_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut total = 0usize;
        for item in &items {
            total +=
                std::hint::black_box(ctcodec::checkpoint::read_dense(&file, item).unwrap()).len();
        }
        let full_s = t.elapsed().as_secs_f64();
        println!(
            "  read_dense over the whole file: {:.2} GB/s",
            total as f64 / 1e9 / full_s
        );
        let gb = dense as f64 / 1e9;
        println!(
            "round {round}: warm (fill+decode) {:.2} GB/s, fresh alloc {:.2} GB/s, popcount pass {:.1} GB/s",
            gb / warm_s,
            gb / fresh_s,
            gb / count_s
        );
    }
}
