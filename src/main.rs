//! The `normlab` binary: everything is in the library; this only reports errors.

fn main() {
    // Die quietly like other Unix tools when the reader of stdout goes away (`normlab run
    // --dry-run | head`) instead of panicking on the failed write. Finished results are
    // written atomically elsewhere, so nothing is lost.
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(err) = normlab::cli::main() {
        eprintln!("error: {}", normlab::util::error_text(&err));
        std::process::exit(1);
    }
}
