//! Build script: records the git commit the binary is built from, so a results row names the
//! source of the binary that produced it (asking git at run time named whatever tree the binary
//! happened to run in: a GPU machine's copy of a later commit, for one); and, with the `cuda`
//! feature, compiles normlab's fused kernels (`src/ops/kernels/fused.cu`) to PTX with the nvcc
//! on PATH (the pinned one of scripts/cuda-toolchain.sh), for the driver to JIT on the GPU
//! machine: a build machine has no GPU.

use std::path::Path;
use std::process::Command;

fn git(dir: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Compiles the fused kernels to `$OUT_DIR/fused.ptx` for compute capability
/// `CUDA_COMPUTE_CAP` (default 90: H100/H200), exiting the build with nvcc's message on failure.
fn compile_ptx() {
    let src = "src/ops/kernels/fused.cu";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fused.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let result = Command::new(&nvcc).args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"]).arg(&out).arg(src).output();
    match result {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("nvcc failed on {src}:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run '{nvcc}' for the `cuda` feature ({e}): run `make cuda`, which installs the pinned toolchain (scripts/cuda-toolchain.sh) and puts its nvcc on PATH"),
    }
}

fn main() {
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_ptx();
    }
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
            // In a linked worktree HEAD is the worktree's own, the branches and packed-refs
            // are in the common directory of the main checkout.
            if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
                let common = git(&dir, &["rev-parse", "--git-common-dir"]).map(|c| Path::new(&dir).join(c)).unwrap_or_else(|| Path::new(&git_dir).to_path_buf());
                let mut watch = vec![Path::new(&git_dir).join("HEAD"), common.join("packed-refs")];
                if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                    watch.push(common.join(branch));
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
