//! The real cell executor: train the cell (resuming from its work dir), then evaluate it —
//! clean accuracy, robust accuracy at each ε, certified accuracy, norm summaries — into one
//! [`CellRecord`]. This is where the plan meets the training loop and the attacks.

use crate::results::outcomes::{self, ImageOutcome, OutcomeSet};
use crate::results::{CellRecord, CellStatus, NormSummary, RobustColumn, RunDir};
use super::scheduler::CellContext;
use crate::attack::{certified, protocol};
use crate::data::Cifar10;
use crate::models::Model;
use crate::plan::Cell;
use crate::train::{self, RunStatus};
use anyhow::{Context, Result};
use std::time::Instant;

/// Attacked images per forward/backward batch during evaluation.
const ATTACK_BATCH: usize = 256;

/// Trains and evaluates one cell on `data` (see [`super::scheduler::Executor`] for the
/// contract): resumes from `ctx.work_dir`, records divergence as a status, and measures
/// clean accuracy on the evaluation's test images, robust accuracy at each ε, certified
/// accuracy at the first ε, and the final weights' norm summaries (from the norms.csv the
/// training loop wrote: the norms are computed once). The per-image outcomes behind the clean
/// and robust accuracies go to the cell's `outcomes.csv`.
pub fn execute(cell: &Cell, ctx: &CellContext, data: &Cifar10) -> Result<CellRecord> {
    let run = RunDir::new(&ctx.work_dir);
    let outcome = train::train(&cell.config.train, ctx.device, data, &ctx.work_dir, true)?;
    if let RunStatus::Diverged { epoch } = outcome.status {
        let mut record = CellRecord::failed(format!("loss not finite in epoch {epoch}"), outcome.train_seconds);
        record.status = CellStatus::Diverged;
        return Ok(record);
    }
    let eval_start = Instant::now();
    let device = ctx.device.open()?;
    let model_path = run.model();
    let model = Model::load(cell.config.train.model, &model_path, &device).with_context(|| format!("loading {}", model_path.display()))?;
    let eval = &cell.config.evaluation;
    let test = match eval.clean_subset {
        Some(n) => data.test.prefix(n.get()),
        None => data.test.clone(),
    };
    let correct = train::correct_per_image(&model, &test, &device)?;
    let clean = OutcomeSet {
        name: outcomes::CLEAN_SET.to_string(),
        images: correct
            .iter()
            .enumerate()
            .map(|(i, &correct)| ImageOutcome { index: i as u32, label: test.labels[i], correct, flipped_by: None })
            .collect(),
    };
    let clean_acc = clean.accuracy();
    let mut sets = vec![clean];
    let logits = |x: &candle_core::Tensor| model.forward(x, false);
    let mut robust_acc = Vec::new();
    let mut certified_acc = None;
    if let Some(robust) = &eval.robust {
        let reports = protocol::evaluate(&logits, &data.test, robust, ATTACK_BATCH, &device)?;
        robust_acc = reports.iter().map(|r| r.robust_acc).collect();
        if eval.certified {
            // The certificate of the threat model's norm: ℓ∞ norms for ℓ∞ balls, spectral
            // norms for ℓ2 balls.
            let certs = certified::certify_ball(&model, &reports[0].margins, robust.norm, reports[0].eps, robust.norm == crate::attack::Norm::L2)?;
            certified_acc = certs.first().and_then(|c| c.certified_acc);
        }
        for (r, column) in reports.iter().zip(RobustColumn::of(Some(robust))) {
            let images = r
                .indices
                .iter()
                .zip(r.robust())
                .zip(&r.flipped_by)
                .map(|((&i, robust), f)| ImageOutcome {
                    index: i as u32,
                    label: data.test.labels[i],
                    correct: robust,
                    flipped_by: f.map(|a| r.attacks[a].clone()),
                })
                .collect();
            sets.push(OutcomeSet { name: outcomes::robust_set(&column), images });
        }
    }
    outcomes::write(&run.outcomes(), &sets)?;
    let norms = NormSummary::from_norms_csv(&run.norms())?;
    Ok(CellRecord {
        status: CellStatus::Ok,
        clean_acc: Some(clean_acc),
        robust_acc,
        certified_acc,
        norms: Some(norms),
        train_seconds: outcome.train_seconds,
        eval_seconds: eval_start.elapsed().as_secs_f64(),
        message: String::new(),
    })
}
