//! The training loop of the paper's protocol (paper.md §5): SGD with momentum on
//! cross-entropy, augmented batches, a regularizer between `backward()` and the step, a
//! checkpoint after every epoch, and exact resumption.
//!
//! A run writes into its directory OUT (named by [`crate::results::RunDir`]):
//! - `config.json`: the [`TrainConfig`];
//! - `metrics.csv`: one [`metrics::EpochRow`] per epoch;
//! - `checkpoint/`: the state after the last completed epoch ([`checkpoint`]);
//! - `model.safetensors`: the final weights under PyTorch names (when the run finished);
//! - `norms.csv`: the final per-layer norms, as `normlab norms --format csv` prints them
//!   (ℓ1, ℓ∞, their ℓ2 bound and the exact spectral norm);
//! - `status.json`: the [`TrainOutcome`] (finished, or diverged with the epoch).
//!
//! Randomness comes only from the seed: initial weights from `seed`, epoch order from
//! (seed, epoch), each batch's augmentation from (seed, epoch, batch). So on the CPU the same
//! configuration gives bit-identical weights, whether the run was interrupted or not.

pub mod bn_stats;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod progress;
pub mod schedule;
pub mod stack;
pub mod step_stats;

pub use config::{AdvConfig, SubsetTooLarge, TrainConfig, TrainingProtocol};

use crate::data::dataset::{epoch_order, Cifar10, Split};
use crate::device::DeviceSpec;
use crate::results::RunDir;
use crate::models::Model;
use crate::norms::{model_norms, table::render_csv, NormSummary};
use crate::optim::Sgd;
use crate::regularize::Regularizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RunStatus {
    /// All epochs done.
    Finished,
    /// The training loss became NaN or infinite during `epoch` (counted from 1); the run
    /// stopped there, the metrics of the epochs before it are kept.
    Diverged {
        /// The epoch (from 1) in which the loss stopped being finite.
        epoch: usize,
    },
}

/// What a run produced (also written as `OUT/status.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Finished or diverged.
    pub status: RunStatus,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimizer steps completed.
    pub steps_done: usize,
    /// Test accuracy (%) after the last completed epoch; `None` if none completed.
    pub test_acc: Option<f64>,
    /// Seconds spent in training epochs (all sessions of a resumed run together).
    pub train_seconds: f64,
    /// Training images per second over the completed epochs' steps.
    pub images_per_s: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StatusFile {
    #[serde(deserialize_with = "config::read_recorded")]
    config: TrainConfig,
    outcome: TrainOutcome,
}

/// Images per evaluation batch.
pub(crate) const EVAL_BATCH: usize = 500;

/// Whether `out` holds anything a resume continues from: a checkpoint (even a damaged one),
/// the status of an ended run, or the configuration of a run killed in its first epoch.
pub fn has_run(out: &Path) -> bool {
    let dir = RunDir::new(out);
    checkpoint::exists(out) || dir.status().exists() || dir.config().exists()
}

/// Trains `cfg` on `data` on `device`, writing into `out`. With `resume`, continues from
/// `out`'s checkpoint (or returns the recorded outcome of a run that already ended; starts
/// afresh if there is no checkpoint); without it, `out` must not hold a run yet. A run may move
/// between devices: the device is not part of its configuration.
pub fn train(cfg: &TrainConfig, device: DeviceSpec, data: &Cifar10, out: &Path, resume: bool) -> Result<TrainOutcome> {
    train_session(cfg, device, data, out, resume, None)?.context("training stopped before its last epoch without an epoch limit")
}

/// [`train`], stopping after at most `max_epochs` epochs of this session (then `None`: the
/// run continues with `resume`). Used to test that an interrupted run ends where an
/// uninterrupted one does.
fn train_session(cfg: &TrainConfig, device: DeviceSpec, data: &Cifar10, out: &Path, resume: bool, max_epochs: Option<usize>) -> Result<Option<TrainOutcome>> {
    cfg.validate()?;
    crate::memory::retain_freed_memory();
    let dir = RunDir::new(out);
    let status_path = dir.status();
    if !resume && (checkpoint::exists(out) || status_path.exists()) {
        bail!("{} already holds a training run: pass --resume to continue it, or choose another --out", out.display());
    }
    if resume {
        if let Some(outcome) = recorded_outcome(out, cfg)? {
            return Ok(Some(outcome));
        }
        // A run killed before its first checkpoint has only its config.json.
        let recorded = std::fs::read_to_string(dir.config()).ok().and_then(|t| serde_json::from_str(&t).ok()).and_then(|v| TrainConfig::from_json(v).ok());
        if let Some(recorded) = recorded.filter(|r| r != cfg) {
            bail!("{} records another run: {}", dir.config().display(), cfg.differences_from(&recorded).join("; "));
        }
    }
    cfg.training.check_subsets(data.train.len(), data.test.len()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let train_set = subset(&data.train, cfg.training.train_subset);
    let test_set = subset(&data.test, cfg.training.test_subset);
    if train_set.is_empty() || test_set.is_empty() {
        bail!("the dataset has {} training and {} test images: both must be non-empty", train_set.len(), test_set.len());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::util::atomic_write(&dir.config(), serde_json::to_string_pretty(cfg)?.as_bytes())?;

    let device = device.open()?;
    let model = Model::new(cfg.model, cfg.seed, &device)?;
    let mut sgd = Sgd::new(cfg.training.lr.get(), cfg.training.momentum.get());
    let mut reg = Regularizer::new(cfg.regularizer, &model)?;
    let resumed = if resume && checkpoint::exists(out) { checkpoint::load(out, cfg, &model, &mut sgd, &mut reg)? } else { None };
    let mut state = resumed.unwrap_or_else(|| checkpoint::Progress {
        config: cfg.clone(),
        epochs_done: 0,
        steps_done: 0,
        batches_tracked: 0,
        train_seconds: 0.0,
        rows: Vec::new(),
    });
    let epochs = cfg.training.epochs();
    let progress = progress::Progress::new(epochs);
    if state.epochs_done > 0 {
        progress.line(&format!("resuming {} after epoch {}/{epochs}", out.display(), state.epochs_done));
    }

    let first_epoch = state.epochs_done;
    while state.epochs_done < epochs {
        let epoch = state.epochs_done;
        if max_epochs.is_some_and(|m| epoch - first_epoch >= m) {
            progress.finish();
            return Ok(None);
        }
        match run_epoch(cfg, &model, &mut sgd, &mut reg, &train_set, &test_set, &device, &mut state, &progress)? {
            EpochEnd::Done(row) => {
                progress.line(&epoch_line(&row, epochs));
                state.rows.push(row);
                state.epochs_done += 1;
                state.batches_tracked = model.batches_tracked();
                checkpoint::save(out, &state, &model, &sgd, &mut reg)?;
                metrics::write_csv(&dir.metrics(), &state.rows)?;
            }
            EpochEnd::Diverged { step } => {
                progress.finish();
                progress.line(&format!("diverged: non-finite loss at step {step} of epoch {}; stopping", epoch + 1));
                return Ok(Some(write_diverged(out, cfg, &state, epoch + 1)?));
            }
        }
    }
    progress.finish();
    Ok(Some(write_finished(out, cfg, &state, &model)?))
}

/// The outcome `out`'s status file records, if the run there has ended; an error if it records
/// another run.
pub(crate) fn recorded_outcome(out: &Path, cfg: &TrainConfig) -> Result<Option<TrainOutcome>> {
    let status_path = RunDir::new(out).status();
    if !status_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&status_path)?;
    let done: StatusFile = serde_json::from_str(&text).with_context(|| format!("{} is not a normlab status file", status_path.display()))?;
    if done.config != *cfg {
        bail!("{} records another run: {}", status_path.display(), cfg.differences_from(&done.config).join("; "));
    }
    Ok(Some(done.outcome))
}

/// What a run that finished leaves in `out`: metrics.csv, model.safetensors, norms.csv and
/// status.json.
pub(crate) fn write_finished(out: &Path, cfg: &TrainConfig, state: &checkpoint::Progress, model: &Model) -> Result<TrainOutcome> {
    let dir = RunDir::new(out);
    metrics::write_csv(&dir.metrics(), &state.rows)?;
    model.save(&dir.model())?;
    crate::util::atomic_write(&dir.norms(), render_csv(&model_norms(model, true)?)?.as_bytes())?;
    let outcome = outcome_of(state, RunStatus::Finished);
    write_status(&dir.status(), cfg, &outcome)?;
    Ok(outcome)
}

/// What a run whose loss stopped being finite in `epoch` (from 1) leaves in `out`: the
/// metrics of the epochs before it and status.json.
pub(crate) fn write_diverged(out: &Path, cfg: &TrainConfig, state: &checkpoint::Progress, epoch: usize) -> Result<TrainOutcome> {
    let dir = RunDir::new(out);
    metrics::write_csv(&dir.metrics(), &state.rows)?;
    let outcome = outcome_of(state, RunStatus::Diverged { epoch });
    write_status(&dir.status(), cfg, &outcome)?;
    Ok(outcome)
}

/// The line a run prints after each epoch.
pub(crate) fn epoch_line(row: &metrics::EpochRow, epochs: usize) -> String {
    format!(
        "epoch {}/{epochs} lr {:.0e} loss {:.4} train {:.2}% test {:.2}% {:.0} img/s {:.1} s (regularizer {:.2} s) l1 sum {:.1} linf sum {:.1}",
        row.epoch, row.lr, row.train_loss, row.train_acc, row.test_acc, row.images_per_s, row.seconds, row.reg_seconds, row.l1_sum, row.linf_sum
    )
}

/// The first `n` images of `split` (all when `n` is absent or larger).
pub(crate) fn subset(split: &Split, n: Option<std::num::NonZeroUsize>) -> Cow<'_, Split> {
    match n {
        Some(n) if n.get() < split.len() => Cow::Owned(split.prefix(n.get())),
        _ => Cow::Borrowed(split),
    }
}

enum EpochEnd {
    Done(metrics::EpochRow),
    Diverged { step: usize },
}

/// The seed of batch `batch` of epoch `epoch`'s augmentation (public so that a run's exact
/// batches can be replayed elsewhere: `examples/dump_epoch.rs`).
pub fn augment_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((epoch as u64) << 32 | batch as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// The logits whose accuracy the epoch reports, and the loss to differentiate: cross-entropy
/// on the clean batch, on PGD examples (PGD-AT), or TRADES' CE + β·KL. The attack's random
/// start is drawn from the batch's seed, so a resumed run replays it.
fn training_loss(model: &Model, x: &Tensor, y: &Tensor, adv: &AdvConfig, seed: u64) -> Result<(Tensor, Tensor)> {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5eed_ad5e);
    let eval = |t: &Tensor| model.forward(t, false);
    Ok(match *adv {
        AdvConfig::None => {
            let logits = model.forward(x, true)?;
            let loss = crate::ops::cross_entropy(&logits, y)?;
            (logits, loss)
        }
        AdvConfig::Pgd { eps, step, steps } => {
            let x_adv = crate::attack::adversarial::pgd_examples(&eval, x, y, eps.get(), step.get(), steps.get() as usize, &mut rng)?;
            let logits = model.forward(&x_adv, true)?;
            let loss = crate::ops::cross_entropy(&logits, y)?;
            (logits, loss)
        }
        AdvConfig::Trades { eps, step, steps, beta } => {
            let x_adv = crate::attack::adversarial::trades_examples(&eval, x, eps.get(), step.get(), steps.get() as usize, &mut rng)?;
            let logits = model.forward(x, true)?;
            let logits_adv = model.forward(&x_adv, true)?;
            let loss = crate::attack::adversarial::trades_loss(&logits, &logits_adv, y, beta.get())?;
            (logits, loss)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn run_epoch(
    cfg: &TrainConfig,
    model: &Model,
    sgd: &mut Sgd,
    reg: &mut Regularizer,
    train_set: &Split,
    test_set: &Split,
    device: &Device,
    state: &mut checkpoint::Progress,
    progress: &progress::Progress,
) -> Result<EpochEnd> {
    let epoch = state.epochs_done;
    let t0 = Instant::now();
    let batch = cfg.training.batch.get();
    let lr = schedule::lr_at(cfg.training.lr.get(), &cfg.training.milestones, epoch);
    sgd.lr = lr;
    let order = epoch_order(train_set.len(), cfg.seed, epoch);
    let steps = order.len().div_ceil(batch);
    progress.start_epoch(epoch, steps);
    // Loss and hits stay on the device and are read every READ_EVERY steps (and before SVC
    // clips, which must not see diverged weights): the host does not wait for the device each
    // step, so it prepares the next batch while the device works. On CUDA the regularizer's
    // time is the host's time issuing it (its work is queued, not waited for).
    let mut stats = step_stats::StepStats::default();
    let steps_before = state.steps_done;
    let mut reg_seconds = 0f64;
    for (b, idx) in order.chunks(batch).enumerate() {
        let seed = augment_seed(cfg.seed, epoch, b);
        let (x, y) = train_set.augmented_batch(idx, seed, device)?;
        let (logits, loss) = training_loss(model, &x, &y, &cfg.adv, seed)?;
        let hits = logits.argmax(1)?.eq(&y)?.to_dtype(DType::F32)?.sum_all()?;
        stats.push(&loss, &hits, idx.len())?;
        let svc_due = reg.clips_around(b, state.steps_done + 1);
        if stats.due(step_stats::READ_EVERY) || svc_due {
            if let Some(step) = stats.read()? {
                // The steps after the diverged one do not count, as when each step was read.
                state.steps_done = steps_before + step - 1;
                return Ok(EpochEnd::Diverged { step });
            }
            progress.step(stats.loss_sum / stats.seen as f64, 100.0 * stats.correct / stats.seen as f64, stats.seen as f64 / t0.elapsed().as_secs_f64());
        }
        let mut grads = loss.backward()?;
        let r0 = Instant::now();
        let terms = reg.apply(model, &mut grads)?;
        reg.before_step(model, b)?;
        reg_seconds += r0.elapsed().as_secs_f64();
        sgd.step(&model.params, &grads, &terms)?;
        state.steps_done += 1;
        let r0 = Instant::now();
        reg.after_step(model, state.steps_done)?;
        reg_seconds += r0.elapsed().as_secs_f64();
    }
    if let Some(step) = stats.read()? {
        state.steps_done = steps_before + step - 1;
        return Ok(EpochEnd::Diverged { step });
    }
    let (loss_sum, correct, seen) = (stats.loss_sum, stats.correct, stats.seen);
    progress.step(loss_sum / seen as f64, 100.0 * correct / seen as f64, seen as f64 / t0.elapsed().as_secs_f64());
    if epoch + 1 == cfg.training.epochs() {
        let r0 = Instant::now();
        if reg.finish(model)? {
            // The weights changed after BatchNorm last saw them: its statistics again, from
            // this epoch's batches (the same order and augmentation).
            let batches = order.chunks(batch).enumerate().map(|(b, idx)| Ok(train_set.augmented_batch(idx, augment_seed(cfg.seed, epoch, b), device)?.0));
            bn_stats::reestimate(model, batches)?;
        }
        reg_seconds += r0.elapsed().as_secs_f64();
    }
    let train_secs = t0.elapsed().as_secs_f64();
    state.train_seconds += train_secs;
    let test_acc = evaluate(model, test_set, device)?;
    let norms = NormSummary::of(&model_norms(model, false)?);
    Ok(EpochEnd::Done(metrics::EpochRow {
        epoch: epoch + 1,
        lr,
        train_loss: loss_sum / seen as f64,
        train_acc: 100.0 * correct / seen as f64,
        test_acc,
        seconds: t0.elapsed().as_secs_f64(),
        images_per_s: seen as f64 / train_secs,
        reg_seconds,
        l1_sum: norms.sum_l1,
        l1_max: norms.max_l1,
        linf_sum: norms.sum_linf,
        linf_max: norms.max_linf,
    }))
}

/// Accuracy (%) of `model` in eval mode on every image of `split`, in batches.
pub fn evaluate(model: &Model, split: &Split, device: &Device) -> Result<f64> {
    let mut correct = 0f64;
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let (x, y) = split.batch(chunk, device)?;
        let logits = model.forward(&x, false)?;
        correct += logits.argmax(1)?.eq(&y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(100.0 * correct / split.len() as f64)
}

/// Per image of `split`, in order: whether `model` in eval mode classifies it correctly.
pub fn correct_per_image(model: &Model, split: &Split, device: &Device) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(split.len());
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let (x, y) = split.batch(chunk, device)?;
        let hits = model.forward(&x, false)?.argmax(1)?.eq(&y)?.to_vec1::<u8>()?;
        out.extend(hits.into_iter().map(|h| h != 0));
    }
    Ok(out)
}

fn outcome_of(state: &checkpoint::Progress, status: RunStatus) -> TrainOutcome {
    // Every epoch trains on the same images, so the run's rate is the harmonic mean.
    let step_seconds: f64 = state.rows.iter().map(|r| 1.0 / r.images_per_s.max(f64::MIN_POSITIVE)).sum();
    TrainOutcome {
        status,
        epochs_done: state.epochs_done,
        steps_done: state.steps_done,
        test_acc: state.rows.last().map(|r| r.test_acc),
        train_seconds: state.train_seconds,
        images_per_s: (!state.rows.is_empty()).then(|| state.rows.len() as f64 / step_seconds),
    }
}

fn write_status(path: &Path, cfg: &TrainConfig, outcome: &TrainOutcome) -> Result<()> {
    let text = serde_json::to_string_pretty(&StatusFile { config: cfg.clone(), outcome: outcome.clone() })?;
    crate::util::atomic_write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::IMAGE_BYTES;
    use crate::models::Arch;
    use crate::regularize::{Coverage, NormKind, RegConfig};
    use crate::values::Positive;
    use std::num::NonZeroUsize;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// `train` on the CPU.
    fn train(cfg: &TrainConfig, data: &Cifar10, out: &Path, resume: bool) -> Result<TrainOutcome> {
        super::train(cfg, DeviceSpec::Cpu, data, out, resume)
    }

    fn train_session(cfg: &TrainConfig, data: &Cifar10, out: &Path, resume: bool, max_epochs: Option<usize>) -> Result<Option<TrainOutcome>> {
        super::train_session(cfg, DeviceSpec::Cpu, data, out, resume, max_epochs)
    }

    /// A small learnable dataset: each class is a bright square at its own place (also the
    /// stacked training tests' data).
    pub(super) fn synthetic(n_train: usize, n_test: usize) -> Cifar10 {
        let make = |n: usize, offset: usize| {
            let mut images = vec![0u8; n * IMAGE_BYTES];
            let mut labels = Vec::with_capacity(n);
            for i in 0..n {
                let label = (i + offset) % 10;
                labels.push(label as u8);
                let img = &mut images[i * IMAGE_BYTES..][..IMAGE_BYTES];
                for (p, v) in img.iter_mut().enumerate() {
                    *v = ((p * 7 + i * 13) % 61) as u8;
                }
                let (r0, c0) = (2 + 3 * (label / 5) * 4, 2 + 5 * (label % 5));
                for c in 0..3 {
                    for y in r0..r0 + 6 {
                        for x in c0..c0 + 6 {
                            img[c * 1024 + y * 32 + x] = 250;
                        }
                    }
                }
            }
            Split::new(images, labels).unwrap()
        };
        Cifar10 { train: make(n_train, 0), test: make(n_test, 3) }
    }

    fn tiny(reg: RegConfig, epochs: usize) -> TrainConfig {
        let mut c = TrainConfig::paper(Arch::Vgg11, reg).with_epochs(epochs);
        c.training.batch = nz(16);
        c.training.train_subset = Some(nz(32));
        c.training.test_subset = Some(nz(16));
        c
    }

    fn weights(out: &Path) -> Vec<(String, Vec<f32>)> {
        let t = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        let mut v: Vec<_> = t.into_iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")).map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every regularizer on vgg11 (3×3 convs, max-pool, linear) and RegNet (grouped and 1×1
    /// convs, residuals): the cheap half of [`every_regularizer_trains_every_model`].
    #[test]
    fn every_regularizer_trains_vgg11_and_regnet() {
        every_regularizer_trains(&[Arch::Vgg11, Arch::Regnet200mf]);
    }

    /// Every regularizer on all four models (about 5 minutes in the test profile on 2 cores,
    /// mostly SVC's FFT + SVD of resnet18's and senet18's 512-channel convs): run with
    /// `cargo test --release -- --ignored every_regularizer`.
    #[test]
    #[ignore]
    fn every_regularizer_trains_every_model() {
        every_regularizer_trains(&Arch::PAPER);
    }

    /// Each regularizer on each of `archs`, through the real training loop: two steps of 4
    /// images, finite loss, changed weights, and each regularizer's own effect (wd and nd
    /// change the weights against plain's; SVC, which clips at the end of training, leaves
    /// every conv's largest circular singular value near the clip).
    fn every_regularizer_trains(archs: &[Arch]) {
        use crate::norms::fft_svd::max_singular_value;
        let data = synthetic(8, 4);
        let nd = |norm| RegConfig::norm_decay(norm, Positive(1e-2));
        let regs = [
            ("plain", RegConfig::Plain),
            ("wd", RegConfig::WeightDecay { beta: Positive(1e-2) }),
            ("nd-l1", nd(NormKind::L1)),
            ("nd-linf", nd(NormKind::Linf)),
            ("svc", RegConfig::Svc { clip: Positive(0.5), every: std::num::NonZeroU32::new(1000).unwrap(), coverage: Coverage::All, final_clip: true }),
            // The reference's coverage and moments: two batches per epoch, the second (batch
            // index 1) clipped before its step; norm decay without the skipped layers.
            ("svc-reference", RegConfig::Svc { clip: Positive(0.5), every: std::num::NonZeroU32::new(2).unwrap(), coverage: Coverage::Reference, final_clip: false }),
            ("nd-l1-reference", nd(NormKind::L1).with_coverage(Coverage::Reference)),
        ];
        for &arch in archs {
            let dir = tempfile::tempdir().unwrap();
            let mut plain = None;
            for (name, reg) in regs {
                let mut cfg = TrainConfig::paper(arch, reg).with_epochs(1);
                let t = &mut cfg.training;
                (t.batch, t.train_subset, t.test_subset) = (nz(4), Some(nz(8)), Some(nz(4)));
                let out = dir.path().join(name);
                let done = train(&cfg, &data, &out, false).unwrap_or_else(|e| panic!("{} {name}: {e:#}", arch.name()));
                assert_eq!(done.status, RunStatus::Finished, "{} {name}", arch.name());
                let w = weights(&out);
                match &plain {
                    None => plain = Some(w),
                    Some(p) => assert_ne!(&w, p, "{} {name}: same weights as plain", arch.name()),
                }
                if name == "svc" {
                    let model = Model::load(arch, &out.join("model.safetensors"), &Device::Cpu).unwrap();
                    for spec in model.layers.iter().filter(|l| l.kind == crate::models::LayerKind::Conv && l.in_h >= l.kh) {
                        let k: Vec<f32> = model.params.get(&spec.name).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                        let sigma = max_singular_value(&k, spec.out_c, spec.in_c, spec.kh, spec.kw, spec.in_h, spec.groups);
                        // The crop can push σ above the clip; by far less than 2× at these sizes.
                        assert!(sigma < 2.0 * 0.5, "{} svc: {} has σmax {sigma}", arch.name(), spec.name);
                    }
                }
            }
        }
    }

    #[test]
    fn adversarial_training_trains_on_attacked_batches_and_resumes_identically() {
        let data = synthetic(32, 16);
        let two = std::num::NonZeroU32::new(2).unwrap();
        let (eps, step) = (crate::values::Eps(8.0 / 255.0), crate::values::Eps(2.0 / 255.0));
        for adv in [AdvConfig::Pgd { eps, step, steps: two }, AdvConfig::Trades { eps, step, steps: two, beta: Positive(6.0) }] {
            let mut cfg = tiny(RegConfig::Plain, 2);
            cfg.adv = adv;
            let dir = tempfile::tempdir().unwrap();
            let (a, b, plain) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("plain"));
            assert_eq!(train(&cfg, &data, &a, false).unwrap().status, RunStatus::Finished);
            assert!(train_session(&cfg, &data, &b, false, Some(1)).unwrap().is_none());
            train(&cfg, &data, &b, true).unwrap();
            assert_eq!(weights(&a), weights(&b), "{adv:?}: a resumed adversarial run must replay its attacks");
            let mut std_cfg = cfg.clone();
            std_cfg.adv = AdvConfig::None;
            train(&std_cfg, &data, &plain, false).unwrap();
            assert_ne!(weights(&a), weights(&plain), "{adv:?} must change what the model is trained on");
        }
    }

    #[test]
    fn resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
        let data = synthetic(32, 16);
        let reg = RegConfig::norm_decay(NormKind::L1, Positive(1e-3));
        let cfg = tiny(reg, 2);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let full = train(&cfg, &data, &a, false).unwrap();
        assert_eq!(full.status, RunStatus::Finished);
        assert!(train_session(&cfg, &data, &b, false, Some(1)).unwrap().is_none());
        assert!(!b.join("model.safetensors").exists());
        assert!(train(&cfg, &data, &b, false).is_err(), "a second fresh run into the same OUT must be refused");
        let resumed = train(&cfg, &data, &b, true).unwrap();
        assert_eq!(resumed.status, RunStatus::Finished);
        assert_eq!(resumed.steps_done, full.steps_done);
        assert_eq!(weights(&a), weights(&b));
        let rows = |p: &Path| std::fs::read_to_string(p.join("metrics.csv")).unwrap().lines().count();
        assert_eq!((rows(&a), rows(&b)), (3, 3));
        // Resuming an ended run returns its outcome without training.
        assert_eq!(train(&cfg, &data, &a, true).unwrap(), full);
        // A different run cannot resume this one.
        let mut other = cfg.clone();
        other.seed = 7;
        assert!(train(&other, &data, &b, true).is_err());
    }

    /// Copies run folder `from` into `to` (a killed run, to damage in several ways).
    fn copy_run(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                copy_run(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// A run killed after epoch 2 of 3 whose newest checkpoint (or its record) was then
    /// damaged resumes from what is left and ends bit-identical to an uninterrupted run; the
    /// damaged file is set aside, not deleted.
    #[test]
    fn a_damaged_checkpoint_is_set_aside_and_the_run_ends_as_an_uninterrupted_one() {
        let data = synthetic(32, 16);
        let cfg = tiny(RegConfig::norm_decay(NormKind::Linf, Positive(1e-3)), 3);
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("reference");
        train(&cfg, &data, &reference, false).unwrap();
        let killed = dir.path().join("killed");
        assert!(train_session(&cfg, &data, &killed, false, Some(2)).unwrap().is_none());
        let ck = killed.join("checkpoint");
        let mut names: Vec<String> = std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["epoch-1.json", "epoch-1.safetensors", "epoch-2.json", "epoch-2.safetensors", "latest.json"], "two checkpoints kept");
        let cut = |p: &Path, keep: f64| {
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..(b.len() as f64 * keep) as usize]).unwrap();
        };
        let flip = |p: &Path| {
            let mut b = std::fs::read(p).unwrap();
            let k = b.len() - 100;
            b[k] ^= 0x40;
            std::fs::write(p, b).unwrap();
        };
        type Damage = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Damage, &str)> = vec![
            ("truncated tensors", Box::new(move |c: &Path| cut(&c.join("epoch-2.safetensors"), 0.5)), "epoch-2.safetensors.damaged"),
            ("empty tensors", Box::new(move |c: &Path| cut(&c.join("epoch-2.safetensors"), 0.0)), "epoch-2.safetensors.damaged"),
            ("one flipped byte", Box::new(move |c: &Path| flip(&c.join("epoch-2.safetensors"))), "epoch-2.safetensors.damaged"),
            ("missing tensors", Box::new(|c: &Path| std::fs::remove_file(c.join("epoch-2.safetensors")).unwrap()), "epoch-2.json.damaged"),
            ("truncated latest.json", Box::new(move |c: &Path| cut(&c.join("latest.json"), 0.6)), "latest.json.damaged"),
            ("empty latest.json and epoch record", Box::new(move |c: &Path| {
                cut(&c.join("latest.json"), 0.0);
                cut(&c.join("epoch-2.json"), 0.0);
            }), "epoch-2.json.damaged"),
            ("both checkpoints", Box::new(move |c: &Path| {
                cut(&c.join("epoch-2.safetensors"), 0.3);
                flip(&c.join("epoch-1.safetensors"));
            }), "epoch-1.safetensors.damaged"),
        ];
        for (what, damage, set_aside) in cases {
            let case = dir.path().join(what.replace(' ', "-"));
            std::fs::create_dir_all(&case).unwrap();
            copy_run(&killed, &case);
            damage(&case.join("checkpoint"));
            let done = train(&cfg, &data, &case, true).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(done.status, RunStatus::Finished, "{what}");
            assert_eq!(weights(&case), weights(&reference), "{what}: the resumed run must end where an uninterrupted one does");
            assert!(case.join("checkpoint").join(set_aside).exists(), "{what}: {set_aside} not set aside");
            let rows = std::fs::read_to_string(case.join("metrics.csv")).unwrap().lines().count();
            assert_eq!(rows, 4, "{what}: one metrics row per epoch");
            std::fs::remove_dir_all(&case).unwrap();
        }
    }

    #[test]
    fn resuming_with_other_settings_names_each_difference() {
        let data = synthetic(32, 16);
        let cfg = tiny(RegConfig::Plain, 2);
        let dir = tempfile::tempdir().unwrap();
        assert!(train_session(&cfg, &data, dir.path(), false, Some(1)).unwrap().is_none());
        let mut other = cfg.clone();
        other.training.lr = Positive(0.1);
        other.seed = 9;
        // The run's config.json is read first, then (without it) the checkpoint's record.
        let err = format!("{:#}", train(&other, &data, dir.path(), true).unwrap_err());
        assert!(err.contains("config.json records another run"), "{err}");
        assert!(err.contains("seed: 1 recorded, 9 given") && err.contains("training.lr: 0.01 recorded, 0.1 given"), "{err}");
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        let err = format!("{:#}", train(&other, &data, dir.path(), true).unwrap_err());
        assert!(err.contains("latest.json belongs to another run"), "{err}");
        assert!(err.contains("seed: 1 recorded, 9 given") && err.contains("training.lr: 0.01 recorded, 0.1 given"), "{err}");
        let mut big = cfg.clone();
        big.training.train_subset = Some(nz(33));
        let err = format!("{:#}", train(&big, &data, &dir.path().join("new"), false).unwrap_err());
        assert!(err.contains("train_subset = 33") && err.contains("holds 32 images"), "{err}");
    }

    #[test]
    fn non_finite_loss_is_recorded_as_diverged() {
        let data = synthetic(32, 16);
        // BatchNorm makes a plain VGG scale-invariant, so a huge lr alone does not overflow;
        // coupled weight decay with lr·β ≫ 2 multiplies the weights by −(lr·β − 1) per step.
        let mut cfg = tiny(RegConfig::WeightDecay { beta: Positive(1e6) }, 3);
        cfg.training.batch = nz(8);
        cfg.training.lr = Positive(1e6);
        let dir = tempfile::tempdir().unwrap();
        let out = train(&cfg, &data, dir.path(), false).unwrap();
        let RunStatus::Diverged { epoch } = out.status else { panic!("lr·β = 1e12 should diverge: {out:?}") };
        assert_eq!(out.epochs_done, epoch - 1);
        let status = std::fs::read_to_string(dir.path().join("status.json")).unwrap();
        assert!(status.contains("diverged"), "{status}");
        assert_eq!(std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap().lines().count(), epoch);
    }

    #[test]
    fn strong_l1_norm_decay_shrinks_the_l1_norms() {
        let data = synthetic(64, 16);
        let dir = tempfile::tempdir().unwrap();
        let l1_sum = |reg, name: &str| {
            // Norm decay moves one column (ℓ1) per layer and step: it needs many small steps.
            let mut cfg = tiny(reg, 1);
            cfg.training.train_subset = Some(nz(64));
            cfg.training.batch = nz(4);
            let out = dir.path().join(name);
            train(&cfg, &data, &out, false).unwrap();
            let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let row: metrics::EpochRow = r.deserialize().next().unwrap().unwrap();
            row.l1_sum
        };
        let plain = l1_sum(RegConfig::Plain, "plain");
        let nd = l1_sum(RegConfig::norm_decay(NormKind::L1, Positive(0.1)), "nd");
        eprintln!("sum of l1 norms after one epoch: plain {plain}, nd-l1 beta 0.1 {nd}");
        assert!(nd < 0.95 * plain, "nd-l1 β=0.1: Σℓ1 {nd} vs plain {plain}");
    }
}
