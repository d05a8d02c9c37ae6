//! `normlab bench stack`: cells per hour of training when K cells of a plan's row train as one
//! stacked model ([`crate::train::stack`]) against the same K cells trained one after the
//! other, in one run on one machine.
//!
//! The cells are a plan's own (its first standard-training row of the chosen model, in grid
//! order: plain, then each regularizer and strength), so the regularizers' work, SVC's period
//! included, is what the plan's cells do. Each measurement times `--steps` training steps of the
//! training loop's own step after one untimed warm-up step, on augmented batches of random
//! images; a separate cell is a stack of one, which runs the single model's ops. Stacked and
//! separate alternate `--repeats` times so that a change in the machine's load falls on both.
//! Cells per hour count training only (steps per cell from the plan: epochs × batches per
//! epoch); the evaluation of each cell is the same stacked or not.

use crate::models::Arch;
use crate::ops::stack::{set_stack_conv, StackConv};
use crate::plan::Cell;
use crate::train::stack::{stack_key, StepTimer};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `normlab bench stack`.
#[derive(Debug, clap::Args)]
pub struct StackBenchArgs {
    /// The plan whose cells to train (e.g. plans/demo.ron, plans/paper.ron).
    pub plan: PathBuf,
    /// The model of the row (default: the plan's first).
    #[arg(long)]
    pub model: Option<String>,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Stack sizes to measure, comma-separated (each at most the row's length).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub ks: Vec<usize>,
    /// Timed steps per measurement (after one untimed warm-up step).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Alternations of stacked and separate per stack size.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Stacked convolutions: per-slice (each slice's own kernels; the CPU default) or grouped
    /// (one convolution with K times the groups).
    #[arg(long, default_value = "per-slice")]
    pub conv: String,
    /// Append the results as CSV rows to this file (`normlab run --dry-run --speed FILE` reads
    /// them to estimate a grid's device-hours).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The header of `--out` files.
pub const SPEED_HEADER: &str = "device,model,k,conv,batch,steps,stacked_step_s,separate_step_s,stacked_images_per_s,separate_images_per_s,measured_at";

/// Runs the bench and prints its table.
pub fn run(args: &StackBenchArgs) -> Result<()> {
    let plan = crate::plan::load(&args.plan)?;
    let arch = match &args.model {
        Some(m) => Arch::parse(m)?,
        None => plan.cells.first().context("the plan has no cells")?.config.train.model,
    };
    let row: Vec<&Cell> = {
        let first = plan.cells.iter().find(|c| c.config.train.model == arch && stack_key(&c.config.train).is_some()).with_context(|| format!("{} has no standard-training cell of {arch}", args.plan.display()))?;
        let key = stack_key(&first.config.train);
        plan.cells.iter().filter(|c| stack_key(&c.config.train) == key).collect()
    };
    if args.steps == 0 || args.repeats == 0 || args.ks.is_empty() {
        bail!("--steps, --repeats and --ks must be at least 1 (got {}, {}, {:?})", args.steps, args.repeats, args.ks);
    }
    if let Some(&k) = args.ks.iter().find(|&&k| k == 0 || k > row.len()) {
        bail!("--ks {k}: the {arch} row of {} has {} cells (K from 1 to {})", args.plan.display(), row.len(), row.len());
    }
    let conv = StackConv::parse(&args.conv)?;
    set_stack_conv(conv);
    let device = crate::device::open(&args.device)?;
    let protocol = &row[0].config.train.training;
    let batch = protocol.batch.get();
    let cell_steps = protocol.epochs() * crate::run::stack::epoch_images(protocol).div_ceil(batch);
    let split = super::train::synthetic_split(batch * (args.steps + 1), 7)?;
    println!(
        "bench stack: plan {} model {arch} device {} conv {} batch {batch} steps {} repeats {} threads {}; a cell trains {cell_steps} steps",
        args.plan.display(),
        crate::device::describe(&device),
        conv.name(),
        args.steps,
        args.repeats,
        rayon::current_num_threads()
    );
    println!("cells: {}", row.iter().map(|c| c.config.train.regularizer.describe(c.config.train.model.layers())).collect::<Vec<_>>().join(", "));
    println!("{:>3}  {:>14}  {:>14}  {:>12}  {:>12}  {:>8}", "K", "stacked s/step", "separate s/step", "stacked c/h", "separate c/h", "ratio");
    let mut lines = Vec::new();
    for &k in &args.ks {
        let cfgs: Vec<_> = row[..k].iter().map(|c| c.config.train.clone()).collect();
        let (mut stacked, mut separate) = (Vec::new(), Vec::new());
        for _ in 0..args.repeats {
            stacked.push(time(&[&cfgs[..]], &split, &device, batch, args.steps)?);
            let alone: Vec<&[_]> = cfgs.chunks(1).collect();
            separate.push(time(&alone, &split, &device, batch, args.steps)?);
        }
        let (st, sep) = (median(&mut stacked), median(&mut separate));
        let per_hour = |step_s: f64| 3600.0 * k as f64 / (step_s * cell_steps as f64);
        println!(
            "{k:>3}  {st:>14.3}  {sep:>14.3}  {:>12.1}  {:>12.1}  {:>7.2}×   (per repeat: stacked {}, separate {})",
            per_hour(st),
            per_hour(sep),
            sep / st,
            list(&stacked),
            list(&separate)
        );
        let ips = |step_s: f64| (k * batch) as f64 / step_s;
        lines.push(format!(
            "{},{arch},{k},{},{batch},{},{st:.6},{sep:.6},{:.3},{:.3},{}",
            args.device,
            conv.name(),
            args.steps,
            ips(st),
            ips(sep),
            crate::results::record::utc_now()
        ));
    }
    println!("c/h: cells per hour of training at the plan's {cell_steps} steps per cell; ratio: separate time / stacked time");
    if let Some(path) = &args.out {
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        if new {
            writeln!(f, "{SPEED_HEADER}")?;
        }
        for l in &lines {
            writeln!(f, "{l}")?;
        }
        println!("appended {} row(s) to {}", lines.len(), path.display());
    }
    Ok(())
}

/// Seconds per step of the stacks `stacks` (each a list of cell configurations) run one after
/// the other, `steps` timed steps each after one warm-up step: the sum of their step times.
fn time(stacks: &[&[crate::train::TrainConfig]], split: &crate::data::Split, device: &Device, batch: usize, steps: usize) -> Result<f64> {
    let mut total = 0.0;
    for cfgs in stacks {
        let mut timer = StepTimer::new(cfgs, device)?;
        let batch_of = |i: usize| split.augmented_batch(&(i * batch..(i + 1) * batch).collect::<Vec<_>>(), i as u64, device);
        let (x, y) = batch_of(0)?;
        timer.step(&x, &y)?;
        let mut secs = 0.0;
        for i in 1..=steps {
            let (x, y) = batch_of(i)?;
            let t0 = Instant::now();
            timer.step(&x, &y)?;
            secs += t0.elapsed().as_secs_f64();
        }
        total += secs / steps as f64;
    }
    Ok(total)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" ")
}
