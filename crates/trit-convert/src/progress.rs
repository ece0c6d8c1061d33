//! The conversion progress bar (bytes written, current tensor).

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn bar(enabled: bool, total_bytes: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        )
        .expect("static progress template is valid"),
    );
    bar
}
