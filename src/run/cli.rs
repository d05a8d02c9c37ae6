//! `normlab run PLAN`: validate a plan, list its cells (`--dry-run`), or run the remaining
//! ones across devices and append their rows to `<results>/<plan>.csv`.

use super::fake::FakeExecutor;
use super::progress::format_duration;
use crate::results::record;
use super::environment;
use super::scheduler::{self, CellContext, RunOptions, Shard, StackContext, Stacking};
use super::stack::StackMode;
use crate::data::Cifar10;
use crate::device::DeviceSpec;
use crate::plan::{self, Cell, Plan};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
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
    /// Cells that differ only in their regularizer train together in one process as one
    /// stacked model (same initial weights and batches): at most K per stack, `auto` (as many
    /// as the device's free memory holds, from one step's measured memory) or `off` (each cell
    /// alone). Each cell's rows and files are the same either way.
    #[arg(long, default_value = "auto", value_parser = StackMode::parse)]
    pub stack: StackMode,
    /// With --dry-run: estimate the remaining cells' training time on the first of --devices
    /// in stacks from the speeds `normlab bench stack --out FILE` measured there.
    #[arg(long, requires = "dry_run")]
    pub speed: Option<PathBuf>,
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

/// Runs `normlab run`: checks the flags, the devices, the data and the results folder before
/// the first cell, then runs the remaining cells. Exits non-zero (an error as the last line)
/// when a cell of this run ended `failed`, naming `--retry-failed`.
pub fn run(args: &RunArgs) -> Result<()> {
    let plan = plan::load_with_data(&args.plan, args.data.as_deref())?;
    let shard = args.shard.unwrap_or(Shard::ALL);
    if args.jobs_per_device == 0 {
        bail!("--jobs-per-device 0: expected at least 1 cell at once per device");
    }
    if args.dry_run && args.format == ListFormat::Json {
        println!("{}", serde_json::to_string_pretty(&super::listing::listing(&plan, &args.results, shard)?)?);
        return Ok(());
    }
    if args.dry_run {
        return dry_run(&plan, args, shard);
    }
    environment::check_devices(&args.devices, "--devices")?;
    environment::check_results_folder(&args.results, "--results")?;
    let store = scheduler::open_store(&args.results, &plan)?;
    let mine = |id: &str| plan.cells.iter().any(|c| c.id == id && shard.contains(c));
    if args.retry_failed {
        let n = store.remove_failed(mine)?;
        eprintln!("removed {n} failed row(s) from {}: those cells run again", store.path().display());
    }
    let done = store.done_ids()?;
    let remaining = plan.cells.iter().filter(|c| shard.contains(c) && !done.contains(&c.id)).count();
    let failed_before = store.failed_ids()?.iter().filter(|id| mine(id)).count();
    let retry = retry_command(args);
    if failed_before > 0 {
        eprintln!(
            "{failed_before} cell(s) of this plan{} have a failed row (see its message column in {}) and do not run again: \
             fix the cause, then rerun them with `{retry}`",
            if shard == Shard::ALL { String::new() } else { format!("'s shard {}/{}", shard.index, shard.count) },
            store.path().display()
        );
    }
    if remaining == 0 {
        eprintln!(
            "plan {}: all {} cell(s) of this shard have a row in {}; nothing to run",
            plan.name,
            plan.cells.iter().filter(|c| shard.contains(c)).count(),
            store.path().display()
        );
        return Ok(());
    }
    let data = check_data(&plan, args.executor)?;
    let fake = FakeExecutor::from_env()?;
    let executor = |cell: &Cell, ctx: &CellContext| match &data {
        Some(data) => super::executor::execute(cell, ctx, data),
        None => fake.run(cell, ctx),
    };
    let units = |cells: &[&Cell]| super::stack::stacks(cells, args.stack, &args.devices, args.jobs_per_device, &|line| eprintln!("{line}"));
    let train_stack = |cells: &[&Cell], ctx: &StackContext| -> Result<()> {
        let data = data.as_ref().context("stacks train only with the real executor")?;
        let runs: Vec<_> = cells.iter().zip(&ctx.work_dirs).map(|(c, dir)| (c.config.train.clone(), dir.clone())).collect();
        crate::train::stack::train_stack(&runs, ctx.device, data)?;
        Ok(())
    };
    let stacking = Stacking { units: &units, train: &train_stack };
    let opts = RunOptions {
        devices: args.devices.clone(),
        jobs_per_device: args.jobs_per_device,
        shard,
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: record::git_commit(),
        device_note: if args.executor == ExecutorKind::Fake { " (fake)".to_string() } else { String::new() },
    };
    let stacked = args.executor == ExecutorKind::Real && args.stack != StackMode::Off;
    let s = scheduler::run_plan_stacked(&plan, &args.results, &opts, &executor, stacked.then_some(&stacking))?;
    eprintln!(
        "plan {}: {} cell(s) finished in this run ({} not ok), {} skipped (held or written by another process); results in {}",
        plan.name,
        s.ran,
        s.not_ok,
        s.skipped,
        scheduler::results_path(&args.results, &plan).display()
    );
    if s.failed > 0 {
        bail!(
            "{} cell(s) of this run failed (their error is in the message column of {}): fix the cause, then rerun them with `{retry}`",
            s.failed,
            scheduler::results_path(&args.results, &plan).display()
        );
    }
    Ok(())
}

/// The data checks before the first cell: the plan's data folder, if complete, must match its
/// import record (sizes and checksums) and hold at least the plan's subsets. The real
/// executor needs the folder and gets it loaded; the fake runs without data.
fn check_data(plan: &Plan, executor: ExecutorKind) -> Result<Option<Cifar10>> {
    let dir = &plan.data.dir;
    if !plan::data_dir_complete(dir) {
        if executor == ExecutorKind::Fake {
            return Ok(None);
        }
        bail!(
            "{} does not hold CIFAR-10 in binary layout yet: import it first with \
             `normlab data --source {} --out {}` (or `make data`), or give the folder with --data",
            dir.display(),
            plan.data.sources.first().map(String::as_str).unwrap_or("SRC"),
            dir.display()
        );
    }
    match crate::data::integrity::verify(dir)? {
        crate::data::integrity::Verified::Ok(_) => {}
        crate::data::integrity::Verified::Unchecked(note) => eprintln!("note: {note}"),
    }
    let (train, test) = crate::data::binary::split_sizes(dir)?;
    plan.check_against_data(train, test)?;
    Ok(match executor {
        ExecutorKind::Real => Some(crate::data::load_dir(dir)?),
        ExecutorKind::Fake => None,
    })
}

/// The command that reruns this run's failed cells: the same plan, results folder and shard.
fn retry_command(args: &RunArgs) -> String {
    let mut c = format!("normlab run {}", args.plan.display());
    if args.results != std::path::Path::new("results") {
        c.push_str(&format!(" --results {}", args.results.display()));
    }
    if let Some(d) = &args.data {
        c.push_str(&format!(" --data {}", d.display()));
    }
    if let Some(s) = args.shard {
        c.push_str(&format!(" --shard {}/{}", s.index, s.count));
    }
    c.push_str(" --retry-failed");
    c
}

/// Prints the plan's cells with their state and the estimated time left.
fn dry_run(plan: &Plan, args: &RunArgs, shard: Shard) -> Result<()> {
    let (results, workers) = (&args.results, args.devices.len() * args.jobs_per_device);
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
        let state = match crate::data::integrity::check_sizes(&data.dir) {
            Ok(None) => "ready: sizes match its import record".to_string(),
            Ok(Some(_)) => "ready, no import record to check it against".to_string(),
            Err(e) => format!("damaged: {}", crate::util::error_text(&e)),
        };
        println!("data: {} ({state})", data.dir.display());
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
    let failed = mine.iter().filter(|c| status_of(c).as_deref() == Some("failed")).count();
    if failed > 0 {
        println!(
            "{failed} cell(s) have a failed row and do not run again until it is removed: `normlab run {} --retry-failed` reruns them",
            plan.path.display()
        );
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
    print_stacks(&remaining, args, workers)
}

/// The stacks `--stack` would train the `remaining` cells in and, with `--speed`, their
/// training time on the first device at the measured stacked speeds.
fn print_stacks(remaining: &[&Cell], args: &RunArgs, workers: usize) -> Result<()> {
    let max = match args.stack {
        StackMode::Off => 1,
        StackMode::Size(k) => k,
        // Sized from memory at run time; shown whole.
        StackMode::Auto => usize::MAX,
    };
    let stacks = super::stack::group(remaining, &mut |_| Ok(max))?;
    let cells = |s: &[usize]| s.iter().map(|&i| remaining[i]).collect::<Vec<_>>();
    let sizes: Vec<String> = stacks.iter().filter(|s| s.len() > 1).map(|s| format!("{} ({} cells)", remaining[s[0]].config.train.model, s.len())).collect();
    println!(
        "stacks (--stack {}{}): {} of the {} remaining cells train in {} stack(s){}{}",
        args.stack,
        if args.stack == StackMode::Auto { ", sized from free memory at run time; shown whole" } else { "" },
        stacks.iter().filter(|s| s.len() > 1).map(Vec::len).sum::<usize>(),
        remaining.len(),
        sizes.len(),
        if sizes.is_empty() { "" } else { ": " },
        sizes.join(", ")
    );
    let Some(path) = &args.speed else { return Ok(()) };
    let speeds = super::stack::read_speeds(path)?;
    let device = args.devices.first().map(|d| d.to_string()).unwrap_or_default();
    let mut total = 0.0;
    let mut unmeasured = 0;
    for s in &stacks {
        let stack = cells(s);
        match super::stack::stack_seconds(&stack, &device, &speeds) {
            Some((secs, at)) => {
                total += secs;
                println!(
                    "  {} ×{}: {:.2} {device}-hours of training ({:.0} images/s measured for a stack of {} on {})",
                    stack[0].config.train.model,
                    stack.len(),
                    secs / 3600.0,
                    at.images_per_s,
                    at.k,
                    at.measured_at
                );
            }
            None => unmeasured += stack.len(),
        }
    }
    println!(
        "training: about {:.1} {device}-hours for the measured stacks ({:.1} h on {workers} worker(s)){}; evaluation comes on top",
        total / 3600.0,
        total / 3600.0 / workers.max(1) as f64,
        if unmeasured > 0 { format!("; {unmeasured} cell(s) of models not measured on {device} in {} left out", path.display()) } else { String::new() }
    );
    Ok(())
}
