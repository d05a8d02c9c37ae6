//! The regularizers of the paper's table (paper.md §3–§4): plain, weight decay, singular value
//! clipping (SVC) and ℓ1/ℓ∞ norm decay.
//!
//! Each is a transform on candle's [`GradStore`] between `backward()` and the optimizer step
//! ([`Regularizer::apply`]); SVC changes the weights themselves, so it runs after the step
//! ([`Regularizer::after_step`], every `every` steps) and once more when training ends
//! ([`Regularizer::finish`]). [`RegConfig`] is the one description of a regularizer at one
//! strength: `normlab train`'s flags build it, a plan's cells hold it (its JSON is part of a
//! cell's id), checkpoints record it; [`Regularizer`] is the live state built from it for
//! one model.

pub mod norm_decay;
pub mod stacked;
pub mod svc;
pub mod weight_decay;

pub use crate::norms::NormKind;
pub use norm_decay::{NdVariant, NormDecay};

use crate::models::Model;
use crate::optim::GradTerms;
use crate::values::{Fraction, Positive};
use anyhow::{bail, Result};
use candle_core::{backprop::GradStore, Tensor};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// The paper's running-average factor γ of norm decay.
pub const DEFAULT_GAMMA: Fraction = Fraction(0.5);
/// SVC's period in optimizer steps (Sedghi et al. 2019, as the paper runs it).
pub const DEFAULT_SVC_EVERY: NonZeroU32 = NonZeroU32::new(100).expect("100 > 0");

/// Which regularizer a run uses, and its strength. Every value it holds is valid by
/// construction (strengths > 0, γ in [0, 1), a period of at least one step).
///
/// Its JSON shape (`{"kind":"norm_decay","norm":"l1","beta":0.001,...}`) is part of every
/// plan cell's id: a field added later must be skipped when it has its old meaning, or the
/// ids of finished cells change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RegConfig {
    /// No regularization.
    Plain,
    /// Coupled weight decay, g ← g + β·θ on every trainable parameter (torch SGD's
    /// `weight_decay`).
    WeightDecay {
        /// Strength β.
        beta: Positive,
    },
    /// Singular value clipping of every conv at `clip`, every `every` steps and at the end.
    Svc {
        /// The bound C on every singular value of each conv's operator.
        clip: Positive,
        /// Period in optimizer steps (the paper: 100).
        every: NonZeroU32,
    },
    /// Norm decay (Algorithm 1) of the ℓ1 or ℓ∞ norm of every conv and linear layer.
    NormDecay {
        /// ℓ1 or ℓ∞.
        norm: NormKind,
        /// Strength β.
        beta: Positive,
        /// Running-average factor γ (the paper: 0.5).
        gamma: Fraction,
        /// Reference code's update (default) or the poster's pseudo-code.
        variant: NdVariant,
        /// Also decay BatchNorm layers (their eval-mode diagonal map).
        include_bn: bool,
    },
}

impl RegConfig {
    /// The short name used on the command line and in results: `plain`, `wd`, `svc`, `nd-l1`,
    /// `nd-linf`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::WeightDecay { .. } => "wd",
            Self::Svc { .. } => "svc",
            Self::NormDecay { norm: NormKind::L1, .. } => "nd-l1",
            Self::NormDecay { norm: NormKind::Linf, .. } => "nd-linf",
        }
    }

    /// The regularizer's strength (β, or SVC's clip C); `None` for plain.
    pub fn strength(&self) -> Option<f64> {
        match *self {
            Self::Plain => None,
            Self::WeightDecay { beta } | Self::NormDecay { beta, .. } => Some(beta.get()),
            Self::Svc { clip, .. } => Some(clip.get()),
        }
    }

    /// Norm decay with the paper's γ and update at strength `beta` on all conv and linear
    /// layers.
    pub fn norm_decay(norm: NormKind, beta: Positive) -> Self {
        Self::NormDecay { norm, beta, gamma: DEFAULT_GAMMA, variant: NdVariant::Reference, include_bn: false }
    }

    /// A one-line description: `wd β=1e-3`, `svc C=1`, `plain`.
    pub fn describe(&self) -> String {
        match self {
            Self::Plain => "plain".to_string(),
            Self::Svc { clip, .. } => format!("svc C={}", clip.get()),
            _ => format!("{} β={:e}", self.name(), self.strength().unwrap_or_default()),
        }
    }
}

/// Rewrites a regularizer recorded by normlab before 2026-12-07 (`{"reg":"norm-decay",
/// "kind":"l1",...}` in checkpoints and status files) into today's shape, so runs started by
/// an older build still resume. Any other value is returned unchanged.
pub fn upgrade_legacy(value: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(mut map) = value else { return value };
    let Some(serde_json::Value::String(reg)) = map.remove("reg") else { return serde_json::Value::Object(map) };
    if let Some(norm) = map.remove("kind") {
        map.insert("norm".to_string(), norm);
    }
    map.insert("kind".to_string(), reg.replace('-', "_").into());
    serde_json::Value::Object(map)
}

/// The live regularizer of one training run: its configuration plus whatever state it keeps
/// (norm decay's running buffers h, SVC's input sizes).
pub struct Regularizer {
    config: RegConfig,
    state: State,
}

enum State {
    Stateless,
    NormDecay(NormDecay),
    Svc(svc::Svc),
}

impl Regularizer {
    /// Builds the regularizer for `model` (norm decay precomputes its per-layer position-set
    /// indicators on the model's device here, once).
    pub fn new(config: RegConfig, model: &Model) -> Result<Self> {
        let state = match config {
            RegConfig::Plain | RegConfig::WeightDecay { .. } => State::Stateless,
            RegConfig::NormDecay { norm, beta, gamma, variant, include_bn } => {
                State::NormDecay(NormDecay::new(&model.layers, &model.params, norm, beta.get(), gamma.get(), variant, include_bn)?)
            }
            RegConfig::Svc { clip, every } => State::Svc(svc::Svc::new(&model.layers, clip.get(), every.get() as usize)?),
        };
        Ok(Self { config, state })
    }

    /// The configuration this regularizer was built from.
    pub fn config(&self) -> &RegConfig {
        &self.config
    }

    /// Norm decay's live state, when this is norm decay (a stacked model's slices drive it
    /// through [`stacked`]).
    pub fn norm_decay_mut(&mut self) -> Option<&mut NormDecay> {
        match &mut self.state {
            State::NormDecay(nd) => Some(nd),
            _ => None,
        }
    }

    /// SVC's live state, when this is SVC.
    pub fn svc_mut(&mut self) -> Option<&mut svc::Svc> {
        match &mut self.state {
            State::Svc(s) => Some(s),
            _ => None,
        }
    }

    /// Transforms the gradients of one step (between `backward()` and the optimizer step). On
    /// CUDA with normlab's kernels, weight decay's β·θ and norm decay's β·h are returned as
    /// terms for the optimizer's fused update ([`GradTerms`]) instead of written into the
    /// gradients (norm decay still updates its buffers here, on the device); elsewhere the
    /// gradients are rewritten in place and the terms are empty.
    pub fn apply(&mut self, model: &Model, grads: &mut GradStore) -> Result<GradTerms> {
        let fused = model.params.trainable().next().is_some_and(|e| crate::ops::fused::on(e.var.device()));
        match (&self.config, &mut self.state) {
            (RegConfig::WeightDecay { beta }, _) if fused => Ok(weight_decay::terms(&model.params, grads, beta.get())),
            (RegConfig::WeightDecay { beta }, _) => weight_decay::apply(&model.params, grads, beta.get()).map(|_| GradTerms::default()),
            (_, State::NormDecay(nd)) => nd.apply(&model.params, grads, fused),
            _ => Ok(GradTerms::default()),
        }
    }

    /// Runs after optimizer step number `step` (counted from 1 over the whole run): SVC clips
    /// the convs when `step` is a multiple of its period.
    pub fn after_step(&mut self, model: &Model, step: usize) -> Result<()> {
        match &mut self.state {
            State::Svc(s) => s.after_step(&model.params, step),
            _ => Ok(()),
        }
    }

    /// Runs once after the last optimizer step of the run: SVC clips the convs a last time.
    pub fn finish(&mut self, model: &Model) -> Result<()> {
        match &mut self.state {
            State::Svc(s) => s.clip_all(&model.params),
            _ => Ok(()),
        }
    }

    /// The state a checkpoint must keep to continue exactly (norm decay's buffers h, by layer
    /// weight name); empty for the stateless regularizers. Mutable: norm decay first folds
    /// its lazy scaling into the buffers, so a run continues the same way whether or not it
    /// was resumed from this state.
    pub fn state(&mut self) -> Result<Vec<(String, Tensor)>> {
        match &mut self.state {
            State::NormDecay(nd) => nd.state(),
            _ => Ok(Vec::new()),
        }
    }

    /// Restores what [`Regularizer::state`] returned.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        match &mut self.state {
            State::NormDecay(nd) => nd.load_state(tensors),
            _ if tensors.is_empty() => Ok(()),
            _ => bail!("the checkpoint holds regularizer state ({} tensors) but {} keeps none", tensors.len(), self.config.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json_in_the_cell_id_shape() {
        let c = RegConfig::NormDecay { norm: NormKind::Linf, beta: Positive(1e-3), gamma: Fraction(0.5), variant: NdVariant::Paper, include_bn: true };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"kind":"norm_decay","norm":"linf","beta":0.001,"gamma":0.5,"variant":"paper","include_bn":true}"#);
        assert_eq!(serde_json::from_str::<RegConfig>(&text).unwrap(), c);
        assert_eq!(c.name(), "nd-linf");
        assert_eq!(serde_json::to_string(&RegConfig::Plain).unwrap(), r#"{"kind":"plain"}"#);
    }

    #[test]
    fn invalid_values_cannot_be_read() {
        for bad in [
            r#"{"kind":"weight_decay","beta":0}"#,
            r#"{"kind":"weight_decay","beta":-1}"#,
            r#"{"kind":"svc","clip":1,"every":0}"#,
            r#"{"kind":"norm_decay","norm":"l1","beta":0.001,"gamma":1,"variant":"reference","include_bn":false}"#,
            r#"{"kind":"weight_decay","beta":0.1,"extra":1}"#,
        ] {
            assert!(serde_json::from_str::<RegConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_shape_is_upgraded() {
        let old = serde_json::json!({"reg":"norm-decay","kind":"l1","beta":0.01,"gamma":0.5,"variant":"reference","include_bn":false});
        let c: RegConfig = serde_json::from_value(upgrade_legacy(old)).unwrap();
        assert_eq!(c, RegConfig::norm_decay(NormKind::L1, Positive(0.01)));
        let wd: RegConfig = serde_json::from_value(upgrade_legacy(serde_json::json!({"reg":"weight-decay","beta":0.1}))).unwrap();
        assert_eq!(wd, RegConfig::WeightDecay { beta: Positive(0.1) });
        let today = serde_json::json!({"kind":"plain"});
        assert_eq!(upgrade_legacy(today.clone()), today);
    }
}
