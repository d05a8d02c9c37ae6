//! The per-epoch checkpoint: everything a run needs to continue exactly where it stopped.
//!
//! `OUT/checkpoint/epoch-N.safetensors` holds the tensors (model weights and BatchNorm
//! statistics under `model/<name>`, SGD momentum under `sgd/<name>`, regularizer state such as
//! norm decay's h under `reg/<name>`); `OUT/checkpoint/latest.json` holds the rest (the
//! configuration, epochs and steps done, BatchNorm's batch counter, the metrics rows so far)
//! and names the tensor file. Both are written atomically, tensors first, so `latest.json`
//! always points to a complete file; older tensor files are removed afterwards.
//!
//! There is no RNG stream to save: the epoch order and every batch's augmentation are drawn
//! from (seed, epoch, batch), so the epoch number is the whole random state.

use super::config::TrainConfig;
use super::metrics::EpochRow;
use crate::models::Model;
use crate::optim::Sgd;
use crate::regularize::Regularizer;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The non-tensor part of a checkpoint (`latest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// The run's configuration (a resume must match it).
    pub config: TrainConfig,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimizer steps completed (SVC's period counts them).
    pub steps_done: usize,
    /// BatchNorm's `num_batches_tracked`.
    pub batches_tracked: i64,
    /// Seconds spent training so far (over all sessions).
    pub train_seconds: f64,
    /// The metrics rows of the completed epochs.
    pub rows: Vec<EpochRow>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Latest {
    tensors: String,
    progress: Progress,
}

/// The checkpoint directory of run directory `out`.
pub fn dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

fn latest_path(out: &Path) -> PathBuf {
    dir(out).join("latest.json")
}

/// Whether `out` holds a checkpoint.
pub fn exists(out: &Path) -> bool {
    latest_path(out).exists()
}

/// Writes the checkpoint of the state after `progress.epochs_done` epochs.
pub fn save(out: &Path, progress: &Progress, model: &Model, sgd: &Sgd, reg: &mut Regularizer) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for e in model.params.entries() {
        tensors.insert(format!("model/{}", e.name), e.var.as_tensor().to_device(&Device::Cpu)?);
    }
    for (name, t) in sgd.state() {
        tensors.insert(format!("sgd/{name}"), t.to_device(&Device::Cpu)?);
    }
    for (name, t) in reg.state()? {
        tensors.insert(format!("reg/{name}"), t.to_device(&Device::Cpu)?);
    }
    let file = format!("epoch-{}.safetensors", progress.epochs_done);
    let d = dir(out);
    crate::util::atomic_write_with(&d.join(&file), |tmp| Ok(candle_core::safetensors::save(&tensors, tmp)?))?;
    let latest = Latest { tensors: file.clone(), progress: progress.clone() };
    crate::util::atomic_write(&latest_path(out), serde_json::to_string_pretty(&latest)?.as_bytes())?;
    for entry in std::fs::read_dir(&d)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("epoch-") && name.ends_with(".safetensors") && name != file {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Restores model, optimizer and regularizer from `out`'s checkpoint into the given fresh
/// objects and returns the saved progress. The checkpoint must be of the same run as `config`.
pub fn load(out: &Path, config: &TrainConfig, model: &Model, sgd: &mut Sgd, reg: &mut Regularizer) -> Result<Progress> {
    let lp = latest_path(out);
    let text = std::fs::read_to_string(&lp).with_context(|| format!("cannot read {}", lp.display()))?;
    let latest: Latest = serde_json::from_str(&text).with_context(|| format!("{} is not a normlab checkpoint", lp.display()))?;
    if !latest.progress.config.same_run(config) {
        bail!(
            "{} belongs to another run ({}); this one is ({}): use the same settings to resume, or another --out",
            lp.display(),
            serde_json::to_string(&latest.progress.config)?,
            serde_json::to_string(config)?
        );
    }
    let tp = dir(out).join(&latest.tensors);
    let tensors = candle_core::safetensors::load(&tp, &Device::Cpu).with_context(|| format!("cannot read checkpoint tensors {}", tp.display()))?;
    crate::models::validate::check_weights(&tp, tensors.iter().filter_map(|(key, t)| key.strip_prefix("model/").map(|name| (name, t))))?;
    let mut sgd_state = BTreeMap::new();
    let mut reg_state = Vec::new();
    let mut restored = 0usize;
    for (key, t) in tensors {
        if let Some(name) = key.strip_prefix("model/") {
            let var = model.params.var(name).with_context(|| format!("{}: tensor {name} is not in {}", tp.display(), config.arch))?;
            if t.dims() != var.dims() {
                bail!("{}: {name} has shape {:?}, the model expects {:?}", tp.display(), t.dims(), var.dims());
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            restored += 1;
        } else if let Some(name) = key.strip_prefix("sgd/") {
            let var = model.params.var(name).with_context(|| format!("{}: momentum for unknown parameter {name}", tp.display()))?;
            sgd_state.insert(name.to_string(), t.to_dtype(var.dtype())?.to_device(var.device())?);
        } else if let Some(name) = key.strip_prefix("reg/") {
            reg_state.push((name.to_string(), t));
        } else {
            bail!("{}: unexpected tensor {key}", tp.display());
        }
    }
    if restored != model.params.entries().len() {
        bail!("{}: {} of the model's {} tensors present", tp.display(), restored, model.params.entries().len());
    }
    sgd.load_state(sgd_state);
    reg.load_state(reg_state)?;
    model.set_batches_tracked(latest.progress.batches_tracked);
    Ok(latest.progress)
}
