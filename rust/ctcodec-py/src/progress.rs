//! A terminal progress bar over bytes processed, drawn from Rust so it keeps moving
//! while the GIL is released.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total_bytes: u64, label: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}
