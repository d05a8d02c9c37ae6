//! Norm decay (Algorithm 1, paper.md §3): per step and per layer, a subgradient p of the
//! layer's exact ℓ1 or ℓ∞ operator norm, a running buffer h, and g ← g + β·h.
//!
//! p is sign(W) on the entries that attain the norm and 0 elsewhere. Those entries come from
//! the same kernel-position sets as Theorem 1 ([`crate::norms::theorem1::position_sets`]): for
//! ℓ1 the maximising input channel j* with the maximising (row-set, column-set) pair, over all
//! output channels of j*'s group; for ℓ∞ the maximising output channel i* with its pair.
//!
//! Everything stays on the model's device. Per layer, a 0/1 indicator matrix (kernel
//! positions × set pairs) is built once from `position_sets`; per step, |W| summed to a
//! channel × position mass, times the indicator, gives every channel's value on every set
//! pair; the flat argmax is the only number that travels to the host. The active entries lie
//! in one slice of the weight (ℓ∞: output channel i*; ℓ1: input channel j* over its group's
//! outputs), so p = sign(W) × the pair's position indicator is built on that slice only and
//! written into h in place: per step a layer costs |W| reduced once and h scaled once.
//!
//! Variants: [`NdVariant::Reference`] (the published code, the default): h ← γ·h, then the
//! active entries of h ← p; [`NdVariant::Paper`] (the poster's pseudo-code with N = 1):
//! h ← γ·h + (1−γ)·p. Both then add β·h to the gradient.
//!
//! Which conv layers are decayed follows the configuration's [`Coverage`]
//! ([`super::coverage::norm_decay_skip`]): `all` decays every conv and linear layer,
//! `reference` skips grouped convs and convs whose input no output pixel covers with the
//! whole kernel, as the reference code does.
//!
//! BatchNorm (with `include_bn`): its eval-mode map is diagonal with entries γ_c/√(v_c+ε), so
//! ℓ1 = ℓ∞ = max_c |γ_c|/√(v_c+ε); p is that entry's subgradient with respect to γ,
//! sign(γ_c*)/√(v_c*+ε) at c*, 0 elsewhere (the running variance is held constant).

use super::coverage::{self, Coverage};
use crate::models::{layers::BN_EPS, LayerKind, LayerSpec, ParamStore};
use crate::norms::{position_sets, NormKind};
use crate::ops;
use crate::ops::fused::NdShape;
use crate::optim::GradTerms;
use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// How the running buffer h is updated (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NdVariant {
    /// h ← γ·h, then the active entries of h ← p (the reference code; the published β grid).
    #[default]
    Reference,
    /// h ← γ·h + (1−γ)·p (the poster's Algorithm 1 with β/N, N = 1).
    Paper,
}

/// Finds, on the device, where a conv or linear layer's ℓ1 or ℓ∞ norm is attained, and
/// updates norm decay's buffer on the entries that attain it.
pub struct DeviceMaximiser {
    kind: NormKind,
    out_c: usize,
    cin_g: usize,
    groups: usize,
    khw: usize,
    /// (row-set, column-set) pairs, in Theorem 1's order (row-sets outer).
    pairs: Vec<(Vec<usize>, Vec<usize>)>,
    /// khw × pairs, 1 where the pair contains the kernel position (f32).
    indicator: Tensor,
}

impl DeviceMaximiser {
    /// Precomputes the indicator of `spec`'s position-set pairs for `kind` on `device`.
    pub fn new(spec: &LayerSpec, kind: NormKind, device: &Device) -> Result<Self> {
        if !spec.is_matrix() {
            bail!("{} is a BatchNorm layer, not a conv or linear one", spec.name);
        }
        let (row_sets, col_sets) = position_sets(spec, kind);
        let mut pairs = Vec::with_capacity(row_sets.len() * col_sets.len());
        for r in &row_sets {
            for c in &col_sets {
                pairs.push((r.clone(), c.clone()));
            }
        }
        let khw = spec.kh * spec.kw;
        let mut ind = vec![0f32; khw * pairs.len()];
        for (s, (rows, cols)) in pairs.iter().enumerate() {
            for &k in rows {
                for &t in cols {
                    ind[(k * spec.kw + t) * pairs.len() + s] = 1.0;
                }
            }
        }
        let indicator = Tensor::from_vec(ind, (khw, pairs.len()), device)?;
        Ok(Self { kind, out_c: spec.out_c, cin_g: spec.in_c / spec.groups, groups: spec.groups, khw, pairs, indicator })
    }

    /// The maximising channel (ℓ1: input channel j* over all groups; ℓ∞: output channel i*)
    /// and set-pair index, from the weight on the device. Ties go to the first channel and
    /// pair, as in Theorem 1. Only this index is copied to the host.
    pub fn argmax(&self, weight: &Tensor) -> Result<(usize, usize)> {
        Ok(self.split(self.flat_argmax(weight)?.to_scalar::<u32>()?))
    }

    /// [`Self::argmax`] left on the device as one u32 (channel × pairs + pair), so a step can
    /// copy every layer's index to the host at once: on a GPU each copy waits for the device.
    fn flat_argmax(&self, weight: &Tensor) -> Result<Tensor> {
        let mass = match self.kind {
            NormKind::Linf => ops::abs_sum_mid(weight, (self.out_c, self.cin_g, self.khw))?,
            NormKind::L1 => {
                let cout_g = self.out_c / self.groups;
                ops::abs_sum_mid(weight, (self.groups, cout_g, self.cin_g * self.khw))?.reshape((self.groups * self.cin_g, self.khw))?
            }
        };
        let values = mass.to_dtype(DType::F32)?.matmul(&self.indicator)?;
        Ok(values.flatten_all()?.argmax(0)?)
    }

    /// (channel, pair) of a flat index from [`Self::flat_argmax`].
    fn split(&self, flat: u32) -> (usize, usize) {
        let flat = flat as usize;
        (flat / self.pairs.len(), flat % self.pairs.len())
    }

    /// The kernel rows and columns of set pair `s`.
    pub fn pair(&self, s: usize) -> (&[usize], &[usize]) {
        (&self.pairs[s].0, &self.pairs[s].1)
    }

    /// The weight's shape seen as out_c × in_c/groups × kernel positions.
    fn shape3(&self) -> (usize, usize, usize) {
        (self.out_c, self.cin_g, self.khw)
    }

    /// Where `channel`'s active entries lie in a tensor of [`Self::shape3`]: a view narrowed
    /// to the active output channels, and the dimension and index within it whose one-wide
    /// slice holds them (ℓ∞: output channel i*; ℓ1: input j* over the outputs of its group).
    fn view(&self, t3: &Tensor, channel: usize) -> Result<(Tensor, usize, usize)> {
        Ok(match self.kind {
            NormKind::Linf => (t3.clone(), 0, channel),
            NormKind::L1 => {
                let cout_g = self.out_c / self.groups;
                (t3.narrow(0, (channel / self.cin_g) * cout_g, cout_g)?, 1, channel % self.cin_g)
            }
        })
    }

    /// The entries of `weight` in `channel`'s slice (ℓ∞: 1 × cin_g × khw; ℓ1: cout_g × 1 ×
    /// khw), of which pair `s`'s positions ([`Self::positions`]) attain the norm.
    pub fn slice(&self, weight: &Tensor, channel: usize) -> Result<Tensor> {
        let (v, dim, index) = self.view(&weight.reshape(self.shape3())?, channel)?;
        Ok(v.narrow(dim, index, 1)?)
    }

    /// The 0/1 indicator (1 × 1 × khw, `dtype`) of pair `s`'s kernel positions.
    pub fn positions(&self, s: usize, dtype: DType) -> Result<Tensor> {
        Ok(self.indicator.narrow(1, s, 1)?.reshape((1, 1, self.khw))?.to_dtype(dtype)?)
    }

    /// One step of the running buffer for the maximiser (`channel`, `s`) of `weight`, with
    /// the buffer stored as `scale · h_hat` and `scale` already multiplied by γ (so the decay
    /// of every entry cost nothing): sets the active entries of h by `variant` (reference:
    /// p; paper: γ·h + (1−γ)·p), where p = sign(W) on the active entries, by rewriting that
    /// slice of `h_hat` (1/in_c or 1/out_c of the layer) in place on the device.
    #[allow(clippy::too_many_arguments)]
    fn step_buffer(&self, h_hat: &Tensor, scale: f64, weight: &Tensor, channel: usize, s: usize, gamma: f64, variant: NdVariant) -> Result<()> {
        let (view, dim, index) = self.view(&h_hat.reshape(self.shape3())?, channel)?;
        let old = view.narrow(dim, index, 1)?;
        let pos = self.positions(s, weight.dtype())?;
        let p = self.slice(weight, channel)?.sign()?.broadcast_mul(&pos)?;
        let new = match variant {
            NdVariant::Reference => (old.broadcast_mul(&pos.affine(-1.0, 1.0)?)? + (p / scale)?)?,
            NdVariant::Paper => (old + (p * ((1.0 - gamma) / scale))?)?,
        };
        view.slice_set(&new.contiguous()?, dim, index)?;
        Ok(())
    }
}

impl DeviceMaximiser {
    /// The layer's shape as the norm-decay kernel sees it, for `variant`.
    pub fn nd_shape(&self, variant: NdVariant) -> NdShape {
        NdShape { linf: self.kind == NormKind::Linf, paper: variant == NdVariant::Paper, out_c: self.out_c, cin_g: self.cin_g, groups: self.groups, khw: self.khw, pairs: self.pairs.len() }
    }

    /// [`Self::step_buffer`] for the maximiser at the device index `flat` (from
    /// [`Self::flat_argmax`], never read back): one kernel on CUDA.
    #[allow(clippy::too_many_arguments)]
    fn step_buffer_on_device(&self, h_hat: &Tensor, scale: f64, weight: &Tensor, flat: &Tensor, gamma: f64, variant: NdVariant) -> Result<()> {
        let (inv_scale, paper_coef) = nd_coefficients(scale, gamma);
        nd_update(weight, h_hat, &self.indicator, flat, &self.nd_shape(variant), inv_scale, paper_coef)
    }
}

/// The f32 coefficients the CPU path rounds its buffer update's factors to: 1/scale (for
/// p / scale) and (1−γ)/scale (the paper variant).
fn nd_coefficients(scale: f64, gamma: f64) -> (f32, f32) {
    ((1.0 / scale) as f32, ((1.0 - gamma) / scale) as f32)
}

#[cfg(feature = "cuda")]
fn nd_update(weight: &Tensor, h_hat: &Tensor, indicator: &Tensor, flat: &Tensor, shape: &NdShape, inv_scale: f32, paper_coef: f32) -> Result<()> {
    Ok(ops::fused_cuda::nd_update(weight, h_hat, indicator, flat, shape, inv_scale, paper_coef)?)
}

#[cfg(not(feature = "cuda"))]
fn nd_update(_: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, _: &NdShape, _: f32, _: f32) -> Result<()> {
    bail!("norm decay's device update needs a build with the `cuda` feature")
}

/// What one decayed layer needs to find its active entries.
enum Target {
    Matrix(DeviceMaximiser),
    Bn { running_var: String, channel_ids: Tensor },
}

struct Layer {
    name: String,
    target: Target,
    /// The running buffer is h = `scale` · `h_hat` (the weight's shape), starting at 0: the
    /// per-step decay h ← γ·h only multiplies `scale`, instead of a pass over the layer.
    h_hat: Tensor,
    scale: f64,
}

/// Below this, a layer's `scale` is folded into `h_hat` (one pass) before it underflows
/// f32's range (γ = 0.5 reaches it after about 66 steps).
const MIN_SCALE: f64 = 1e-20;

impl Layer {
    /// The buffer h itself.
    fn h(&self) -> Result<Tensor> {
        Ok((&self.h_hat * self.scale)?)
    }
}

/// One step of a BatchNorm layer's buffer (kept unscaled: one value per channel), with `mask`
/// 1 at the maximising channel: p = sign(γ)·scale there, h ← decayed h with p (reference) or
/// γh + (1−γ)p (paper).
fn bn_step(layer: &mut Layer, w: &Tensor, scale: &Tensor, mask: &Tensor, gamma: f64, variant: NdVariant) -> Result<()> {
    let p = ((w.sign()? * scale)? * mask)?;
    let decayed = (layer.h()? * gamma)?;
    layer.h_hat = match variant {
        NdVariant::Reference => ((&decayed - (&decayed * mask)?)? + p)?,
        NdVariant::Paper => (decayed + (p * (1.0 - gamma))?)?,
    };
    layer.scale = 1.0;
    Ok(())
}

/// Folds a buffer's `scale` into `h_hat` (one pass; scale 1 afterwards).
fn fold(h_hat: &mut Tensor, scale: &mut f64) -> Result<()> {
    if *scale != 1.0 {
        *h_hat = (&*h_hat * *scale)?;
        *scale = 1.0;
    }
    Ok(())
}

/// Every decayed layer's maximiser, still on the device ([`NormDecay::find`]).
pub struct Maximisers {
    flats: Vec<Tensor>,
    bn_scales: Vec<Option<Tensor>>,
}

impl Maximisers {
    /// The layers' maximiser indices as one u32 tensor on the device (so a step copies them to
    /// the host at once: on a GPU each copy waits for the device); `None` without layers.
    pub fn indices(&self) -> Result<Option<Tensor>> {
        if self.flats.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tensor::stack(&self.flats, 0)?))
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.flats.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.flats.is_empty()
    }
}

/// Norm decay's live state for one model: one running buffer per decayed layer.
pub struct NormDecay {
    beta: f64,
    gamma: f64,
    variant: NdVariant,
    layers: Vec<Layer>,
}

impl NormDecay {
    /// Prepares norm decay of the conv and linear layers among `specs` that `coverage` decays
    /// (and BatchNorm with `include_bn`), whose tensors are in `params`, with h = 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        specs: &[LayerSpec],
        params: &ParamStore,
        kind: NormKind,
        beta: f64,
        gamma: f64,
        variant: NdVariant,
        include_bn: bool,
        coverage: Coverage,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        for spec in specs {
            let weight = params.get(&spec.name)?;
            let target = match spec.kind {
                LayerKind::Conv | LayerKind::Linear if coverage::norm_decay_skip(spec, coverage).is_some() => continue,
                LayerKind::Conv | LayerKind::Linear => Target::Matrix(DeviceMaximiser::new(spec, kind, weight.device())?),
                LayerKind::Bn if include_bn => Target::Bn {
                    running_var: spec.tensor_name("running_var"),
                    channel_ids: Tensor::arange(0u32, spec.out_c as u32, weight.device())?,
                },
                LayerKind::Bn => continue,
            };
            layers.push(Layer { name: spec.name.clone(), target, h_hat: weight.zeros_like()?, scale: 1.0 });
        }
        Ok(Self { beta, gamma, variant, layers })
    }

    /// Updates every layer's h from the current weights and adds β·h to its gradient. With
    /// `fused` (CUDA, normlab's kernels) the maximisers stay on the device, each matrix layer's
    /// buffer is updated by one kernel, and β·h is returned as a term for the optimizer's
    /// fused update instead of added here ([`Self::apply_on_device`]).
    pub fn apply(&mut self, params: &ParamStore, grads: &mut GradStore, fused: bool) -> Result<GradTerms> {
        let vars = self
            .layers
            .iter()
            .map(|l| params.var(&l.name).with_context(|| format!("norm decay: no parameter {}", l.name)))
            .collect::<Result<Vec<_>>>()?;
        let weights: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().detach()).collect();
        let found = self.find(&weights, &|name| Ok(params.get(name)?.detach()))?;
        if fused {
            return self.apply_on_device(grads, &vars, &weights, found);
        }
        // Every layer's maximiser copied to the host in one transfer: on a GPU one copy per
        // layer was one wait per layer.
        let flats = match found.indices()? {
            Some(t) => t.to_vec1::<u32>()?,
            None => Vec::new(),
        };
        self.step(&weights, found, &flats)?;
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let g = self.decayed(i, g)?;
            grads.insert(var.as_tensor(), g);
        }
        Ok(GradTerms::default())
    }

    /// [`Self::apply`] with nothing read back to the host: each layer's maximiser index (from
    /// [`Self::find`]) stays a u32 on the device, where one kernel per matrix layer updates its buffer from it
    /// ([`crate::ops::fused_cuda::nd_update`], CPU twin [`crate::ops::fused::nd_update_cpu`]);
    /// BatchNorm layers compare the index on the device. Matrix layers' β·h become terms for
    /// the optimizer; BatchNorm layers' are added to their gradients here.
    fn apply_on_device(&mut self, grads: &mut GradStore, vars: &[&candle_core::Var], weights: &[Tensor], found: Maximisers) -> Result<GradTerms> {
        let mut terms = GradTerms::default();
        let found = found.flats.iter().zip(found.bn_scales);
        for (((layer, var), w), (flat, bn_scale)) in self.layers.iter_mut().zip(vars).zip(weights).zip(found) {
            match (&layer.target, bn_scale) {
                (Target::Matrix(m), _) => {
                    layer.scale *= self.gamma;
                    if layer.scale < MIN_SCALE {
                        fold(&mut layer.h_hat, &mut layer.scale)?;
                    }
                    m.step_buffer_on_device(&layer.h_hat, layer.scale, w, flat, self.gamma, self.variant)?;
                    if grads.get(var.as_tensor()).is_some() {
                        terms.insert(&layer.name, self.beta * layer.scale, layer.h_hat.clone());
                    }
                }
                (Target::Bn { channel_ids, .. }, scale) => {
                    let scale = scale.context("norm decay: a BatchNorm layer without its scale")?;
                    let mask = channel_ids.broadcast_eq(flat)?.to_dtype(w.dtype())?;
                    bn_step(layer, w, &scale, &mask, self.gamma, self.variant)?;
                    if let Some(g) = grads.get(var.as_tensor()) {
                        let g = ops::axpy(g, self.beta * layer.scale, &layer.h_hat)?;
                        grads.insert(var.as_tensor(), g);
                    }
                }
            }
        }
        Ok(terms)
    }

    /// The weight names of the decayed layers, in the order [`NormDecay::find`] and
    /// [`NormDecay::step`] take their weights.
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|l| l.name.as_str())
    }

    /// Every layer's maximiser, left on the device: `weights` are the layers' weights (in
    /// [`NormDecay::layer_names`] order, detached), `tensor(name)` any other tensor of the
    /// model (a BatchNorm layer's running variance).
    pub fn find(&self, weights: &[Tensor], tensor: &dyn Fn(&str) -> Result<Tensor>) -> Result<Maximisers> {
        let mut found = Maximisers { flats: Vec::with_capacity(self.layers.len()), bn_scales: Vec::with_capacity(self.layers.len()) };
        for (layer, w) in self.layers.iter().zip(weights) {
            match &layer.target {
                Target::Matrix(m) => {
                    found.flats.push(m.flat_argmax(w)?);
                    found.bn_scales.push(None);
                }
                Target::Bn { running_var, .. } => {
                    let scale = (tensor(running_var)? + BN_EPS)?.sqrt()?.recip()?;
                    found.flats.push((w.abs()? * &scale)?.argmax(0)?);
                    found.bn_scales.push(Some(scale));
                }
            }
        }
        Ok(found)
    }

    /// Updates every layer's h from the maximisers `find` found (`flats`: their indices, copied
    /// to the host) on the same `weights`.
    pub fn step(&mut self, weights: &[Tensor], found: Maximisers, flats: &[u32]) -> Result<()> {
        if flats.len() != self.layers.len() || weights.len() != self.layers.len() {
            bail!("norm decay: {} maximisers and {} weights for {} layers", flats.len(), weights.len(), self.layers.len());
        }
        for (((layer, w), &flat), bn_scale) in self.layers.iter_mut().zip(weights).zip(flats).zip(found.bn_scales) {
            match (&layer.target, bn_scale) {
                (Target::Matrix(m), _) => {
                    let (c, s) = m.split(flat);
                    layer.scale *= self.gamma;
                    if layer.scale < MIN_SCALE {
                        fold(&mut layer.h_hat, &mut layer.scale)?;
                    }
                    m.step_buffer(&layer.h_hat, layer.scale, w, c, s, self.gamma, self.variant)?;
                }
                (Target::Bn { channel_ids, .. }, scale) => {
                    let scale = scale.context("norm decay: a BatchNorm layer without its scale")?;
                    let mask = channel_ids.eq(flat)?.to_dtype(w.dtype())?;
                    bn_step(layer, w, &scale, &mask, self.gamma, self.variant)?;
                }
            }
        }
        Ok(())
    }

    /// Layer `i`'s gradient `g` (in [`NormDecay::layer_names`] order) plus β·h.
    pub fn decayed(&self, i: usize, g: &Tensor) -> Result<Tensor> {
        let layer = self.layers.get(i).with_context(|| format!("norm decay has no layer {i}"))?;
        Ok(ops::axpy(g, self.beta * layer.scale, &layer.h_hat)?)
    }

    /// The buffers h by layer weight name (for checkpoints).
    /// Folds each layer's scale into its buffer first (scale 1 afterwards, as after
    /// [`NormDecay::load_state`]), so an uninterrupted run and one resumed from this state
    /// compute the same numbers from here on.
    pub fn state(&mut self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.layers.len());
        for l in &mut self.layers {
            fold(&mut l.h_hat, &mut l.scale)?;
            // A copy: the buffer is rewritten in place by later steps.
            out.push((l.name.clone(), l.h_hat.copy()?));
        }
        Ok(out)
    }

    /// Restores buffers saved by [`NormDecay::state`]; every layer must be present with the
    /// right shape.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let mut map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        for layer in &mut self.layers {
            let Some(t) = map.remove(&layer.name) else {
                bail!("the checkpoint has no norm-decay buffer for layer {} (saved with other regularizer settings?)", layer.name);
            };
            if t.dims() != layer.h_hat.dims() {
                bail!("norm-decay buffer of {}: shape {:?} in the checkpoint, {:?} expected", layer.name, t.dims(), layer.h_hat.dims());
            }
            layer.h_hat = t.to_dtype(layer.h_hat.dtype())?.to_device(layer.h_hat.device())?;
            layer.scale = 1.0;
        }
        if let Some(extra) = map.keys().next() {
            bail!("the checkpoint has a norm-decay buffer for {extra}, which this run does not decay (--nd-bn differs?)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Arch, Model, Role};
    use crate::norms::theorem1::conv_norm;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[allow(clippy::too_many_arguments)]
    fn spec(kind: LayerKind, in_c: usize, out_c: usize, hw: usize, k: usize, stride: usize, padding: usize, groups: usize) -> LayerSpec {
        LayerSpec { name: "t.weight".into(), kind, in_c, in_h: hw, in_w: hw, out_c, kh: k, kw: k, stride, padding, groups, bias: false }
    }

    fn random_weight(spec: &LayerSpec, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = spec.weight_shape().iter().product();
        (0..n).map(|_| rng.gen_range(-1f32..1f32)).collect()
    }

    #[test]
    fn device_argmax_matches_theorem1() {
        let cases = [
            spec(LayerKind::Conv, 4, 6, 8, 3, 1, 1, 1),
            spec(LayerKind::Conv, 4, 6, 8, 3, 2, 1, 1),
            spec(LayerKind::Conv, 8, 8, 8, 3, 2, 1, 4),
            spec(LayerKind::Conv, 8, 16, 5, 3, 1, 1, 2),
            spec(LayerKind::Conv, 3, 5, 2, 3, 1, 1, 1),
            spec(LayerKind::Conv, 6, 4, 1, 3, 1, 1, 1),
            spec(LayerKind::Conv, 4, 8, 4, 1, 2, 0, 1),
            spec(LayerKind::Linear, 7, 5, 1, 1, 1, 0, 1),
        ];
        for (i, s) in cases.iter().enumerate() {
            for kind in [NormKind::L1, NormKind::Linf] {
                for seed in 0..5u64 {
                    let w = random_weight(s, seed * 31 + i as u64);
                    let t = Tensor::from_vec(w.clone(), s.weight_shape(), &Device::Cpu).unwrap();
                    let dm = DeviceMaximiser::new(s, kind, &Device::Cpu).unwrap();
                    let (c, p) = dm.argmax(&t).unwrap();
                    let host = conv_norm(s, &w.iter().map(|&x| x as f64).collect::<Vec<_>>(), kind);
                    let (rows, cols) = dm.pair(p);
                    assert_eq!((c, rows, cols), (host.channel, &host.rows[..], &host.cols[..]), "case {i} {kind:?} seed {seed}");
                    // The active entries' |W| mass is the norm.
                    let pos = dm.positions(p, DType::F32).unwrap();
                    let mass = dm.slice(&t, c).unwrap().abs().unwrap().broadcast_mul(&pos).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
                    assert!((mass - host.value).abs() < 1e-4 * host.value.max(1.0), "case {i} {kind:?}: {mass} vs {}", host.value);
                }
            }
        }
    }

    /// A store holding one 2×1×1×2 conv weight `c.weight`.
    fn tiny_store(w: &[f32]) -> (ParamStore, candle_core::Var) {
        let mut store = ParamStore::new();
        let v = store.insert("c.weight", Tensor::from_vec(w.to_vec(), (2, 1, 1, 2), &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        (store, v)
    }

    #[test]
    fn hand_computed_linf_and_l1_steps() {
        // Conv 1→2 channels, kernel 1×2, on a 1×2 input with padding 0, stride 1: output 1×1.
        // The matrix is 2×2: row i = (W[i,0,0,0], W[i,0,0,1]); a single input channel.
        let s = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 1, in_h: 1, in_w: 2, out_c: 2, kh: 1, kw: 2, stride: 1, padding: 0, groups: 1, bias: false };
        let w = [1.0f32, -2.0, -0.5, 0.25];
        for (kind, want_p) in [
            // ℓ∞: rows sums 3 and 0.75 → row 0, p = sign = (1, −1, 0, 0).
            (NormKind::Linf, [1.0f32, -1.0, 0.0, 0.0]),
            // ℓ1: one input channel; column (input pixel) 0 sees kernel col 0: |1|+|−0.5| = 1.5;
            // pixel 1 sees col 1: 2+0.25 = 2.25 → p on kernel column 1 of both outputs.
            (NormKind::L1, [0.0, -1.0, 0.0, 1.0]),
        ] {
            for variant in [NdVariant::Reference, NdVariant::Paper] {
                let (store, v) = tiny_store(&w);
                let mut nd = NormDecay::new(std::slice::from_ref(&s), &store, kind, 0.1, 0.5, variant, false, Coverage::All).unwrap();
                // Two steps with gradient of L = Σ W (g = 1 everywhere).
                let mut got = Vec::new();
                for _ in 0..2 {
                    let loss = v.as_tensor().sum_all().unwrap();
                    let mut grads = loss.backward().unwrap();
                    nd.apply(&store, &mut grads, false).unwrap();
                    got.push(grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
                // Reference: h1 = p, h2 = γ·h1 off the mask, p on it = p (same mask): g = 1 + β·p both steps.
                // Paper: h1 = (1−γ)p = 0.5p; h2 = 0.25p + 0.5p = 0.75p.
                let (h1, h2) = match variant {
                    NdVariant::Reference => (1.0, 1.0),
                    NdVariant::Paper => (0.5, 0.75),
                };
                for (step, h) in [(0, h1), (1, h2)] {
                    for (g, p) in got[step].iter().zip(want_p) {
                        assert!((g - (1.0 + 0.1 * h * p)).abs() < 1e-6, "{kind:?} {variant:?} step {step}: {:?}", got[step]);
                    }
                }
            }
        }
    }

    #[test]
    fn batch_norm_layer_beside_a_conv_gets_its_hand_computed_step() {
        // A conv (as in hand_computed_linf_and_l1_steps) and a BatchNorm with γ = (0.5, −2, 1),
        // running variance (1, 3, 15): |γ_c|/√(v_c+ε) ≈ (0.5, 1.1547, 0.25) → c* = 1, p =
        // sign(−2)/√3 at channel 1. Both layers' maximisers travel to the host together.
        let conv = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 1, in_h: 1, in_w: 2, out_c: 2, kh: 1, kw: 2, stride: 1, padding: 0, groups: 1, bias: false };
        let bn = LayerSpec { name: "bn.weight".into(), kind: LayerKind::Bn, in_c: 3, in_h: 1, in_w: 1, out_c: 3, kh: 1, kw: 1, stride: 1, padding: 0, groups: 3, bias: true };
        let (mut store, c) = tiny_store(&[1.0, -2.0, -0.5, 0.25]);
        let g = store.insert("bn.weight", Tensor::new(&[0.5f32, -2.0, 1.0], &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        store.insert("bn.running_var", Tensor::new(&[1.0f32, 3.0, 15.0], &Device::Cpu).unwrap(), Role::Buffer).unwrap();
        let mut nd = NormDecay::new(&[conv, bn], &store, NormKind::Linf, 0.1, 0.5, NdVariant::Reference, true, Coverage::All).unwrap();
        let loss = (c.as_tensor().sum_all().unwrap() + g.as_tensor().sum_all().unwrap()).unwrap();
        let mut grads = loss.backward().unwrap();
        nd.apply(&store, &mut grads, false).unwrap();
        let got = |v: &candle_core::Var| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let p1 = -1.0 / (3.0f32 + BN_EPS as f32).sqrt();
        for (a, b) in got(&g).iter().zip([1.0, 1.0 + 0.1 * p1, 1.0]) {
            assert!((a - b).abs() < 1e-6, "BatchNorm gradient {:?}", got(&g));
        }
        // The conv's ℓ∞ maximiser is row 0 (|1|+|−2| = 3): p = (1, −1, 0, 0).
        for (a, b) in got(&c).iter().zip([1.1, 0.9, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-6, "conv gradient {:?}", got(&c));
        }
    }

    #[test]
    fn reference_variant_decays_entries_that_left_the_mask() {
        let s = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 1, in_h: 1, in_w: 2, out_c: 2, kh: 1, kw: 2, stride: 1, padding: 0, groups: 1, bias: false };
        let (store, v) = tiny_store(&[1.0, -2.0, -0.5, 0.25]);
        let mut nd = NormDecay::new(std::slice::from_ref(&s), &store, NormKind::Linf, 1.0, 0.5, NdVariant::Reference, false, Coverage::All).unwrap();
        let loss = v.as_tensor().sum_all().unwrap();
        let mut grads = loss.backward().unwrap();
        nd.apply(&store, &mut grads, false).unwrap();
        // Now make row 1 the maximiser: h ← 0.5·h (row 0: 0.5, −0.5), row 1 ← sign = (−1, 1).
        v.set(&Tensor::from_vec(vec![0.1f32, 0.1, -3.0, 3.0], (2, 1, 1, 2), &Device::Cpu).unwrap()).unwrap();
        let mut grads = loss.backward().unwrap();
        nd.apply(&store, &mut grads, false).unwrap();
        assert_eq!(nd.layers[0].h().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.5, -0.5, -1.0, 1.0]);
    }

    #[test]
    fn state_round_trips_and_covers_every_matrix_layer() {
        let model = Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap();
        let mut nd = NormDecay::new(&model.layers, &model.params, NormKind::L1, 1e-3, 0.5, NdVariant::Reference, false, Coverage::All).unwrap();
        let matrices = model.layers.iter().filter(|l| l.is_matrix()).count();
        assert_eq!(nd.state().unwrap().len(), matrices);
        let mut with_bn = NormDecay::new(&model.layers, &model.params, NormKind::L1, 1e-3, 0.5, NdVariant::Reference, true, Coverage::All).unwrap();
        assert_eq!(with_bn.state().unwrap().len(), model.layers.len());
        let mut again = NormDecay::new(&model.layers, &model.params, NormKind::L1, 1e-3, 0.5, NdVariant::Reference, false, Coverage::All).unwrap();
        again.load_state(nd.state().unwrap()).unwrap();
        assert!(again.load_state(with_bn.state().unwrap()).is_err());
    }

    #[test]
    fn reference_coverage_leaves_grouped_and_uncovered_convs_alone() {
        // Four layers: a 3×3 conv on 4×4 (decayed), the same on 2×2 (no output pixel sees the
        // whole kernel: skipped), a grouped conv (skipped) and a linear layer (decayed).
        let conv = |name: &str, hw: usize, groups: usize| LayerSpec {
            name: format!("{name}.weight"),
            kind: LayerKind::Conv,
            in_c: 2,
            in_h: hw,
            in_w: hw,
            out_c: 2,
            kh: 3,
            kw: 3,
            stride: 1,
            padding: 1,
            groups,
            bias: false,
        };
        let specs = [conv("fits", 4, 1), conv("small", 2, 1), conv("grouped", 4, 2), LayerSpec::linear("fc", 3, 2)];
        let mut store = ParamStore::new();
        let mut vars = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let w = random_weight(s, i as u64);
            vars.push(store.insert(&s.name, Tensor::from_vec(w, s.weight_shape(), &Device::Cpu).unwrap(), Role::Trainable).unwrap());
        }
        for (coverage, decayed) in [(Coverage::All, [true, true, true, true]), (Coverage::Reference, [true, false, false, true])] {
            let mut nd = NormDecay::new(&specs, &store, NormKind::L1, 0.1, 0.5, NdVariant::Reference, false, coverage).unwrap();
            let names: Vec<&str> = nd.layer_names().collect();
            let want: Vec<&str> = specs.iter().zip(decayed).filter(|(_, d)| *d).map(|(s, _)| s.name.as_str()).collect();
            assert_eq!(names, want, "{coverage:?}");
            let loss = vars.iter().map(|v| v.as_tensor().sum_all().unwrap()).reduce(|a, b| (a + b).unwrap()).unwrap();
            let mut grads = loss.backward().unwrap();
            nd.apply(&store, &mut grads, false).unwrap();
            for ((v, s), d) in vars.iter().zip(&specs).zip(decayed) {
                let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(g.iter().any(|&x| x != 1.0), d, "{coverage:?} {}: gradient {g:?}", s.name);
            }
        }
    }

    /// The norm-decay kernel's arithmetic (CPU twin, which reads the maximiser as the flat
    /// index the device keeps) against the CPU path's buffer step, for ℓ1 and ℓ∞, both
    /// variants, grouped, strided and linear layers: the same values.
    #[test]
    fn device_update_twin_matches_the_buffer_step() {
        let cases = [spec(LayerKind::Conv, 4, 6, 8, 3, 1, 1, 1), spec(LayerKind::Conv, 8, 8, 8, 3, 2, 1, 4), spec(LayerKind::Conv, 8, 16, 5, 3, 1, 1, 2), spec(LayerKind::Linear, 7, 5, 1, 1, 1, 0, 1)];
        for (i, s) in cases.iter().enumerate() {
            for kind in [NormKind::L1, NormKind::Linf] {
                for variant in [NdVariant::Reference, NdVariant::Paper] {
                    let w = random_weight(s, 40 + i as u64);
                    let h = random_weight(s, 80 + i as u64);
                    let wt = Tensor::from_vec(w.clone(), s.weight_shape(), &Device::Cpu).unwrap();
                    let dm = DeviceMaximiser::new(s, kind, &Device::Cpu).unwrap();
                    let flat = dm.flat_argmax(&wt).unwrap().to_scalar::<u32>().unwrap();
                    let (scale, gamma) = (0.3, 0.5);
                    let h_cpu = Tensor::from_vec(h.clone(), s.weight_shape(), &Device::Cpu).unwrap();
                    let (c, p) = dm.split(flat);
                    dm.step_buffer(&h_cpu, scale, &wt, c, p, gamma, variant).unwrap();
                    let mut h_twin = h.clone();
                    let ind = dm.indicator.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let (inv, paper) = nd_coefficients(scale, gamma);
                    crate::ops::fused::nd_update_cpu(&w, &mut h_twin, &ind, flat, &dm.nd_shape(variant), inv, paper);
                    let want = h_cpu.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert_eq!(h_twin, want, "case {i} {kind:?} {variant:?}");
                    assert_ne!(h_twin, h, "case {i}: the step changed nothing");
                }
            }
        }
    }
}
