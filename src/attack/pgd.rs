//! FGSM and ℓ∞ PGD on the cross-entropy loss: x ← P(x + η·sign ∇ CE), P the projection
//! onto the ε-ball ∩ [0, 1], from x (FGSM, one step of size ε) or from a uniform random
//! point of the ball (PGD, Madry et al. 2018), with restarts on the points not yet fooled.
//! A point is fooled once any iterate is misclassified; it then leaves its batch.

use super::losses::{loss_and_input_grad, Loss};
use super::{argmax_rows, check_in_ball, index_tensor, per_sample, row_mask, set_rows, start_directions, Adversarial, Ball, Logits, Norm};
use anyhow::{bail, Result};
use candle_core::Tensor;

/// PGD's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PgdConfig {
    /// ℓ∞ radius in input units.
    pub eps: f64,
    /// Step size η in input units.
    pub step: f64,
    /// Steps per restart.
    pub steps: usize,
    /// Start from a uniform random point of the ball (else from the clean input).
    pub random_start: bool,
    /// Runs per point (each from a fresh random start, on points not yet fooled).
    pub restarts: usize,
    /// Seed of the random starts.
    pub seed: u64,
    /// Points per forward/backward batch.
    pub batch: usize,
}

impl PgdConfig {
    /// Madry et al.'s evaluation PGD: `steps` steps of 2.5·ε/steps from a random start, one run.
    pub fn madry(eps: f64, steps: usize) -> Self {
        Self { eps, step: 2.5 * eps / steps.max(1) as f64, steps, random_start: true, restarts: 1, seed: 0, batch: 256 }
    }

    fn validate(&self) -> Result<()> {
        if !self.eps.is_finite() || !(0.0..=1.0).contains(&self.eps) {
            bail!("PGD ε = {} must lie in [0, 1]", self.eps);
        }
        if !self.step.is_finite() || self.step < 0.0 {
            bail!("PGD step size {} must be finite and ≥ 0", self.step);
        }
        if self.steps == 0 || self.restarts == 0 || self.batch == 0 {
            bail!("PGD needs steps ≥ 1, restarts ≥ 1 and batch ≥ 1 (got {}, {}, {})", self.steps, self.restarts, self.batch);
        }
        Ok(())
    }
}

/// FGSM: one signed-gradient step of size ε from the clean input.
pub fn fgsm(f: &Logits, x: &Tensor, y: &[u32], eps: f64, batch: usize) -> Result<Adversarial> {
    let cfg = PgdConfig { eps, step: eps, steps: 1, random_start: false, restarts: 1, seed: 0, batch };
    pgd(f, x, y, &cfg, &|| {})
}

/// PGD on cross-entropy, calling `tick` after every step of every batch. Returns, per
/// point, the first misclassified iterate where one was found, else the highest-loss one.
pub fn pgd(f: &Logits, x: &Tensor, y: &[u32], cfg: &PgdConfig, tick: &dyn Fn()) -> Result<Adversarial> {
    cfg.validate()?;
    let n = x.dim(0)?;
    if y.len() != n {
        bail!("{} labels for {n} inputs", y.len());
    }
    let mut out = x.clone();
    let mut fooled = vec![false; n];
    for restart in 0..cfg.restarts {
        let todo: Vec<usize> = (0..n).filter(|&i| !fooled[i]).collect();
        for chunk in todo.chunks(cfg.batch) {
            let xc = x.index_select(&index_tensor(chunk, x)?, 0)?;
            let yc: Vec<u32> = chunk.iter().map(|&i| y[i]).collect();
            let start = if cfg.random_start {
                Ball::new(&xc, Norm::Linf, cfg.eps)?.project(&(&xc + (start_directions(&xc, chunk, cfg.seed, restart as u64, Norm::Linf)? * cfg.eps)?)?)?
            } else {
                xc.clone()
            };
            let res = run(f, &xc, &yc, start, cfg, tick)?;
            out = set_rows(&out, chunk, &res.x_adv)?;
            for (&i, &fl) in chunk.iter().zip(&res.fooled) {
                fooled[i] |= fl;
            }
        }
    }
    check_in_ball(x, &out, Norm::Linf, cfg.eps)?;
    Ok(Adversarial { x_adv: out, fooled })
}

/// One signed-gradient step projected onto the ball: P(x + η·sign g), η per sample.
pub(crate) fn signed_step(ball: &Ball, x: &Tensor, grad: &Tensor, step: &Tensor) -> Result<Tensor> {
    ball.project(&(x + grad.sign()?.broadcast_mul(step)?)?)
}

/// One PGD run on a batch from `start`.
fn run(f: &Logits, x: &Tensor, y: &[u32], start: Tensor, cfg: &PgdConfig, tick: &dyn Fn()) -> Result<Adversarial> {
    let m = x.dim(0)?;
    let mut ball = Ball::new(x, Norm::Linf, cfg.eps)?;
    let mut rows: Vec<usize> = (0..m).collect();
    let mut labels = y.to_vec();
    let mut out = start.clone();
    let mut fooled = vec![false; m];
    let mut x_adv = start;
    let mut x_best = x_adv.clone();
    let mut loss_best = vec![f32::NEG_INFINITY; m];
    for step in 0..=cfg.steps {
        let e = loss_and_input_grad(f, &x_adv, Loss::Ce, &labels)?;
        if step > 0 {
            tick();
        }
        let improved: Vec<bool> = e.loss.iter().zip(&loss_best).map(|(l, b)| l > b).collect();
        x_best = row_mask(&improved, &x_adv)?.where_cond(&x_adv, &x_best)?;
        for ((b, &l), &imp) in loss_best.iter_mut().zip(&e.loss).zip(&improved) {
            if imp {
                *b = l;
            }
        }
        let preds = argmax_rows(&e.logits);
        let mut grad = e.grad;
        let keep: Vec<usize> = (0..rows.len()).filter(|&k| preds[k] == labels[k]).collect();
        if keep.len() < rows.len() {
            // Fooled points leave with the iterate that fooled them.
            let wrong: Vec<usize> = (0..rows.len()).filter(|&k| preds[k] != labels[k]).collect();
            let found = x_adv.index_select(&index_tensor(&wrong, &x_adv)?, 0)?;
            let wrong_rows: Vec<usize> = wrong.iter().map(|&k| rows[k]).collect();
            out = set_rows(&out, &wrong_rows, &found)?;
            for r in wrong_rows {
                fooled[r] = true;
            }
            rows = keep.iter().map(|&k| rows[k]).collect();
            if rows.is_empty() {
                break;
            }
            let idx = index_tensor(&keep, &x_adv)?;
            x_adv = x_adv.index_select(&idx, 0)?;
            x_best = x_best.index_select(&idx, 0)?;
            grad = grad.index_select(&idx, 0)?;
            ball = ball.select(&idx)?;
            labels = keep.iter().map(|&k| labels[k]).collect();
            loss_best = keep.iter().map(|&k| loss_best[k]).collect();
        }
        if step < cfg.steps {
            let eta = per_sample(&vec![cfg.step as f32; rows.len()], &x_adv)?;
            x_adv = signed_step(&ball, &x_adv, &grad, &eta)?;
        }
    }
    out = set_rows(&out, &rows, &x_best)?;
    Ok(Adversarial { x_adv: out, fooled })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::testing::{distance_and_range, grid, Affine2d};

    #[test]
    fn fgsm_finds_exactly_the_vulnerable_points_of_a_binary_affine_classifier() {
        // Binary affine: sign ∇CE = sign(w_other − w_y), which points at the worst corner.
        let model = Affine2d::two_classes();
        let f = model.function();
        let (x, pts) = grid(11);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let eps = 0.1;
        let adv = fgsm(&f, &x, &y, eps, 32).unwrap();
        let (d, lo, hi) = distance_and_range(&x, &adv.x_adv);
        assert!(d as f64 <= eps + 1e-6 && lo >= 0.0 && hi <= 1.0);
        let mut vulnerable = 0;
        for (i, &p) in pts.iter().enumerate() {
            let worst = model.worst_margin(p, y[i], eps);
            if worst.abs() > 1e-3 {
                assert_eq!(adv.fooled[i], worst < 0.0, "{p:?} {worst}");
                vulnerable += (worst < 0.0) as usize;
            }
        }
        assert!(vulnerable > 5);
    }

    #[test]
    fn pgd_finds_only_vulnerable_points_of_an_affine_classifier() {
        // With four classes CE may climb towards a corner that raises the loss without
        // crossing a boundary, so check soundness (fooled ⇒ vulnerable) and that it finds some.
        let model = Affine2d::four_classes();
        let f = model.function();
        let (x, pts) = grid(9);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let eps = 0.12;
        let cfg = PgdConfig { restarts: 3, ..PgdConfig::madry(eps, 20) };
        let adv = pgd(&f, &x, &y, &cfg, &|| {}).unwrap();
        let (d, lo, hi) = distance_and_range(&x, &adv.x_adv);
        assert!(d as f64 <= eps + 1e-6 && lo >= 0.0 && hi <= 1.0);
        for (i, &p) in pts.iter().enumerate() {
            let worst = model.worst_margin(p, y[i], eps);
            if adv.fooled[i] {
                assert!(worst < 0.0, "{p:?} {worst}");
            }
        }
        assert!(adv.fooled.iter().filter(|&&b| b).count() > 5);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let model = Affine2d::two_classes();
        let f = model.function();
        let (x, _) = grid(2);
        let y = vec![0u32; 4];
        for cfg in [PgdConfig { eps: 1.5, ..PgdConfig::madry(0.1, 5) }, PgdConfig { steps: 0, ..PgdConfig::madry(0.1, 5) }, PgdConfig { step: f64::NAN, ..PgdConfig::madry(0.1, 5) }] {
            assert!(pgd(&f, &x, &y, &cfg, &|| {}).is_err());
        }
        assert!(pgd(&f, &x, &y[..3], &PgdConfig::madry(0.1, 5), &|| {}).is_err());
    }
}
