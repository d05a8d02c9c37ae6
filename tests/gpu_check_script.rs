//! scripts/gpu-check.sh's bench stage run on the CPU, with a stand-in for PyTorch: the glue a
//! GPU call depends on (bench outputs kept, their RESULT lines read by `normlab bench record`,
//! a row appended to gpu-speed.csv, the raw outputs packed) works before the call, which
//! cannot be debugged twice.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs scripts/gpu-check.sh's `stage` on the CPU from `cwd`, with `fake_python` (a bash
/// script) standing in for PyTorch, the test binary as normlab and `env` on top; asserts it
/// succeeded and returns its OUT folder (under `dir`).
fn gpu_check(dir: &Path, cwd: &Path, stage: &str, fake_python: &str, env: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("out");
    let fake = dir.join("fake-python");
    std::fs::write(&fake, fake_python).unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let mut c = Command::new("bash");
    c.arg(root.join("scripts/gpu-check.sh")).arg(&out).arg("0").arg(stage).current_dir(cwd);
    c.env("DEVICE", "cpu").env("NORMLAB", env!("CARGO_BIN_EXE_normlab")).env("PYTHON", &fake);
    for (k, v) in env {
        c.env(k, v);
    }
    assert!(c.status().unwrap().success(), "gpu-check.sh {stage} failed");
    out
}

#[test]
fn bench_stage_appends_a_csv_row_and_packs_the_raw_outputs() {
    let dir = tempfile::tempdir().unwrap();
    // PyTorch's stand-in: prints the lines bench/pytorch_train.py ends with, for --model M.
    let fake = "#!/usr/bin/env bash\nm=unknown\nwhile [ $# -gt 0 ]; do [ \"$1\" = --model ] && m=$2; shift; done\n\
         echo 'images/s                 123.4'\n\
         echo \"RESULT {\\\"tool\\\": \\\"pytorch\\\", \\\"model\\\": \\\"$m\\\", \\\"device\\\": \\\"cpu\\\", \\\"precision\\\": \\\"fp32\\\", \\\"batch\\\": 2, \\\"steps\\\": 1, \\\"images_per_s\\\": 123.4, \\\"step_ms\\\": 16.2}\"\n";
    // Run where no bench/gpu-speed.csv exists, so the CSV holds this run's row alone.
    let out = gpu_check(dir.path(), dir.path(), "bench", fake, &[("STEPS", "1"), ("BATCH", "2"), ("MODELS", "vgg11"), ("PLAIN_MODEL", "vgg11")]);
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    let csv = std::fs::read_to_string(out.join("gpu-speed.csv")).unwrap_or_else(|e| panic!("no CSV ({e}); summary:\n{summary}"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "date,card,model,precision,normlab_img_s,pytorch_img_s,launches_per_step,host_ms_per_step,build", "{summary}");
    assert_eq!(lines.len(), 2, "{csv}\n{summary}");
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!((row[1], row[2], row[3], row[5]), ("cpu", "vgg11", "fp32", "123.4"), "{csv}");
    let (img_s, launches, host_ms): (f64, f64, f64) = (row[4].parse().unwrap(), row[6].parse().unwrap(), row[7].parse().unwrap());
    assert!(img_s > 0.0 && launches > 100.0 && host_ms > 0.0, "{csv}");
    assert!(!row[8].is_empty(), "no build in {csv}");
    // The raw outputs, under bench/cpu-<date>/ in the archive.
    let list = Command::new("tar").arg("tzf").arg(out.join("raw.tgz")).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for f in ["normlab-vgg11.txt", "pytorch-vgg11.txt", "normlab-vgg11-plain.txt", "summary.txt", "gpu-speed.csv"] {
        assert!(list.lines().any(|l| l.starts_with("bench/cpu-") && l.ends_with(f)), "{f} missing from raw.tgz:\n{list}");
    }
}

/// The stack stage (issue 20) on the CPU with one vgg11 step per stack size: `bench stack`'s
/// speeds land in OUT/stack-speed.csv and the paper grid's dry run estimates from them, so the
/// device call's stage works before the call.
#[test]
fn stack_stage_measures_stacks_and_estimates_the_grid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let fake = "#!/usr/bin/env bash\necho 'images/s                 123.4'\n";
    let env = [("STACK_MODELS", "vgg11"), ("STACK_KS", "1,2"), ("STACK_STEPS", "1"), ("STACK_CONV", "per-slice")];
    let out = gpu_check(dir.path(), root, "stack", fake, &env);
    let text = std::fs::read_to_string(out.join("stack.txt")).unwrap();
    let csv = std::fs::read_to_string(out.join("stack-speed.csv")).unwrap_or_else(|e| panic!("no stack-speed.csv ({e}):\n{text}"));
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "one row per K:\n{csv}\n{text}");
    assert!(rows.iter().all(|r| r.starts_with("cpu,vgg11,")), "{csv}");
    assert!(text.contains("rc 0"), "bench stack failed:\n{text}");
    assert!(text.contains("time left") || text.contains("hours"), "no grid estimate:\n{text}");
}
