//! Runs that meet a broken machine, with the real executor on a tiny data set: a cell whose
//! newest checkpoint was truncated after a kill finishes `ok` on the next `normlab run`, with
//! the numbers of an uninterrupted run; a disk that fills up mid-cell stops the run with the
//! path and the OS error once and no `failed` row, and the rerun after freeing space finishes
//! the cell; a device the binary cannot use stops the run before any cell.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn normlab(args: &[&str]) -> Output {
    let exe = std::env::var("NORMLAB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_normlab").to_string());
    let mut c = Command::new(exe);
    c.current_dir(env!("CARGO_MANIFEST_DIR")).args(args);
    for k in ["NORMLAB_FAKE_EPOCH_MS", "NORMLAB_FAKE_FAIL", "NORMLAB_FAKE_PANIC", "NORMLAB_FAKE_NAN", "NORMLAB_FAKE_DISK_FULL"] {
        c.env_remove(k);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A tiny imported data set and a one-cell plan (vgg11, 2 epochs of 32 images) on it.
fn setup(dir: &Path) -> PathBuf {
    use normlab::data::{write_dir, Cifar10, Split, IMAGE_BYTES};
    let split = |n: usize, salt: usize| {
        let images = (0..n * IMAGE_BYTES).map(|i| ((i * 13 + salt + i / 3072 * 41) % 253) as u8).collect();
        Split::new(images, (0..n).map(|i| ((i + salt) % 10) as u8).collect()).unwrap()
    };
    let source = dir.join("source");
    write_dir(&Cifar10 { train: split(40, 0), test: split(16, 1) }, &source).unwrap();
    let data = dir.join("data");
    let o = normlab(&["data", "--source", source.to_str().unwrap(), "--out", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let plan = dir.join("rec.ron");
    std::fs::write(
        &plan,
        format!(
            r#"(name: "rec", data: (dir: "{}", sources: []), models: [vgg11],
               training: (epochs: 2, batch: 16, train_subset: 32, test_subset: 8),
               evaluation: (clean_subset: 16, robust: (n: 8, iters: 2)))"#,
            data.display()
        ),
    )
    .unwrap();
    plan
}

fn run(plan: &Path, results: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["run", plan.to_str().unwrap(), "--results", results.to_str().unwrap()];
    a.extend_from_slice(extra);
    normlab(&a)
}

/// The rows of a results CSV without the columns that differ between runs.
fn measured(csv_path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(csv_path).unwrap();
    let h = r.headers().unwrap().clone();
    let skip = ["train_seconds", "eval_seconds", "finished_at"];
    r.records().map(|x| x.unwrap().iter().zip(h.iter()).filter(|(_, n)| !skip.contains(n)).map(|(v, _)| v.to_string()).collect()).collect()
}

#[test]
fn a_cell_whose_newest_checkpoint_was_truncated_after_a_kill_finishes_ok() {
    let dir = tempfile::tempdir().unwrap();
    let plan = setup(dir.path());
    let reference = dir.path().join("reference");
    let o = run(&plan, &reference, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let want = measured(&reference.join("rec.csv"));
    assert_eq!(want.len(), 1);

    // The state a kill after the last epoch's checkpoint leaves: the cell's folder without the
    // finished model, its evaluation or a row; then the newest checkpoint is cut short.
    let killed = dir.path().join("killed");
    let cells = |r: &Path| r.join("rec/cells");
    let id = std::fs::read_dir(cells(&reference)).unwrap().next().unwrap().unwrap().file_name();
    let cell = cells(&killed).join(&id);
    std::fs::create_dir_all(&cell).unwrap();
    for e in std::fs::read_dir(cells(&reference).join(&id)).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["model.safetensors", "status.json", "norms.csv", "outcomes.csv"].contains(&name.as_str()) {
            continue;
        }
        if e.path().is_dir() {
            std::fs::create_dir_all(cell.join(&name)).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                std::fs::copy(f.path(), cell.join(&name).join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(e.path(), cell.join(&name)).unwrap();
        }
    }
    let newest = cell.join("checkpoint/epoch-2.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();

    let o = run(&plan, &killed, &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("epoch-2.safetensors is damaged") && t.contains("set aside") && t.contains("after epoch 1"), "{t}");
    assert!(cell.join("checkpoint/epoch-2.safetensors.damaged").exists(), "the damaged file is kept");
    let got = measured(&killed.join("rec.csv"));
    assert_eq!(got, want, "the resumed cell must give the uninterrupted run's row");
    assert!(t.contains(": ok, clean "), "{t}");
}

/// Unmounts a tmpfs when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_that_fills_mid_cell_stops_the_run_without_a_failed_row() {
    let dir = tempfile::tempdir().unwrap();
    let plan = setup(dir.path());
    let results = dir.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    // A 40 MB filesystem: the results folder passes the run's write check, and vgg11's first
    // checkpoint (74 MB of weights and momentum) does not fit.
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=40m", "tmpfs", results.to_str().unwrap()]).output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN): {:?}", mounted.map(|o| text(&o)));
        return;
    }
    let _mount = Mount(results.clone());
    let o = run(&plan, &results, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "a full disk must fail the run: {t}");
    let last = t.trim_end().lines().rev().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {t}"));
    assert!(last.contains("epoch-1.safetensors") && last.contains("No space left on device"), "{t}");
    assert_eq!(t.matches("No space left on device").count(), 1, "the OS error once: {t}");
    assert!(t.contains("no row was written"), "{t}");
    let csv = results.join("rec.csv");
    assert!(!csv.exists() || measured(&csv).is_empty(), "no failed row: {}", std::fs::read_to_string(&csv).unwrap_or_default());

    // Room again: the same command finishes the cell.
    let o = Command::new("mount").args(["-o", "remount,size=400m", results.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&plan, &results, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = measured(&csv);
    assert_eq!(rows.len(), 1);
    let mut r = csv::Reader::from_path(&csv).unwrap();
    let status = r.headers().unwrap().iter().position(|h| h == "status").unwrap();
    assert_eq!(&r.records().next().unwrap().unwrap()[status], "ok");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_cuda_device_on_a_cpu_build_stops_before_any_cell() {
    let dir = tempfile::tempdir().unwrap();
    let plan = setup(dir.path());
    let results = dir.path().join("results");
    let o = run(&plan, &results, &["--devices", "cuda:0"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("--devices cuda:0") && t.contains("`cuda` feature"), "{t}");
    assert!(!results.join("rec.csv").exists() && !results.join("rec").exists(), "no row and no cell started: {t}");
}
