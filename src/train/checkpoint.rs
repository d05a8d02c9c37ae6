//! The per-epoch checkpoint: everything a run needs to continue exactly where it stopped.
//!
//! `OUT/checkpoint/epoch-N.safetensors` holds the tensors (model weights and BatchNorm
//! statistics under `model/<name>`, SGD momentum under `sgd/<name>`, regularizer state such as
//! norm decay's h under `reg/<name>`); its record `epoch-N.json` holds the rest (the
//! configuration, epochs and steps done, BatchNorm's batch counter, the metrics rows so far),
//! the tensor file's name, size and SHA-256; `latest.json` is a copy of the newest record.
//! Each file is written atomically and flushed to the disk, tensors first, so a record always
//! names a complete file; the two newest checkpoints are kept, older ones removed.
//!
//! A crash can still leave a damaged file behind (a filesystem that loses data written just
//! before a power cut, a copy cut short, a full disk during a manual copy). On resume each
//! record is checked against its tensor file, newest first: a tensor file that is missing,
//! empty, truncated or fails its checksum, and a record or `latest.json` that does not parse,
//! is set aside (renamed `*.damaged`, never deleted) with a warning, and the run resumes from
//! the newest valid checkpoint, or starts over when none is left.
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
    #[serde(deserialize_with = "super::config::read_recorded")]
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

/// The record of one checkpoint (`epoch-N.json`, and `latest.json` for the newest). Records
/// written before checksums existed lack `bytes` and `sha256`: their tensor file is checked
/// by reading it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    tensors: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    progress: Progress,
}

/// The checkpoint directory of run directory `out`.
pub fn dir(out: &Path) -> PathBuf {
    crate::results::RunDir::new(out).checkpoint()
}

fn latest_path(out: &Path) -> PathBuf {
    dir(out).join("latest.json")
}

/// `N` of a file `epoch-N.<ext>`.
fn epoch_of(name: &str, ext: &str) -> Option<usize> {
    name.strip_prefix("epoch-")?.strip_suffix(ext)?.strip_suffix('.')?.parse().ok()
}

/// The epochs `N` of `<dir>/epoch-N.<ext>` files, newest first.
fn epochs_with(d: &Path, ext: &str) -> Vec<usize> {
    let mut v: Vec<usize> = std::fs::read_dir(d)
        .map(|rd| rd.flatten().filter_map(|e| epoch_of(&e.file_name().to_string_lossy(), ext)).collect())
        .unwrap_or_default();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.dedup();
    v
}

/// Whether `out` holds a checkpoint (valid or not: [`load`] sorts that out).
pub fn exists(out: &Path) -> bool {
    latest_path(out).exists() || !epochs_with(&dir(out), "json").is_empty()
}

/// SHA-256 of `bytes` in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// How many checkpoints [`save`] keeps: the newest and the one before, so a damaged newest
/// one costs one epoch.
pub const KEEP: usize = 2;

/// Writes the checkpoint of the state after `progress.epochs_done` epochs.
pub fn save(out: &Path, progress: &Progress, model: &Model, sgd: &Sgd, reg: &mut Regularizer) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for e in model.params.entries() {
        tensors.insert(format!("model/{}", e.name), e.var.as_tensor().to_device(&Device::Cpu)?);
    }
    for (name, t) in sgd.state() {
        tensors.insert(format!("sgd/{name}"), t.to_device(&Device::Cpu)?);
    }
    for (name, t) in reg.state()? {
        tensors.insert(format!("reg/{name}"), t.to_device(&Device::Cpu)?);
    }
    let bytes = safetensors::serialize(&tensors, None).context("cannot serialize the checkpoint's tensors")?;
    let epoch = progress.epochs_done;
    let file = format!("epoch-{epoch}.safetensors");
    let d = dir(out);
    crate::util::atomic_write(&d.join(&file), &bytes)?;
    let record = Record { tensors: file, bytes: Some(bytes.len() as u64), sha256: Some(sha256_hex(&bytes)), progress: progress.clone() };
    let json = serde_json::to_string_pretty(&record)?;
    crate::util::atomic_write(&d.join(format!("epoch-{epoch}.json")), json.as_bytes())?;
    crate::util::atomic_write(&latest_path(out), json.as_bytes())?;
    // Keep this checkpoint and the newest one before it.
    let keep: Vec<usize> = std::iter::once(epoch).chain(epochs_with(&d, "json").into_iter().filter(|&e| e < epoch).take(KEEP - 1)).collect();
    for ext in ["safetensors", "json"] {
        for e in epochs_with(&d, ext).into_iter().filter(|e| !keep.contains(e)) {
            let _ = std::fs::remove_file(d.join(format!("epoch-{e}.{ext}")));
        }
    }
    Ok(())
}

/// What is wrong with a checkpoint's tensor file, if anything; the tensors when it is sound.
fn read_tensors(path: &Path, record: &Record) -> std::result::Result<HashMap<String, Tensor>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("the tensor file is missing".to_string()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    if bytes.is_empty() {
        return Err("it is empty".to_string());
    }
    if let Some(want) = record.bytes {
        if bytes.len() as u64 != want {
            return Err(format!("it holds {} bytes, its record says {want}: truncated", bytes.len()));
        }
    }
    if let Some(want) = &record.sha256 {
        let got = sha256_hex(&bytes);
        if &got != want {
            return Err(format!("its SHA-256 is {got}, its record says {want}"));
        }
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| format!("it does not parse as safetensors: {e}"))
}

/// Sets `path` aside (when it exists) with a warning saying why; a failure to rename is an
/// error (the file would be read again).
fn set_aside(path: &Path, why: &str) -> Result<()> {
    if path.exists() {
        let to = crate::util::set_aside(path)?;
        eprintln!("warning: checkpoint file {} is damaged ({why}): set aside as {}", path.display(), to.display());
    } else {
        eprintln!("warning: checkpoint file {} is damaged ({why})", path.display());
    }
    Ok(())
}

/// Restores model, optimizer and regularizer from `out`'s newest valid checkpoint into the
/// given fresh objects and returns the saved progress; damaged files are set aside on the
/// way (see the module doc). `None` when no valid checkpoint is left: the run starts over,
/// the objects untouched. A checkpoint of another configuration is an error naming each
/// setting that differs.
pub fn load(out: &Path, config: &TrainConfig, model: &Model, sgd: &mut Sgd, reg: &mut Regularizer) -> Result<Option<Progress>> {
    let d = dir(out);
    let lp = latest_path(out);
    let parse = |path: &Path| -> std::result::Result<Record, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("not a checkpoint record: {e}"))
    };
    let mut damaged = false;
    // Candidates: each record (latest.json and the epoch records naming the same tensor file
    // are one), newest first.
    let mut candidates: Vec<(Vec<PathBuf>, Record)> = Vec::new();
    let epoch_records = epochs_with(&d, "json").into_iter().map(|e| d.join(format!("epoch-{e}.json")));
    for p in std::iter::once(lp.clone()).filter(|p| p.exists()).chain(epoch_records) {
        match parse(&p) {
            Ok(r) => match candidates.iter_mut().find(|(_, c)| c.tensors == r.tensors) {
                Some((paths, _)) => paths.push(p),
                None => candidates.push((vec![p], r)),
            },
            Err(why) => {
                set_aside(&p, &why)?;
                damaged = true;
            }
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.1.progress.epochs_done));
    for (paths, record) in &candidates {
        if record.progress.config != *config {
            bail!("{} belongs to another run: {}", paths[0].display(), config.differences_from(&record.progress.config).join("; "));
        }
        let tp = d.join(&record.tensors);
        let tensors = match read_tensors(&tp, record) {
            Ok(t) => t,
            Err(why) => {
                set_aside(&tp, &why)?;
                for p in paths.iter().filter(|p| **p != lp) {
                    set_aside(p, &format!("the record of the damaged {}", record.tensors))?;
                }
                damaged = true;
                continue;
            }
        };
        restore(&tp, tensors, config, model, sgd, reg)?;
        model.set_batches_tracked(record.progress.batches_tracked);
        if damaged || !paths.contains(&lp) {
            // latest.json names the checkpoint the run goes on from.
            crate::util::atomic_write(&lp, serde_json::to_string_pretty(record)?.as_bytes())?;
            eprintln!("warning: resuming {} from its checkpoint after epoch {} ({})", out.display(), record.progress.epochs_done, tp.display());
        }
        return Ok(Some(record.progress.clone()));
    }
    if damaged {
        eprintln!("warning: {} holds no valid checkpoint (the damaged files are set aside in {}): the run starts over from epoch 0", out.display(), d.display());
    }
    Ok(None)
}

/// Puts a checkpoint's tensors into the model, the optimizer and the regularizer.
fn restore(tp: &Path, tensors: HashMap<String, Tensor>, config: &TrainConfig, model: &Model, sgd: &mut Sgd, reg: &mut Regularizer) -> Result<()> {
    crate::models::validate::check_weights(tp, tensors.iter().filter_map(|(key, t)| key.strip_prefix("model/").map(|name| (name, t))))?;
    let mut sgd_state = BTreeMap::new();
    let mut reg_state = Vec::new();
    let mut restored = 0usize;
    for (key, t) in tensors {
        if let Some(name) = key.strip_prefix("model/") {
            let var = model.params.var(name).with_context(|| format!("{}: tensor {name} is not in {}", tp.display(), config.model))?;
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
    Ok(())
}
