//! scripts/slurm-array.sh under a real Slurm: a one-node cluster on this machine
//! (scripts/slurm-local.sh: munged, slurmctld, slurmd) runs a two-task array of a tiny plan on
//! `cpu` (the fake executor, through a wrapper binary), one task is cancelled mid-cell and
//! resubmitted on its own, and the results file ends with exactly one `ok` row per cell; a
//! task submitted without SHARDS fails with a message in its log under RESULTS/logs/.
//!
//! Needs Slurm and munge (`apt-get install slurm-wlm munge`) and root (the daemons run as
//! root). Without `sbatch` it prints SKIPPED; when the cluster cannot be started it prints
//! SKIPPED too, unless NORMLAB_SLURM_TEST=1 (set by .ci/run after installing Slurm), which
//! makes that a failure.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const STATE: &str = "/tmp/normlab-slurm";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A Slurm client command against the local cluster.
fn slurm(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    c.env("SLURM_CONF", format!("{STATE}/slurm.conf")).current_dir(root());
    c
}

fn on_path(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Waits until `ok()` holds, polling; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether job `id` (an array job: any of its tasks) is still queued or running.
fn in_queue(id: &str) -> bool {
    let o = slurm("squeue").args(["-h", "-j", id, "-o", "%i %T"]).output().unwrap();
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

/// (cell id → status) of the results CSV; panics on a duplicate row.
fn rows(csv_path: &Path) -> Vec<(String, String)> {
    if !csv_path.exists() {
        return Vec::new();
    }
    let mut r = csv::Reader::from_path(csv_path).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (id, status) = (col("cell_id"), col("status"));
    let out: Vec<(String, String)> = r.records().map(|x| x.unwrap()).map(|x| (x[id].to_string(), x[status].to_string())).collect();
    let mut ids: Vec<&String> = out.iter().map(|(i, _)| i).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), out.len(), "duplicate rows in {}: {out:?}", csv_path.display());
    out
}

#[test]
fn a_cancelled_array_task_resubmitted_alone_completes_the_plan_under_real_slurm() {
    if !on_path("sbatch") {
        println!("SKIPPED: no sbatch on PATH (install Slurm and munge: apt-get install slurm-wlm munge)");
        return;
    }
    let started = Command::new("bash").arg(root().join("scripts/slurm-local.sh")).arg("start").env("STATE", STATE).output().unwrap();
    if !started.status.success() {
        let why = text(&started);
        assert!(std::env::var("NORMLAB_SLURM_TEST").as_deref() != Ok("1"), "NORMLAB_SLURM_TEST=1 but the local Slurm did not start:\n{why}");
        println!("SKIPPED: the local Slurm did not start (scripts/slurm-local.sh start):\n{why}");
        return;
    }
    println!("{}", text(&started).trim());

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plan = d.join("slurmtest.ron");
    std::fs::write(
        &plan,
        format!(
            r#"(name: "slurmtest", data: (dir: "{d}/no-data", sources: ["{p}"]), models: [vgg11],
               regularizers: [weight_decay(betas: [1e-2, 1e-3, 1e-4])],
               training: (epochs: 8, train_subset: 100), evaluation: (robust: (n: 10)))"#,
            d = d.display(),
            p = plan.display()
        ),
    )
    .unwrap();
    let cells = normlab::plan::load(&plan).unwrap().cells;
    assert_eq!(cells.len(), 4);
    // The fake executor behind a wrapper, so the script runs exactly as it does for real.
    let exe = std::env::var("NORMLAB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_normlab").to_string());
    let wrapper = d.join("normlab-fake");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{exe}' \"$@\" --executor fake\n")).unwrap();
    std::process::Command::new("chmod").args(["+x", wrapper.to_str().unwrap()]).status().unwrap();
    let results = d.join("results");
    let csv_path = results.join("slurmtest.csv");
    let submit = |array: &str, shards: Option<&str>, wait: bool| -> Output {
        let mut c = slurm("sbatch");
        c.args(["--parsable", &format!("--array={array}"), "--gres=none", "--cpus-per-task=1", "--time=10"]);
        if wait {
            c.arg("--wait");
        }
        c.arg(root().join("scripts/slurm-array.sh"));
        c.env("PLAN", &plan).env("RESULTS", &results).env("NORMLAB", &wrapper).env("DEVICES", "cpu").env("NORMLAB_FAKE_EPOCH_MS", "400");
        for k in ["NORMLAB_FAKE_FAIL", "NORMLAB_FAKE_PANIC", "NORMLAB_FAKE_NAN", "NORMLAB_FAKE_DISK_FULL", "SHARDS", "DATA", "RETRY_FAILED", "JOBS_PER_DEVICE"] {
            c.env_remove(k);
        }
        if let Some(n) = shards {
            c.env("SHARDS", n);
        }
        c.output().unwrap()
    };
    let job_id = |o: &Output| -> String {
        assert!(o.status.success(), "sbatch refused: {}", text(o));
        String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap().to_string()
    };

    // Two tasks, two cells each (3.2 s per cell); cancel task 1 while its first cell trains.
    let job = job_id(&submit("0-1", Some("2"), false));
    let shard1: Vec<&normlab::plan::Cell> = cells.iter().filter(|c| c.index % 2 == 1).collect();
    let cell_dir = |c: &normlab::plan::Cell| results.join("slurmtest/cells").join(&c.id);
    wait_for("task 1 to train its first cell", Duration::from_secs(120), || shard1.iter().any(|c| cell_dir(c).join("fake_checkpoint.txt").exists()));
    let o = slurm("scancel").arg(format!("{job}_1")).output().unwrap();
    assert!(o.status.success(), "scancel: {}", text(&o));
    wait_for("the array to leave the queue", Duration::from_secs(120), || !in_queue(&job));
    let after_cancel = rows(&csv_path);
    let done_in_shard1 = after_cancel.iter().filter(|(id, _)| shard1.iter().any(|c| &c.id == id)).count();
    assert!(done_in_shard1 < 2, "task 1 was cancelled before it finished its cells: {after_cancel:?}");
    assert_eq!(after_cancel.len(), 2 + done_in_shard1, "task 0 finished its two cells: {after_cancel:?}");
    let log0 = results.join(format!("logs/normlab-{job}_0.out"));
    let log_text = std::fs::read_to_string(&log0).unwrap_or_else(|e| panic!("task 0's log {}: {e}", log0.display()));
    assert!(log_text.contains("shard 0/2") && log_text.contains("ended with status 0"), "{log_text}");

    // Task 1 alone, resubmitted with the array's size: it finishes the plan.
    let o = submit("1", Some("2"), true);
    let job2 = job_id(&o);
    let final_rows = rows(&csv_path);
    assert_eq!(final_rows.len(), 4, "one row per cell: {final_rows:?}\n{}", std::fs::read_to_string(results.join(format!("logs/normlab-{job2}_1.out"))).unwrap_or_default());
    assert!(final_rows.iter().all(|(_, s)| s == "ok"), "{final_rows:?}");
    assert!(cells.iter().all(|c| final_rows.iter().any(|(id, _)| id == &c.id)));
    let mode = std::fs::metadata(&csv_path).unwrap().permissions();
    assert!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o040 != 0, "results readable by the group: {:o}", std::os::unix::fs::PermissionsExt::mode(&mode));

    // A task without SHARDS fails, and says why in its log.
    let o = submit("0", None, true);
    assert!(!o.status.success(), "a task without SHARDS must fail: {}", text(&o));
    let job3 = String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap().to_string();
    let log = std::fs::read_to_string(results.join(format!("logs/normlab-{job3}_0.out"))).unwrap();
    assert!(log.contains("SHARDS is not set"), "{log}");
    assert_eq!(rows(&csv_path), final_rows, "no row changed");
}
