//! The scheduler: runs a plan's remaining cells across devices, K at a time per device,
//! and appends one row per finished cell. It is generic over the cell executor, so it is
//! tested with fake executors and the real one (train, then evaluate) plugs in unchanged.

use super::progress::Progress;
use crate::results::record::{self, CellRecord, CellStatus, Provenance};
use crate::results::{CellLock, Layout, ResultsStore};
use crate::device::DeviceSpec;
use crate::plan::{Cell, Plan};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What an executor gets besides the cell.
#[derive(Debug, Clone)]
pub struct CellContext {
    /// `<results>/<plan>/cells/<id>/`: the cell's own directory for checkpoints, metrics.csv
    /// and norms.csv. It exists; if it holds a checkpoint, the executor must resume from it.
    pub work_dir: PathBuf,
    /// The device this cell must run on.
    pub device: DeviceSpec,
    /// The run's bar group on a terminal: add inner progress bars to it (`multi.add(bar)`)
    /// so they draw below the overall cells bar; `None` when not on a terminal.
    pub progress: Option<indicatif::MultiProgress>,
}

/// Runs one cell to completion and returns its measurements.
///
/// The real executor (train, then evaluate) must:
/// - train the cell's `config.train` (the training loop's own [`crate::train::TrainConfig`])
///   into `ctx.work_dir` on `ctx.device`, resuming from the last per-epoch checkpoint there if
///   one exists (so a killed run loses at most one epoch), writing metrics.csv (columns
///   `epoch`, `test_acc`, ...) and norms.csv (the `normlab norms --format csv` columns) there:
///   the report plots them (`train::train(&cell.config.train, ctx.device, &data,
///   &ctx.work_dir, /*resume*/ true)` does all of this);
/// - on a NaN/infinite loss (`RunStatus::Diverged{epoch}`) return `Ok` with status
///   [`CellStatus::Diverged`], `message` naming the epoch, no accuracies;
/// - otherwise evaluate per `config.evaluation` on the test split: clean accuracy on the
///   full test set (or its first `clean_subset` images), robust accuracy at every ε of
///   `evaluation.robust.eps` in order (`evaluation.robust` is the attack protocol's own
///   [`crate::attack::AttackConfig`]; an empty vec if it is None), certified accuracy at the first ε if
///   `certified` (None where the model has no bound), and the norm summaries
///   ([`crate::norms::NormSummary::from_norms_csv`] on the norms.csv it wrote); accuracies as
///   fractions in [0, 1];
/// - return `Err` for anything else; the scheduler records it as `failed` (panics too) and
///   goes on with the other cells. NaN measurements become status `nan`.
///
/// It runs on several threads at once (`Sync`), one cell per call; the data set should be
/// loaded once (`data::load_dir(&plan.data.dir)`) and shared by reference.
pub type Executor<'a> = dyn Fn(&Cell, &CellContext) -> Result<CellRecord> + Sync + 'a;

/// What a stack trainer gets besides the cells.
#[derive(Debug, Clone)]
pub struct StackContext {
    /// Each cell's directory (as [`CellContext::work_dir`]), in the cells' order.
    pub work_dirs: Vec<PathBuf>,
    /// The device the stack must run on.
    pub device: DeviceSpec,
    /// The run's bar group on a terminal (as [`CellContext::progress`]).
    pub progress: Option<indicatif::MultiProgress>,
}

/// Trains a stack of cells together (training only): it must leave each cell's directory as
/// the executor's own training would (the real one: [`crate::train::stack::train_stack`]), so
/// that the executor, called for each cell afterwards, finds its training ended and evaluates
/// it. When it fails, the executor trains each cell alone from whatever checkpoint it left.
pub type StackTrainer<'a> = dyn Fn(&[&Cell], &StackContext) -> Result<()> + Sync + 'a;

/// Groups the cells a run will do into stacks (positions in the given list).
pub type StackUnits<'a> = dyn Fn(&[&Cell]) -> Result<Vec<Vec<usize>>> + Sync + 'a;

/// How a run forms and trains stacks: `units` groups the cells this run will do (given in
/// grid order) into stacks, as positions in that list, each cell exactly once; `train` trains
/// a stack of two or more.
pub struct Stacking<'a> {
    /// The grouping ([`super::stack::stacks`]).
    pub units: &'a StackUnits<'a>,
    /// The stack trainer.
    pub train: &'a StackTrainer<'a>,
}

/// Which share of a plan's cells this process runs: cell `k` of the grid belongs to shard
/// `k mod count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// All cells.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with 0 ≤ I < N.
    pub fn parse(text: &str) -> Result<Self> {
        let (i, n) = text.split_once('/').with_context(|| format!("--shard '{text}': expected I/N, e.g. 0/4"))?;
        let index: usize = i.trim().parse().with_context(|| format!("--shard '{text}': I is not a number"))?;
        let count: usize = n.trim().parse().with_context(|| format!("--shard '{text}': N is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard '{text}': expected 0 ≤ I < N (shards are numbered from 0, as Slurm array ids 0..N-1)");
        }
        Ok(Self { index, count })
    }

    /// Whether `cell` belongs to this shard.
    pub fn contains(self, cell: &Cell) -> bool {
        cell.index % self.count == self.index
    }
}

/// How to run: devices, concurrency, shard.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Devices to spread the cells over.
    pub devices: Vec<DeviceSpec>,
    /// Cells running at once on each device.
    pub jobs_per_device: usize,
    /// This process's share of the cells.
    pub shard: Shard,
    /// What each row says about the build.
    pub version: String,
    /// The git commit of the build.
    pub git_commit: String,
    /// Appended to the device name in rows (the fake executor marks its rows with it).
    pub device_note: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Cells with a row before this run (whole plan).
    pub done_before: usize,
    /// Cells this run appended a row for.
    pub ran: usize,
    /// Of those, with status other than ok.
    pub not_ok: usize,
    /// Of those, with status `failed` (the run then exits non-zero).
    pub failed: usize,
    /// Cells skipped because another process held them or wrote their row first.
    pub skipped: usize,
}

/// The results file of a plan.
pub fn results_path(results_dir: &Path, plan: &Plan) -> PathBuf {
    Layout::new(results_dir).csv(&plan.name)
}

/// A cell's work directory.
pub fn cell_dir(results_dir: &Path, plan: &Plan, cell: &Cell) -> PathBuf {
    Layout::new(results_dir).cell(&plan.name, &cell.id).path().to_path_buf()
}

/// Opens the plan's results store.
pub fn open_store(results_dir: &Path, plan: &Plan) -> Result<ResultsStore> {
    ResultsStore::open(&results_path(results_dir, plan), record::header(&plan.robust))
}

/// Mean seconds (train + eval) per cell of earlier rows with status ok, per model, for
/// estimates.
pub fn measured_seconds(store: &ResultsStore) -> Result<HashMap<String, f64>> {
    let col = |name: &str| store.column(name).with_context(|| format!("the results header has no '{name}' column"));
    let (model, status, train, eval) = (col(record::col::MODEL)?, col(record::col::STATUS)?, col(record::col::TRAIN_SECONDS)?, col(record::col::EVAL_SECONDS)?);
    let mut sums: HashMap<String, (f64, usize)> = HashMap::new();
    for r in store.read_rows()? {
        let secs = r[train].parse::<f64>().unwrap_or(f64::NAN) + r[eval].parse::<f64>().unwrap_or(f64::NAN);
        if &r[status] == "ok" && secs.is_finite() {
            let e = sums.entry(r[model].to_string()).or_insert((0.0, 0));
            e.0 += secs;
            e.1 += 1;
        }
    }
    Ok(sums.into_iter().map(|(m, (s, k))| (m, s / k as f64)).collect())
}

/// Estimated seconds for `cells` on `workers` workers from per-model means (the overall mean
/// for a model not measured yet); None without any measurement.
pub fn estimate_seconds(cells: &[&Cell], per_model: &HashMap<String, f64>, workers: usize) -> Option<f64> {
    if per_model.is_empty() {
        return None;
    }
    let overall = per_model.values().sum::<f64>() / per_model.len() as f64;
    let total: f64 = cells.iter().map(|c| per_model.get(c.config.train.model.name()).copied().unwrap_or(overall)).sum();
    Some(total / workers.max(1) as f64)
}

/// Runs this shard's cells of `plan` that have no row yet, appending one row each to
/// `<results_dir>/<plan>.csv`. A cell's error, panic or NaN becomes its row's status; an
/// error of the results file itself, and a cell's error that comes from the machine (a full
/// disk, a read-only folder: [`super::environment::problem`]), stop the run without a row.
pub fn run_plan(plan: &Plan, results_dir: &Path, opts: &RunOptions, executor: &Executor) -> Result<RunSummary> {
    run_plan_stacked(plan, results_dir, opts, executor, None)
}

/// [`run_plan`], training the stacks `stacking` forms together before the executor evaluates
/// their cells one by one (each stack is one worker's job).
pub fn run_plan_stacked(plan: &Plan, results_dir: &Path, opts: &RunOptions, executor: &Executor, stacking: Option<&Stacking>) -> Result<RunSummary> {
    if opts.devices.is_empty() || opts.jobs_per_device == 0 {
        bail!("no workers: give at least one device and --jobs-per-device ≥ 1");
    }
    let store = open_store(results_dir, plan)?;
    let done = store.done_ids()?;
    let done_before = plan.cells.iter().filter(|c| done.contains(&c.id)).count();
    let mine: Vec<&Cell> = plan.cells.iter().filter(|c| opts.shard.contains(c) && !done.contains(&c.id)).collect();
    let workers: Vec<DeviceSpec> =
        opts.devices.iter().flat_map(|d| std::iter::repeat_n(*d, opts.jobs_per_device)).collect();
    let per_model = measured_seconds(&store)?;
    let prior = if per_model.is_empty() { None } else { Some(per_model.values().sum::<f64>() / per_model.len() as f64) };
    let progress = Progress::new(plan.cells.len(), done_before, mine.len(), workers.len(), prior);
    progress.log(&format!(
        "plan {}: {} cells, {} done, {} to run here on {} worker(s); results in {}",
        plan.name,
        plan.cells.len(),
        done_before,
        mine.len(),
        workers.len(),
        store.path().display()
    ));

    let units = units_of(&mine, stacking)?;

    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let summary = Mutex::new(RunSummary { done_before, ..Default::default() });
    let fatal: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for &device in &workers {
            let (next, stop, summary, fatal, units, store, progress) = (&next, &stop, &summary, &fatal, &units, &store, &progress);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(unit) = units.get(i) else { break };
                    if let (Some(stacking), true) = (stacking, unit.len() > 1) {
                        if let Err(e) = train_stack(plan, results_dir, store, unit, device, stacking.train, progress) {
                            stop.store(true, Ordering::SeqCst);
                            fatal.lock().expect("fatal lock").get_or_insert(e);
                            break;
                        }
                    }
                    for cell in unit {
                        match run_one(plan, results_dir, opts, store, cell, device, executor, progress) {
                            Ok(Outcome::Appended(status)) => {
                                let mut sm = summary.lock().expect("summary lock");
                                sm.ran += 1;
                                if status != CellStatus::Ok {
                                    sm.not_ok += 1;
                                }
                                if status == CellStatus::Failed {
                                    sm.failed += 1;
                                }
                            }
                            Ok(Outcome::Skipped) => summary.lock().expect("summary lock").skipped += 1,
                            Err(e) => {
                                stop.store(true, Ordering::SeqCst);
                                fatal.lock().expect("fatal lock").get_or_insert(e);
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = fatal.into_inner().expect("fatal lock") {
        return Err(e);
    }
    Ok(summary.into_inner().expect("summary lock"))
}

enum Outcome {
    Appended(CellStatus),
    Skipped,
}

/// The run's units of work: `stacking`'s stacks of `mine`, or each cell alone.
fn units_of<'c>(mine: &[&'c Cell], stacking: Option<&Stacking>) -> Result<Vec<Vec<&'c Cell>>> {
    let Some(stacking) = stacking else { return Ok(mine.iter().map(|c| vec![*c]).collect()) };
    let units = (stacking.units)(mine)?;
    let mut seen = vec![false; mine.len()];
    for &i in units.iter().flatten() {
        if i >= mine.len() || std::mem::replace(&mut seen[i], true) {
            bail!("stacking: position {i} given twice or outside the {} cells", mine.len());
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        bail!("stacking left out cell {} ({})", mine[missing].id, mine[missing].describe());
    }
    Ok(units.into_iter().map(|u| u.into_iter().map(|i| mine[i]).collect()).collect())
}

/// Trains `unit`'s cells that no other process holds and that have no row yet as one stack
/// (two or more of them), holding their claims meanwhile; a failure of the stack is logged and
/// leaves its cells to train alone. Errors only for the results file or the claims.
fn train_stack(plan: &Plan, results_dir: &Path, store: &ResultsStore, unit: &[&Cell], device: DeviceSpec, train: &StackTrainer, progress: &Progress) -> Result<()> {
    let done = store.done_ids()?;
    let (mut claims, mut cells) = (Vec::new(), Vec::new());
    for cell in unit.iter().filter(|c| !done.contains(&c.id)) {
        match CellLock::try_claim(&cell_dir(results_dir, plan, cell))? {
            Some(claim) => {
                claims.push(claim);
                cells.push(*cell);
            }
            None => progress.log(&format!("cell {} ({}) is running in another process: left out of its stack", cell.id, cell.describe())),
        }
    }
    if cells.len() < 2 {
        return Ok(());
    }
    let names = cells.iter().map(|c| format!("{} ({})", c.id, c.describe())).collect::<Vec<_>>().join(", ");
    progress.log(&format!("stack of {} cells on {device}: {names}", cells.len()));
    let ctx = StackContext { work_dirs: cells.iter().map(|c| cell_dir(results_dir, plan, c)).collect(), device, progress: progress.multi() };
    let t0 = Instant::now();
    let what = match std::panic::catch_unwind(AssertUnwindSafe(|| train(&cells, &ctx))) {
        Ok(Ok(())) => format!("trained in {:.1} s; evaluating its cells", t0.elapsed().as_secs_f64()),
        Ok(Err(e)) => format!("failed ({e:#}); its cells train alone from their checkpoints"),
        Err(payload) => format!("panicked ({}); its cells train alone from their checkpoints", panic_text(payload.as_ref())),
    };
    progress.log(&format!("stack of {} cells on {device}: {what}", cells.len()));
    drop(claims);
    Ok(())
}

/// The message of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".to_string())
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    plan: &Plan,
    results_dir: &Path,
    opts: &RunOptions,
    store: &ResultsStore,
    cell: &Cell,
    device: DeviceSpec,
    executor: &Executor,
    progress: &Progress,
) -> Result<Outcome> {
    let work_dir = cell_dir(results_dir, plan, cell);
    let Some(_claim) = CellLock::try_claim(&work_dir)? else {
        progress.log(&format!("cell {} ({}) is running in another process: skipped", cell.id, cell.describe()));
        return Ok(Outcome::Skipped);
    };
    if store.done_ids()?.contains(&cell.id) {
        return Ok(Outcome::Skipped);
    }
    progress.log(&format!("cell {} ({}) on {device}: started", cell.id, cell.describe()));
    let ctx = CellContext { work_dir, device, progress: progress.multi() };
    let t0 = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| executor(cell, &ctx)));
    let mut rec = match result {
        Ok(Ok(rec)) => rec,
        Ok(Err(e)) if super::environment::problem(&e).is_some() => {
            bail!(super::environment::stop_message(&format!("cell {} {}", cell.id, cell.describe()), &e))
        }
        Ok(Err(e)) => CellRecord::failed(crate::util::error_text(&e), t0.elapsed().as_secs_f64()),
        Err(payload) => CellRecord::failed(format!("panicked: {}", panic_text(payload.as_ref())), t0.elapsed().as_secs_f64()),
    };
    if rec.status == CellStatus::Ok && rec.has_non_finite() {
        rec.status = CellStatus::Nan;
        if rec.message.is_empty() {
            rec.message = "a measured value is NaN or infinite".to_string();
        }
    }
    let prov = Provenance {
        device: format!("{device}{}", opts.device_note),
        version: opts.version.clone(),
        git_commit: opts.git_commit.clone(),
    };
    let row = match record::row(&plan.name, &plan.robust, cell, &rec, &prov, &record::utc_now()) {
        Ok(row) => row,
        Err(e) => {
            // The executor broke the contract (e.g. wrong number of radii): a failed cell.
            let bad = CellRecord::failed(format!("{e:#}"), rec.train_seconds);
            rec = bad;
            record::row(&plan.name, &plan.robust, cell, &rec, &prov, &record::utc_now())?
        }
    };
    if !store.append(&row)? {
        return Ok(Outcome::Skipped);
    }
    progress.finished(&summary_line(cell, &rec, &plan.robust));
    Ok(Outcome::Appended(rec.status))
}

fn summary_line(cell: &Cell, rec: &CellRecord, eps: &[crate::results::RobustColumn]) -> String {
    let mut s = format!("cell {} ({}): {}", cell.id, cell.describe(), rec.status.as_str());
    if let Some(c) = rec.clean_acc {
        s.push_str(&format!(", clean {:.1}%", 100.0 * c));
    }
    for (e, r) in eps.iter().zip(&rec.robust_acc) {
        s.push_str(&format!(", robust@{} {:.1}%", e.label(), 100.0 * r));
    }
    if rec.status != CellStatus::Ok && !rec.message.is_empty() {
        s.push_str(&format!(" [{}]", rec.message));
    }
    s.push_str(&format!(", {:.1} s", rec.train_seconds + rec.eval_seconds));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::NormSummary;
    use std::sync::atomic::AtomicUsize;

    fn plan() -> Plan {
        let src = r#"(name: "t", data: (sources: ["Cargo.toml"]), models: [vgg11, resnet18],
            regularizers: [weight_decay(betas: [1e-2, 1e-3])], training: (epochs: 2, seeds: [1, 2]),
            evaluation: (robust: (eps: ["1/255", "8/255"])))"#;
        crate::plan::parse(Path::new("t.ron"), src).unwrap()
    }

    fn opts(devices: usize, jobs: usize) -> RunOptions {
        RunOptions {
            devices: (0..devices).map(DeviceSpec::Cuda).collect(),
            jobs_per_device: jobs,
            shard: Shard::ALL,
            version: "0".into(),
            git_commit: "x".into(),
            device_note: String::new(),
        }
    }

    fn good(cell: &Cell) -> CellRecord {
        let v = (cell.index as f64 + 1.0) / 100.0;
        CellRecord {
            status: CellStatus::Ok,
            clean_acc: Some(0.5 + v),
            robust_acc: vec![0.3 + v, 0.1],
            certified_acc: Some(0.0),
            norms: Some(NormSummary::from_layers(&[(1.0 + v, 2.0)])),
            train_seconds: 1.0,
            eval_seconds: 0.5,
            message: String::new(),
        }
    }

    fn statuses(dir: &Path, p: &Plan) -> Vec<(String, String)> {
        let store = open_store(dir, p).unwrap();
        let (id, st) = (store.column("cell_id").unwrap(), store.column("status").unwrap());
        store.read_rows().unwrap().iter().map(|r| (r[id].to_string(), r[st].to_string())).collect()
    }

    #[test]
    fn runs_every_cell_once_across_devices_and_workers() {
        let p = plan();
        assert_eq!(p.cells.len(), 2 * 3 * 2);
        let dir = tempfile::tempdir().unwrap();
        let calls = AtomicUsize::new(0);
        let devices_seen = Mutex::new(std::collections::HashSet::new());
        let exec = |cell: &Cell, ctx: &CellContext| {
            calls.fetch_add(1, Ordering::SeqCst);
            devices_seen.lock().unwrap().insert(ctx.device);
            assert!(ctx.work_dir.ends_with(&cell.id) && ctx.work_dir.is_dir());
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(good(cell))
        };
        let s = run_plan(&p, dir.path(), &opts(2, 3), &exec).unwrap();
        assert_eq!((s.ran, s.not_ok, s.skipped, s.done_before), (12, 0, 0, 0));
        assert_eq!(calls.load(Ordering::SeqCst), 12);
        assert_eq!(devices_seen.lock().unwrap().len(), 2);
        assert_eq!(statuses(dir.path(), &p).len(), 12);
        // A second run does nothing.
        let s = run_plan(&p, dir.path(), &opts(1, 1), &exec).unwrap();
        assert_eq!((s.ran, s.done_before), (0, 12));
        assert_eq!(calls.load(Ordering::SeqCst), 12);
    }

    #[test]
    fn errors_panics_nan_and_broken_records_are_recorded_and_the_rest_runs() {
        let p = plan();
        let dir = tempfile::tempdir().unwrap();
        let exec = |cell: &Cell, _: &CellContext| -> Result<CellRecord> {
            match cell.index {
                0 => anyhow::bail!("out of memory\non two lines"),
                1 => panic!("boom"),
                2 => Ok(CellRecord { clean_acc: Some(f64::NAN), ..good(cell) }),
                3 => Ok(CellRecord { robust_acc: vec![0.1], ..good(cell) }),
                4 => Ok(CellRecord { status: CellStatus::Diverged, message: "epoch 2".into(), ..good(cell) }),
                _ => Ok(good(cell)),
            }
        };
        let s = run_plan(&p, dir.path(), &opts(1, 2), &exec).unwrap();
        assert_eq!((s.ran, s.not_ok, s.failed), (12, 5, 3));
        let st = statuses(dir.path(), &p);
        let of = |i: usize| st.iter().find(|(id, _)| *id == p.cells[i].id).unwrap().1.clone();
        assert_eq!([of(0), of(1), of(2), of(3), of(4), of(5)], ["failed", "failed", "nan", "failed", "diverged", "ok"]);
        let text = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
        assert_eq!(text.lines().count(), 13, "one line per row, messages included:\n{text}");
        assert!(text.contains("panicked: boom") && text.contains("out of memory on two lines"));
    }

    #[test]
    fn a_full_disk_stops_the_run_without_a_failed_row() {
        let p = plan();
        let dir = tempfile::tempdir().unwrap();
        let exec = |cell: &Cell, _: &CellContext| -> Result<CellRecord> {
            if cell.index == 3 {
                let e = std::io::Error::from_raw_os_error(28);
                return Err(anyhow::Error::new(e).context("cannot write r/t/cells/x/checkpoint/epoch-1.safetensors"));
            }
            Ok(good(cell))
        };
        let err = run_plan(&p, dir.path(), &opts(1, 1), &exec).unwrap_err().to_string();
        assert!(err.contains("epoch-1.safetensors") && err.matches("os error 28").count() == 1, "{err}");
        assert!(err.contains("no row was written"), "{err}");
        let st = statuses(dir.path(), &p);
        assert_eq!(st.len(), 3, "cells 0-2 finished before cell 3 stopped the run: {st:?}");
        assert!(st.iter().all(|(_, s)| s == "ok"), "{st:?}");
    }

    #[test]
    fn a_claimed_cell_is_left_to_its_owner() {
        let p = plan();
        let dir = tempfile::tempdir().unwrap();
        let held = CellLock::try_claim(&cell_dir(dir.path(), &p, &p.cells[3])).unwrap().unwrap();
        let s = run_plan(&p, dir.path(), &opts(1, 1), &|c: &Cell, _: &CellContext| Ok(good(c))).unwrap();
        assert_eq!((s.ran, s.skipped), (11, 1));
        drop(held);
        let s = run_plan(&p, dir.path(), &opts(1, 1), &|c: &Cell, _: &CellContext| Ok(good(c))).unwrap();
        assert_eq!((s.ran, s.done_before), (1, 11));
    }

    #[test]
    fn stacks_train_together_then_each_cell_is_evaluated() {
        let p = plan();
        let dir = tempfile::tempdir().unwrap();
        let trained: Mutex<Vec<Vec<usize>>> = Mutex::new(Vec::new());
        let train = |cells: &[&Cell], ctx: &StackContext| -> Result<()> {
            assert_eq!(ctx.work_dirs, cells.iter().map(|c| cell_dir(dir.path(), &p, c)).collect::<Vec<_>>());
            trained.lock().unwrap().push(cells.iter().map(|c| c.index).collect());
            if cells[0].index == 0 {
                bail!("out of memory");
            }
            Ok(())
        };
        let units = |cells: &[&Cell]| super::super::stack::group(cells, &mut |_| Ok(2));
        let stacking = Stacking { units: &units, train: &train };
        let evaluated = AtomicUsize::new(0);
        let exec = |c: &Cell, _: &CellContext| {
            evaluated.fetch_add(1, Ordering::SeqCst);
            Ok(good(c))
        };
        let s = run_plan_stacked(&p, dir.path(), &opts(1, 2), &exec, Some(&stacking)).unwrap();
        // Every cell evaluated once, those of the failed stack too.
        assert_eq!((s.ran, evaluated.load(Ordering::SeqCst)), (12, 12));
        // Per model and seed, three regularizer cells: a stack of two and one cell alone.
        let mut stacks = trained.lock().unwrap().clone();
        stacks.sort();
        assert_eq!(stacks.len(), 4, "{stacks:?}");
        for st in &stacks {
            let (a, b) = (&p.cells[st[0]].config.train, &p.cells[st[1]].config.train);
            assert!(st.len() == 2 && a.model == b.model && a.seed == b.seed && a.regularizer != b.regularizer, "{st:?}");
        }
        // Nothing left: no stack is trained again.
        let s = run_plan_stacked(&p, dir.path(), &opts(1, 2), &exec, Some(&stacking)).unwrap();
        assert_eq!((s.ran, s.done_before), (0, 12));
    }

    #[test]
    fn shards_partition_the_grid() {
        let p = plan();
        let mut seen = vec![0; p.cells.len()];
        for i in 0..5 {
            let sh = Shard::parse(&format!("{i}/5")).unwrap();
            for c in p.cells.iter().filter(|c| sh.contains(c)) {
                seen[c.index] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert!(Shard::parse("5/5").is_err() && Shard::parse("1").is_err() && Shard::parse("0/0").is_err());
    }

    #[test]
    fn estimates_use_per_model_speeds() {
        let p = plan();
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let mut m = HashMap::new();
        assert_eq!(estimate_seconds(&cells, &m, 2), None);
        m.insert("vgg11".to_string(), 10.0);
        m.insert("resnet18".to_string(), 30.0);
        assert_eq!(estimate_seconds(&cells, &m, 2), Some((6.0 * 10.0 + 6.0 * 30.0) / 2.0));
    }
}
