//! Shared by the fuzz targets: the input bytes become a safetensors file on a tmpfs,
//! opened by both readers (mmap and pread) and decoded tensor by tensor. Errors are
//! fine; a panic, a crash, a leak or a runaway allocation is a finding.

use std::io::Write;

use ctcodec::checkpoint::{plan, read_dense, Format, Schemes};
use ctcodec::container::{ReadMode, SafetensorsFile};

/// Decodes every tensor of `bytes` read as a file in `format` with `schemes` filled in
/// by `fill` from the tensor names the header declares.
pub fn decode_all(bytes: &[u8], format: Format, fill: impl Fn(&mut Schemes, &str)) {
    let Ok(mut file) = tempfile::Builder::new().prefix("ctcodec-fuzz").tempfile_in(tmp_dir()) else {
        return;
    };
    if file.write_all(bytes).is_err() {
        return;
    }
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let Ok(st) = SafetensorsFile::open(file.path(), mode) else {
            continue;
        };
        let mut schemes = Schemes::default();
        let names: Vec<String> = st.header().tensors.iter().map(|t| t.name.clone()).collect();
        for name in &names {
            fill(&mut schemes, name);
        }
        let Ok(items) = plan(&st, format, &schemes) else {
            continue;
        };
        for item in &items {
            let _ = read_dense(&st, item);
        }
    }
}

fn tmp_dir() -> &'static str {
    if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    }
}

/// The module a stored part belongs to, for the given part suffixes.
#[allow(dead_code)] // not every target has modules
pub fn module_of<'a>(name: &'a str, suffixes: &[&str]) -> Option<&'a str> {
    suffixes.iter().find_map(|s| name.strip_suffix(s))
}
