//! End-to-end tests of plans and `normlab run` with the test-only fake executor: bad plans
//! refused with file:line:col, cell ids stable under edits, dry-run counts, kill-and-resume
//! giving exactly one row per cell with the numbers of an uninterrupted run, concurrent
//! shards, and failures recorded without stopping the others.

use normlab::plan;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bin() -> Command {
    // NORMLAB_BIN: run a copied binary instead (a target dir shared by several
    // checkouts may replace the built one while the tests run).
    let exe = std::env::var("NORMLAB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_normlab").to_string());
    let mut c = Command::new(exe);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for k in ["NORMLAB_FAKE_EPOCH_MS", "NORMLAB_FAKE_FAIL", "NORMLAB_FAKE_PANIC", "NORMLAB_FAKE_NAN", "NORMLAB_FAKE_DISK_FULL"] {
        c.env_remove(k);
    }
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A small fake-executor plan in `dir`: 2 models × (plain + 2 wd + 1 svc + 1 nd-l1 + 1 nd-linf)
/// = 12 cells of `epochs` epochs, robust accuracy at two radii.
fn write_plan(dir: &Path, name: &str, epochs: u32) -> PathBuf {
    let p = dir.join(format!("{name}.ron"));
    let src = format!(
        r#"(
    name: "{name}",
    data: (dir: "{d}/no-data", sources: ["{plan}"]),
    models: [vgg11, resnet18],
    regularizers: [
        weight_decay(betas: [1e-2, 1e-3]),
        svc(clips: [1.0]),
        norm_decay(norm: l1, betas: [1e-2]),
        norm_decay(norm: linf, betas: [1e-2]),
    ],
    training: (epochs: {epochs}, train_subset: 100),
    evaluation: (robust: (eps: ["1/255", "2/255"], n: 10)),
)"#,
        d = dir.display(),
        plan = p.display()
    );
    std::fs::write(&p, src).unwrap();
    p
}

/// Rows of a results CSV keyed by cell id, without the columns that legitimately differ
/// between runs (timings, device, finish time); panics on a duplicate id.
fn rows_by_id(csv_path: &Path) -> HashMap<String, Vec<String>> {
    let mut r = csv::Reader::from_path(csv_path).unwrap();
    let h = r.headers().unwrap().clone();
    let skip = ["train_seconds", "eval_seconds", "finished_at", "device"];
    let id = h.iter().position(|x| x == "cell_id").unwrap();
    let mut out = HashMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let kept: Vec<String> = rec.iter().zip(h.iter()).filter(|(_, name)| !skip.contains(name)).map(|(v, _)| v.to_string()).collect();
        assert!(out.insert(rec[id].to_string(), kept).is_none(), "duplicate row for cell {}", &rec[id]);
    }
    out
}

fn run_fake(plan: &Path, results: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.args(["run", plan.to_str().unwrap(), "--results", results.to_str().unwrap(), "--executor", "fake"]).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

// ---------------------------------------------------------------- bad plans

fn refuse(src: &str) -> plan::PlanError {
    match plan::parse(Path::new("plans/bad.ron"), src) {
        Ok(p) => panic!("accepted a bad plan ({} cells):\n{src}", p.cells.len()),
        Err(e) => e,
    }
}

const GOOD: &str = r#"(
    name: "t",
    data: (sources: ["Cargo.toml"]),
    models: [vgg11],
    regularizers: [weight_decay(betas: [1e-3])],
)"#;

#[test]
fn the_good_plan_is_accepted() {
    let p = plan::parse(Path::new("plans/good.ron"), GOOD).unwrap();
    assert_eq!(p.cells.len(), 2);
    assert_eq!(p.cells[0].config.train.training.epochs.get(), 120, "defaults are the paper's");
    assert_eq!(p.cells[0].config.train.training.milestones, vec![75, 90, 100]);
}

#[test]
fn an_l2_standard_plan_names_its_columns_and_keeps_the_paper_ids() {
    let l2 = GOOD.replace("    models:", "    evaluation: (robust: (norm: l2, eps: [\"0.5\", \"3/2\"], suite: standard)),\n    models:");
    let p = plan::parse(Path::new("plans/l2.ron"), &l2).unwrap();
    let names: Vec<String> = p.robust.iter().map(|c| c.name()).collect();
    assert_eq!(names, vec!["robust_acc_eps_0_5_l2_standard", "robust_acc_eps_1_5_l2_standard"]);
    let config = serde_json::to_string(&p.cells[0].config).unwrap();
    assert!(config.contains(r#""attacks":["apgd_ce","apgd_t","fab_t","square"],"eps":[0.5,1.5],"n":1024,"seed":0,"iters":100,"norm":"l2""#), "{config}");
    // Writing the defaults out changes no id.
    let spelled = GOOD.replace("    models:", "    evaluation: (robust: (norm: linf, suite: paper, queries: 5000)),\n    models:");
    let (a, b) = (plan::parse(Path::new("a.ron"), GOOD).unwrap(), plan::parse(Path::new("b.ron"), &spelled).unwrap());
    assert_eq!(a.cells.iter().map(|c| &c.id).collect::<Vec<_>>(), b.cells.iter().map(|c| &c.id).collect::<Vec<_>>());
    assert_eq!(b.robust[0].name(), "robust_acc_eps_1_255");
    assert_ne!(a.cells[0].id, p.cells[0].id);
}

#[test]
fn every_kind_of_bad_plan_names_its_line() {
    // (what is wrong, the plan, the line it must point at, a phrase the message must hold)
    let cases: Vec<(&str, String, usize, &str)> = vec![
        ("unknown top-level key", GOOD.replace("    models:", "    modles: [vgg11],\n    models:"), 4, "modles"),
        ("unknown nested key", GOOD.replace("    models:", "    training: (epocs: 3),\n    models:"), 4, "epocs"),
        ("wrong type", GOOD.replace("    models:", "    training: (epochs: \"ten\"),\n    models:"), 4, "integer"),
        ("unknown model", GOOD.replace("[vgg11]", "[vgg11,\n  vgg16]"), 5, "vgg16"),
        ("unknown regularizer", GOOD.replace("weight_decay(betas: [1e-3])", "\n   dropout(p: 0.5)"), 6, "dropout"),
        ("negative β", GOOD.replace("betas: [1e-3]", "betas: [1e-3,\n -1e-2]"), 6, "> 0"),
        ("zero β", GOOD.replace("betas: [1e-3]", "betas: [0.0]"), 5, "> 0"),
        ("zero clip", GOOD.replace("weight_decay(betas: [1e-3])", "svc(clips: [0])"), 5, "> 0"),
        ("empty model list", GOOD.replace("[vgg11]", "[]"), 4, "empty"),
        ("empty β list", GOOD.replace("[1e-3]", "[]"), 5, "empty"),
        ("empty grid", GOOD.replace("    regularizers: [weight_decay(betas: [1e-3])],", "    plain: false,"), 5, "empty grid"),
        ("missing data", GOOD.replace("data: (sources: [\"Cargo.toml\"])", "data: (dir: \"nowhere\", sources: [\"nowhere.tar.gz\"])"), 3, "missing data"),
        // A missing key is reported where its struct closes.
        ("missing name", GOOD.replace("    name: \"t\",\n", ""), 5, "name"),
        ("repeated β", GOOD.replace("[1e-3]", "[1e-3, 1e-3]"), 5, "twice"),
        ("repeated cell", GOOD.replace("weight_decay(betas: [1e-3])", "weight_decay(betas: [1e-3]),\n weight_decay(betas: [1e-3])"), 5, "twice"),
        ("milestone past the end", GOOD.replace("    models:", "    training: (epochs: 10, milestones: [5, 12]),\n    models:"), 4, "milestones"),
        ("momentum out of range", GOOD.replace("    models:", "    training: (momentum: 1.5),\n    models:"), 4, "[0, 1)"),
        ("bad radius", GOOD.replace("    models:", "    evaluation: (robust: (eps: [\"1/0\"])),\n    models:"), 4, "division"),
        ("ℓ∞ radius above 1", GOOD.replace("    models:", "    evaluation: (robust: (eps: [\"2\"])),\n    models:"), 4, "outside [0, 1]"),
        ("ℓ2 radius past the cube", GOOD.replace("    models:", "    evaluation: (robust: (norm: l2, eps: [\"60\"])),\n    models:"), 4, "√3072"),
        ("suite against its list", GOOD.replace("    models:", "    evaluation: (robust: (suite: standard, attacks: [fgsm])),\n    models:"), 4, "contradict"),
        ("ℓ∞-only attack at ℓ2", GOOD.replace("    models:", "    evaluation: (robust: (norm: l2, suite: custom, attacks: [pgd])),\n    models:"), 4, "ℓ∞ attack"),
        ("unknown norm", GOOD.replace("    models:", "    evaluation: (robust: (norm: l1)),\n    models:"), 4, "l1"),
        ("bad plan name", GOOD.replace("\"t\"", "\"a/b\""), 2, "name"),
        ("syntax error", GOOD.replace("models: [vgg11],", "models: [vgg11"), 5, ""),
    ];
    for (what, src, line, phrase) in cases {
        let e = refuse(&src);
        let shown = e.to_string();
        println!("{what}: {shown}");
        assert_eq!(e.line, line, "{what}: expected line {line}, got: {shown}\n{src}");
        assert!(e.col >= 1, "{what}: {shown}");
        assert!(shown.starts_with(&format!("plans/bad.ron:{line}:{}: ", e.col)), "{what}: {shown}");
        assert!(shown.contains(phrase), "{what}: '{phrase}' missing in: {shown}");
    }
}

#[test]
fn the_cli_refuses_a_bad_plan_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.ron");
    std::fs::write(&p, GOOD.replace("betas: [1e-3]", "betas: [-1e-3]")).unwrap();
    let results = dir.path().join("results");
    let o = run_fake(&p, &results, &[], &[]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains(&format!("{}:5:", p.display())) && t.contains("> 0"), "{t}");
    assert!(!results.exists(), "nothing may be written for a refused plan");
}

// ---------------------------------------------------------------- cell ids

#[test]
fn editing_one_strength_adds_only_the_new_cells() {
    let ids = |src: &str| -> Vec<String> { plan::parse(Path::new("p.ron"), src).unwrap().cells.iter().map(|c| c.id.clone()).collect() };
    let base = ids(GOOD);
    let more = ids(&GOOD.replace("[1e-3]", "[1e-3, 1e-4]"));
    assert_eq!(more.len(), base.len() + 1);
    assert!(base.iter().all(|id| more.contains(id)), "unchanged cells keep their ids");
    let renamed = ids(&GOOD.replace("\"t\"", "\"other\""));
    assert_eq!(renamed, base, "the plan's name is not part of a cell's identity");
    let protocol = ids(&GOOD.replace("    models:", "    training: (epochs: 7),\n    models:"));
    assert!(protocol.iter().all(|id| !base.contains(id)), "a protocol change makes new cells");
    let eval = ids(&GOOD.replace("    models:", "    evaluation: (robust: (n: 64)),\n    models:"));
    assert!(eval.iter().all(|id| !base.contains(id)));
    let explicit = ids(&GOOD.replace("    models:", "    training: (epochs: 120, lr: 0.01, milestones: [75, 90, 100]),\n    models:"));
    assert_eq!(explicit, base, "writing out a default changes nothing");
}

// ---------------------------------------------------------------- dry-run

#[test]
fn dry_run_validates_every_shipped_plan_and_counts_68_for_the_paper() {
    let results = tempfile::tempdir().unwrap();
    for (plan, cells) in [("plans/paper.ron", 68), ("plans/short.ron", 68), ("plans/demo.ron", 5), ("plans/adversarial.ron", 6), ("plans/reference-full.ron", 124)] {
        let o = bin().args(["run", plan, "--dry-run", "--results", results.path().to_str().unwrap()]).output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{plan}: {t}");
        assert!(t.contains(&format!(": {cells} cells, 0 done, {cells} remaining")), "{plan}: {t}");
        assert_eq!(t.lines().filter(|l| l.contains("  remaining")).count(), cells, "{plan}: {t}");
    }
    assert!(std::fs::read_dir(results.path()).unwrap().next().is_none(), "a dry run writes nothing");
}

/// The paper plan's JSON listing: every cell with its resolved configuration and the
/// parameters its regularizer acts on, which follow the reference code's coverage.
#[test]
fn dry_run_json_lists_the_reference_coverage_of_the_paper_plan() {
    let results = tempfile::tempdir().unwrap();
    let o = bin().args(["run", "plans/paper.ron", "--dry-run", "--format", "json", "--results", results.path().to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let cells = v["cells"].as_array().unwrap();
    assert_eq!((cells.len(), v["total"].as_u64(), v["done"].as_u64()), (68, Some(68), Some(0)));
    let layers = |c: &serde_json::Value| c["regularized_layers"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let of = |model: &str, kind: &str| -> Vec<&serde_json::Value> {
        cells.iter().filter(|c| c["config"]["model"] == model && c["config"]["regularizer"]["kind"] == kind).collect()
    };
    for c in of("vgg11", "norm_decay").into_iter().chain(of("vgg11", "svc")) {
        let l = layers(c);
        assert_eq!(c["config"]["regularizer"]["coverage"], "reference", "{c}");
        assert!(l.contains(&"features.18.weight".to_string()) && !l.iter().any(|n| n == "features.22.weight" || n == "features.25.weight"), "{l:?}");
    }
    for c in of("regnet200mf", "norm_decay") {
        let l = layers(c);
        assert!(l.iter().any(|n| n == "layer1.0.conv1.weight") && !l.iter().any(|n| n.ends_with("conv2.weight")), "{l:?}");
    }
    // Where the reference's rule skips nothing, the cell is the `all` one (no coverage key).
    for c in of("resnet18", "norm_decay") {
        assert!(c["config"]["regularizer"].get("coverage").is_none(), "{c}");
        assert_eq!(layers(c).len(), 21, "resnet18's 20 convs and its linear layer");
    }
    // Weight decay acts on every trainable parameter, plain on none.
    assert!(of("vgg11", "weight_decay").into_iter().all(|c| layers(c).contains(&"features.1.bias".to_string())));
    assert!(of("vgg11", "plain").into_iter().all(|c| layers(c).is_empty()));
    let svc = of("regnet200mf", "svc")[0];
    assert_eq!(svc["config"]["regularizer"]["final_clip"], false);
    assert!(layers(svc).iter().any(|n| n.ends_with("conv2.weight")), "SVC clips grouped convs (stacked)");
}

#[test]
fn dry_run_reports_done_cells_and_an_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(dir.path(), "est", 1);
    let results = dir.path().join("results");
    let o = run_fake(&p, &results, &["--shard", "0/3"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = bin().args(["run", p.to_str().unwrap(), "--dry-run", "--results", results.to_str().unwrap()]).output().unwrap();
    let t = text(&o);
    assert!(t.contains("12 cells, 4 done, 8 remaining"), "{t}");
    assert_eq!(t.lines().filter(|l| l.contains("done (ok)")).count(), 4, "{t}");
    assert!(t.contains("time left: about"), "{t}");
}

// ---------------------------------------------------------------- kill and resume

#[test]
fn killed_runs_resume_to_exactly_the_uninterrupted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(dir.path(), "kill", 8);
    let env = [("NORMLAB_FAKE_EPOCH_MS", "20")];

    let reference = dir.path().join("reference");
    let o = run_fake(&p, &reference, &["--jobs-per-device", "2"], &env);
    assert!(o.status.success(), "{}", text(&o));

    let killed = dir.path().join("killed");
    // Deterministic "random" moments; the work (12 cells × 8 epochs × 20 ms on 2 workers,
    // about 1 s) outlasts the kills' total, so every kill lands in a running grid.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut live_kills = 0;
    for _ in 0..7 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let wait_ms = 30 + (state >> 33) % 120;
        let mut child = bin()
            .args(["run", p.to_str().unwrap(), "--results", killed.to_str().unwrap(), "--executor", "fake", "--jobs-per-device", "2"])
            .env("NORMLAB_FAKE_EPOCH_MS", "20")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(wait_ms));
        if child.try_wait().unwrap().is_none() {
            live_kills += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let partial = killed.join("kill.csv");
        if partial.exists() {
            let t = std::fs::read_to_string(&partial).unwrap();
            assert!(t.is_empty() || t.ends_with('\n'), "a torn row after a kill:\n{t}");
            rows_by_id(&partial); // panics on a duplicate
        }
    }
    let before = killed.join("kill.csv");
    let rows_before = if before.exists() { rows_by_id(&before).len() } else { 0 };
    assert!(rows_before < 12 && live_kills >= 5, "the kills came too late ({rows_before} rows, {live_kills} live kills)");
    let o = run_fake(&p, &killed, &["--jobs-per-device", "2"], &env);
    assert!(o.status.success(), "{}", text(&o));
    let a = rows_by_id(&reference.join("kill.csv"));
    let b = rows_by_id(&killed.join("kill.csv"));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "a killed and resumed run must give the rows of an uninterrupted one");
    // A further run finds nothing to do.
    let o = run_fake(&p, &killed, &[], &env);
    assert!(text(&o).contains("nothing to run"), "{}", text(&o));
}

#[test]
fn concurrent_shards_and_an_unsharded_run_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(dir.path(), "shards", 3);
    let results = dir.path().join("results");
    let spawn = |extra: &[&str]| {
        bin()
            .args(["run", p.to_str().unwrap(), "--results", results.to_str().unwrap(), "--executor", "fake"])
            .args(extra)
            .env("NORMLAB_FAKE_EPOCH_MS", "10")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = vec![spawn(&["--shard", "0/2"]), spawn(&["--shard", "1/2"]), spawn(&["--jobs-per-device", "3"])];
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let rows = rows_by_id(&results.join("shards.csv"));
    let plan = plan::load(&p).unwrap();
    assert_eq!(rows.len(), plan.cells.len());
    assert!(plan.cells.iter().all(|c| rows.contains_key(&c.id)));
}

#[test]
fn a_shard_runs_every_nth_cell() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(dir.path(), "nth", 1);
    let results = dir.path().join("results");
    let o = run_fake(&p, &results, &["--shard", "1/5"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = rows_by_id(&results.join("nth.csv"));
    let plan = plan::load(&p).unwrap();
    let expect: Vec<&String> = plan.cells.iter().filter(|c| c.index % 5 == 1).map(|c| &c.id).collect();
    assert_eq!(rows.len(), expect.len());
    assert!(expect.iter().all(|id| rows.contains_key(*id)));
    let o = run_fake(&p, &results, &["--shard", "5/5"], &[]);
    assert!(!o.status.success() && text(&o).contains("0 ≤ I < N"), "{}", text(&o));
}

// ---------------------------------------------------------------- failures

#[test]
fn failures_panics_and_nan_are_rows_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(dir.path(), "fail", 1);
    let results = dir.path().join("results");
    let env = [("NORMLAB_FAKE_FAIL", "svc"), ("NORMLAB_FAKE_PANIC", "nd-l1"), ("NORMLAB_FAKE_NAN", "nd-linf")];
    let o = run_fake(&p, &results, &["--jobs-per-device", "2"], &env);
    // Every cell ran; the run says how many failed and how to rerun them, and exits non-zero
    // (so a Slurm task that ran them is not marked COMPLETED).
    assert!(!o.status.success(), "a run with failed cells must exit non-zero: {}", text(&o));
    let last = text(&o).trim_end().lines().last().unwrap_or("").to_string();
    assert!(last.contains("4 cell(s) of this run failed") && last.contains("--retry-failed"), "{}", text(&o));
    // The next run has nothing to do but says the failed rows are there and how to rerun them.
    let o = run_fake(&p, &results, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 cell(s) of this plan have a failed row") && text(&o).contains("--retry-failed"), "{}", text(&o));
    let o = bin().args(["run", p.to_str().unwrap(), "--dry-run", "--results", results.to_str().unwrap()]).output().unwrap();
    assert!(text(&o).contains("4 cell(s) have a failed row") && text(&o).contains("--retry-failed"), "{}", text(&o));
    let csv_path = results.join("fail.csv");
    let mut r = csv::Reader::from_path(&csv_path).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (reg, status, message) = (col("regularizer"), col("status"), col("message"));
    let recs: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(recs.len(), 12);
    for rec in &recs {
        let expected = match &rec[reg] {
            "svc" | "nd-l1" => "failed",
            "nd-linf" => "nan",
            _ => "ok",
        };
        assert_eq!(&rec[status], expected, "{rec:?}");
    }
    assert!(recs.iter().any(|r| r[message].contains("panicked: fake panic")));
    // --retry-failed reruns only the failed cells.
    let o = run_fake(&p, &results, &["--retry-failed"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("removed 4 failed row(s)"), "{}", text(&o));
    let rows = rows_by_id(&csv_path);
    assert_eq!(rows.len(), 12);
    let statuses: Vec<&str> = rows.values().map(|r| r[status].as_str()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "failed").count(), 0);
}

#[test]
fn the_header_has_one_column_per_radius_and_the_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(dir.path(), "cols", 1);
    let results = dir.path().join("results");
    assert!(run_fake(&p, &results, &["--shard", "0/12"], &[]).status.success());
    let t = std::fs::read_to_string(results.join("cols.csv")).unwrap();
    let header = t.lines().next().unwrap();
    for c in [
        "plan,cell_id,model,adv,regularizer,strength,seed,epochs,clean_acc,robust_acc_eps_1_255,robust_acc_eps_2_255,certified_acc",
        "l1_sum,l1_max,linf_sum,linf_max,l2_bound_sum,l2_bound_max,linf_product,status,train_seconds,eval_seconds,device,normlab_version,git_commit,finished_at",
    ] {
        assert!(header.contains(c), "{header}");
    }
    assert!(t.lines().nth(1).unwrap().contains("cpu (fake)"));
}
