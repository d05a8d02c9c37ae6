//! Empirical checks of robustness on the ε-balls: deterministic probes that find the
//! counterexample when balls of different classes overlap, random points of every ball,
//! and (ℓ∞) a PGD attack. They complement the sound certificate ([`super::certify`]): a
//! probe can only find failures, the certificate can only prove their absence.

use super::points::PointSet;
use super::{InputNorm, Mlp};
use anyhow::Result;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How hard the empirical checks look.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    /// Random points per ball (besides the segment point).
    pub per_point: usize,
    /// Seed of the random points and of PGD's random starts.
    pub seed: u64,
    /// PGD steps per run.
    pub pgd_steps: usize,
    /// PGD runs per point.
    pub pgd_restarts: usize,
}

/// Inputs to probe, `per_point + 1` per point: first the point of the segment to its nearest
/// other-class point that lies `min(ε, D/2)` away (the midpoint when the balls overlap: it is
/// in both balls, so one of them is misclassified there), then `per_point` random points of
/// its ε-ball (half on the boundary: ℓ∞ vertices, ℓ2 sphere; half inside).
pub fn ball_probes(points: &PointSet, eps: f64, norm: InputNorm, per_point: usize, seed: u64) -> Vec<f64> {
    let d = points.dim;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::with_capacity(points.len() * (per_point + 1) * d);
    for i in 0..points.len() {
        let x = points.point(i);
        let nearest = (0..points.len())
            .filter(|&j| points.labels[j] != points.labels[i])
            .map(|j| (j, norm.distance(x, points.point(j))))
            .fold(None, |b: Option<(usize, f64)>, c| if b.is_none_or(|b| c.1 < b.1) { Some(c) } else { b });
        match nearest {
            Some((j, dist)) if dist > 0.0 => {
                let t = if 2.0 * eps < dist { eps / dist } else { 0.5 };
                rows.extend(x.iter().zip(points.point(j)).map(|(a, b)| a + t * (b - a)));
            }
            _ => rows.extend_from_slice(x),
        }
        for s in 0..per_point {
            let boundary = s % 2 == 0;
            match norm {
                InputNorm::Linf => rows.extend(x.iter().map(|&v| {
                    let u: f64 = if boundary { if rng.gen() { 1.0 } else { -1.0 } } else { rng.gen_range(-1.0..=1.0) };
                    v + eps * u
                })),
                InputNorm::L2 => {
                    let g: Vec<f64> = (0..d).map(|_| standard_normal(&mut rng)).collect();
                    let len = g.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
                    let r = if boundary { eps } else { eps * rng.gen::<f64>().powf(1.0 / d as f64) };
                    rows.extend(x.iter().zip(&g).map(|(v, gv)| v + r * gv / len));
                }
            }
        }
    }
    rows
}

/// What probing found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    /// Inputs probed.
    pub probes: usize,
    /// (probe, ball) memberships checked: a probe is checked against every ball holding it.
    pub memberships: usize,
    /// Memberships where the network's class differs from the ball's centre's label.
    pub violations: usize,
    /// The first violation: (probe index, point whose ball holds it, predicted class).
    pub first_violation: Option<(usize, usize, usize)>,
}

/// Classifies every probe and checks it against the label of every point whose ε-ball holds
/// it (distance ≤ ε up to a relative 1e-12 for rounding on the boundary).
pub fn check_probes(net: &Mlp, points: &PointSet, probes: &[f64], eps: f64, norm: InputNorm, device: &Device) -> Result<ProbeResult> {
    let d = points.dim;
    let predicted = net.predict(probes, device)?;
    let mut res = ProbeResult { probes: predicted.len(), memberships: 0, violations: 0, first_violation: None };
    for (s, &pred) in predicted.iter().enumerate() {
        let p = &probes[s * d..][..d];
        for i in 0..points.len() {
            if norm.distance(p, points.point(i)) <= eps * (1.0 + 1e-12) {
                res.memberships += 1;
                if pred != points.labels[i] {
                    res.violations += 1;
                    res.first_violation.get_or_insert((s, i, pred));
                }
            }
        }
    }
    Ok(res)
}

/// A standard normal sample (Box–Muller; rand 0.8 has no normal distribution without
/// rand_distr).
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// What PGD found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PgdResult {
    /// Points attacked.
    pub attacked: usize,
    /// Points for which PGD reached a misclassified input inside the attacked ball.
    pub fooled: usize,
    /// The first fooled point.
    pub first_fooled: Option<usize>,
    /// The ℓ∞ radius PGD used: ε for ℓ∞ balls, ε/√d (the largest ℓ∞ ball inside the ℓ2
    /// ball) for ℓ2 balls, since the attack is ℓ∞ only.
    pub linf_radius: f64,
}

/// Attacks every point with normlab's PGD (`crate::attack::pgd`: cross-entropy, random
/// start, `probe.pgd_restarts` runs of `probe.pgd_steps` steps) inside its ε-ball ∩ [0, 1]^d. For ℓ2 balls it
/// attacks the largest ℓ∞ ball they contain, radius ε/√d: weaker, but inside the threat
/// model, so anything it finds is a real counterexample.
pub fn pgd_check(net: &Mlp, points: &PointSet, eps: f64, norm: InputNorm, probe: &ProbeOptions, device: &Device) -> Result<PgdResult> {
    let (steps, restarts, seed) = (probe.pgd_steps, probe.pgd_restarts, probe.seed);
    let linf_radius = match norm {
        InputNorm::Linf => eps,
        InputNorm::L2 => eps / (points.dim as f64).sqrt(),
    };
    if points.coords.iter().any(|v| !(0.0..=1.0).contains(v)) {
        anyhow::bail!("PGD attacks inputs in [0, 1]; these points leave it");
    }
    let x = candle_core::Tensor::from_slice(&points.coords, (points.len(), points.dim), device)?;
    let y: Vec<u32> = points.labels.iter().map(|&l| l as u32).collect();
    let logits = |x: &candle_core::Tensor| net.forward(x);
    let cfg = crate::attack::PgdConfig { eps: linf_radius, step: 2.5 * linf_radius / steps.max(1) as f64, steps, random_start: true, restarts, seed, batch: 256 };
    let adv = crate::attack::pgd(&logits, &x, &y, &cfg, &|| {})?;
    Ok(PgdResult {
        attacked: points.len(),
        fooled: adv.fooled.iter().filter(|&&f| f).count(),
        first_fooled: adv.fooled.iter().position(|&f| f),
        linf_radius,
    })
}
