//! `normlab run PLAN`: validate a plan, list its cells (`--dry-run`), or run the remaining
//! ones across devices and append their rows to `<results>/<plan>.csv`.

use super::fake::FakeExecutor;
use super::progress::format_duration;
use crate::results::record;
use super::scheduler::{self, CellContext, RunOptions, Shard};
use crate::device::DeviceSpec;
use crate::plan::{self, Cell, Plan};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `normlab run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plan file (RON), e.g. plans/demo.ron.
    pub plan: PathBuf,
    /// Validate the plan and list its cells (done, remaining, estimated time left); run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The dry run's listing: a table, or JSON with every cell's resolved configuration and
    /// `regularized_layers` (the parameters its regularizer acts on).
    #[arg(long, value_enum, default_value_t = ListFormat::Text, requires = "dry_run")]
    pub format: ListFormat,
    /// Directory of the results: <DIR>/<plan name>.csv and per-cell work dirs <DIR>/<plan name>/cells/<id>/.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// The CIFAR-10 directory (binary layout), in place of the plan's `data.dir`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Devices to spread cells over, comma-separated: cpu, or cuda:0,cuda:1,...
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    pub devices: Vec<DeviceSpec>,
    /// Cells running at once on each device (small CIFAR models leave a large GPU idle).
    #[arg(long, default_value_t = 1)]
    pub jobs_per_device: usize,
    /// Run only shard I of N (0 ≤ I < N): cell k of the grid belongs to shard k mod N. For Slurm
    /// job arrays, see scripts/slurm-array.sh.
    #[arg(long, value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Remove the rows of failed cells first, so those cells run again.
    #[arg(long)]
    pub retry_failed: bool,
    /// Test only: `fake` replaces training and evaluation by a deterministic stand-in.
    #[arg(long, hide = true, value_enum, default_value_t = ExecutorKind::Real)]
    pub executor: ExecutorKind,
}

/// How `--dry-run` lists the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A table.
    Text,
    /// One JSON document ([`super::listing::Listing`]).
    Json,
}

/// Which cell executor runs the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Train, then evaluate.
    Real,
    /// The deterministic test stand-in (see `run::fake`).
    Fake,
}

/// Runs `normlab run`.
pub fn run(args: &RunArgs) -> Result<()> {
    let plan = plan::load_with_data(&args.plan, args.data.as_deref())?;
    let shard = args.shard.unwrap_or(Shard::ALL);
    if args.jobs_per_device == 0 {
        bail!("--jobs-per-device 0: expected at least 1");
    }
    if args.dry_run && args.format == ListFormat::Json {
        println!("{}", serde_json::to_string_pretty(&super::listing::listing(&plan, &args.results, shard)?)?);
        return Ok(());
    }
    if args.dry_run {
        return dry_run(&plan, &args.results, shard, args.devices.len() * args.jobs_per_device);
    }
    let store = scheduler::open_store(&args.results, &plan)?;
    if args.retry_failed {
        let n = store.remove_failed()?;
        eprintln!("removed {n} failed row(s) from {}: those cells run again", store.path().display());
    }
    let done = store.done_ids()?;
    let remaining = plan.cells.iter().filter(|c| shard.contains(c) && !done.contains(&c.id)).count();
    if args.executor == ExecutorKind::Real {
        if remaining == 0 {
            eprintln!("plan {}: all {} cell(s) of this shard have a row in {}; nothing to run", plan.name, plan.cells.iter().filter(|c| shard.contains(c)).count(), store.path().display());
            return Ok(());
        }
        if !plan::data_dir_complete(&plan.data.dir) {
            bail!(
                "{} does not hold CIFAR-10 in binary layout yet: import it first with \
                 `normlab data --source {} --out {}` (or `make data`)",
                plan.data.dir.display(),
                plan.data.sources.first().map(String::as_str).unwrap_or("SRC"),
                plan.data.dir.display()
            );
        }
    }
    let data = match args.executor {
        ExecutorKind::Real => Some(crate::data::load_dir(&plan.data.dir)?),
        ExecutorKind::Fake => None,
    };
    let fake = FakeExecutor::from_env()?;
    let executor = |cell: &Cell, ctx: &CellContext| match &data {
        Some(data) => super::executor::execute(cell, ctx, data),
        None => fake.run(cell, ctx),
    };
    let opts = RunOptions {
        devices: args.devices.clone(),
        jobs_per_device: args.jobs_per_device,
        shard,
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: record::git_commit(),
        device_note: if args.executor == ExecutorKind::Fake { " (fake)".to_string() } else { String::new() },
    };
    let s = scheduler::run_plan(&plan, &args.results, &opts, &executor)?;
    eprintln!(
        "plan {}: {} cell(s) finished in this run ({} not ok), {} skipped (held or written by another process); results in {}",
        plan.name,
        s.ran,
        s.not_ok,
        s.skipped,
        scheduler::results_path(&args.results, &plan).display()
    );
    Ok(())
}

/// Prints the plan's cells with their state and the estimated time left.
fn dry_run(plan: &Plan, results: &Path, shard: Shard, workers: usize) -> Result<()> {
    let store = scheduler::open_store(results, plan)?;
    let rows = store.read_rows()?;
    let (id_col, status_col) = (store.column(record::col::CELL_ID).expect("cell_id column"), store.column(record::col::STATUS).expect("status column"));
    let status_of = |cell: &Cell| rows.iter().find(|r| &r[id_col] == cell.id.as_str()).map(|r| r[status_col].to_string());
    let mine: Vec<&Cell> = plan.cells.iter().filter(|c| shard.contains(c)).collect();
    let done = plan.cells.iter().filter(|c| status_of(c).is_some()).count();
    println!(
        "plan {} ({}): {} cells, {} done, {} remaining; results: {}",
        plan.name,
        plan.path.display(),
        plan.cells.len(),
        done,
        plan.cells.len() - done,
        store.path().display()
    );
    let data = &plan.data;
    if plan::data_dir_complete(&data.dir) {
        println!("data: {} (ready)", data.dir.display());
    } else {
        println!("data: {} (absent: import it with `normlab data --source {} --out {}`)", data.dir.display(), data.sources.first().map(String::as_str).unwrap_or("SRC"), data.dir.display());
    }
    if shard != Shard::ALL {
        println!("shard {}/{}: {} of the cells", shard.index, shard.count, mine.len());
    }
    println!("{:>4}  {:<12}  {:<22}  cell", "#", "id", "state");
    let mut remaining = Vec::new();
    for cell in &mine {
        let state = match status_of(cell) {
            Some(s) => format!("done ({s})"),
            None => {
                remaining.push(*cell);
                let dir = scheduler::cell_dir(results, plan, cell);
                let started = std::fs::read_dir(&dir).map(|d| d.flatten().any(|e| e.file_name() != ".lock")).unwrap_or(false);
                if started { "remaining (resumes)".to_string() } else { "remaining".to_string() }
            }
        };
        println!("{:>4}  {:<12}  {:<22}  {}", cell.index, cell.id, state, cell.describe());
    }
    let per_model = scheduler::measured_seconds(&store)?;
    match scheduler::estimate_seconds(&remaining, &per_model, workers) {
        Some(s) => println!(
            "time left: about {} for {} cell(s) on {} worker(s), from the measured speed of {} model(s)",
            format_duration(Duration::from_secs_f64(s)),
            remaining.len(),
            workers,
            per_model.len()
        ),
        None => println!("time left: unknown until a cell has finished (no measured speed yet)"),
    }
    Ok(())
}
