//! SGD with momentum, with PyTorch's semantics (`torch.optim.SGD`, dampening 0, no
//! Nesterov): buf ← μ·buf + g (buf ← g on the first step), θ ← θ − lr·buf.
//!
//! candle-nn's SGD has no momentum, so normlab keeps its own. Weight decay is not here: it is
//! a regularizer (a gradient transform), applied before this step like every other one.
//!
//! On CUDA (normlab's kernels) the step is one multi-tensor kernel launch per 24 tensors
//! ([`crate::ops::fused::sgd_multi`]) instead of five generic ops per tensor: the momentum
//! buffers are kept and updated in place (persistent, allocated once), and a regularizer may
//! leave its term for the kernel to add ([`GradTerms`]) instead of rewriting the gradients.
//! Elsewhere the ops normlab always ran, in the same order, so CPU results are unchanged.

use crate::models::ParamStore;
use crate::ops::fused::{self, SgdEntry};
use anyhow::Result;
use candle_core::{backprop::GradStore, DType, Tensor};
use std::collections::{BTreeMap, HashMap};

/// Terms a regularizer leaves to the optimizer: parameter name → `(coef, t)`, to be added to
/// its gradient as `g + coef·t` inside the update (weight decay `(β, θ)`, norm decay
/// `(β·scale, ĥ)`). Empty where the regularizer rewrote the gradients itself (the CPU).
#[derive(Debug, Clone, Default)]
pub struct GradTerms {
    terms: HashMap<String, (f64, Tensor)>,
}

impl GradTerms {
    /// Adds `coef·t` to the gradient of parameter `name` (replacing an earlier term).
    pub fn insert(&mut self, name: &str, coef: f64, t: Tensor) {
        self.terms.insert(name.to_string(), (coef, t));
    }

    /// The term for parameter `name`.
    pub fn get(&self, name: &str) -> Option<&(f64, Tensor)> {
        self.terms.get(name)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// SGD with momentum over a model's trainable parameters, keyed by parameter name so its
/// state can be checkpointed and restored.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Learning rate of the next step (the schedule sets it each epoch).
    pub lr: f64,
    /// Momentum μ.
    pub momentum: f64,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// A fresh optimizer (no momentum buffers yet).
    pub fn new(lr: f64, momentum: f64) -> Self {
        Self { lr, momentum, buffers: BTreeMap::new() }
    }

    /// One update of every trainable parameter that has a gradient in `grads`, with the
    /// regularizer's `terms` added to the gradients first.
    pub fn step(&mut self, params: &ParamStore, grads: &GradStore, terms: &GradTerms) -> Result<()> {
        let device = match params.trainable().next() {
            Some(e) => e.var.device().clone(),
            None => return Ok(()),
        };
        if fused::on(&device) && params.trainable().all(|e| e.var.dtype() == DType::F32) {
            return self.step_fused(params, grads, terms, &device);
        }
        for e in params.trainable() {
            let Some(g) = grads.get(e.var.as_tensor()) else { continue };
            // candle leaves the gradients of variables attached to the forward graph (only
            // intermediate nodes' gradients are detached); a momentum buffer built from them
            // would chain every step's graph to the next and keep it alive (a leak of ~0.8 GB
            // per vgg11 step at batch 128).
            let g = g.detach();
            let g = match terms.get(&e.name) {
                Some((coef, t)) => crate::ops::axpy(&g, *coef, t)?,
                None => g,
            };
            let update = if self.momentum == 0.0 {
                g.clone()
            } else {
                let buf = match self.buffers.get(&e.name) {
                    Some(b) => crate::ops::axpy(&g, self.momentum, b)?,
                    None => g.clone(),
                };
                self.buffers.insert(e.name.clone(), buf.clone());
                buf
            };
            // One pass each (`ops::axpy`) instead of a scale and an add: 2–3% of a vgg11 step
            // was this loop. Same f32 operations, so the same values as before.
            e.var.set(&crate::ops::axpy(e.var.as_tensor(), -self.lr, &update)?)?;
        }
        Ok(())
    }

    /// [`Sgd::step`] as multi-tensor kernel launches on `device`: momentum buffers allocated on
    /// their first step and updated in place from then on.
    fn step_fused(&mut self, params: &ParamStore, grads: &GradStore, terms: &GradTerms, device: &candle_core::Device) -> Result<()> {
        let mut entries = Vec::new();
        for e in params.trainable() {
            let Some(g) = grads.get(e.var.as_tensor()) else { continue };
            let grad = g.detach().contiguous()?;
            let (buffer, first) = if self.momentum == 0.0 {
                (None, false)
            } else {
                match self.buffers.get(&e.name) {
                    Some(b) if b.dtype() == DType::F32 && b.is_contiguous() => (Some(b.clone()), false),
                    Some(b) => {
                        // A restored buffer in another layout: an owned contiguous f32 copy.
                        let b = b.to_dtype(DType::F32)?.contiguous()?.copy()?;
                        self.buffers.insert(e.name.clone(), b.clone());
                        (Some(b), false)
                    }
                    None => {
                        // Written whole by the kernel's first step (buf = g).
                        let b = unsafe { Tensor::empty(grad.shape(), DType::F32, device)? };
                        self.buffers.insert(e.name.clone(), b.clone());
                        (Some(b), true)
                    }
                }
            };
            entries.push(SgdEntry { param: e.var.as_tensor().clone(), grad, buffer, term: terms.get(&e.name).cloned(), first });
        }
        fused::sgd_multi(device, &entries, self.lr, self.momentum)?;
        Ok(())
    }

    /// The momentum buffers, by parameter name (for checkpoints). On CUDA they are updated in
    /// place by later steps: copy what must outlive the next step.
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Restores momentum buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, buffers: BTreeMap<String, Tensor>) {
        self.buffers = buffers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Role;
    use candle_core::{Device, Var};

    #[test]
    fn matches_pytorch_momentum() {
        // PyTorch: p=1, grads 1 then 1, lr 0.1, momentum 0.9 -> p = 1 - 0.1 - 0.19 = 0.71.
        let mut store = ParamStore::new();
        let v: Var = store.insert("p", Tensor::new(&[1f32], &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        let mut sgd = Sgd::new(0.1, 0.9);
        for _ in 0..2 {
            let loss = v.as_tensor().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            sgd.step(&store, &grads, &GradTerms::default()).unwrap();
        }
        let p = v.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((p - 0.71).abs() < 1e-6, "{p}");
    }

    #[test]
    fn momentum_buffers_hold_no_graph() {
        // ∂(v²)/∂v = 2v comes back from candle attached to the graph (v is a variable).
        let mut store = ParamStore::new();
        let v: Var = store.insert("p", Tensor::new(&[1f32], &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        let mut sgd = Sgd::new(0.1, 0.9);
        for _ in 0..2 {
            let grads = v.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap();
            assert!(grads.get(v.as_tensor()).unwrap().track_op());
            sgd.step(&store, &grads, &GradTerms::default()).unwrap();
            assert!(!sgd.state()["p"].track_op(), "the momentum buffer keeps the step's graph alive");
        }
    }
}
