//! The real cell executor: train the cell (resuming from its work dir), then evaluate it —
//! clean accuracy, robust accuracy at each ε, certified accuracy, norm summaries — into one
//! [`CellRecord`]. This is where the plan meets the training loop and the attacks.

use super::record::{CellRecord, CellStatus, NormSummary};
use super::scheduler::CellContext;
use crate::attack::{certified, protocol};
use crate::data::Cifar10;
use crate::models::Model;
use crate::plan::{AdvSpec, Attack, Cell, Regularizer};
use crate::regularize::RegConfig;
use crate::train::{self, AdvConfig, RunStatus, TrainConfig};
use anyhow::{Context, Result};
use std::time::Instant;

/// Attacked images per forward/backward batch during evaluation.
const ATTACK_BATCH: usize = 256;

/// The training loop's configuration for a cell, on the cell's device.
pub fn train_config(cell: &Cell, ctx: &CellContext) -> TrainConfig {
    let c = &cell.config;
    TrainConfig {
        arch: c.model,
        reg: reg_config(&c.regularizer),
        epochs: c.training.epochs as usize,
        lr: c.training.lr,
        momentum: c.training.momentum,
        batch: c.training.batch,
        seed: c.seed,
        train_subset: c.training.train_subset,
        test_subset: c.training.test_subset,
        milestones: c.training.milestones.iter().map(|&m| m as usize).collect(),
        device: ctx.device,
        adv: adv_config(&c.adv),
    }
}

fn adv_config(a: &AdvSpec) -> Option<AdvConfig> {
    match *a {
        AdvSpec::None => None,
        AdvSpec::Pgd { eps, step, steps } => Some(AdvConfig::Pgd { eps: eps.0, step: step.0, steps: steps.get() as usize }),
        AdvSpec::Trades { eps, step, steps, beta } => Some(AdvConfig::Trades { eps: eps.0, step: step.0, steps: steps.get() as usize, beta: beta.0 }),
    }
}

fn reg_config(r: &Regularizer) -> RegConfig {
    match *r {
        Regularizer::Plain => RegConfig::Plain,
        Regularizer::WeightDecay { beta } => RegConfig::WeightDecay { beta },
        Regularizer::Svc { clip, every } => RegConfig::Svc { clip, every: every as usize },
        Regularizer::NormDecay { norm, beta, gamma, variant, include_bn } => RegConfig::NormDecay {
            kind: norm,
            beta,
            gamma,
            variant,
            include_bn,
        },
    }
}

fn attack_kind(a: Attack) -> protocol::AttackKind {
    match a {
        Attack::Fgsm => protocol::AttackKind::Fgsm,
        Attack::Pgd => protocol::AttackKind::Pgd,
        Attack::ApgdCe => protocol::AttackKind::ApgdCe,
        Attack::ApgdT => protocol::AttackKind::ApgdT,
        Attack::ApgdDlr => protocol::AttackKind::ApgdDlr,
    }
}

/// Trains and evaluates one cell on `data` (see [`super::scheduler::Executor`] for the
/// contract): resumes from `ctx.work_dir`, records divergence as a status, and measures
/// clean accuracy on the evaluation's test images, robust accuracy at each ε, certified
/// accuracy at the first ε, and the final weights' norm summaries.
pub fn execute(cell: &Cell, ctx: &CellContext, data: &Cifar10) -> Result<CellRecord> {
    let cfg = train_config(cell, ctx);
    let outcome = train::train(&cfg, data, &ctx.work_dir, true)?;
    if let RunStatus::Diverged { epoch } = outcome.status {
        let mut record = CellRecord::failed(format!("loss not finite in epoch {epoch}"), outcome.train_seconds);
        record.status = CellStatus::Diverged;
        return Ok(record);
    }
    let eval_start = Instant::now();
    let device = ctx.device.open()?;
    let model_path = ctx.work_dir.join("model.safetensors");
    let model = Model::load(cell.config.model, &model_path, &device).with_context(|| format!("loading {}", model_path.display()))?;
    let eval = &cell.config.evaluation;
    let test = match eval.clean_subset {
        Some(n) => data.test.prefix(n.get()),
        None => data.test.clone(),
    };
    let clean_acc = train::evaluate(&model, &test, &device)? / 100.0;
    let logits = |x: &candle_core::Tensor| model.forward(x, false);
    let mut robust_acc = Vec::new();
    let mut certified_acc = None;
    if let Some(robust) = &eval.robust {
        for (i, eps) in robust.eps.0.iter().enumerate() {
            let acfg = protocol::AttackConfig {
                eps: eps.0,
                n: robust.n.get().min(data.test.len()),
                seed: robust.seed,
                attacks: robust.attacks.0.iter().map(|&a| attack_kind(a)).collect(),
                iters: robust.iters.get() as usize,
                batch: ATTACK_BATCH,
            };
            let report = protocol::evaluate(&logits, &data.test, &acfg, &device)?;
            robust_acc.push(report.robust_acc);
            if i == 0 && eval.certified {
                certified_acc = certified::certify(&model, &report.margins, eps.0)?.certified_acc;
            }
        }
    }
    // The final weights' per-layer norms: norms.csv for the report's per-layer plot, and the
    // row's summaries over conv and linear layers.
    let layers = crate::norms::table::model_norms(&model, false)?;
    crate::util::atomic_write(&ctx.work_dir.join("norms.csv"), crate::norms::table::render_csv(&layers)?.as_bytes())?;
    let weight_layers: Vec<(f64, f64)> =
        layers.iter().filter(|l| l.spec.kind != crate::models::LayerKind::Bn).map(|l| (l.l1, l.linf)).collect();
    let norms = NormSummary::from_layers(&weight_layers);
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
