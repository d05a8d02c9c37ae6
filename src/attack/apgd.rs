//! APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
//! of diverse parameter-free attacks"), ℓ∞ and ℓ2, with AutoAttack's standard-version
//! settings and the behaviour of its reference implementation (fra31/auto-attack,
//! `autopgd_base.py`):
//!
//! - start (lines 206–213, 230): x₀ = clip₀₁(x + ε·t / (‖t‖ + 1e-12)), t uniform in [−1, 1]
//!   with the ℓ∞ norm (max |t|), standard normal with the ℓ2 norm;
//! - step size η = 2ε per point (line 293, for both norms);
//! - step (lines 328–344): z = P(x_k + η·s_k), x_{k+1} = P(x_k + a(z − x_k) + (1 − a)(x_k −
//!   x_{k−1})) with a = 0.75 (a = 1 at k = 0), s_k = sign ∇ₖ (ℓ∞) or ∇ₖ / (‖∇ₖ‖₂ + 1e-12)
//!   (ℓ2), P the [`Ball`]'s map onto the ε-ball ∩ [0, 1] (for ℓ2 AutoAttack's rescale to
//!   length ≤ ε, then clip);
//! - checkpoints after w₁ = ⌊0.22·N⌋ iterations, then windows shrinking by ⌊0.03·N⌋ down to
//!   ⌊0.06·N⌋ (fractions p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06));
//! - at a checkpoint closing a window of w iterations, a point's step halves when its loss rose
//!   in at most ρ·w of them (ρ = 0.75), or when its step did not halve at the previous
//!   checkpoint and its best loss has not improved since; a point whose step halves restarts
//!   from its best point and that point's gradient (lines 405–424, the same rule for ℓ∞ and
//!   ℓ2). As in the reference, the loss history starts zero-filled, so the first comparison of
//!   the first window is against 0;
//! - a point is fooled once any iterate is misclassified; restarts (and, for APGD-T, the 9
//!   target classes: the 2nd..10th largest clean logits) run only on points not yet fooled.
//!
//! Points are batched; a point leaves its batch as soon as it is fooled (samples do not
//! interact in an eval-mode classifier, so the others' trajectories are unchanged), which
//! is where most of the saving on weak models comes from.

use super::losses::{descending, loss_and_input_grad, Loss};
use super::{argmax_rows, check_in_ball, index_tensor, per_sample, row_mask, set_rows, start_directions, Adversarial, Ball, Logits, Norm};
use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Which loss APGD ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApgdLoss {
    /// Cross-entropy (APGD-CE).
    Ce,
    /// Untargeted DLR (APGD-DLR).
    Dlr,
    /// Targeted DLR, one run per target class (APGD-T).
    TargetedDlr,
}

/// APGD's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ApgdConfig {
    /// The loss.
    pub loss: ApgdLoss,
    /// The norm of the ball.
    pub norm: Norm,
    /// Radius in input units.
    pub eps: f64,
    /// Iterations per run (N).
    pub iters: usize,
    /// Random restarts per run (per target class for APGD-T).
    pub restarts: usize,
    /// Target classes for APGD-T: the 2nd, 3rd, … largest clean logits.
    pub targets: usize,
    /// The oscillation threshold ρ of the step-size rule.
    pub rho: f64,
    /// Seed of the random starts.
    pub seed: u64,
    /// Points per forward/backward batch.
    pub batch: usize,
}

impl ApgdConfig {
    /// AutoAttack's standard version: 100 iterations, 1 restart, 9 target classes, ρ = 0.75
    /// (`autoattack.py` lines 33–48 and 308–317).
    pub fn standard(loss: ApgdLoss, norm: Norm, eps: f64) -> Self {
        Self { loss, norm, eps, iters: 100, restarts: 1, targets: 9, rho: 0.75, seed: 0, batch: 256 }
    }

    /// Forward+backward runs per point that survives everything: iterations × restarts
    /// (× target classes for APGD-T), plus one start evaluation per run.
    pub fn runs(&self) -> usize {
        match self.loss {
            ApgdLoss::TargetedDlr => self.restarts * self.targets,
            _ => self.restarts,
        }
    }

    fn validate(&self, classes: usize) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bail!("APGD ε = {} must be a finite number ≥ 0", self.eps);
        }
        if self.iters == 0 || self.restarts == 0 || self.batch == 0 {
            bail!("APGD needs iters ≥ 1, restarts ≥ 1 and batch ≥ 1 (got {}, {}, {})", self.iters, self.restarts, self.batch);
        }
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            bail!("APGD ρ = {} must lie in (0, 1]", self.rho);
        }
        if self.loss == ApgdLoss::TargetedDlr && (self.targets == 0 || self.targets >= classes) {
            bail!("APGD-T with {} target classes on a {classes}-class classifier: use 1..={}", self.targets, classes.saturating_sub(1));
        }
        Ok(())
    }
}

/// The step-size checkpoints of a run of `iters` iterations: the first window, the smallest
/// window and the shrink per checkpoint, as `autopgd_base.py` computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Iterations before the first checkpoint: max(⌊0.22·N⌋, 1).
    pub first: usize,
    /// Smallest window: max(⌊0.06·N⌋, 1).
    pub min: usize,
    /// Window shrink per checkpoint: max(⌊0.03·N⌋, 1).
    pub shrink: usize,
}

impl Schedule {
    /// The schedule for `iters` iterations.
    pub fn new(iters: usize) -> Self {
        let part = |f: f64| ((f * iters as f64) as usize).max(1);
        Self { first: part(0.22), min: part(0.06), shrink: part(0.03) }
    }

    /// Iteration counts after which the step-size rule runs (22, 41, 57, 70, 80, 87, 93, 99
    /// for N = 100, i.e. p_j·N).
    pub fn checkpoints(&self, iters: usize) -> Vec<usize> {
        let (mut at, mut w, mut out) = (0, self.first, Vec::new());
        while at + w <= iters {
            at += w;
            out.push(at);
            w = w.saturating_sub(self.shrink).max(self.min);
        }
        out
    }
}

/// Runs APGD on inputs `x` (N × …, values in [0, 1]) with true classes `y`, calling `tick`
/// after every iteration of every batch. Returns, per point, a misclassified input inside the
/// ε-ball ∩ [0, 1] where one was found, else the highest-loss input of the last run.
pub fn apgd(f: &Logits, x: &Tensor, y: &[u32], cfg: &ApgdConfig, tick: &dyn Fn()) -> Result<Adversarial> {
    let n = x.dim(0)?;
    if y.len() != n {
        bail!("{} labels for {n} inputs", y.len());
    }
    let mut out = x.clone();
    let mut fooled = vec![false; n];
    if n == 0 {
        return Ok(Adversarial { x_adv: out, fooled });
    }
    // Clean logits: the class count, and APGD-T's target order.
    let clean = super::logits_in_chunks(f, x, cfg.batch)?;
    let classes = clean[0].len();
    cfg.validate(classes)?;
    let order: Vec<Vec<u32>> = clean.iter().map(|row| descending(row)).collect();
    // A point misclassified already is fooled by its clean input (AutoAttack attacks only
    // correctly classified points; this keeps direct callers honest too).
    for (i, row) in order.iter().enumerate() {
        fooled[i] = row[0] != y[i];
    }
    // Ranks (0 = top) of the target classes in the clean logits: APGD-T runs once per
    // target; the untargeted losses run once and ignore it.
    let ranks: Vec<usize> = match cfg.loss {
        ApgdLoss::TargetedDlr => (1..=cfg.targets).collect(),
        _ => vec![1],
    };
    let mut run = 0u64;
    for &target_rank in &ranks {
        for _ in 0..cfg.restarts {
            let todo: Vec<usize> = (0..n).filter(|&i| !fooled[i]).collect();
            for chunk in todo.chunks(cfg.batch) {
                let idx = index_tensor(chunk, x)?;
                let xc = x.index_select(&idx, 0)?;
                let yc: Vec<u32> = chunk.iter().map(|&i| y[i]).collect();
                let tc: Vec<u32> = chunk.iter().map(|&i| order[i][target_rank]).collect();
                let t = start_directions(&xc, chunk, cfg.seed, run, cfg.norm)?;
                let res = single_run(f, &xc, &yc, &tc, &t, cfg.loss, cfg, tick)?;
                out = set_rows(&out, chunk, &res.x_adv)?;
                for (&i, &fl) in chunk.iter().zip(&res.fooled) {
                    fooled[i] |= fl;
                }
            }
            run += 1;
        }
    }
    check_in_ball(x, &out, cfg.norm, cfg.eps)?;
    Ok(Adversarial { x_adv: out, fooled })
}

/// Per-point bookkeeping of one run.
#[derive(Debug, Clone)]
struct Point {
    /// Row in the run's batch.
    row: usize,
    label: u32,
    target: u32,
    step: f32,
    loss_best: f32,
    loss_best_last_check: f32,
    reduced_last_check: bool,
    history: Vec<f32>,
}

/// The tensors of the points still under attack, row-aligned with `points`.
struct Active {
    ball: Ball,
    x_adv: Tensor,
    x_prev: Tensor,
    grad: Tensor,
    x_best: Tensor,
    grad_best: Tensor,
}

impl Active {
    fn keep(&self, rows: &[usize]) -> Result<Self> {
        let idx = index_tensor(rows, &self.x_adv)?;
        let sel = |t: &Tensor| t.index_select(&idx, 0);
        Ok(Self {
            ball: self.ball.select(&idx)?,
            x_adv: sel(&self.x_adv)?,
            x_prev: sel(&self.x_prev)?,
            grad: sel(&self.grad)?,
            x_best: sel(&self.x_best)?,
            grad_best: sel(&self.grad_best)?,
        })
    }
}

/// One APGD run (`attack_single_run`) from the random directions `t` on a batch.
#[allow(clippy::too_many_arguments)]
fn single_run(f: &Logits, x: &Tensor, y: &[u32], targets: &[u32], t: &Tensor, loss: ApgdLoss, cfg: &ApgdConfig, tick: &dyn Fn()) -> Result<Adversarial> {
    let m = x.dim(0)?;
    let eps = cfg.eps;
    let x0 = (x + (cfg.norm.normalize_rows(t)? * eps)?)?.clamp(0f64, 1f64)?;
    let mut out = x0.clone();
    let mut fooled = vec![false; m];

    let mut points: Vec<Point> = (0..m)
        .map(|i| Point {
            row: i,
            label: y[i],
            target: targets[i],
            step: (2.0 * eps) as f32,
            loss_best: 0.0,
            loss_best_last_check: 0.0,
            reduced_last_check: true,
            history: Vec::with_capacity(cfg.iters),
        })
        .collect();
    let eval = |x_adv: &Tensor, points: &[Point]| {
        let labels: Vec<u32> = points.iter().map(|p| p.label).collect();
        let tg: Vec<u32> = points.iter().map(|p| p.target).collect();
        let l = match loss {
            ApgdLoss::Ce => Loss::Ce,
            ApgdLoss::Dlr => Loss::Dlr,
            ApgdLoss::TargetedDlr => Loss::TargetedDlr(&tg),
        };
        loss_and_input_grad(f, x_adv, l, &labels)
    };
    let e = eval(&x0, &points)?;
    for (p, &l) in points.iter_mut().zip(&e.loss) {
        p.loss_best = l;
        p.loss_best_last_check = l;
    }
    let mut st = Active { ball: Ball::new(x, cfg.norm, eps)?, x_adv: x0.clone(), x_prev: x0.clone(), grad: e.grad.clone(), x_best: x0.clone(), grad_best: e.grad };
    let preds = argmax_rows(&e.logits);
    drop_fooled(&mut points, &mut st, &preds, &mut out, &mut fooled)?;

    let schedule = Schedule::new(cfg.iters);
    let mut window = schedule.first;
    let mut since_check = 0;
    for i in 0..cfg.iters {
        if points.is_empty() {
            break;
        }
        let a = if i > 0 { 0.75 } else { 1.0 };
        let momentum = (&st.x_adv - &st.x_prev)?;
        st.x_prev = st.x_adv.clone();
        let steps: Vec<f32> = points.iter().map(|p| p.step).collect();
        let z = st.ball.project(&(&st.x_adv + ascent(&st.grad, cfg.norm)?.broadcast_mul(&per_sample(&steps, &st.x_adv)?)?)?)?;
        let mixed = ((&st.x_adv + ((&z - &st.x_adv)? * a)?)? + (momentum * (1.0 - a))?)?;
        st.x_adv = st.ball.project(&mixed)?;

        let e = eval(&st.x_adv, &points)?;
        tick();
        st.grad = e.grad;
        let improved: Vec<bool> = points.iter().zip(&e.loss).map(|(p, &l)| l > p.loss_best).collect();
        if improved.iter().any(|&b| b) {
            let mask = row_mask(&improved, &st.x_adv)?;
            st.x_best = mask.where_cond(&st.x_adv, &st.x_best)?;
            st.grad_best = mask.where_cond(&st.grad, &st.grad_best)?;
        }
        for ((p, &l), &imp) in points.iter_mut().zip(&e.loss).zip(&improved) {
            p.history.push(l);
            if imp {
                p.loss_best = l;
            }
        }
        // Fooled points leave now, with the iterate that fooled them.
        let preds = argmax_rows(&e.logits);
        drop_fooled(&mut points, &mut st, &preds, &mut out, &mut fooled)?;

        since_check += 1;
        if since_check == window {
            let halve: Vec<bool> = points.iter_mut().map(|p| checkpoint(p, i, window, cfg.rho)).collect();
            if halve.iter().any(|&b| b) {
                let mask = row_mask(&halve, &st.x_adv)?;
                st.x_adv = mask.where_cond(&st.x_best, &st.x_adv)?;
                st.grad = mask.where_cond(&st.grad_best, &st.grad)?;
            }
            since_check = 0;
            window = window.saturating_sub(schedule.shrink).max(schedule.min);
        }
    }
    let rows: Vec<usize> = points.iter().map(|p| p.row).collect();
    out = set_rows(&out, &rows, &st.x_best)?;
    Ok(Adversarial { x_adv: out, fooled })
}

/// The step-size rule at a checkpoint closing a window of `window` iterations at iteration
/// `i`: returns whether the point's step halves (and the point restarts from its best).
fn checkpoint(p: &mut Point, i: usize, window: usize, rho: f64) -> bool {
    let h = &p.history;
    let rises = (0..window)
        .filter(|&c| {
            let j = i - c;
            let before = if j == 0 { 0.0 } else { h[j - 1] };
            h[j] > before
        })
        .count();
    let oscillating = rises as f64 <= window as f64 * rho;
    let stalled = !p.reduced_last_check && p.loss_best_last_check >= p.loss_best;
    let halve = oscillating || stalled;
    p.reduced_last_check = halve;
    p.loss_best_last_check = p.loss_best;
    if halve {
        p.step /= 2.0;
    }
    halve
}

/// Moves points whose prediction is wrong out of the active set, recording their iterate.
fn drop_fooled(points: &mut Vec<Point>, st: &mut Active, preds: &[u32], out: &mut Tensor, fooled: &mut [bool]) -> Result<()> {
    let wrong: Vec<usize> = (0..points.len()).filter(|&k| preds[k] != points[k].label).collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let rows: Vec<usize> = wrong.iter().map(|&k| points[k].row).collect();
    let found = st.x_adv.index_select(&index_tensor(&wrong, &st.x_adv)?, 0)?;
    *out = set_rows(out, &rows, &found)?;
    for &r in &rows {
        fooled[r] = true;
    }
    let keep_mask: Vec<bool> = (0..points.len()).map(|k| preds[k] == points[k].label).collect();
    let keep: Vec<usize> = (0..points.len()).filter(|&k| keep_mask[k]).collect();
    if !keep.is_empty() {
        *st = st.keep(&keep)?;
    }
    let mut flags = keep_mask.iter();
    points.retain(|_| *flags.next().unwrap_or(&false));
    Ok(())
}

/// The direction of an ascent step: sign ∇ (ℓ∞) or ∇ / (‖∇‖₂ + 1e-12) (ℓ2), per row.
fn ascent(grad: &Tensor, norm: Norm) -> Result<Tensor> {
    match norm {
        Norm::Linf => Ok(grad.sign()?),
        Norm::L2 => norm.normalize_rows(grad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::testing::{distance_and_range, grid, Affine2d};

    #[test]
    fn schedule_matches_the_reference_checkpoints() {
        let s = Schedule::new(100);
        assert_eq!(s, Schedule { first: 22, min: 6, shrink: 3 });
        // p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), times 100.
        assert_eq!(s.checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
        let mut p = vec![0.0f64, 0.22];
        while let [.., a, b] = p[..] {
            let next = b + (b - a - 0.03).max(0.06);
            if next > 1.0 + 1e-9 {
                break;
            }
            p.push(next);
        }
        let from_fractions: Vec<usize> = p[1..].iter().map(|f| (f * 100.0).round() as usize).collect();
        assert_eq!(from_fractions, s.checkpoints(100));
        // Short runs: windows of at least one iteration.
        assert_eq!(Schedule::new(10), Schedule { first: 2, min: 1, shrink: 1 });
        assert_eq!(Schedule::new(10).checkpoints(10), vec![2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(Schedule::new(1).checkpoints(1), vec![1]);
    }

    fn point(history: &[f32], best: f32, last_best: f32, reduced: bool) -> Point {
        Point { row: 0, label: 0, target: 0, step: 1.0, loss_best: best, loss_best_last_check: last_best, reduced_last_check: reduced, history: history.to_vec() }
    }

    #[test]
    fn step_halves_on_oscillation_or_stall() {
        // Rose in all 4 steps of a window of 4 (ρ·w = 3): keep the step.
        let mut p = point(&[1.0, 2.0, 3.0, 4.0, 5.0], 5.0, 1.0, false);
        assert!(!checkpoint(&mut p, 4, 4, 0.75));
        assert_eq!(p.step, 1.0);
        assert_eq!(p.loss_best_last_check, 5.0);
        // Rose in 3 of 4: at most ρ·w, halve.
        let mut p = point(&[1.0, 2.0, 1.5, 3.0, 4.0], 4.0, 1.0, false);
        assert!(checkpoint(&mut p, 4, 4, 0.75));
        assert_eq!(p.step, 0.5);
        // Rose in every step but the best loss did not improve since the last checkpoint,
        // where the step was not halved: halve.
        let mut p = point(&[1.0, 2.0, 3.0, 4.0, 5.0], 9.0, 9.0, false);
        assert!(checkpoint(&mut p, 4, 4, 0.75));
        // ... unless it was halved there.
        let mut p = point(&[1.0, 2.0, 3.0, 4.0, 5.0], 9.0, 9.0, true);
        assert!(!checkpoint(&mut p, 4, 4, 0.75));
        assert!(!p.reduced_last_check);
        // First window: the first loss is compared with 0 as in autopgd_base.py, so a
        // negative (DLR) loss rising in every later step counts 3 rises of 4 and halves.
        let mut p = point(&[-0.5, -0.4, -0.3, -0.2], -0.2, -0.5, true);
        assert!(checkpoint(&mut p, 3, 4, 0.75));
    }

    /// Runs APGD on a grid labelled by the model itself; compares with the exact answer.
    /// `exact`: fooled ⇔ vulnerable; else only fooled ⇒ vulnerable (an untargeted loss may
    /// climb towards a corner that raises the loss without crossing a boundary).
    fn check_against_brute_force(loss: ApgdLoss, model: &Affine2d, eps: f64, exact: bool) -> usize {
        let f = model.function();
        let (x, pts) = grid(9);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let cfg = ApgdConfig { targets: model.w.len() - 1, batch: 16, ..ApgdConfig::standard(loss, Norm::Linf, eps) };
        let adv = apgd(&f, &x, &y, &cfg, &|| {}).unwrap();
        let (d, lo, hi) = distance_and_range(&x, &adv.x_adv);
        assert!(d as f64 <= eps + 1e-6 && lo >= 0.0 && hi <= 1.0, "{d} {lo} {hi}");
        let mut vulnerable = 0;
        for (i, &p) in pts.iter().enumerate() {
            let worst = model.worst_margin(p, y[i], eps);
            if worst.abs() < 1e-3 {
                continue; // too close to call in f32
            }
            if exact || adv.fooled[i] {
                assert_eq!(adv.fooled[i], worst < 0.0, "{loss:?} point {p:?} worst margin {worst}");
            }
            vulnerable += (worst < 0.0) as usize;
        }
        // Fooled means misclassified: re-classify what the attack returned.
        let preds = crate::attack::argmax_rows(&crate::attack::logits_in_chunks(&f, &adv.x_adv, 100).unwrap());
        for i in 0..pts.len() {
            assert_eq!(adv.fooled[i], preds[i] != y[i]);
        }
        vulnerable
    }

    #[test]
    fn apgd_finds_exactly_the_vulnerable_points_of_an_affine_classifier() {
        // Targeted DLR tries every other class, so on an affine model it must find every
        // vulnerable point; CE is exact with two classes; CE and DLR are sound with four.
        let four = Affine2d::four_classes();
        assert!(check_against_brute_force(ApgdLoss::TargetedDlr, &four, 0.12, true) > 5);
        assert!(check_against_brute_force(ApgdLoss::Ce, &Affine2d::two_classes(), 0.1, true) > 5);
        check_against_brute_force(ApgdLoss::Ce, &four, 0.12, false);
        check_against_brute_force(ApgdLoss::Dlr, &four, 0.12, false);
    }

    #[test]
    fn apgd_at_zero_radius_fools_nothing() {
        let model = Affine2d::four_classes();
        let f = model.function();
        let (x, pts) = grid(6);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let adv = apgd(&f, &x, &y, &ApgdConfig { iters: 10, targets: 3, ..ApgdConfig::standard(ApgdLoss::TargetedDlr, Norm::Linf, 0.0) }, &|| {}).unwrap();
        assert!(adv.fooled.iter().all(|&b| !b));
        assert_eq!(distance_and_range(&x, &adv.x_adv).0, 0.0);
    }

    #[test]
    fn l2_apgd_stays_in_the_ball_and_finds_the_vulnerable_points() {
        // Targeted DLR at ℓ2: sound everywhere (fooled ⇒ some input of the disc ∩ box is
        // misclassified), exact where the disc lies inside the box (there AutoAttack's
        // rescale-then-clip is the exact projection).
        let model = Affine2d::four_classes();
        let f = model.function();
        let (x, pts) = grid(11);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let eps = 0.15;
        let cfg = ApgdConfig { targets: 3, batch: 16, ..ApgdConfig::standard(ApgdLoss::TargetedDlr, Norm::L2, eps) };
        let adv = apgd(&f, &x, &y, &cfg, &|| {}).unwrap();
        let (a, b) = (x.to_vec2::<f32>().unwrap(), adv.x_adv.to_vec2::<f32>().unwrap());
        let (mut vulnerable, mut inside) = (0, 0);
        for (i, &p) in pts.iter().enumerate() {
            let d = ((a[i][0] - b[i][0]) as f64).hypot((a[i][1] - b[i][1]) as f64);
            assert!(d <= eps * (1.0 + 1e-5) && b[i].iter().all(|v| (0.0..=1.0).contains(v)), "point {i} at {d}");
            let worst = model.worst_margin_l2(p, y[i], eps);
            if worst.abs() < 1e-3 {
                continue;
            }
            if adv.fooled[i] {
                assert!(worst < 0.0, "point {p:?} fooled, worst margin {worst}");
            }
            if p.iter().all(|&v| v >= eps && v <= 1.0 - eps) {
                assert_eq!(adv.fooled[i], worst < 0.0, "point {p:?} worst margin {worst}");
                inside += 1;
            }
            vulnerable += (worst < 0.0) as usize;
        }
        assert!(vulnerable > 5 && inside > 20, "{vulnerable} {inside}");
        // A smaller ball finds no more than a larger one, and ℓ2 ε is not ℓ∞ ε: the ℓ2 ball
        // of radius ε lies inside the ℓ∞ ball of radius ε.
        let linf = apgd(&f, &x, &y, &ApgdConfig { norm: Norm::Linf, ..cfg.clone() }, &|| {}).unwrap();
        for i in 0..pts.len() {
            assert!(!adv.fooled[i] || linf.fooled[i] || model.worst_margin_l2(pts[i], y[i], eps).abs() < 1e-3, "point {i}");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_batch_size() {
        let model = Affine2d::four_classes();
        let f = model.function();
        let (x, pts) = grid(7);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let run = |batch| apgd(&f, &x, &y, &ApgdConfig { iters: 20, batch, ..ApgdConfig::standard(ApgdLoss::Ce, Norm::Linf, 0.05) }, &|| {}).unwrap();
        let (a, b) = (run(7), run(49));
        assert_eq!(a.fooled, b.fooled);
        assert_eq!(distance_and_range(&a.x_adv, &b.x_adv).0, 0.0);
    }
}
