//! Build script: records the git commit the binary is built from, so a results row names the
//! source of the binary that produced it. Asking git at run time named whatever tree the binary
//! happened to run in (a GPU machine's copy of a later commit, for one) instead.

use std::path::Path;
use std::process::Command;

fn git(dir: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=NORMLAB_GIT_COMMIT");
    if std::env::var_os("NORMLAB_GIT_COMMIT").is_some() {
        // Set by whoever builds (a packager without the git history): used as given.
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // The sources the binary is built from: "-dirty" means they differ from the commit.
    let sources = ["src", "Cargo.toml", "Cargo.lock", "build.rs"];
    for s in sources {
        println!("cargo:rerun-if-changed={s}");
    }
    let commit = match git(&dir, &["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            status.extend(sources);
            let dirty = git(&dir, &status).is_some_and(|s| !s.is_empty());
            // A new commit moves HEAD or the branch it points to (or packed-refs): rerun then.
            if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
                let mut watch = vec![Path::new(&git_dir).join("HEAD"), Path::new(&git_dir).join("packed-refs")];
                if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                    watch.push(Path::new(&git_dir).join(branch));
                }
                for p in watch.iter().filter(|p| p.exists()) {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=NORMLAB_GIT_COMMIT={commit}");
}
