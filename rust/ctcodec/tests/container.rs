//! The container against the reference parser (the `safetensors` crate): our writer's
//! files parse there, and on random and mutated headers both parsers agree on whether
//! a file is valid.

use std::path::Path;

use ctcodec::container::{
    parse_header, AtomicWriter, FilePlan, ReadMode, SafetensorsFile, TensorSpec,
};
use ctcodec::Dtype;
use proptest::prelude::*;

const DTYPES: [Dtype; 8] = [
    Dtype::Bf16,
    Dtype::F16,
    Dtype::F32,
    Dtype::I64,
    Dtype::U8,
    Dtype::F8E4M3,
    Dtype::F64,
    Dtype::Bool,
];

fn specs() -> impl Strategy<Value = Vec<(Dtype, Vec<usize>)>> {
    prop::collection::vec(
        (
            prop::sample::select(DTYPES.to_vec()),
            prop::collection::vec(0usize..5, 0..3),
        ),
        0..6,
    )
}

fn write_file(dir: &Path, tensors: &[(Dtype, Vec<usize>)], meta: bool) -> std::path::PathBuf {
    let path = dir.join("t.safetensors");
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .enumerate()
        .map(|(i, (d, s))| TensorSpec::new(format!("t{i}"), *d, s.clone()))
        .collect();
    let metadata = meta.then(|| vec![("format".to_string(), "pt".to_string())]);
    let layout = FilePlan::new(specs.clone(), metadata.as_deref()).unwrap();
    let writer = AtomicWriter::create(&path, layout).unwrap();
    for (i, s) in specs.iter().enumerate() {
        let n = s.shape.iter().product::<usize>() * s.dtype.bits() / 8;
        let bytes: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
        writer.write(&s.name, &bytes).unwrap();
    }
    writer.commit().unwrap();
    path
}

proptest! {
    #[test]
    fn written_files_parse_in_the_reference(tensors in specs(), meta in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), &tensors, meta);
        let bytes = std::fs::read(&path).unwrap();
        let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ours = SafetensorsFile::open(&path, ReadMode::Pread).unwrap();
        prop_assert_eq!(reference.len(), ours.header().tensors.len());
        for t in &ours.header().tensors {
            let view = reference.tensor(&t.name).unwrap();
            prop_assert_eq!(view.shape(), &t.shape[..]);
            prop_assert_eq!(view.data(), &*ours.bytes(t).unwrap());
        }
    }

    #[test]
    fn both_parsers_agree_on_mutated_headers(
        tensors in specs(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        mode in 0u8..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), &tensors, false);
        let mut bytes = std::fs::read(&path).unwrap();
        match mode {
            0 => { let i = pos.index(bytes.len()); bytes[i] = byte; }           // flip a byte anywhere
            1 => { bytes.truncate(cut.index(bytes.len() + 1)); }                // truncate
            _ => { bytes.push(byte); }                                           // trailing garbage
        }
        let reference_ok = safetensors::SafeTensors::deserialize(&bytes).is_ok();
        let ours_ok = ours_accepts(&bytes);
        // We may be stricter (duplicate keys, unknown fields are fine for both), never looser.
        if ours_ok {
            prop_assert!(reference_ok, "we accepted a file the reference rejects");
        }
        if reference_ok && !ours_ok {
            // The only accepted difference: a duplicate key the reference silently collapses.
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(text.matches("\"t").count() > tensors.len(), "we rejected a file the reference accepts");
        }
    }
}

fn ours_accepts(bytes: &[u8]) -> bool {
    let path = Path::new("mem");
    let len = bytes.len() as u64;
    let Ok(n) = ctcodec::container::header_len(path, bytes, len) else {
        return false;
    };
    parse_header(path, &bytes[8..8 + n], len).is_ok()
}

#[test]
fn failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.safetensors");
    let layout = FilePlan::new(vec![TensorSpec::new("a", Dtype::F32, vec![2])], None).unwrap();
    let writer = AtomicWriter::create(&dest, layout).unwrap();
    assert!(writer.write("a", &[0u8; 3]).is_err()); // wrong size
    drop(writer); // never committed
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file left behind"
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let json = br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let err = parse_header(Path::new("f"), json, 8 + json.len() as u64 + 1).unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
}

#[test]
fn huge_header_is_refused_before_reading_it() {
    let mut bytes = (200_000_000u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let err = ctcodec::container::header_len(Path::new("f"), &bytes, 300_000_000).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
}
