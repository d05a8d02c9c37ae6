//! A model's weights from a checkpoint file, whatever wrote it: safetensors (normlab, the
//! `safetensors` package) or `torch.save`'s `.pt` / `.pth` (read by [`super::pth`]). The
//! format is told by the file's first bytes, not its name. Wrapped PyTorch checkpoints
//! (`{"state_dict": ..., "epoch": ...}`, also under `model_state_dict`, `model` or `net`) are
//! unwrapped and DataParallel's `module.` prefix is removed; what was done is recorded in
//! [`StateDict::notes`] so the commands can say it.
//!
//! Every command that loads weights goes through [`read`]; matching the tensors to a model
//! ([`super::ParamStore::load_state_dict`]) and checking their values
//! ([`super::validate::check_weights`]) follow.

use super::pth::{PthFile, Value};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How a checkpoint file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// safetensors.
    Safetensors,
    /// PyTorch's zip archive (`torch.save`, PyTorch ≥ 1.6).
    PyTorch,
}

impl Format {
    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "PyTorch zip",
        }
    }
}

/// The keys a wrapped PyTorch checkpoint keeps its state_dict under, in the order they are
/// tried.
pub const WRAPPER_KEYS: [&str; 4] = ["state_dict", "model_state_dict", "model", "net"];

/// DataParallel's prefix on every name.
pub const DATA_PARALLEL_PREFIX: &str = "module.";

/// Tensors under their state_dict names.
pub type NamedTensors = Vec<(String, Tensor)>;

/// The named tensors of a checkpoint file (a state_dict), on the CPU.
#[derive(Debug, Clone)]
pub struct StateDict {
    /// The file.
    pub path: PathBuf,
    /// Its encoding.
    pub format: Format,
    /// The tensors under their names, the wrapper key and `module.` prefix removed.
    pub tensors: NamedTensors,
    /// What was done to get them (unwrapping, prefix removal, entries skipped), for the
    /// commands to print.
    pub notes: Vec<String>,
}

impl StateDict {
    /// Removes and returns the tensor named `name`.
    pub fn take(&mut self, name: &str) -> Option<Tensor> {
        let i = self.tensors.iter().position(|(n, _)| n == name)?;
        Some(self.tensors.remove(i).1)
    }

    /// One line saying what was read: file, format and the notes.
    pub fn summary(&self) -> String {
        let mut s = format!("read {} ({}, {} tensors)", self.path.display(), self.format.name(), self.tensors.len());
        for n in &self.notes {
            s += "; ";
            s += n;
        }
        s
    }
}

/// Reads the state_dict in `path` (safetensors or a PyTorch checkpoint). Errors name the
/// file and what is wrong: missing, empty, truncated, of another format, or holding no
/// tensors.
pub fn read(path: &Path) -> Result<StateDict> {
    let shown = path.display();
    if !path.is_file() {
        bail!("checkpoint {shown} does not exist (expected a .safetensors, .pt or .pth file)");
    }
    let format = sniff(path)?;
    let (mut tensors, mut notes) = match format {
        Format::Safetensors => {
            let map = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| anyhow!("{shown} is not a readable safetensors file ({e}); a truncated download or copy?"))?;
            let mut v: Vec<(String, Tensor)> = map.into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            (v, Vec::new())
        }
        Format::PyTorch => read_pytorch(path)?,
    };
    if tensors.is_empty() {
        bail!("{shown} holds no tensors: not a model checkpoint");
    }
    if tensors.iter().all(|(n, _)| n.starts_with(DATA_PARALLEL_PREFIX)) {
        for (n, _) in &mut tensors {
            n.drain(..DATA_PARALLEL_PREFIX.len());
        }
        notes.push(format!("'{DATA_PARALLEL_PREFIX}' prefix (DataParallel) removed from every name"));
    }
    Ok(StateDict { path: path.to_path_buf(), format, tensors, notes })
}

/// Writes named tensors as a safetensors file, atomically (temp file, then rename).
pub fn write_safetensors(path: &Path, tensors: NamedTensors) -> Result<()> {
    crate::util::atomic_write_with(path, |tmp| {
        candle_core::safetensors::save(&tensors.into_iter().collect::<std::collections::HashMap<_, _>>(), tmp)?;
        Ok(())
    })
}

/// Tells the format from the first bytes: a zip archive's signature, or safetensors' 8-byte
/// header length followed by `{`. A bare pickle is PyTorch's legacy format, refused with
/// the one-line conversion.
fn sniff(path: &Path) -> Result<Format> {
    let shown = path.display();
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?.take(16).read_to_end(&mut head).with_context(|| format!("cannot read {shown}"))?;
    if head.is_empty() {
        bail!("{shown} is empty (0 bytes): not a checkpoint (an interrupted copy?)");
    }
    if head.len() < 9 {
        bail!("{shown} holds only {} bytes: not a checkpoint (truncated?)", head.len());
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Format::PyTorch);
    }
    if head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if head[0] == 0x80 && head.get(1).is_some_and(|&v| v <= 5) {
        bail!(
            "{shown} is in PyTorch's legacy format (before 1.6, or saved with _use_new_zipfile_serialization=False), which normlab does not read; convert it once with python -c \"import torch; torch.save(torch.load('{shown}', map_location='cpu'), 'converted.pt')\""
        );
    }
    bail!("{shown} is neither a safetensors file nor a PyTorch checkpoint (it starts with bytes {:02x?}); normlab reads .safetensors and torch.save's .pt/.pth files", &head[..head.len().min(8)])
}

/// The state_dict of a PyTorch checkpoint: unwraps wrapper keys, reads the tensors.
fn read_pytorch(path: &Path) -> Result<(NamedTensors, Vec<String>)> {
    let shown = path.display();
    let mut file = PthFile::open(path)?;
    let mut notes = Vec::new();
    let mut value = std::mem::replace(&mut file.root, Value::Other(String::new()));
    let mut keys: Vec<&str> = Vec::new();
    let mut beside: Vec<String> = Vec::new();
    let entries = loop {
        let items = match value {
            Value::Dict(items) => items,
            Value::Other(what) => bail!("{shown} holds {what}, not a state_dict: save the weights with torch.save(model.state_dict(), F)"),
            Value::Tensor(_) | Value::Unreadable(_) => bail!("{shown} holds a single tensor, not a state_dict"),
        };
        let wrapped = WRAPPER_KEYS.iter().find_map(|k| items.iter().position(|(n, v)| n == k && is_tensor_dict(v)).map(|i| (*k, i)));
        match wrapped {
            Some((key, i)) if keys.len() < 3 => {
                keys.push(key);
                beside.extend(items.iter().filter(|(n, _)| n != key).map(|(n, _)| n.clone()));
                value = items.into_iter().nth(i).map(|(_, v)| v).unwrap_or(Value::Other(String::new()));
            }
            _ if items.iter().any(|(_, v)| matches!(v, Value::Tensor(_) | Value::Unreadable(_))) => break items,
            _ => {
                let names: Vec<&str> = items.iter().map(|(n, _)| n.as_str()).collect();
                bail!(
                    "{shown}: no state_dict found: {} has the keys [{}] and no tensors; normlab looks for the tensors at the top level or under {}",
                    if keys.is_empty() { "the top level".to_string() } else { format!("'{}'", keys.join("/")) },
                    names.join(", "),
                    WRAPPER_KEYS.map(|k| format!("'{k}'")).join(", ")
                );
            }
        }
    };
    if !keys.is_empty() {
        let others = if beside.is_empty() { String::new() } else { format!(" (beside it: {})", beside.join(", ")) };
        notes.push(format!("state_dict read from the key '{}'{others}", keys.join("/")));
    }
    let mut tensors = Vec::new();
    let mut skipped = Vec::new();
    let mut unreadable = Vec::new();
    for (name, v) in entries {
        match v {
            Value::Tensor(record) => {
                let t = file.tensor(&record).with_context(|| format!("reading tensor '{name}'"))?;
                tensors.push((name, t));
            }
            Value::Unreadable(why) => unreadable.push(format!("{name}: {why}")),
            // PyTorch's per-module version record, present in every state_dict.
            Value::Dict(_) if name == "_metadata" => {}
            _ => skipped.push(name),
        }
    }
    if !unreadable.is_empty() {
        bail!("{shown}: {} tensor(s) cannot be read:\n  {}", unreadable.len(), unreadable.join("\n  "));
    }
    if !skipped.is_empty() {
        notes.push(format!("{} non-tensor entries skipped: {}", skipped.len(), skipped.join(", ")));
    }
    Ok((tensors, notes))
}

fn is_tensor_dict(v: &Value) -> bool {
    match v {
        Value::Dict(items) => items.iter().any(|(_, v)| matches!(v, Value::Tensor(_) | Value::Unreadable(_)) || is_tensor_dict(v)),
        _ => false,
    }
}
