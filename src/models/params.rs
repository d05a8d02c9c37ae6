//! The parameter store: every tensor of a model under its PyTorch state_dict name, in
//! state_dict order, with trainable parameters told apart from buffers (BatchNorm running
//! statistics), and safetensors load/save so weights move both ways with PyTorch.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// Whether a stored tensor is learned by the optimizer or only updated by the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A learned parameter (conv/linear weight and bias, BatchNorm γ and β).
    Trainable,
    /// A buffer (BatchNorm running mean and variance): saved, never given to the optimizer.
    Buffer,
}

/// One named tensor of the model.
#[derive(Debug, Clone)]
pub struct Entry {
    /// PyTorch state_dict name.
    pub name: String,
    /// The variable holding the value (updated in place by the optimizer or BatchNorm).
    pub var: Var,
    /// Learned or buffer.
    pub role: Role,
}

/// All named tensors of a model, in state_dict order.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

/// The key PyTorch adds per BatchNorm; written on save (so `load_state_dict(strict=True)`
/// accepts our files) and ignored on load.
pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor under `name`; names are unique.
    pub fn insert(&mut self, name: &str, value: Tensor, role: Role) -> Result<Var> {
        if self.index.contains_key(name) {
            bail!("parameter '{name}' registered twice");
        }
        let var = Var::from_tensor(&value)?;
        self.index.insert(name.to_string(), self.entries.len());
        self.entries.push(Entry { name: name.to_string(), var: var.clone(), role });
        Ok(var)
    }

    /// The tensor stored under `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        match self.index.get(name) {
            Some(&i) => Ok(self.entries[i].var.as_tensor()),
            None => bail!("no parameter named '{name}'"),
        }
    }

    /// The variable stored under `name`.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.index.get(name).map(|&i| &self.entries[i].var)
    }

    /// Every entry, in state_dict order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The learned parameters, in state_dict order.
    pub fn trainable(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.role == Role::Trainable)
    }

    /// Number of learned scalars (what PyTorch's `sum(p.numel() for p in parameters())` gives).
    pub fn num_parameters(&self) -> usize {
        self.trainable().map(|e| e.var.as_tensor().elem_count()).sum()
    }

    /// Moves every tensor to `device` (a new store; the old one is untouched).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let mut out = Self::new();
        for e in &self.entries {
            out.insert(&e.name, e.var.as_tensor().to_device(device)?.detach(), e.role)?;
        }
        Ok(out)
    }

    /// Named tensors to write as a PyTorch-compatible state_dict, BatchNorm's
    /// `num_batches_tracked` (an i64 scalar) included.
    pub fn state_dict(&self, num_batches_tracked: i64) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            out.push((e.name.clone(), e.var.as_tensor().to_device(&Device::Cpu)?.to_dtype(DType::F32)?));
            if let Some(prefix) = e.name.strip_suffix(".running_var") {
                let t = Tensor::new(num_batches_tracked, &Device::Cpu)?;
                out.push((format!("{prefix}.{NUM_BATCHES_TRACKED}"), t));
            }
        }
        Ok(out)
    }

    /// Sets every tensor from a state_dict read from `source` (a [`super::checkpoint`] file)
    /// into this store of `model` (its name, for the messages).
    /// Every name of the store must be present with the right shape, and no other name may
    /// be (except BatchNorm's `num_batches_tracked` and names `ignore` accepts): all the
    /// missing, unexpected and mis-shaped names are listed in one error. The values pass
    /// [`super::validate::check_weights`] before any is set. Returns the largest
    /// `num_batches_tracked` and the names ignored.
    pub fn load_state_dict(&self, source: &Path, model: &str, tensors: &[(String, Tensor)], ignore: &dyn Fn(&str) -> bool) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut found: HashMap<&str, &Tensor> = HashMap::new();
        let mut unexpected = Vec::new();
        for (name, t) in tensors {
            if name.ends_with(NUM_BATCHES_TRACKED) {
                let n = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?.first().copied().unwrap_or(0);
                loaded.batches_tracked = loaded.batches_tracked.max(n);
            } else if self.index.contains_key(name) {
                found.insert(name, t);
            } else if ignore(name) {
                loaded.ignored.push(name.clone());
            } else {
                unexpected.push(name.as_str());
            }
        }
        let missing: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).filter(|n| !found.contains_key(n)).collect();
        let misshaped: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| found.get(e.name.as_str()).filter(|t| t.dims() != e.var.dims()).map(|t| format!("{}: file {:?}, model {:?}", e.name, t.dims(), e.var.dims())))
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() {
            unexpected.sort_unstable();
            let mut msg = format!("{} does not fit {model} (a checkpoint of another model?):", source.display());
            for (what, names) in [("missing", missing.iter().map(|s| s.to_string()).collect::<Vec<_>>()), ("unexpected", unexpected.iter().map(|s| s.to_string()).collect()), ("wrong shape", misshaped)] {
                if !names.is_empty() {
                    msg += &format!("\n  {what} ({}): {}", names.len(), names.join(", "));
                }
            }
            if let Some(hint) = prefix_hint(&missing, &unexpected) {
                msg += &format!("\n  {hint}");
            }
            bail!("{msg}");
        }
        super::validate::check_weights(source, self.entries.iter().map(|e| (e.name.as_str(), found[e.name.as_str()])))?;
        for e in &self.entries {
            let want = e.var.as_tensor();
            e.var.set(&found[e.name.as_str()].to_dtype(want.dtype())?.to_device(want.device())?)?;
        }
        Ok(loaded)
    }
}

/// What [`ParamStore::load_state_dict`] found besides the model's tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The largest BatchNorm `num_batches_tracked` in the file (0 without one).
    pub batches_tracked: i64,
    /// Names in the file the model does not use and the caller chose to ignore.
    pub ignored: Vec<String>,
}

/// When the unexpected names are the missing ones under one extra leading prefix (such as
/// `model.`), or the other way round, says so.
fn prefix_hint(missing: &[&str], unexpected: &[&str]) -> Option<String> {
    let extra = |longer: &[&str], shorter: &str| -> Option<String> {
        longer.iter().find_map(|l| l.strip_suffix(shorter).filter(|p| p.ends_with('.')).map(str::to_string))
    };
    let (m, u) = (missing.first()?, unexpected.first()?);
    if let Some(prefix) = extra(unexpected, m).filter(|p| unexpected.iter().all(|n| n.starts_with(p.as_str()))) {
        return Some(format!("the file's names carry an extra prefix '{prefix}': re-save the state_dict without it"));
    }
    if let Some(prefix) = extra(missing, u) {
        return Some(format!("the model's names begin with '{prefix}' where the file's do not: is the file a checkpoint of the architecture named?"));
    }
    None
}
