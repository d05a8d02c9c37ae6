//! The `normlab` binary: everything is in the library; this only reports errors.

fn main() {
    if let Err(err) = normlab::cli::main() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
