//! A stacked model: K copies ("slices") of one architecture trained side by side on the same
//! batch, as one network whose every layer has K times the channels and whose convolutions
//! keep the slices apart (see [`crate::ops::stack`] for the layout and the few ops that need a
//! stacked form). Every parameter and buffer holds the K slices' tensors stacked along its
//! first dimension under the single model's name, so one optimizer step updates all slices
//! at once, and slice s of any tensor is a view ([`StackedModel::slice`]).
//!
//! A stack exists to train cells that differ only in their regularizer (common random
//! numbers: same initial weights, same batches); each slice can be taken out as an ordinary
//! [`Model`] ([`StackedModel::extract`]) for its checkpoint, norms and final weights, and put
//! back ([`StackedModel::insert`]).

use super::{layers, Arch, LayerSpec, Model, ParamStore};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// K slices of one architecture (see the module doc).
#[derive(Debug)]
pub struct StackedModel {
    model: Model,
    k: usize,
}

impl StackedModel {
    /// `k` slices of `arch`, each with the weights `Model::new(arch, seed, device)` draws.
    pub fn new(arch: Arch, seed: u64, k: usize, device: &Device) -> Result<Self> {
        if k == 0 {
            bail!("a stacked model needs at least one slice");
        }
        let b = layers::Builder::stacked(ChaCha8Rng::seed_from_u64(seed), device, k);
        Ok(Self { model: Model::build(arch, b)?, k })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.model.arch
    }

    /// The number of slices.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Every tensor, stacked, under the single model's names (the optimizer steps these).
    pub fn params(&self) -> &ParamStore {
        &self.model.params
    }

    /// The layers of one slice (the single model's list).
    pub fn layers(&self) -> &[LayerSpec] {
        &self.model.layers
    }

    /// The device the tensors live on.
    pub fn device(&self) -> Result<Device> {
        Ok(self.model.params.entries().first().context("a model without tensors")?.var.device().clone())
    }

    /// Every slice's logits for the same images: `(K, N, 10)` for `x (N, 3, 32, 32)`, slice s's
    /// what a single model with its weights gives (`train` as [`Model::forward`]).
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let logits = self.model.forward(x, train)?;
        if self.k == 1 {
            // The single model's layers end in (N, 10).
            return logits.unsqueeze(0);
        }
        Ok(logits)
    }

    /// BatchNorm's train-mode batch counter (the same for every slice).
    pub fn batches_tracked(&self) -> i64 {
        self.model.batches_tracked()
    }

    /// Sets the batch counter (when resuming).
    pub fn set_batches_tracked(&self, n: i64) {
        self.model.set_batches_tracked(n)
    }

    /// Slice `s` of the stacked tensor `t` (a parameter, a buffer or a gradient): a view, no
    /// copy.
    pub fn slice_of(&self, t: &Tensor, s: usize) -> Result<Tensor> {
        if s >= self.k {
            bail!("slice {s} of a stack of {}", self.k);
        }
        let d = t.dim(0)? / self.k;
        Ok(t.narrow(0, s * d, d)?)
    }

    /// Slice `s` of the tensor `name` (a view).
    pub fn slice(&self, name: &str, s: usize) -> Result<Tensor> {
        self.slice_of(self.model.params.get(name)?, s)
    }

    /// Overwrites slice `s` of tensor `name` with `value` (the single model's shape), in place.
    pub fn set_slice(&self, name: &str, s: usize, value: &Tensor) -> Result<()> {
        let t = self.model.params.get(name)?;
        let d = t.dim(0)? / self.k;
        if s >= self.k || value.dims().first() != Some(&d) {
            bail!("cannot set slice {s} of {name} ({:?}, {} slices) to a {:?} tensor", t.dims(), self.k, value.dims());
        }
        t.slice_set(&value.to_dtype(t.dtype())?.to_device(t.device())?.contiguous()?, 0, s * d)?;
        Ok(())
    }

    /// Slice `s` as an ordinary model (its own copy of the weights, buffers and batch counter).
    pub fn extract(&self, s: usize) -> Result<Model> {
        let m = Model::new(self.arch(), 0, &self.device()?)?;
        for e in m.params.entries() {
            e.var.set(&self.slice(&e.name, s)?.contiguous()?)?;
        }
        m.set_batches_tracked(self.batches_tracked());
        Ok(m)
    }

    /// Copies `model`'s weights and buffers into slice `s`.
    pub fn insert(&self, s: usize, model: &Model) -> Result<()> {
        if model.arch != self.arch() {
            bail!("cannot put a {} into a stack of {}", model.arch, self.arch());
        }
        for e in model.params.entries() {
            self.set_slice(&e.name, s, e.var.as_tensor())?;
        }
        Ok(())
    }

    /// A stack of the slices `keep` (in that order), with their weights, buffers and counter.
    pub fn retain(&self, keep: &[usize]) -> Result<Self> {
        let out = Self::new(self.arch(), 0, keep.len(), &self.device()?)?;
        for e in self.model.params.entries() {
            let parts = keep.iter().map(|&s| self.slice(&e.name, s)).collect::<Result<Vec<_>>>()?;
            out.model.params.var(&e.name).context("same architecture")?.set(&Tensor::cat(&parts, 0)?)?;
        }
        out.set_batches_tracked(self.batches_tracked());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Each slice of a stacked model starts as the single model and gives its logits and
    /// gradients bit for bit, in train and eval mode, for every architecture (a conv model with
    /// BatchNorm, residual blocks, squeeze-and-excitation, grouped convs).
    #[test]
    fn every_slice_is_the_single_model_bit_for_bit() {
        let dev = Device::Cpu;
        let x = Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &dev).unwrap();
        let y = Tensor::new(&[3u32, 7], &dev).unwrap();
        for arch in Arch::ALL {
            let k = 2;
            let stack = StackedModel::new(arch, 5, k, &dev).unwrap();
            let single = Model::new(arch, 5, &dev).unwrap();
            // Make the slices differ, so a mix-up between them shows.
            let other = Model::new(arch, 6, &dev).unwrap();
            stack.insert(1, &other).unwrap();
            for train in [true, false] {
                let logits = stack.forward(&x, train).unwrap();
                assert_eq!(logits.dims(), &[k, 2, 10], "{arch}");
                for (s, m) in [(0, &single), (1, &other)] {
                    assert_eq!(bits(&m.forward(&x, train).unwrap()), bits(&logits.get(s).unwrap()), "{arch} train {train} slice {s}: logits");
                }
            }
            // Gradients of one more train step (running statistics moved once in each).
            let losses = crate::ops::stack::cross_entropy(&stack.forward(&x, true).unwrap(), &y).unwrap();
            let g = losses.sum_all().unwrap().backward().unwrap();
            for (s, m) in [(0, &single), (1, &other)] {
                let gs = candle_nn::loss::cross_entropy(&m.forward(&x, true).unwrap(), &y).unwrap().backward().unwrap();
                for e in m.params.trainable() {
                    let want = gs.get(e.var.as_tensor()).unwrap();
                    let got = stack.slice_of(g.get(stack.params().var(&e.name).unwrap().as_tensor()).unwrap(), s).unwrap();
                    assert_eq!(bits(want), bits(&got), "{arch} slice {s}: gradient of {}", e.name);
                }
                let back = stack.extract(s).unwrap();
                for e in m.params.entries() {
                    assert_eq!(bits(e.var.as_tensor()), bits(back.params.get(&e.name).unwrap()), "{arch} slice {s}: {}", e.name);
                }
            }
            let one = stack.retain(&[1]).unwrap();
            assert_eq!(bits(&one.forward(&x, false).unwrap().get(0).unwrap()), bits(&other.forward(&x, false).unwrap()), "{arch}: retained slice");
        }
    }
}
