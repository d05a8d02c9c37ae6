//! The regularizers of a stacked model's slices ([`crate::models::StackedModel`]): slice s
//! has its own [`Regularizer`] (plain, weight decay, SVC or norm decay at its own strength,
//! with its own state), run on views of slice s of the stacked weights and gradients by the
//! very code that runs it on a single model, so each slice's gradients, buffers and clipped
//! kernels are the single cell's bit for bit.
//!
//! What is shared: norm decay's maximiser indices of every slice and layer travel to the host
//! in one copy per step (as a single model's do for its layers), and each parameter whose
//! gradient some slice changed gets its stacked gradient back as one tensor.

use super::{svc::Svc, weight_decay, RegConfig, Regularizer};
use crate::models::StackedModel;
use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, Tensor};
use std::collections::HashMap;
use std::time::Instant;

/// Transforms each live slice's gradients by its regularizer (between `backward()` and the
/// optimizer step); `regs[s]` is slice s's. Returns the seconds spent per slice (a shared
/// copy split evenly among the slices that took part).
pub fn apply(model: &StackedModel, regs: &mut [Regularizer], live: &[bool], grads: &mut GradStore) -> Result<Vec<f64>> {
    check(model, regs, live)?;
    let k = model.k();
    let trainable: Vec<(String, Tensor)> = model.params().trainable().map(|e| (e.name.clone(), e.var.as_tensor().clone())).collect();
    let index: HashMap<&str, usize> = trainable.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    let mut new: Vec<Vec<Option<Tensor>>> = vec![vec![None; k]; trainable.len()];
    let mut seconds = vec![0f64; k];
    let mut pending = Vec::new();
    for (s, reg) in regs.iter_mut().enumerate().filter(|(s, _)| live[*s]) {
        let t0 = Instant::now();
        match *reg.config() {
            RegConfig::WeightDecay { beta } => {
                for (i, (name, var)) in trainable.iter().enumerate() {
                    if let Some(g) = grads.get(var) {
                        new[i][s] = Some(weight_decay::decayed(&model.slice_of(g, s)?, &model.slice(name, s)?, beta.get())?);
                    }
                }
            }
            RegConfig::NormDecay { .. } => {
                let nd = reg.norm_decay_mut().context("a norm-decay regularizer without its state")?;
                let weights = nd.layer_names().map(|n| Ok(model.slice(n, s)?.detach())).collect::<Result<Vec<_>>>()?;
                let found = nd.find(&weights, &|name| Ok(model.slice(name, s)?.detach()))?;
                pending.push((s, weights, found));
            }
            RegConfig::Plain | RegConfig::Svc { .. } => {}
        }
        seconds[s] += t0.elapsed().as_secs_f64();
    }
    // Every slice's and layer's maximiser index in one copy to the host.
    let t0 = Instant::now();
    let indices = pending.iter().filter_map(|(_, _, f)| f.indices().transpose()).collect::<Result<Vec<_>>>()?;
    let flats: Vec<u32> = if indices.is_empty() { Vec::new() } else { Tensor::cat(&indices, 0)?.to_vec1()? };
    let shared = t0.elapsed().as_secs_f64() / pending.len().max(1) as f64;
    let mut at = 0;
    for (s, weights, found) in pending {
        let t0 = Instant::now();
        let nd = regs[s].norm_decay_mut().context("a norm-decay regularizer without its state")?;
        let n = found.len();
        nd.step(&weights, found, flats.get(at..at + n).context("norm decay: fewer maximisers than layers")?)?;
        at += n;
        let names: Vec<String> = nd.layer_names().map(str::to_string).collect();
        for (layer, name) in names.iter().enumerate() {
            let i = *index.get(name.as_str()).with_context(|| format!("norm decay: {name} is not a trainable parameter"))?;
            if let Some(g) = grads.get(&trainable[i].1) {
                new[i][s] = Some(nd.decayed(layer, &model.slice_of(g, s)?)?);
            }
        }
        seconds[s] += t0.elapsed().as_secs_f64() + shared;
    }
    for ((_, var), slices) in trainable.iter().zip(new) {
        if slices.iter().all(Option::is_none) {
            continue;
        }
        let Some(g) = grads.get(var) else { continue };
        let parts = slices.into_iter().enumerate().map(|(s, t)| t.map_or_else(|| model.slice_of(g, s), Ok)).collect::<Result<Vec<_>>>()?;
        let stacked = Tensor::cat(&parts, 0)?;
        grads.insert(var, stacked);
    }
    Ok(seconds)
}

/// Runs after each live slice's [`apply`] and before the optimizer step of batch `batch` (from
/// 0 within its epoch): each live SVC slice whose coverage clips before this batch's step
/// (`reference`: batches ≡ 1 mod its period, [`super::svc::Svc::due_before`]) clips its convs.
/// Returns the seconds spent per slice.
pub fn before_step(model: &StackedModel, regs: &mut [Regularizer], live: &[bool], batch: usize) -> Result<Vec<f64>> {
    clip(model, regs, live, &|svc| svc.due_before(batch))
}

/// Runs after optimizer step `step` (from 1): each live SVC slice whose period ends here
/// (`all` coverage, [`super::svc::Svc::due`]) clips its convs. Returns the seconds spent per
/// slice.
///
/// There is no final clip: a cell whose SVC clips after its last step re-estimates
/// BatchNorm's statistics then, which a stack cannot do per slice, so such a cell trains
/// alone ([`crate::train::stack::trains_alone`]).
pub fn after_step(model: &StackedModel, regs: &mut [Regularizer], live: &[bool], step: usize) -> Result<Vec<f64>> {
    clip(model, regs, live, &|svc| svc.due(step))
}

/// SVC on each live slice whose schedule says `due`.
fn clip(model: &StackedModel, regs: &mut [Regularizer], live: &[bool], due: &dyn Fn(&Svc) -> bool) -> Result<Vec<f64>> {
    check(model, regs, live)?;
    let mut seconds = vec![0f64; model.k()];
    for (s, reg) in regs.iter_mut().enumerate().filter(|(s, _)| live[*s]) {
        let Some(svc) = reg.svc_mut() else { continue };
        if !due(svc) {
            continue;
        }
        let t0 = Instant::now();
        svc.clip_with(&|name| Ok(model.slice(name, s)?.detach()), &mut |name, t| model.set_slice(name, s, &t))?;
        seconds[s] = t0.elapsed().as_secs_f64();
    }
    Ok(seconds)
}

fn check(model: &StackedModel, regs: &[Regularizer], live: &[bool]) -> Result<()> {
    if regs.len() != model.k() || live.len() != model.k() {
        bail!("{} regularizers and {} live flags for a stack of {}", regs.len(), live.len(), model.k());
    }
    Ok(())
}
