//! Cells: one model trained with one regularizer setting, one training mode and one seed,
//! then evaluated. A cell's id is a hash of its fully resolved configuration, so editing a
//! plan adds exactly the cells whose configuration is new and keeps every finished one.

use super::schema::{AdvSpec, EvaluationSpec, NdVariant, PlanFile, RegularizerSpec};
use crate::models::Arch;
use crate::norms::NormKind;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bumped when the meaning of a configuration field changes, so old ids stop matching.
const CELL_SCHEMA: &str = "normlab-cell-v1";

/// The regularizer of one cell at one strength (what the training loop's `RegConfig` takes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regularizer {
    /// No regularization.
    Plain,
    /// Coupled weight decay β.
    WeightDecay {
        /// β.
        beta: f64,
    },
    /// Singular value clipping at C every `every` steps.
    Svc {
        /// C.
        clip: f64,
        /// Steps between clippings.
        every: u32,
    },
    /// Norm decay on the ℓ1 or ℓ∞ norm.
    NormDecay {
        /// ℓ1 or ℓ∞.
        norm: NormKind,
        /// β.
        beta: f64,
        /// γ.
        gamma: f64,
        /// Update variant.
        variant: NdVariant,
        /// Whether BatchNorm layers are decayed too.
        include_bn: bool,
    },
}

impl Regularizer {
    /// The results column's name for it: `plain`, `wd`, `svc`, `nd-l1`, `nd-linf`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::WeightDecay { .. } => "wd",
            Self::Svc { .. } => "svc",
            Self::NormDecay { norm: NormKind::L1, .. } => "nd-l1",
            Self::NormDecay { norm: NormKind::Linf, .. } => "nd-linf",
        }
    }

    /// β (or C for SVC); none for plain.
    pub fn strength(&self) -> Option<f64> {
        match self {
            Self::Plain => None,
            Self::WeightDecay { beta } | Self::NormDecay { beta, .. } => Some(*beta),
            Self::Svc { clip, .. } => Some(*clip),
        }
    }
}

/// The training protocol of one cell, fully resolved (milestones explicit).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingProtocol {
    /// Epochs.
    pub epochs: u32,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Batch size.
    pub batch: usize,
    /// Epochs at which the learning rate is multiplied by 0.1.
    pub milestones: Vec<u32>,
    /// First N training records (None: all).
    pub train_subset: Option<usize>,
    /// First N test records for per-epoch test accuracy (None: all).
    pub test_subset: Option<usize>,
}

/// Everything that determines a cell's results; its canonical JSON is hashed into the id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellConfig {
    /// The model.
    pub model: Arch,
    /// The regularizer at its strength.
    pub regularizer: Regularizer,
    /// Standard or adversarial training.
    pub adv: AdvSpec,
    /// The training seed.
    pub seed: u64,
    /// The training protocol.
    pub training: TrainingProtocol,
    /// The evaluation protocol.
    pub evaluation: EvaluationSpec,
}

/// One cell of a plan's grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// 12 hex digits of SHA-256 over the canonical configuration.
    pub id: String,
    /// Position in the plan's grid (models, then training modes, then regularizer settings,
    /// then seeds); shards split on it.
    pub index: usize,
    /// The resolved configuration.
    pub config: CellConfig,
}

impl Cell {
    /// A one-line description: `vgg11 wd β=0.001 seed 1` (plus the training mode if not
    /// standard).
    pub fn describe(&self) -> String {
        let c = &self.config;
        let mut s = format!("{} {}", c.model.name(), c.regularizer.label());
        if let Some(v) = c.regularizer.strength() {
            if matches!(c.regularizer, Regularizer::Svc { .. }) {
                s.push_str(&format!(" C={v}"));
            } else {
                s.push_str(&format!(" β={v:e}"));
            }
        }
        if c.adv != AdvSpec::None {
            s.push_str(&format!(" adv={}", c.adv.label()));
        }
        s.push_str(&format!(" seed {}", c.seed));
        s
    }
}

/// The id of a configuration: the first 12 hex digits of SHA-256 over its canonical JSON
/// (field order fixed by the struct, floats in shortest round-trip form).
pub fn cell_id(config: &CellConfig) -> String {
    let json = serde_json::to_string(config).expect("a cell configuration always serializes");
    let mut h = Sha256::new();
    h.update(CELL_SCHEMA.as_bytes());
    h.update(b"\n");
    h.update(json.as_bytes());
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The paper's learning-rate milestones (75, 90, 100 of 120 epochs) scaled to `epochs`,
/// rounded, keeping those strictly inside the run.
pub fn paper_milestones(epochs: u32) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for m in [75.0, 90.0, 100.0] {
        let e = (m * epochs as f64 / 120.0).round() as u32;
        if e >= 1 && e < epochs && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// Expands the grid: models × training modes × (plain + each regularizer × each strength) ×
/// seeds, in that nesting order.
pub fn expand(plan: &PlanFile) -> Vec<Cell> {
    let t = &plan.training;
    let training = TrainingProtocol {
        epochs: t.epochs.get(),
        lr: t.lr.get(),
        momentum: t.momentum.get(),
        batch: t.batch.get(),
        milestones: t.milestones.clone().unwrap_or_else(|| paper_milestones(t.epochs.get())),
        train_subset: t.train_subset.map(|n| n.get()),
        test_subset: t.test_subset.map(|n| n.get()),
    };
    let mut regs = Vec::new();
    if plan.plain {
        regs.push(Regularizer::Plain);
    }
    for spec in &plan.regularizers {
        match spec {
            RegularizerSpec::WeightDecay { betas } => {
                regs.extend(betas.iter().map(|b| Regularizer::WeightDecay { beta: b.get() }));
            }
            RegularizerSpec::Svc { clips, every } => {
                regs.extend(clips.iter().map(|c| Regularizer::Svc { clip: c.get(), every: every.get() }));
            }
            RegularizerSpec::NormDecay { norm, betas, gamma, variant, include_bn } => {
                regs.extend(betas.iter().map(|b| Regularizer::NormDecay {
                    norm: *norm,
                    beta: b.get(),
                    gamma: gamma.get(),
                    variant: *variant,
                    include_bn: *include_bn,
                }));
            }
        }
    }
    let mut cells = Vec::new();
    for &model in plan.models.iter() {
        for adv in t.adv.iter() {
            for reg in &regs {
                for &seed in t.seeds.iter() {
                    let config = CellConfig {
                        model,
                        regularizer: reg.clone(),
                        adv: adv.clone(),
                        seed,
                        training: training.clone(),
                        evaluation: plan.evaluation.clone(),
                    };
                    cells.push(Cell { id: cell_id(&config), index: cells.len(), config });
                }
            }
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_scale_with_epochs() {
        assert_eq!(paper_milestones(120), vec![75, 90, 100]);
        assert_eq!(paper_milestones(12), vec![8, 9, 10]);
        assert_eq!(paper_milestones(2), vec![1]);
        assert!(paper_milestones(1).is_empty());
    }
}
