//! scripts/gpu-check.sh's bench stage run on the CPU, with a stand-in for PyTorch: the glue a
//! GPU call depends on (bench outputs kept, their RESULT lines read by `normlab bench record`,
//! a row appended to gpu-speed.csv, the raw outputs packed) works before the call, which
//! cannot be debugged twice.

use std::path::Path;
use std::process::Command;

#[test]
fn bench_stage_appends_a_csv_row_and_packs_the_raw_outputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // PyTorch's stand-in: prints the lines bench/pytorch_train.py ends with, for --model M.
    let fake = dir.path().join("fake-python");
    std::fs::write(
        &fake,
        "#!/usr/bin/env bash\nm=unknown\nwhile [ $# -gt 0 ]; do [ \"$1\" = --model ] && m=$2; shift; done\n\
         echo 'images/s                 123.4'\n\
         echo \"RESULT {\\\"tool\\\": \\\"pytorch\\\", \\\"model\\\": \\\"$m\\\", \\\"device\\\": \\\"cpu\\\", \\\"precision\\\": \\\"fp32\\\", \\\"batch\\\": 2, \\\"steps\\\": 1, \\\"images_per_s\\\": 123.4, \\\"step_ms\\\": 16.2}\"\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    // Run where no bench/gpu-speed.csv exists, so the CSV holds this run's row alone.
    let status = Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .arg(&out)
        .arg("0")
        .arg("bench")
        .current_dir(dir.path())
        .env("DEVICE", "cpu")
        .env("STEPS", "1")
        .env("BATCH", "2")
        .env("MODELS", "vgg11")
        .env("PLAIN_MODEL", "vgg11")
        .env("NORMLAB", env!("CARGO_BIN_EXE_normlab"))
        .env("PYTHON", &fake)
        .status()
        .unwrap();
    assert!(status.success());
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
    let out = dir.path().join("out");
    let fake = dir.path().join("fake-python");
    std::fs::write(&fake, "#!/usr/bin/env bash\necho 'images/s                 123.4'\n").unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let status = Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .arg(&out)
        .arg("0")
        .arg("stack")
        .current_dir(root)
        .env("DEVICE", "cpu")
        .env("STACK_MODELS", "vgg11")
        .env("STACK_KS", "1,2")
        .env("STACK_STEPS", "1")
        .env("STACK_CONV", "per-slice")
        .env("NORMLAB", env!("CARGO_BIN_EXE_normlab"))
        .env("PYTHON", &fake)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(out.join("stack.txt")).unwrap();
    let csv = std::fs::read_to_string(out.join("stack-speed.csv")).unwrap_or_else(|e| panic!("no stack-speed.csv ({e}):\n{text}"));
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "one row per K:\n{csv}\n{text}");
    assert!(rows.iter().all(|r| r.starts_with("cpu,vgg11,")), "{csv}");
    assert!(text.contains("rc 0"), "bench stack failed:\n{text}");
    assert!(text.contains("time left") || text.contains("hours"), "no grid estimate:\n{text}");
}
