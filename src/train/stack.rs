//! Training several cells in one process as one stacked model
//! ([`crate::models::StackedModel`]): cells whose configurations differ only in the
//! regularizer start from the same weights and see the same batches (common random numbers),
//! so they can share every forward and backward pass: each slice of the stack is one cell.
//!
//! Per slice, everything a cell has alone is its own and computed by the same code on the
//! slice's views: its regularizer and state ([`crate::regularize::stacked`]), its loss and
//! accuracy, a non-finite loss (that slice ends `diverged` where the single run would, and
//! the stack goes on without it), its per-epoch checkpoint, metrics.csv, final
//! model.safetensors, norms.csv and status.json, written into its own run folder exactly as
//! [`super::train`] writes them. On the CPU every slice's arithmetic is the single run's, so
//! a cell's files are the same whether it trained alone or in a stack, and either can resume
//! the other's checkpoint. The only difference is time: a slice's `train_seconds` and
//! `images_per_s` count its share of the stack's time (each step's time divided among the
//! slices in it).

use super::{augment_seed, checkpoint, epoch_line, metrics, progress, recorded_outcome, schedule, subset, write_diverged, write_finished};
use super::{AdvConfig, TrainConfig, TrainOutcome, EVAL_BATCH};
use crate::data::dataset::{epoch_order, Cifar10, Split};
use crate::device::DeviceSpec;
use crate::models::{Model, StackedModel};
use crate::norms::{model_norms, NormSummary};
use crate::optim::Sgd;
use crate::regularize::{self, RegConfig, Regularizer};
use crate::results::RunDir;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// What cells must share to train in one stack: their configuration with the regularizer left
/// out (model, seed, training mode, protocol). `None` for a configuration that does not stack
/// ([`trains_alone`]).
pub fn stack_key(cfg: &TrainConfig) -> Option<TrainConfig> {
    trains_alone(cfg).is_none().then(|| TrainConfig { regularizer: RegConfig::Plain, ..cfg.clone() })
}

/// Why a configuration must train alone, if it must:
/// - adversarial training attacks each model with its own examples, so the slices would not
///   share their batches;
/// - SVC with `final_clip` re-estimates BatchNorm's running statistics after its last clip by
///   train-mode forward passes, which in a stack would move every slice's statistics;
/// - norm decay with `project_bn` projects BatchNorm's γ through the model's whole tensors,
///   which in a stack hold every slice's channels.
///
/// SVC with `reference` coverage stacks: its clips before a step run per slice
/// ([`regularize::stacked::before_step`]), as its clips after a step do under `all`.
pub fn trains_alone(cfg: &TrainConfig) -> Option<&'static str> {
    if cfg.adv != AdvConfig::None {
        return Some("it trains adversarially: its slices would need their own attacked images");
    }
    match cfg.regularizer {
        RegConfig::Svc { final_clip: true, .. } => Some("its final SVC clip re-estimates BatchNorm's statistics by forward passes that would move every slice's"),
        RegConfig::NormDecay { project_bn: Some(_), .. } => Some("its BatchNorm projection acts on whole tensors, not on one slice"),
        _ => None,
    }
}

/// Trains `cells` (configuration, run folder), which must share their [`stack_key`], as stacks
/// on `device`, each into its folder as [`super::train`] with `resume` would: a cell whose run
/// has ended returns its recorded outcome, one with a checkpoint resumes from it (cells at
/// different epochs train as separate stacks), the others start afresh. Returns each cell's
/// outcome, in order.
pub fn train_stack(cells: &[(TrainConfig, PathBuf)], device: DeviceSpec, data: &Cifar10) -> Result<Vec<TrainOutcome>> {
    let outcomes = train_stack_session(cells, device, data, None)?;
    outcomes.into_iter().map(|o| o.context("a stack stopped before its last epoch without an epoch limit")).collect()
}

/// One cell of a stack, apart from its regularizer.
struct Slice {
    cfg: TrainConfig,
    out: PathBuf,
    state: checkpoint::Progress,
    /// The cell's position in the caller's list.
    position: usize,
}

/// A cell as it starts: fresh, or its model and optimizer loaded from its checkpoint.
struct Start {
    slice: Slice,
    reg: Regularizer,
    loaded: Option<(Model, Sgd)>,
}

/// [`train_stack`], stopping after at most `max_epochs` epochs of this session (then the
/// unfinished cells' outcomes are `None`: they continue from their checkpoints).
pub(super) fn train_stack_session(cells: &[(TrainConfig, PathBuf)], device: DeviceSpec, data: &Cifar10, max_epochs: Option<usize>) -> Result<Vec<Option<TrainOutcome>>> {
    let (first, _) = cells.first().context("a stack of no cells")?;
    let Some(key) = stack_key(first) else {
        bail!("{} does not stack ({}); train it alone", first.regularizer.describe(first.model.layers()), trains_alone(first).unwrap_or("no reason given"));
    };
    for (cfg, out) in cells {
        cfg.validate()?;
        if stack_key(cfg).as_ref() != Some(&key) {
            bail!("{} differs from {} in more than the regularizer: they cannot share a stack", out.display(), cells[0].1.display());
        }
    }
    crate::memory::retain_freed_memory();
    let train_set = subset(&data.train, first.training.train_subset);
    let test_set = subset(&data.test, first.training.test_subset);
    if train_set.is_empty() || test_set.is_empty() {
        bail!("the dataset has {} training and {} test images: both must be non-empty", train_set.len(), test_set.len());
    }
    let device = device.open()?;
    let template = Model::new(first.model, first.seed, &device)?;
    let mut outcomes = vec![None; cells.len()];
    let mut groups: BTreeMap<usize, Vec<Start>> = BTreeMap::new();
    for (position, (cfg, out)) in cells.iter().enumerate() {
        if let Some(done) = recorded_outcome(out, cfg)? {
            outcomes[position] = Some(done);
            continue;
        }
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        crate::util::atomic_write(&RunDir::new(out).config(), serde_json::to_string_pretty(cfg)?.as_bytes())?;
        let mut reg = Regularizer::new(cfg.regularizer, &template)?;
        let (state, loaded) = if checkpoint::exists(out) {
            let model = Model::new(cfg.model, cfg.seed, &device)?;
            let mut sgd = Sgd::new(cfg.training.lr.get(), cfg.training.momentum.get());
            match checkpoint::load(out, cfg, &model, &mut sgd, &mut reg)? {
                Some(state) => (state, Some((model, sgd))),
                // Every checkpoint file was damaged (and set aside): the cell starts over.
                None => (fresh(cfg), None),
            }
        } else {
            (fresh(cfg), None)
        };
        let slice = Slice { cfg: cfg.clone(), out: out.clone(), state, position };
        groups.entry(slice.state.epochs_done).or_default().push(Start { slice, reg, loaded });
    }
    for group in groups.into_values() {
        for (position, outcome) in Stack::build(group, &device)?.train(&train_set, &test_set, &device, max_epochs)? {
            outcomes[position] = outcome;
        }
    }
    Ok(outcomes)
}

/// A stacked model with its optimizer and its slices' regularizers and progress; slice s of
/// the model is `slices[s]`, regularized by `regs[s]`.
struct Stack {
    model: StackedModel,
    sgd: Sgd,
    regs: Vec<Regularizer>,
    slices: Vec<Slice>,
}

/// What one step measured, per slice.
struct StepStats {
    /// The mean loss on the batch.
    loss: Vec<f32>,
    /// Correct predictions on the batch.
    hits: Vec<f32>,
    /// Whether the loss was finite.
    live: Vec<bool>,
    /// Seconds in the regularizer.
    reg_seconds: Vec<f64>,
}

/// What one slice's epoch adds up.
#[derive(Debug, Clone, Default)]
struct Sums {
    loss: f64,
    correct: f64,
    seen: usize,
    /// Its share of the training steps' time.
    train_seconds: f64,
    reg_seconds: f64,
}

impl Stack {
    /// The stack of cells that all stand after the same epoch.
    fn build(group: Vec<Start>, device: &Device) -> Result<Self> {
        let cfg = group.first().context("a stack of no cells")?.slice.cfg.clone();
        let model = StackedModel::new(cfg.model, cfg.seed, group.len(), device)?;
        let mut sgd = Sgd::new(cfg.training.lr.get(), cfg.training.momentum.get());
        let (mut regs, mut slices, mut buffers) = (Vec::new(), Vec::new(), Vec::new());
        for (s, start) in group.into_iter().enumerate() {
            if let Some((m, sgd)) = &start.loaded {
                model.insert(s, m)?;
                buffers.push(sgd.state().clone());
            }
            regs.push(start.reg);
            slices.push(start.slice);
        }
        let (steps, tracked) = (slices[0].state.steps_done, slices[0].state.batches_tracked);
        if let Some(odd) = slices.iter().find(|s| (s.state.steps_done, s.state.batches_tracked) != (steps, tracked)) {
            bail!(
                "{} and {} stand after the same epoch but not the same step ({} and {} steps): their checkpoints are of different runs",
                odd.out.display(),
                slices[0].out.display(),
                odd.state.steps_done,
                steps
            );
        }
        model.set_batches_tracked(tracked);
        if !buffers.is_empty() {
            if buffers.len() != slices.len() {
                bail!("some cells of a stack have momentum buffers and some have none");
            }
            let mut stacked = BTreeMap::new();
            for name in buffers[0].keys() {
                let parts = buffers.iter().map(|b| b.get(name).cloned().with_context(|| format!("a checkpoint lacks the momentum of {name}"))).collect::<Result<Vec<_>>>()?;
                stacked.insert(name.clone(), Tensor::cat(&parts, 0)?);
            }
            sgd.load_state(stacked);
        }
        Ok(Self { model, sgd, regs, slices })
    }

    /// Trains the remaining epochs (at most `max_epochs` of them); returns each slice's
    /// outcome by its cell's position (`None`: stopped by `max_epochs`).
    fn train(mut self, train_set: &Split, test_set: &Split, device: &Device, max_epochs: Option<usize>) -> Result<Vec<(usize, Option<TrainOutcome>)>> {
        let epochs = self.slices[0].cfg.training.epochs();
        let progress = progress::Progress::new(epochs);
        let first_epoch = self.slices[0].state.epochs_done;
        progress.line(&format!("stack of {}: {}", self.model.k(), self.describe()));
        if first_epoch > 0 {
            progress.line(&format!("resuming the stack after epoch {first_epoch}/{epochs}"));
        }
        let mut ended = Vec::new();
        let mut last = Vec::new();
        while !self.slices.is_empty() && self.slices[0].state.epochs_done < epochs {
            let epoch = self.slices[0].state.epochs_done;
            if max_epochs.is_some_and(|m| epoch - first_epoch >= m) {
                progress.finish();
                ended.extend(self.slices.iter().map(|s| (s.position, None)));
                return Ok(ended);
            }
            let rows = self.run_epoch(train_set, test_set, device, &progress, &mut ended)?;
            last.clear();
            for (s, (row, model, train_seconds)) in rows.into_iter().enumerate() {
                progress.line(&format!("{}: {}", self.slices[s].cfg.regularizer.describe(self.slices[s].cfg.model.layers()), epoch_line(&row, epochs)));
                let sgd = self.sgd_slice(s)?;
                let slice = &mut self.slices[s];
                slice.state.train_seconds += train_seconds;
                slice.state.rows.push(row);
                slice.state.epochs_done += 1;
                slice.state.batches_tracked = self.model.batches_tracked();
                checkpoint::save(&slice.out, &slice.state, &model, &sgd, &mut self.regs[s])?;
                metrics::write_csv(&RunDir::new(&slice.out).metrics(), &slice.state.rows)?;
                last.push(model);
            }
        }
        progress.finish();
        for (slice, model) in self.slices.iter().zip(&last) {
            ended.push((slice.position, Some(write_finished(&slice.out, &slice.cfg, &slice.state, model)?)));
        }
        Ok(ended)
    }

    /// One optimizer step of every slice on the batch `(x, y)`, batch `batch` (from 0) of its
    /// epoch: forward, each slice's loss, backward of their sum, each live slice's regularizer
    /// (SVC's clip before the step where its coverage says), the SGD step, SVC where due. A
    /// slice whose loss is not finite is not regularized (its weights stop mattering: the
    /// caller drops it).
    fn step(&mut self, x: &Tensor, y: &Tensor, batch: usize, device: &Device) -> Result<StepStats> {
        let k = self.model.k();
        let logits = self.model.forward(x, true)?;
        let losses = crate::ops::stack::cross_entropy(&logits, y)?;
        let hits = crate::ops::stack::hits(&logits, y)?;
        let mut stats = Tensor::cat(&[&losses.detach(), &hits], 0)?.to_vec1::<f32>()?;
        let hits = stats.split_off(k);
        let live: Vec<bool> = stats.iter().map(|l| l.is_finite()).collect();
        let mut grads = losses.sum_all()?.backward()?;
        if !device.is_cpu() && self.regs.iter().any(|r| !matches!(r.config(), RegConfig::Plain)) {
            // As in the single loop: backward's kernels must not be booked to the regularizers.
            device.synchronize()?;
        }
        let mut reg_seconds = regularize::stacked::apply(&self.model, &mut self.regs, &live, &mut grads)?;
        let before = regularize::stacked::before_step(&self.model, &mut self.regs, &live, batch)?;
        for (r, a) in reg_seconds.iter_mut().zip(before) {
            *r += a;
        }
        // The stacked regularizers write their terms into the gradients: no fused terms.
        self.sgd.step(self.model.params(), &grads, &crate::optim::GradTerms::default())?;
        drop(grads);
        // A slice whose loss was not finite did not take this step, as a run alone stops before it.
        for (slice, _) in self.slices.iter_mut().zip(&live).filter(|(_, &l)| l) {
            slice.state.steps_done += 1;
        }
        if let Some(done) = self.slices.iter().zip(&live).find(|(_, &l)| l).map(|(s, _)| s.state.steps_done) {
            let after = regularize::stacked::after_step(&self.model, &mut self.regs, &live, done)?;
            for (r, a) in reg_seconds.iter_mut().zip(after) {
                *r += a;
            }
        }
        Ok(StepStats { loss: stats, hits, live, reg_seconds })
    }

    /// `plain, wd β=0.01, ...`: the slices' regularizers in order.
    fn describe(&self) -> String {
        self.slices.iter().map(|s| s.cfg.regularizer.describe(s.cfg.model.layers())).collect::<Vec<_>>().join(", ")
    }

    /// Slice `s`'s optimizer: its own copy of its momentum buffers.
    fn sgd_slice(&self, s: usize) -> Result<Sgd> {
        let mut sgd = Sgd::new(self.sgd.lr, self.sgd.momentum);
        let buffers = self.sgd.state().iter().map(|(name, b)| Ok((name.clone(), self.model.slice_of(b, s)?.copy()?))).collect::<Result<BTreeMap<_, _>>>()?;
        sgd.load_state(buffers);
        Ok(sgd)
    }

    /// Keeps the slices `keep` (in order), with their weights, buffers, momentum and state.
    fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let mut sgd = Sgd::new(self.sgd.lr, self.sgd.momentum);
        let mut buffers = BTreeMap::new();
        for (name, b) in self.sgd.state() {
            let parts = keep.iter().map(|&s| self.model.slice_of(b, s)).collect::<Result<Vec<_>>>()?;
            buffers.insert(name.clone(), Tensor::cat(&parts, 0)?);
        }
        sgd.load_state(buffers);
        self.model = self.model.retain(keep)?;
        self.sgd = sgd;
        self.regs = only(std::mem::take(&mut self.regs), keep);
        self.slices = only(std::mem::take(&mut self.slices), keep);
        Ok(())
    }

    /// One epoch of every slice; a slice whose loss stops being finite ends there (its outcome
    /// goes to `ended`) and the others go on. Returns each remaining slice's metrics row, its
    /// model as it stands after the epoch and its share of the training time.
    fn run_epoch(&mut self, train_set: &Split, test_set: &Split, device: &Device, progress: &progress::Progress, ended: &mut Vec<(usize, Option<TrainOutcome>)>) -> Result<Vec<(metrics::EpochRow, Model, f64)>> {
        let cfg = self.slices[0].cfg.clone();
        let epoch = self.slices[0].state.epochs_done;
        let t0 = Instant::now();
        let batch = cfg.training.batch.get();
        let lr = schedule::lr_at(cfg.training.lr.get(), &cfg.training.milestones, epoch);
        self.sgd.lr = lr;
        let order = epoch_order(train_set.len(), cfg.seed, epoch);
        progress.start_epoch(epoch, order.len().div_ceil(batch));
        let mut sums = vec![Sums::default(); self.model.k()];
        for (b, idx) in order.chunks(batch).enumerate() {
            let step_t0 = Instant::now();
            let k = self.model.k();
            let (x, y) = train_set.augmented_batch(idx, augment_seed(cfg.seed, epoch, b), device)?;
            let step = self.step(&x, &y, b, device)?;
            let share = step_t0.elapsed().as_secs_f64() / k as f64;
            for (s, sum) in sums.iter_mut().enumerate() {
                if step.live[s] {
                    sum.loss += step.loss[s] as f64 * idx.len() as f64;
                    sum.correct += step.hits[s] as f64;
                    sum.seen += idx.len();
                }
                sum.reg_seconds += step.reg_seconds[s];
                sum.train_seconds += share;
            }
            let live = step.live;
            let dead: Vec<usize> = (0..k).filter(|&s| !live[s]).collect();
            if !dead.is_empty() {
                for &s in &dead {
                    let slice = &self.slices[s];
                    progress.line(&format!("{}: diverged: non-finite loss at step {} of epoch {}; the rest of the stack goes on", slice.cfg.regularizer.describe(slice.cfg.model.layers()), b + 1, epoch + 1));
                    ended.push((slice.position, Some(write_diverged(&slice.out, &slice.cfg, &slice.state, epoch + 1)?)));
                }
                let keep: Vec<usize> = (0..k).filter(|&s| live[s]).collect();
                if keep.is_empty() {
                    self.slices.clear();
                    return Ok(Vec::new());
                }
                self.retain(&keep)?;
                sums = keep.iter().map(|&s| sums[s].clone()).collect();
            }
            let (loss, acc, seen) = sums.iter().fold((0.0, 0.0, 0), |(l, a, n), s| (l + s.loss, a + s.correct, n + s.seen));
            progress.step(loss / seen.max(1) as f64, 100.0 * acc / seen.max(1) as f64, seen as f64 / t0.elapsed().as_secs_f64());
        }
        let test_acc = evaluate(&self.model, test_set, device)?;
        let mut rows = Vec::with_capacity(self.model.k());
        for (s, sum) in sums.iter().enumerate() {
            let model = self.model.extract(s)?;
            let norms = NormSummary::of(&model_norms(&model, false)?);
            rows.push((
                metrics::EpochRow {
                    epoch: epoch + 1,
                    lr,
                    train_loss: sum.loss / sum.seen as f64,
                    train_acc: 100.0 * sum.correct / sum.seen as f64,
                    test_acc: test_acc[s],
                    seconds: sum.train_seconds,
                    images_per_s: sum.seen as f64 / sum.train_seconds,
                    reg_seconds: sum.reg_seconds,
                    l1_sum: norms.sum_l1,
                    l1_max: norms.max_l1,
                    linf_sum: norms.sum_linf,
                    linf_max: norms.max_linf,
                },
                model,
                sum.train_seconds,
            ));
        }
        // The evaluation and the norms after the steps, shared out as the steps were.
        let rest = (t0.elapsed().as_secs_f64() - sums.iter().map(|s| s.train_seconds).sum::<f64>()).max(0.0) / rows.len() as f64;
        for (row, _, _) in &mut rows {
            row.seconds += rest;
        }
        Ok(rows)
    }
}

/// The progress of a run that has not started.
fn fresh(cfg: &TrainConfig) -> checkpoint::Progress {
    checkpoint::Progress { config: cfg.clone(), epochs_done: 0, steps_done: 0, batches_tracked: 0, train_seconds: 0.0, rows: Vec::new() }
}

/// The items of `v` at the positions `keep` (increasing), in order.
fn only<T>(v: Vec<T>, keep: &[usize]) -> Vec<T> {
    v.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, t)| t).collect()
}

/// Accuracy (%) of every slice of `model` in eval mode on every image of `split`, as
/// [`super::evaluate`] measures a single model's.
fn evaluate(model: &StackedModel, split: &Split, device: &Device) -> Result<Vec<f64>> {
    let mut correct = vec![0f64; model.k()];
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let (x, y) = split.batch(chunk, device)?;
        let hits = crate::ops::stack::hits(&model.forward(&x, false)?, &y)?.to_vec1::<f32>()?;
        for (c, h) in correct.iter_mut().zip(hits) {
            *c += h as f64;
        }
    }
    Ok(correct.into_iter().map(|c| 100.0 * c / split.len() as f64).collect())
}


/// The memory one more cell adds to a stack of `arch` at `batch` images per step, in bytes,
/// measured on the CPU: how much the process's resident memory grows over one training step
/// of one model (after handing the memory it keeps back to the kernel; the step's freed memory
/// stays resident, so the growth is the step's peak), plus a copy of the weights for a
/// regularizer's buffers (norm decay's h). The tensors are the same on a GPU.
pub fn cell_footprint(arch: crate::models::Arch, batch: usize) -> Result<u64> {
    crate::memory::retain_freed_memory();
    crate::memory::trim();
    let resident = || crate::memory::resident_bytes().context("cannot read the process's resident memory (/proc/self/statm)");
    let before = resident()?;
    let params = {
        let device = Device::Cpu;
        let model = Model::new(arch, 0, &device)?;
        let mut sgd = Sgd::new(0.01, 0.9);
        let x = Tensor::rand(0f32, 1f32, (batch, 3, 32, 32), &device)?;
        let y = Tensor::zeros(batch, candle_core::DType::U32, &device)?;
        let grads = candle_nn::loss::cross_entropy(&model.forward(&x, true)?, &y)?.backward()?;
        sgd.step(&model.params, &grads, &crate::optim::GradTerms::default())?;
        model.num_parameters() as u64
    };
    Ok(resident()?.saturating_sub(before) + 4 * params)
}

/// Training steps of fresh cells as one stack, for timing (`normlab bench stack`): the
/// training loop's own step, with the cells' regularizers, without files.
pub struct StepTimer {
    stack: Stack,
    device: Device,
    /// Steps so far: the batch index of the next (one long epoch).
    steps: usize,
}

impl StepTimer {
    /// A stack of fresh cells `cfgs` (sharing their [`stack_key`]) on `device`.
    pub fn new(cfgs: &[TrainConfig], device: &Device) -> Result<Self> {
        let first = cfgs.first().context("a stack of no cells")?;
        if cfgs.iter().any(|c| stack_key(c) != stack_key(first) || stack_key(c).is_none()) {
            bail!("the cells to time differ in more than the regularizer, or one of them trains alone (adversarial training, SVC's final clip, BatchNorm projection)");
        }
        let template = Model::new(first.model, first.seed, device)?;
        let group = cfgs
            .iter()
            .enumerate()
            .map(|(position, cfg)| {
                Ok(Start { slice: Slice { cfg: cfg.clone(), out: PathBuf::new(), state: fresh(cfg), position }, reg: Regularizer::new(cfg.regularizer, &template)?, loaded: None })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut stack = Stack::build(group, device)?;
        stack.sgd.lr = first.training.lr.get();
        Ok(Self { stack, device: device.clone(), steps: 0 })
    }

    /// One training step of every cell on the batch `(x, y)`, finished on the device.
    pub fn step(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        self.stack.step(x, y, self.steps, &self.device)?;
        self.steps += 1;
        self.device.synchronize()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use crate::regularize::{Coverage, NormKind};
    use crate::values::Positive;
    use std::num::{NonZeroU32, NonZeroUsize};
    use std::path::Path;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// The training loop's tests' small learnable dataset (a bright square per class).
    use super::super::tests::synthetic;

    /// vgg11 (conv, BatchNorm, max-pool, linear) on `train` images in batches of `batch`.
    fn cfg(reg: RegConfig, epochs: usize, train: usize, batch: usize) -> TrainConfig {
        let mut c = TrainConfig::paper(Arch::Vgg11, reg).with_epochs(epochs);
        c.training.batch = nz(batch);
        c.training.train_subset = Some(nz(train));
        c.training.test_subset = Some(nz(8));
        c
    }

    fn every_regularizer() -> Vec<RegConfig> {
        vec![
            RegConfig::Plain,
            RegConfig::WeightDecay { beta: Positive(1e-2) },
            RegConfig::Svc { clip: Positive(0.5), every: NonZeroU32::new(2).unwrap(), coverage: Coverage::All, final_clip: false },
            // The reference's moments: a clip before the step of batch 1.
            RegConfig::Svc { clip: Positive(0.5), every: NonZeroU32::new(2).unwrap(), coverage: Coverage::Reference, final_clip: false },
            RegConfig::norm_decay(NormKind::L1, Positive(1e-2)).with_coverage(Coverage::Reference),
            RegConfig::norm_decay(NormKind::L1, Positive(1e-2)),
            RegConfig::norm_decay(NormKind::Linf, Positive(1e-2)),
        ]
    }

    fn runs(root: &Path, name: &str, cfgs: &[TrainConfig]) -> Vec<(TrainConfig, PathBuf)> {
        cfgs.iter().enumerate().map(|(i, c)| (c.clone(), root.join(format!("{name}{i}")))).collect()
    }

    /// Every tensor of a safetensors file, as bits, by name.
    fn tensor_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let mut v: Vec<_> = t
            .into_iter()
            .map(|(k, t)| {
                let t = t.flatten_all().unwrap();
                let bits = match t.dtype() {
                    candle_core::DType::F32 => t.to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect(),
                    _ => t.to_dtype(candle_core::DType::I64).unwrap().to_vec1::<i64>().unwrap().iter().map(|&x| x as u32).collect(),
                };
                (k, bits)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// metrics.csv without its timing columns (seconds, images/s, regularizer seconds).
    fn metrics_without_times(dir: &Path) -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_path(RunDir::new(dir).metrics()).unwrap();
        let header = r.headers().unwrap().clone();
        r.records()
            .map(|rec| {
                let rec = rec.unwrap();
                header.iter().zip(rec.iter()).filter(|(h, _)| !["seconds", "images_per_s", "reg_seconds"].contains(h)).map(|(h, v)| format!("{h}={v}")).collect()
            })
            .collect()
    }

    /// The latest checkpoint's tensors.
    fn checkpoint_bits(dir: &Path) -> Vec<(String, Vec<u32>)> {
        let latest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(checkpoint::dir(dir).join("latest.json")).unwrap()).unwrap();
        tensor_bits(&checkpoint::dir(dir).join(latest["tensors"].as_str().unwrap()))
    }

    /// Two run folders hold the same run: status (without times), metrics (without times),
    /// final weights, norms and the last checkpoint, bit for bit.
    fn assert_same_run(a: &Path, b: &Path, what: &str) {
        let status = |d: &Path| {
            let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(RunDir::new(d).status()).unwrap()).unwrap();
            let o = v["outcome"].as_object_mut().unwrap();
            o.remove("train_seconds");
            o.remove("images_per_s");
            v
        };
        assert_eq!(status(a), status(b), "{what}: status.json");
        assert_eq!(metrics_without_times(a), metrics_without_times(b), "{what}: metrics.csv");
        if RunDir::new(a).model().exists() || RunDir::new(b).model().exists() {
            assert_eq!(tensor_bits(&RunDir::new(a).model()), tensor_bits(&RunDir::new(b).model()), "{what}: model.safetensors");
            assert_eq!(std::fs::read_to_string(RunDir::new(a).norms()).unwrap(), std::fs::read_to_string(RunDir::new(b).norms()).unwrap(), "{what}: norms.csv");
        }
        if checkpoint::exists(a) || checkpoint::exists(b) {
            assert_eq!(checkpoint_bits(a), checkpoint_bits(b), "{what}: checkpoint");
        }
    }

    /// Three steps of a stack of every regularizer that stacks (plain, weight decay, SVC
    /// clipping after step 2 and SVC clipping before the step of batch 1, ℓ1 and ℓ∞ norm decay,
    /// ℓ1 norm decay with the reference's coverage) leave each cell's folder as the cell trained
    /// alone does, bit for bit.
    #[test]
    fn three_steps_of_a_stack_equal_the_cells_run_alone() {
        let data = synthetic(12, 8);
        let cfgs: Vec<_> = every_regularizer().into_iter().map(|r| cfg(r, 1, 12, 4)).collect();
        let dir = tempfile::tempdir().unwrap();
        let (stacked, alone) = (runs(dir.path(), "stacked", &cfgs), runs(dir.path(), "alone", &cfgs));
        let outcomes = train_stack(&stacked, DeviceSpec::Cpu, &data).unwrap();
        for ((c, out), got) in alone.iter().zip(&outcomes) {
            let want = super::super::train(c, DeviceSpec::Cpu, &data, out, false).unwrap();
            assert_eq!((got.status, got.steps_done, got.test_acc), (want.status, 3, want.test_acc));
        }
        for ((c, a), (_, b)) in stacked.iter().zip(&alone) {
            assert_same_run(a, b, &c.regularizer.describe(c.model.layers()));
        }
        // The stack did train each cell its own way.
        let weights = |p: &PathBuf| tensor_bits(&RunDir::new(p).model());
        for (i, (_, a)) in stacked.iter().enumerate().skip(1) {
            assert_ne!(weights(a), weights(&stacked[0].1), "slice {i} trained as plain");
        }
        // A finished stack is not trained again.
        assert_eq!(train_stack(&stacked, DeviceSpec::Cpu, &data).unwrap(), outcomes);
    }

    /// A slice whose loss stops being finite ends `diverged` where the cell alone does, and the
    /// rest of the stack trains on as if it had never been there.
    #[test]
    fn a_diverging_slice_leaves_the_others_unchanged() {
        let data = synthetic(32, 8);
        // Coupled weight decay with lr·β = 1e6 ≫ 2 multiplies the weights by −(lr·β − 1) per
        // step: they overflow within a few steps.
        let regs = [RegConfig::Plain, RegConfig::WeightDecay { beta: Positive(1e8) }, RegConfig::norm_decay(NormKind::L1, Positive(1e-2))];
        let cfgs: Vec<_> = regs.into_iter().map(|r| cfg(r, 3, 32, 8)).collect();
        let dir = tempfile::tempdir().unwrap();
        let (stacked, alone) = (runs(dir.path(), "stacked", &cfgs), runs(dir.path(), "alone", &cfgs));
        let outcomes = train_stack(&stacked, DeviceSpec::Cpu, &data).unwrap();
        let statuses: Vec<_> = outcomes.iter().map(|o| o.status).collect();
        assert!(matches!(statuses[1], super::super::RunStatus::Diverged { .. }), "{statuses:?}");
        assert_eq!((statuses[0], statuses[2]), (super::super::RunStatus::Finished, super::super::RunStatus::Finished));
        for (i, ((c, a), (_, b))) in stacked.iter().zip(&alone).enumerate() {
            assert_eq!(super::super::train(c, DeviceSpec::Cpu, &data, b, false).unwrap().status, statuses[i]);
            assert_same_run(a, b, &c.regularizer.describe(c.model.layers()));
        }
    }

    /// A stack stopped after an epoch resumes to the end bit-identical to one never stopped and
    /// to the cells trained alone; a cell a stack checkpointed can finish alone, and a cell
    /// that trained alone for an epoch joins a stack and finishes as it would alone.
    #[test]
    fn kill_and_resume_of_a_stack() {
        let data = synthetic(8, 8);
        let regs = [RegConfig::Plain, RegConfig::WeightDecay { beta: Positive(1e-2) }, RegConfig::norm_decay(NormKind::L1, Positive(1e-2))];
        let cfgs: Vec<_> = regs.into_iter().map(|r| cfg(r, 2, 8, 4)).collect();
        let dir = tempfile::tempdir().unwrap();
        let (whole, killed, alone) = (runs(dir.path(), "whole", &cfgs), runs(dir.path(), "killed", &cfgs), runs(dir.path(), "alone", &cfgs));
        train_stack(&whole, DeviceSpec::Cpu, &data).unwrap();
        // Killed after epoch 1 of 2: every cell has a checkpoint and no final weights.
        let first = train_stack_session(&killed, DeviceSpec::Cpu, &data, Some(1)).unwrap();
        assert!(first.iter().all(Option::is_none));
        for (_, out) in &killed {
            assert!(checkpoint::exists(out) && !RunDir::new(out).model().exists());
        }
        // Cell 2 finishes alone from the stack's checkpoint; cells 0 and 1 finish as a stack.
        super::super::train(&killed[2].0, DeviceSpec::Cpu, &data, &killed[2].1, true).unwrap();
        train_stack(&killed[..2], DeviceSpec::Cpu, &data).unwrap();
        // Cell 0 of `alone` trains one epoch alone, then joins a stack with two fresh cells.
        assert!(super::super::train_session(&alone[0].0, DeviceSpec::Cpu, &data, &alone[0].1, false, Some(1)).unwrap().is_none());
        train_stack(&alone, DeviceSpec::Cpu, &data).unwrap();
        for i in 0..cfgs.len() {
            let what = cfgs[i].regularizer.describe(cfgs[i].model.layers());
            assert_same_run(&whole[i].1, &killed[i].1, &format!("{what}: killed and resumed"));
            assert_same_run(&whole[i].1, &alone[i].1, &format!("{what}: joined late"));
        }
    }

    #[test]
    fn cells_that_differ_in_more_than_the_regularizer_do_not_stack() {
        let data = synthetic(8, 8);
        let a = cfg(RegConfig::Plain, 1, 8, 4);
        let mut b = cfg(RegConfig::WeightDecay { beta: Positive(1e-2) }, 1, 8, 4);
        b.seed = 2;
        let dir = tempfile::tempdir().unwrap();
        let err = train_stack(&runs(dir.path(), "x", &[a.clone(), b]), DeviceSpec::Cpu, &data).unwrap_err();
        assert!(err.to_string().contains("more than the regularizer"), "{err:#}");
        let mut adv = a.clone();
        adv.adv = AdvConfig::pgd();
        assert!(stack_key(&adv).is_none());
        let err = train_stack(&runs(dir.path(), "y", &[adv]), DeviceSpec::Cpu, &data).unwrap_err();
        assert!(err.to_string().contains("adversarially"), "{err:#}");
        // SVC's final clip (BatchNorm re-estimated after it) and the BatchNorm projection
        // train alone; SVC at the reference's moments stacks.
        let svc = |final_clip| cfg(RegConfig::Svc { clip: Positive(1.0), every: NonZeroU32::new(2).unwrap(), coverage: Coverage::Reference, final_clip }, 1, 8, 4);
        assert!(stack_key(&svc(false)).is_some());
        assert!(trains_alone(&svc(true)).is_some_and(|why| why.contains("BatchNorm's statistics")));
        let RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, .. } = RegConfig::norm_decay(NormKind::L1, Positive(1e-2)) else { unreachable!() };
        let projected = cfg(RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, project_bn: Some(crate::regularize::REFERENCE_BN_BOUND) }, 1, 8, 4);
        assert!(stack_key(&projected).is_none());
        let err = train_stack(&runs(dir.path(), "z", &[svc(true)]), DeviceSpec::Cpu, &data).unwrap_err();
        assert!(err.to_string().contains("does not stack") && err.to_string().contains("train it alone"), "{err:#}");
    }
}
