//! The regularizers of the paper's table (paper.md §3–§4): plain, weight decay, singular value
//! clipping (SVC) and ℓ1/ℓ∞ norm decay.
//!
//! Each is a transform on candle's [`GradStore`] between `backward()` and the optimizer step
//! ([`Regularizer::apply`]); SVC changes the weights themselves, so it runs after the step
//! ([`Regularizer::after_step`], every `every` steps) and once more when training ends
//! ([`Regularizer::finish`]). [`RegConfig`] is the serializable description (what plans and
//! checkpoints store); [`Regularizer`] is the live state built from it for one model.

pub mod norm_decay;
pub mod svc;
pub mod weight_decay;

pub use crate::norms::NormKind;
pub use norm_decay::{NdVariant, NormDecay};

use crate::models::Model;
use crate::optim::GradTerms;
use anyhow::{bail, Result};
use candle_core::{backprop::GradStore, Tensor};
use serde::{Deserialize, Serialize};

/// The paper's running-average factor γ of norm decay.
pub const DEFAULT_GAMMA: f64 = 0.5;
/// SVC's period in optimizer steps (Sedghi et al. 2019, as the paper runs it).
pub const DEFAULT_SVC_EVERY: usize = 100;

/// Which regularizer a run uses, and its strength.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reg", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RegConfig {
    /// No regularization.
    Plain,
    /// Coupled weight decay, g ← g + β·θ on every trainable parameter (torch SGD's
    /// `weight_decay`).
    WeightDecay {
        /// Strength β > 0.
        beta: f64,
    },
    /// Singular value clipping of every conv at `clip`, every `every` steps and at the end.
    Svc {
        /// The bound C > 0 on every singular value of each conv's operator.
        clip: f64,
        /// Period in optimizer steps (the paper: 100).
        every: usize,
    },
    /// Norm decay (Algorithm 1) of the ℓ1 or ℓ∞ norm of every conv and linear layer.
    NormDecay {
        /// ℓ1 or ℓ∞.
        kind: NormKind,
        /// Strength β > 0.
        beta: f64,
        /// Running-average factor γ ∈ [0, 1) (the paper: 0.5).
        gamma: f64,
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
            Self::NormDecay { kind: NormKind::L1, .. } => "nd-l1",
            Self::NormDecay { kind: NormKind::Linf, .. } => "nd-linf",
        }
    }

    /// The regularizer's strength (β, or SVC's clip C); `None` for plain.
    pub fn strength(&self) -> Option<f64> {
        match *self {
            Self::Plain => None,
            Self::WeightDecay { beta } | Self::NormDecay { beta, .. } => Some(beta),
            Self::Svc { clip, .. } => Some(clip),
        }
    }

    /// Checks the hyper-parameters; the error names the field and the valid range.
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &str, v: f64| -> Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("{} needs {what} > 0 (a finite number), got {v}", self.name());
            }
            Ok(())
        };
        match *self {
            Self::Plain => Ok(()),
            Self::WeightDecay { beta } => positive("--beta", beta),
            Self::Svc { clip, every } => {
                positive("--clip", clip)?;
                if every == 0 {
                    bail!("svc needs a period of at least 1 step, got 0");
                }
                Ok(())
            }
            Self::NormDecay { beta, gamma, .. } => {
                positive("--beta", beta)?;
                if !(0.0..1.0).contains(&gamma) {
                    bail!("{} needs 0 <= --gamma < 1, got {gamma}", self.name());
                }
                Ok(())
            }
        }
    }
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
        config.validate()?;
        let state = match config {
            RegConfig::Plain | RegConfig::WeightDecay { .. } => State::Stateless,
            RegConfig::NormDecay { kind, beta, gamma, variant, include_bn } => {
                State::NormDecay(NormDecay::new(&model.layers, &model.params, kind, beta, gamma, variant, include_bn)?)
            }
            RegConfig::Svc { clip, every } => State::Svc(svc::Svc::new(&model.layers, clip, every)?),
        };
        Ok(Self { config, state })
    }

    /// The configuration this regularizer was built from.
    pub fn config(&self) -> &RegConfig {
        &self.config
    }

    /// Transforms the gradients of one step (between `backward()` and the optimizer step). On
    /// CUDA with normlab's kernels, weight decay's β·θ and norm decay's β·h are returned as
    /// terms for the optimizer's fused update ([`GradTerms`]) instead of written into the
    /// gradients (norm decay still updates its buffers here, on the device); elsewhere the
    /// gradients are rewritten in place and the terms are empty.
    pub fn apply(&mut self, model: &Model, grads: &mut GradStore) -> Result<GradTerms> {
        let fused = model.params.trainable().next().is_some_and(|e| crate::ops::fused::on(e.var.device()));
        match (&self.config, &mut self.state) {
            (RegConfig::WeightDecay { beta }, _) if fused => Ok(weight_decay::terms(&model.params, grads, *beta)),
            (RegConfig::WeightDecay { beta }, _) => weight_decay::apply(&model.params, grads, *beta).map(|_| GradTerms::default()),
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
    fn config_round_trips_through_json() {
        let c = RegConfig::NormDecay { kind: NormKind::Linf, beta: 1e-3, gamma: 0.5, variant: NdVariant::Paper, include_bn: true };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"reg\":\"norm-decay\"") && text.contains("\"kind\":\"linf\""), "{text}");
        assert_eq!(serde_json::from_str::<RegConfig>(&text).unwrap(), c);
        assert_eq!(c.name(), "nd-linf");
    }

    #[test]
    fn validation_rejects_bad_strengths() {
        assert!(RegConfig::WeightDecay { beta: 0.0 }.validate().is_err());
        assert!(RegConfig::WeightDecay { beta: f64::NAN }.validate().is_err());
        assert!(RegConfig::Svc { clip: -1.0, every: 100 }.validate().is_err());
        assert!(RegConfig::Svc { clip: 1.0, every: 0 }.validate().is_err());
        let nd = |beta, gamma| RegConfig::NormDecay { kind: NormKind::L1, beta, gamma, variant: NdVariant::Reference, include_bn: false };
        assert!(nd(1e-3, 1.0).validate().is_err());
        assert!(nd(-1e-3, 0.5).validate().is_err());
        assert!(nd(1e-3, 0.5).validate().is_ok());
        assert!(RegConfig::Plain.validate().is_ok());
    }
}
