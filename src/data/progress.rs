//! Progress bars for the long steps of an import (download, decoding), on stderr. indicatif
//! hides them when stderr is not a terminal, so logs and tests stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `len` items, labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})").expect("valid template").progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// A bar counting bytes (`len` when the size is known, a spinner otherwise), labelled `what`.
pub fn bytes_bar(len: Option<u64>, what: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => {
            let b = ProgressBar::new(n);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})").expect("valid template").progress_chars("=> "),
            );
            b
        }
        None => {
            let b = ProgressBar::new_spinner();
            b.set_style(ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}").expect("valid template"));
            b
        }
    };
    bar.set_message(what.to_string());
    bar
}
