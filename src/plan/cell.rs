//! Cells: one model trained with one regularizer setting, one training mode and one seed,
//! then evaluated. A cell's id is a hash of its fully resolved configuration, so editing a
//! plan adds exactly the cells whose configuration is new and keeps every finished one.

use super::schema::{EvaluationSpec, PlanFile};
use crate::train::TrainConfig;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bumped when the meaning of a configuration field changes, so old ids stop matching.
const CELL_SCHEMA: &str = "normlab-cell-v1";

/// Everything that determines a cell's results: the training run (the training loop's own
/// [`TrainConfig`]: model, regularizer, training mode, seed, protocol) and its evaluation.
/// Its canonical JSON (`{"model":…,"regularizer":…,"adv":…,"seed":…,"training":…,
/// "evaluation":…}`) is hashed into the id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellConfig {
    /// The training run.
    #[serde(flatten)]
    pub train: TrainConfig,
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
        let t = &self.config.train;
        let mut s = format!("{} {}", t.model.name(), t.regularizer.describe(t.model.layers()));
        if t.adv != crate::train::AdvConfig::None {
            s.push_str(&format!(" adv={}", t.adv.label()));
        }
        s.push_str(&format!(" seed {}", t.seed));
        s
    }
}

/// The id of a configuration: the first 12 hex digits of SHA-256 over its canonical JSON
/// (field order fixed by the struct, floats in shortest round-trip form).
pub fn cell_id(config: &CellConfig) -> String {
    id_of_config_json(&serde_json::to_string(config).expect("a cell configuration always serializes"))
}

/// The id of a configuration given as the canonical JSON a results row holds in its `config`
/// column (what [`cell_id`] hashes): the results reader checks each row's id against it.
pub fn id_of_config_json(json: &str) -> String {
    let mut h = Sha256::new();
    h.update(CELL_SCHEMA.as_bytes());
    h.update(b"\n");
    h.update(json.as_bytes());
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Expands the grid: models × training modes × (plain + each regularizer × each strength) ×
/// seeds, in that nesting order. Each regularizer is resolved for its model
/// ([`crate::regularize::RegConfig::resolved_for`]): where `reference` coverage runs what
/// `all` runs, the cell is the `all` one, with that id.
pub fn expand(plan: &PlanFile) -> Vec<Cell> {
    let t = &plan.training;
    let training = t.protocol();
    let mut regs = Vec::new();
    if plan.plain {
        regs.push(crate::regularize::RegConfig::Plain);
    }
    for spec in &plan.regularizers {
        regs.extend(spec.settings());
    }
    let mut cells = Vec::new();
    for &model in plan.models.iter() {
        for &adv in t.adv.iter() {
            for regularizer in regs.iter().map(|r| r.resolved_for(model.layers())) {
                for &seed in t.seeds.iter() {
                    let config = CellConfig {
                        train: TrainConfig { model, regularizer, adv, seed, training: training.clone() },
                        evaluation: plan.evaluation.clone(),
                    };
                    cells.push(Cell { id: cell_id(&config), index: cells.len(), config });
                }
            }
        }
    }
    cells
}
