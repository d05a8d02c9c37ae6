//! The regularizers of the paper's table (paper.md §3–§4): plain, weight decay, singular value
//! clipping (SVC) and ℓ1/ℓ∞ norm decay.
//!
//! Each is a transform on candle's [`GradStore`] between `backward()` and the optimizer step
//! ([`Regularizer::apply`]); SVC and the reference's BatchNorm projection change the weights
//! themselves, before the step ([`Regularizer::before_step`]) or after it
//! ([`Regularizer::after_step`]), as their [`Coverage`] says, and SVC once more when training
//! ends if asked to ([`Regularizer::finish`]). [`RegConfig`] is the one description of a
//! regularizer at one strength: `normlab train`'s flags build it, a plan's cells hold it (its
//! JSON is part of a cell's id), checkpoints record it; [`Regularizer`] is the live state
//! built from it for one model.

pub mod bn_projection;
pub mod coverage;
pub mod norm_decay;
pub mod stacked;
pub mod svc;
pub mod weight_decay;

pub use crate::norms::NormKind;
pub use coverage::Coverage;
pub use norm_decay::{NdVariant, NormDecay};

use crate::models::{LayerSpec, Model};
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
/// The bound the reference's `project_bn` projects BatchNorm norms to (train_nd_proj_bn.py:71).
pub const REFERENCE_BN_BOUND: Positive = Positive(5.0);

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
    /// Singular value clipping of the convs at `clip`, on the schedule of `coverage`.
    Svc {
        /// The bound C on every singular value of each conv's operator.
        clip: Positive,
        /// Period in optimizer steps (the paper: 100).
        every: NonZeroU32,
        /// Which convs, how grouped ones are clipped, and when ([`coverage`]). Left out of
        /// the JSON when `all`.
        #[serde(default, skip_serializing_if = "Coverage::is_all")]
        coverage: Coverage,
        /// Clip once more after the last step, then re-estimate BatchNorm's running
        /// statistics on the last epoch's batches (the reference does neither). Always
        /// written: a configuration without it was recorded before 2026-12-07, when every
        /// SVC run clipped at the end and kept BatchNorm's statistics of the unclipped
        /// weights; it reads as `true`, and its id is not that of any run today.
        #[serde(default = "recorded_before_final_clip_was_a_setting")]
        final_clip: bool,
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
        /// Which conv layers are decayed ([`coverage`]). Left out of the JSON when `all`.
        #[serde(default, skip_serializing_if = "Coverage::is_all")]
        coverage: Coverage,
        /// Before every optimizer step, project each BatchNorm layer's norm to at most this
        /// bound, one channel per step, as the reference's `train_nd_proj_bn.py` (5)
        /// ([`bn_projection`]). Left out of the JSON when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_bn: Option<Positive>,
    },
}

/// What a recorded SVC configuration without `final_clip` meant: a clip after the last step.
fn recorded_before_final_clip_was_a_setting() -> bool {
    true
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
        Self::NormDecay { norm, beta, gamma: DEFAULT_GAMMA, variant: NdVariant::Reference, include_bn: false, coverage: Coverage::All, project_bn: None }
    }

    /// The coverage of norm decay and SVC; `None` for the others.
    pub fn coverage(&self) -> Option<Coverage> {
        match *self {
            Self::Svc { coverage, .. } | Self::NormDecay { coverage, .. } => Some(coverage),
            Self::Plain | Self::WeightDecay { .. } => None,
        }
    }

    /// What sets this run apart, on a model with `layers`, from `name() strength` under the
    /// published table's protocol (the reference's coverage, no final clip, BatchNorm neither
    /// decayed nor projected, the reference's update), for labels: `coverage all` (only where
    /// it changes what runs on this model), `final clip`, `BN decayed`, `BN ≤ 5`,
    /// `paper's update`; empty when nothing does.
    pub fn notes(&self, layers: &[LayerSpec]) -> Vec<String> {
        let mut notes = Vec::new();
        if self.coverage() == Some(Coverage::All) && self.with_coverage(Coverage::Reference).resolved_for(layers) != *self {
            notes.push("coverage all".to_string());
        }
        match *self {
            Self::Svc { final_clip: true, .. } => notes.push("final clip".to_string()),
            Self::NormDecay { include_bn, variant, project_bn, .. } => {
                if include_bn {
                    notes.push("BN decayed".to_string());
                }
                if let Some(b) = project_bn {
                    notes.push(format!("BN ≤ {}", b.get()));
                }
                if variant == NdVariant::Paper {
                    notes.push("paper's update".to_string());
                }
            }
            _ => {}
        }
        notes
    }

    /// A one-line description on a model with `layers`: `wd β=1e-3`, `svc C=1`,
    /// `nd-l1 β=1e-2 (coverage all)`, `plain`.
    pub fn describe(&self, layers: &[LayerSpec]) -> String {
        let base = match self {
            Self::Plain => "plain".to_string(),
            Self::Svc { clip, .. } => format!("svc C={}", clip.get()),
            _ => format!("{} β={:e}", self.name(), self.strength().unwrap_or_default()),
        };
        let notes = self.notes(layers);
        if notes.is_empty() {
            base
        } else {
            format!("{base} ({})", notes.join(", "))
        }
    }

    /// The same regularizer with `coverage` (norm decay and SVC; the others unchanged).
    pub fn with_coverage(self, coverage: Coverage) -> Self {
        match self {
            Self::Svc { clip, every, final_clip, .. } => Self::Svc { clip, every, coverage, final_clip },
            Self::NormDecay { norm, beta, gamma, variant, include_bn, project_bn, .. } => {
                Self::NormDecay { norm, beta, gamma, variant, include_bn, coverage, project_bn }
            }
            other => other,
        }
    }

    /// The same regularizer with `reference` coverage written as `all` where, on a model with
    /// `layers`, the two run the same computation: norm decay on a model where the reference
    /// skips no layer (resnet18, senet18). A cell's id hashes this form, so a run whose meaning
    /// did not change keeps the id it had before coverage existed. SVC's reference schedule
    /// always differs, so SVC keeps what it was given.
    pub fn resolved_for(self, layers: &[LayerSpec]) -> Self {
        match self {
            Self::NormDecay { coverage: Coverage::Reference, norm, beta, gamma, variant, include_bn, project_bn }
                if layers.iter().filter(|l| l.is_matrix()).all(|l| coverage::norm_decay_skip(l, Coverage::Reference).is_none()) =>
            {
                Self::NormDecay { norm, beta, gamma, variant, include_bn, coverage: Coverage::All, project_bn }
            }
            other => other,
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
    NormDecay(NormDecay, Option<bn_projection::BnProjection>),
    Svc(svc::Svc, bool),
}

impl Regularizer {
    /// Builds the regularizer for `model` (norm decay precomputes its per-layer position-set
    /// indicators on the model's device here, once).
    pub fn new(config: RegConfig, model: &Model) -> Result<Self> {
        let state = match config {
            RegConfig::Plain | RegConfig::WeightDecay { .. } => State::Stateless,
            RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, project_bn } => State::NormDecay(
                NormDecay::new(&model.layers, &model.params, norm, beta.get(), gamma.get(), variant, include_bn, coverage)?,
                project_bn.map(|b| bn_projection::BnProjection::new(&model.layers, b.get())),
            ),
            RegConfig::Svc { clip, every, coverage, final_clip } => {
                State::Svc(svc::Svc::new(&model.layers, clip.get(), every.get() as usize, coverage)?, final_clip)
            }
        };
        Ok(Self { config, state })
    }

    /// The parameters it acts on, in model order: every trainable parameter (weight decay),
    /// the decayed weights and projected BatchNorm γ (norm decay), the clipped convs (SVC).
    /// `normlab run --dry-run --format json` lists these as a cell's `regularized_layers`.
    pub fn acted_on(&self, model: &Model) -> Vec<String> {
        match &self.state {
            State::Stateless if matches!(self.config, RegConfig::WeightDecay { .. }) => model.params.trainable().map(|e| e.name.clone()).collect(),
            State::Stateless => Vec::new(),
            State::NormDecay(nd, projection) => {
                let mut names: Vec<String> = nd.layer_names().map(String::from).collect();
                for p in projection.iter().flat_map(|p| p.acted_on()) {
                    if !names.iter().any(|n| n == p) {
                        names.push(p.to_string());
                    }
                }
                let order = |n: &String| model.layers.iter().position(|l| &l.name == n).unwrap_or(usize::MAX);
                names.sort_by_key(order);
                names
            }
            State::Svc(s, _) => s.acted_on().map(String::from).collect(),
        }
    }

    /// The configuration this regularizer was built from.
    pub fn config(&self) -> &RegConfig {
        &self.config
    }

    /// Norm decay's live state, when this is norm decay (a stacked model's slices drive it
    /// through [`stacked`]).
    pub fn norm_decay_mut(&mut self) -> Option<&mut NormDecay> {
        match &mut self.state {
            State::NormDecay(nd, _) => Some(nd),
            _ => None,
        }
    }

    /// SVC's live state, when this is SVC.
    pub fn svc_mut(&mut self) -> Option<&mut svc::Svc> {
        match &mut self.state {
            State::Svc(s, _) => Some(s),
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
            (_, State::NormDecay(nd, _)) => nd.apply(&model.params, grads, fused),
            _ => Ok(GradTerms::default()),
        }
    }

    /// Runs after [`Regularizer::apply`] and before the optimizer step of batch `batch`
    /// (counted from 0 within its epoch): SVC with `reference` coverage clips on its batches,
    /// norm decay with `project_bn` projects the BatchNorm layers.
    pub fn before_step(&mut self, model: &Model, batch: usize) -> Result<()> {
        match &mut self.state {
            State::Svc(s, _) => s.before_step(&model.params, batch),
            State::NormDecay(_, Some(p)) => p.apply(&model.params),
            _ => Ok(()),
        }
    }

    /// Whether SVC clips around the optimizer step of batch `batch` (from 0 within its epoch),
    /// step number `step` (from 1 over the run): before it (`reference`) or after it (`all`).
    /// The training loop reads the loss before a clip, which must not see diverged weights.
    pub fn clips_around(&self, batch: usize, step: usize) -> bool {
        match &self.state {
            State::Svc(s, _) => s.due_before(batch) || s.due(step),
            _ => false,
        }
    }

    /// Runs after optimizer step number `step` (counted from 1 over the whole run): SVC with
    /// `all` coverage clips the convs when `step` is a multiple of its period.
    pub fn after_step(&mut self, model: &Model, step: usize) -> Result<()> {
        match &mut self.state {
            State::Svc(s, _) => s.after_step(&model.params, step),
            _ => Ok(()),
        }
    }

    /// Runs once after the last optimizer step of the run: SVC with `final_clip` clips the
    /// convs a last time. Returns whether it changed the weights, in which case BatchNorm's
    /// running statistics, gathered on the unclipped weights, must be re-estimated.
    pub fn finish(&mut self, model: &Model) -> Result<bool> {
        match &mut self.state {
            State::Svc(s, true) => s.clip_all(&model.params).map(|_| true),
            _ => Ok(false),
        }
    }

    /// The state a checkpoint must keep to continue exactly (norm decay's buffers h, by layer
    /// weight name); empty for the stateless regularizers. Mutable: norm decay first folds
    /// its lazy scaling into the buffers, so a run continues the same way whether or not it
    /// was resumed from this state.
    pub fn state(&mut self) -> Result<Vec<(String, Tensor)>> {
        match &mut self.state {
            State::NormDecay(nd, _) => nd.state(),
            _ => Ok(Vec::new()),
        }
    }

    /// Restores what [`Regularizer::state`] returned.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        match &mut self.state {
            State::NormDecay(nd, _) => nd.load_state(tensors),
            _ if tensors.is_empty() => Ok(()),
            _ => bail!("the checkpoint holds regularizer state ({} tensors) but {} keeps none", tensors.len(), self.config.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    #[test]
    fn config_round_trips_through_json_in_the_cell_id_shape() {
        let c = RegConfig::NormDecay {
            norm: NormKind::Linf,
            beta: Positive(1e-3),
            gamma: Fraction(0.5),
            variant: NdVariant::Paper,
            include_bn: true,
            coverage: Coverage::All,
            project_bn: None,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"kind":"norm_decay","norm":"linf","beta":0.001,"gamma":0.5,"variant":"paper","include_bn":true}"#);
        assert_eq!(serde_json::from_str::<RegConfig>(&text).unwrap(), c);
        assert_eq!(c.name(), "nd-linf");
        assert_eq!(serde_json::to_string(&RegConfig::Plain).unwrap(), r#"{"kind":"plain"}"#);
        // Reference coverage and BatchNorm projection are written; `all` and no projection are
        // not (the shape, hence the ids, of every configuration from before they existed).
        let r = c.with_coverage(Coverage::Reference);
        let RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, .. } = r else { unreachable!() };
        let projected = RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, project_bn: Some(Positive(5.0)) };
        assert_eq!(
            serde_json::to_string(&projected).unwrap(),
            r#"{"kind":"norm_decay","norm":"linf","beta":0.001,"gamma":0.5,"variant":"paper","include_bn":true,"coverage":"reference","project_bn":5.0}"#
        );
        assert_eq!(serde_json::from_str::<RegConfig>(&serde_json::to_string(&projected).unwrap()).unwrap(), projected);
    }

    #[test]
    fn svc_always_writes_its_final_clip_and_reads_an_old_record_as_one() {
        let svc = |coverage, final_clip| RegConfig::Svc { clip: Positive(1.0), every: NonZeroU32::new(8).unwrap(), coverage, final_clip };
        assert_eq!(serde_json::to_string(&svc(Coverage::All, false)).unwrap(), r#"{"kind":"svc","clip":1.0,"every":8,"final_clip":false}"#);
        assert_eq!(
            serde_json::to_string(&svc(Coverage::Reference, true)).unwrap(),
            r#"{"kind":"svc","clip":1.0,"every":8,"coverage":"reference","final_clip":true}"#
        );
        // Recorded before final_clip existed (results/demo.csv's SVC row until 2026-12-07): it
        // clipped at the end; it reads so, and no configuration of today writes its shape.
        let old = r#"{"kind":"svc","clip":1.0,"every":8}"#;
        let read: RegConfig = serde_json::from_str(old).unwrap();
        assert_eq!(read, svc(Coverage::All, true));
        assert_ne!(serde_json::to_string(&read).unwrap(), old);
    }

    #[test]
    fn reference_coverage_acts_on_the_layers_the_reference_code_does() {
        let nd = RegConfig::norm_decay(NormKind::L1, Positive(1e-2)).with_coverage(Coverage::Reference);
        let svc = RegConfig::Svc { clip: Positive(1.0), every: DEFAULT_SVC_EVERY, coverage: Coverage::Reference, final_clip: false };
        let acted = |c: RegConfig, m: &Model| Regularizer::new(c, m).unwrap().acted_on(m);
        let matrices = |m: &Model| m.layers.iter().filter(|l| l.is_matrix()).map(|l| l.name.clone()).collect::<Vec<_>>();
        let convs = |m: &Model| m.layers.iter().filter(|l| l.kind == crate::models::LayerKind::Conv).map(|l| l.name.clone()).collect::<Vec<_>>();
        let without = |all: Vec<String>, gone: &[String]| all.into_iter().filter(|n| !gone.contains(n)).collect::<Vec<_>>();

        // vgg11: its two 3×3 convs on 2×2 maps are neither decayed nor clipped.
        let vgg = Model::zeros(Arch::Vgg11).unwrap();
        let small = ["features.22.weight".to_string(), "features.25.weight".to_string()];
        assert_eq!(acted(nd, &vgg), without(matrices(&vgg), &small));
        assert_eq!(acted(svc, &vgg), without(convs(&vgg), &small));
        assert_eq!(acted(nd.with_coverage(Coverage::All), &vgg), matrices(&vgg));
        assert_eq!(nd.resolved_for(&vgg.layers), nd, "vgg11's reference norm decay differs from all");

        // regnet200mf: norm decay skips exactly the grouped convs; SVC clips them (stacked).
        let reg = Model::zeros(Arch::Regnet200mf).unwrap();
        let grouped: Vec<String> = reg.layers.iter().filter(|l| l.groups > 1 && l.kind == crate::models::LayerKind::Conv).map(|l| l.name.clone()).collect();
        assert_eq!(grouped.len(), 13);
        assert!(grouped.iter().all(|n| n.ends_with(".conv2.weight")), "{grouped:?}");
        assert_eq!(acted(nd, &reg), without(matrices(&reg), &grouped));
        assert_eq!(acted(svc, &reg), convs(&reg));

        // resnet18 and senet18: the reference skips nothing, so the cell is the `all` one.
        for arch in [Arch::Resnet18, Arch::Senet18] {
            let m = Model::zeros(arch).unwrap();
            assert_eq!(acted(nd, &m), matrices(&m), "{arch}");
            assert_eq!(nd.resolved_for(&m.layers), nd.with_coverage(Coverage::All), "{arch}");
            assert_eq!(svc.resolved_for(&m.layers), svc, "{arch}: SVC's reference moments always differ");
            assert!(nd.with_coverage(Coverage::All).notes(&m.layers).is_empty(), "{arch}");
        }
        assert_eq!(nd.with_coverage(Coverage::All).describe(&vgg.layers), "nd-l1 β=1e-2 (coverage all)");
        assert_eq!(nd.describe(&vgg.layers), "nd-l1 β=1e-2");

        // Weight decay acts on every trainable parameter; the BatchNorm projection adds γ.
        assert_eq!(acted(RegConfig::WeightDecay { beta: Positive(1e-2) }, &vgg).len(), vgg.params.trainable().count());
        let RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, .. } = nd else { unreachable!() };
        let projected = RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, project_bn: Some(REFERENCE_BN_BOUND) };
        let names = acted(projected, &vgg);
        assert_eq!(names.len(), acted(nd, &vgg).len() + 8, "vgg11's 8 BatchNorm layers");
        assert!(names.contains(&"features.1.weight".to_string()));
        assert!(acted(RegConfig::Plain, &vgg).is_empty());
    }

    #[test]
    fn invalid_values_cannot_be_read() {
        for bad in [
            r#"{"kind":"weight_decay","beta":0}"#,
            r#"{"kind":"weight_decay","beta":-1}"#,
            r#"{"kind":"svc","clip":1,"every":0}"#,
            r#"{"kind":"norm_decay","norm":"l1","beta":0.001,"gamma":1,"variant":"reference","include_bn":false}"#,
            r#"{"kind":"weight_decay","beta":0.1,"extra":1}"#,
            r#"{"kind":"svc","clip":1,"every":8,"coverage":"some","final_clip":false}"#,
            r#"{"kind":"norm_decay","norm":"l1","beta":0.001,"gamma":0.5,"variant":"reference","include_bn":false,"project_bn":0}"#,
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
