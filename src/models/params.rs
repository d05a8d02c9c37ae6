//! The parameter store: every tensor of a model under its PyTorch state_dict name, in
//! state_dict order, with trainable parameters told apart from buffers (BatchNorm running
//! statistics), and safetensors load/save so weights move both ways with PyTorch.

use anyhow::{bail, Context, Result};
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

    /// Writes the state_dict as safetensors, atomically (temp file, then rename).
    pub fn save_safetensors(&self, path: &Path, num_batches_tracked: i64) -> Result<()> {
        let tensors = self.state_dict(num_batches_tracked)?;
        crate::util::atomic_write_with(path, |tmp| {
            candle_core::safetensors::save(&tensors.into_iter().collect::<HashMap<_, _>>(), tmp)?;
            Ok(())
        })
    }

    /// Sets every tensor from a safetensors file. Every name must be present with the right
    /// shape; extra `num_batches_tracked` keys are ignored; any other extra key is an error
    /// (it means the file is of another model). Returns `num_batches_tracked` when present.
    pub fn load_safetensors(&self, path: &Path) -> Result<i64> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("cannot read safetensors file {}", path.display()))?;
        let mut batches = 0i64;
        for (name, t) in &tensors {
            if name.ends_with(NUM_BATCHES_TRACKED) {
                batches = batches.max(t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?.first().copied().unwrap_or(0));
                continue;
            }
            if !self.index.contains_key(name) {
                bail!("{}: tensor '{name}' belongs to no layer of this model (a checkpoint of another model?)", path.display());
            }
        }
        for e in &self.entries {
            let Some(t) = tensors.get(&e.name) else {
                bail!("{}: tensor '{}' is missing (a checkpoint of another model?)", path.display(), e.name);
            };
            let want = e.var.as_tensor();
            if t.dims() != want.dims() {
                bail!("{}: tensor '{}' has shape {:?}, the model expects {:?}", path.display(), e.name, t.dims(), want.dims());
            }
            e.var.set(&t.to_dtype(want.dtype())?.to_device(want.device())?)?;
        }
        Ok(batches)
    }
}
