//! Theorem 2: if the classes are 2ε-separated (Assumption 2: points of different classes
//! are more than 2ε apart), a feed-forward network with any non-affine continuous activation
//! that is C¹ with a nonzero derivative somewhere classifies every point and every point of
//! its ε-ball correctly.
//!
//! # The construction
//! For a finite set with separation δ > 2ε, let γ = δ/2 − ε > 0. For every pair (i, j) of
//! points of different classes, the half-space test `h_ij(x) = ⟨w_ij, x − (x_i + x_j)/2⟩`
//! with `‖w_ij‖_* = 1` and `⟨w_ij, x_i − x_j⟩ = ‖x_i − x_j‖` (ℓ2: the perpendicular bisector;
//! ℓ∞: the coordinate where the two points differ most) is, by Hölder, at least
//! `‖x_i − x_j‖/2 − ε ≥ γ` on x_i's ball, and `h_ji = −h_ij ≤ −γ` there. The network:
//! 1. layer 1 (one unit per test): `v_ij = σ(β₁(−h_ij(x)) + a₁)`, "x is on x_j's side";
//! 2. layer 2 (one unit per point): `g_i = σ(a₂ − β₂ Σ_j (v_ij − inf σ))`, "no test of
//!    x_i fails" — prototype i fires on its ball and on no ball of another class;
//! 3. layer 3 (one logit per class): `z_c = Σ_{i of class c} (g_i − inf σ)`.
//!
//! On x_i's ball every test of x_i has `β₁(−h_ij) + a₁ ≤ t_off`, where the activation is
//! off up to p₁ = H/(4·tests), so g_i is on (≥ σ(t_on)); every prototype j of another class
//! has its test against x_i at `≥ t_on`, so its sum is ≥ H = σ(t_on) − inf σ and g_j is off
//! up to H/(4N). Hence z_y ≥ H and z_c ≤ H/4: the margin is ≥ 3H/4 on the whole ball. For
//! ℓ2 the tests are the bisectors, so prototype i's region contains its Voronoi cell among
//! the other classes: the nearest-neighbour rule, realised by a network.
//!
//! # Why any such activation works (the proof's idea)
//! The construction needs only threshold units: a unit that is "off" (within p of inf σ)
//! below one argument and "on" (≥ H above it) above another, each with a margin. ReLU gives
//! this exactly (off at 0); sigmoid and tanh are sigmoidal and saturate exponentially, so
//! σ(βt) tends to a step as β grows; softplus has an exponential left tail and grows on the
//! right. For a general non-affine C¹ activation with σ'(a) ≠ 0 the proof builds the same
//! pieces: the difference quotient (σ(a + ht) − σ(a))/(hσ'(a)) → t makes near-identity maps,
//! and non-affinity supplies the nonlinearity, so the network approximates the threshold
//! construction uniformly on the bounded region that matters, up to an error below the
//! margin. Here the scales β₁, β₂ are chosen from each activation's tail bound
//! ([`Activation::off_below`]), and the certificate (interval bounds) verifies the result
//! instead of trusting the arithmetic.
//!
//! When ε ≥ δ/2 the hypothesis fails: the network is then built for radius δ/4 and checked
//! at ε, and the checks must fail (the probe midpoint lies in two balls of different classes).

use super::certify::certify;
use super::network::{build, LayerWeights};
use super::points::{ClosestPair, PointSet};
pub use super::probe::ProbeOptions;
use super::probe::{ball_probes, check_probes, pgd_check};
use super::{Activation, Check, InputNorm, Mlp, Report};
use anyhow::{bail, Result};
use candle_core::Device;
use serde::Serialize;
use serde_json::json;

/// The argument at which a threshold unit counts as "on".
pub const T_ON: f64 = 2.0;

/// The numbers a construction was built with.
#[derive(Debug, Clone, Serialize)]
pub struct Design {
    /// The data's separation δ and its closest pair.
    pub separation: f64,
    /// Indices of the closest pair of different classes.
    pub closest_pair: (usize, usize),
    /// The radius asked for.
    pub eps: f64,
    /// The radius the network is built for: ε when δ > 2ε, else δ/4 (the hypothesis fails).
    pub built_for_eps: f64,
    /// γ = δ/2 − built_for_eps: the margin of every half-space test on the balls.
    pub gamma: f64,
    /// Half-space tests (layer-1 units).
    pub tests: usize,
    /// H = σ(T_ON) − inf σ: the level of an "on" unit.
    pub on_level: f64,
    /// Layer-1 slope and offset.
    pub beta1: f64,
    /// Layer-1 offset.
    pub a1: f64,
    /// Layer-2 slope.
    pub beta2: f64,
    /// Layer-2 offset.
    pub a2: f64,
}

/// Theorem 2's three layers (host numbers) for `points` at radius `eps` in `norm`.
pub fn construct_layers(points: &PointSet, eps: f64, activation: Activation, norm: InputNorm) -> Result<(Vec<LayerWeights>, Design)> {
    let Some(ClosestPair { distance: delta, pair }) = points.closest_pair(norm) else {
        bail!("the data has a single class: Theorem 2 needs points of at least two classes");
    };
    if delta <= 0.0 {
        bail!("points {} and {} coincide but have different labels: no classifier separates them", pair.0, pair.1);
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        bail!("ε = {eps} must be finite and ≥ 0");
    }
    let built_for_eps = if 2.0 * eps < delta { eps } else { delta / 4.0 };
    let gamma = delta / 2.0 - built_for_eps;
    let (n, d) = (points.len(), points.dim);
    let tests: Vec<(usize, usize)> =
        (0..n).flat_map(|i| (0..n).filter(move |&j| points.labels[j] != points.labels[i]).map(move |j| (i, j))).collect();
    /// Layer-1 weights above this (8 bytes each) would not fit comfortably in memory.
    const MAX_WEIGHTS: usize = 100_000_000;
    if tests.len() * d > MAX_WEIGHTS {
        bail!(
            "{n} points of {} classes need {} half-space tests × {d} inputs = {} layer-1 weights (limit {MAX_WEIGHTS}): lower --points",
            points.classes,
            tests.len(),
            tests.len() * d
        );
    }
    let per_point = |i: usize| tests.iter().filter(|t| t.0 == i).count();
    let max_tests = (0..n).map(per_point).max().unwrap_or(1).max(1);
    let floor = activation.floor();
    let on_level = activation.value(T_ON) - floor;
    let t_off1 = activation.off_below(on_level / (4.0 * max_tests as f64));
    let beta1 = (T_ON - t_off1) / (2.0 * gamma);
    let a1 = (T_ON + t_off1) / 2.0;
    let t_off2 = activation.off_below(on_level / (4.0 * n as f64));
    let beta2 = 4.0 * (T_ON - t_off2) / (3.0 * on_level);
    let a2 = T_ON + beta2 * on_level / 4.0;

    let mut l1 = LayerWeights::zeros("tests", d, tests.len());
    for (u, &(i, j)) in tests.iter().enumerate() {
        let (xi, xj) = (points.point(i), points.point(j));
        let diff: Vec<f64> = xi.iter().zip(xj).map(|(a, b)| a - b).collect();
        let w = norm.dual_direction(&diff);
        let w_dot_mid: f64 = w.iter().zip(xi.iter().zip(xj)).map(|(w, (a, b))| w * (a + b) / 2.0).sum();
        for (k, &wk) in w.iter().enumerate() {
            if wk != 0.0 {
                *l1.at(u, k) = -beta1 * wk;
            }
        }
        l1.bias[u] = beta1 * w_dot_mid + a1;
    }
    let mut l2 = LayerWeights::zeros("prototypes", tests.len(), n);
    for (u, &(i, _)) in tests.iter().enumerate() {
        *l2.at(i, u) = -beta2;
    }
    for i in 0..n {
        l2.bias[i] = a2 + beta2 * per_point(i) as f64 * floor;
    }
    let mut l3 = LayerWeights::zeros("classes", n, points.classes);
    for (i, &y) in points.labels.iter().enumerate() {
        *l3.at(y, i) = 1.0;
        l3.bias[y] -= floor;
    }
    let design = Design { separation: delta, closest_pair: pair, eps, built_for_eps, gamma, tests: tests.len(), on_level, beta1, a1, beta2, a2 };
    Ok((vec![l1, l2, l3], design))
}

/// Theorem 2's network for `points` at radius `eps`, on `device`.
pub fn construct(points: &PointSet, eps: f64, activation: Activation, norm: InputNorm, device: &Device) -> Result<(Mlp, Design)> {
    let (layers, design) = construct_layers(points, eps, activation, norm)?;
    Ok((build(&layers, activation, device)?, design))
}

/// The checks Theorems 2 and Proposition 2 share, on `net` over `points` at radius `eps`:
/// Assumption 2, clean accuracy, the certificate, the probes. Returns the checks and facts.
pub fn robustness_checks(
    net: &Mlp,
    points: &PointSet,
    eps: f64,
    norm: InputNorm,
    probe: ProbeOptions,
    device: &Device,
) -> Result<(Vec<Check>, serde_json::Value)> {
    let closest = points.closest_pair(norm);
    let delta = closest.map_or(f64::INFINITY, |c| c.distance);
    let mut checks = vec![Check::new(
        "assumption2_separation",
        delta > 2.0 * eps,
        delta,
        format!("> 2ε = {}", super::fmt_value(2.0 * eps)),
        match closest {
            Some(c) => format!("smallest {norm} distance between points of different classes (points {} and {})", c.pair.0, c.pair.1),
            None => "all points have one class: no pair to separate".to_string(),
        },
    )];
    let predicted = net.predict(&points.coords, device)?;
    let correct = predicted.iter().zip(&points.labels).filter(|(p, y)| p == y).count();
    let clean = correct as f64 / points.len() as f64;
    checks.push(Check::new("clean_accuracy", clean == 1.0, clean, "= 1", format!("{correct} of {} points classified correctly", points.len())));
    let cert = certify(net, &points.coords, &points.labels, eps, norm, device)?;
    let (weak, weakest) = cert.weakest();
    checks.push(Check::new(
        "certified_robust_accuracy",
        cert.accuracy() == 1.0,
        cert.accuracy(),
        "= 1",
        format!(
            "interval bound propagation over each {norm} ball of radius {}: share of points whose margin bound is > 0 (weakest: point {weak}, bound {})",
            super::fmt_value(eps),
            super::fmt_value(weakest)
        ),
    ));
    let probes = ball_probes(points, eps, norm, probe.per_point, probe.seed);
    let found = check_probes(net, points, &probes, eps, norm, device)?;
    checks.push(Check::new(
        "probed_ball_points",
        found.violations == 0,
        found.violations as f64,
        "= 0 misclassified",
        format!(
            "{} inputs (per point: the segment point toward its nearest other-class point at min(ε, D/2), {} random points of its ball) checked against every ball holding them ({} memberships); first violation (probe, ball, predicted): {:?}",
            found.probes, probe.per_point, found.memberships, found.first_violation
        ),
    ));
    let pgd = pgd_check(net, points, eps, norm, &probe, device)?;
    checks.push(Check::new(
        "pgd_attack",
        pgd.fooled == 0,
        pgd.fooled as f64,
        "= 0 points fooled",
        format!(
            "normlab's PGD (cross-entropy, random start, {} × {} steps) on every point, ℓ∞ radius {}{}; first fooled point: {:?}",
            probe.pgd_restarts,
            probe.pgd_steps,
            super::fmt_value(pgd.linf_radius),
            if norm == InputNorm::L2 { " (the largest ℓ∞ ball inside the ℓ2 ball: the attack is ℓ∞ only)" } else { "" },
            pgd.first_fooled
        ),
    ));
    let facts = json!({
        "pgd": pgd,
        "clean_accuracy": clean,
        "certified_robust_accuracy": cert.accuracy(),
        "weakest_certified_margin": weakest,
        "probes": found,
    });
    Ok((checks, facts))
}

/// Where Theorem 2's points come from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// Generated with [`PointSet::synthetic`].
    Synthetic {
        /// Points.
        points: usize,
        /// Dimension.
        dim: usize,
        /// Classes.
        classes: usize,
        /// Separation of the generated set.
        separation: f64,
        /// Generator seed.
        seed: u64,
    },
    /// The first `points` CIFAR-10 training images of the binary directory `dir`.
    Cifar {
        /// A CIFAR-10 binary directory (`normlab data --out DIR`).
        dir: std::path::PathBuf,
        /// Images taken.
        points: usize,
    },
}

impl DataSource {
    /// The points.
    pub fn load(&self, norm: InputNorm) -> Result<PointSet> {
        match self {
            Self::Synthetic { points, dim, classes, separation, seed } => PointSet::synthetic(*points, *dim, *classes, *separation, norm, *seed),
            Self::Cifar { dir, points } => {
                let data = crate::data::binary::load_dir(dir)?;
                PointSet::from_split(&data.train, *points)
            }
        }
    }

    /// For reports.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Self::Synthetic { points, dim, classes, separation, seed } => {
                json!({"source": "synthetic", "points": points, "dim": dim, "classes": classes, "generated_separation": separation, "seed": seed, "domain": "[0,1]^dim, uniform, rejection-sampled"})
            }
            Self::Cifar { dir, points } => json!({"source": "cifar10", "dir": dir.display().to_string(), "points": points, "which": "the first images of the training split, pixels / 255"}),
        }
    }
}

/// Runs Theorem 2 on `source` at radius `eps`.
pub fn run(source: &DataSource, eps: f64, activation: Activation, norm: InputNorm, probe: ProbeOptions, device: &Device) -> Result<Report> {
    let points = source.load(norm)?;
    let (net, design) = construct(&points, eps, activation, norm, device)?;
    let (checks, checked) = robustness_checks(&net, &points, eps, norm, probe, device)?;
    let setting = json!({"data": source.describe(), "eps": eps, "activation": activation, "norm": norm});
    let facts = json!({
        "separation": design.separation,
        "closest_pair": design.closest_pair,
        "class_counts": points.class_counts(),
        "network": net.describe(),
        "design": design,
        "hypothesis_holds": design.built_for_eps == eps,
        "checked": checked,
    });
    Ok(Report::new(
        "theorem2",
        "on 2ε-separated data a network with this activation is correct on every point's ε-ball",
        setting,
        facts,
        checks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> ProbeOptions {
        ProbeOptions { per_point: 4, seed: 1, pgd_steps: 20, pgd_restarts: 1 }
    }

    #[test]
    fn every_activation_and_norm_is_certified_on_separated_data() {
        let dev = Device::Cpu;
        for norm in [InputNorm::Linf, InputNorm::L2] {
            let points = PointSet::synthetic(12, 5, 3, 0.3, norm, 3).unwrap();
            for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid, Activation::Softplus] {
                let (net, design) = construct(&points, 0.1, act, norm, &dev).unwrap();
                assert_eq!(design.built_for_eps, 0.1);
                let (checks, _) = robustness_checks(&net, &points, 0.1, norm, probe(), &dev).unwrap();
                for c in &checks {
                    assert!(c.pass, "{act} {norm}: {c:?}");
                }
            }
        }
    }

    #[test]
    fn eps_beyond_half_the_separation_fails_every_robustness_check() {
        let dev = Device::Cpu;
        for norm in [InputNorm::Linf, InputNorm::L2] {
            // separation 0.3 < 2ε = 0.4: the closest pair's balls overlap.
            let points = PointSet::synthetic(12, 5, 3, 0.3, norm, 3).unwrap();
            for act in [Activation::Relu, Activation::Tanh] {
                let (net, _) = construct(&points, 0.2, act, norm, &dev).unwrap();
                let (checks, _) = robustness_checks(&net, &points, 0.2, norm, probe(), &dev).unwrap();
                let failed: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name.as_str()).collect();
                assert_eq!(&failed[..3], ["assumption2_separation", "certified_robust_accuracy", "probed_ball_points"], "{act} {norm}");
                // PGD follows gradients: on tanh's smooth ℓ∞ network it finds the overlap;
                // ReLU's plateaus have zero gradient and ℓ2 balls are attacked through a
                // smaller ℓ∞ ball, so there it may not (the certificate and probes still do).
                if (act, norm) == (Activation::Tanh, InputNorm::Linf) {
                    assert_eq!(failed.last(), Some(&"pgd_attack"), "{failed:?}");
                }
            }
        }
    }

    #[test]
    fn a_network_with_too_gentle_thresholds_is_not_certified() {
        // Assumption 2 holds, but layer 1's slope is cut 50-fold: the certificate must notice.
        let dev = Device::Cpu;
        let points = PointSet::synthetic(12, 5, 3, 0.3, InputNorm::Linf, 3).unwrap();
        let (mut layers, _) = construct_layers(&points, 0.1, Activation::Sigmoid, InputNorm::Linf).unwrap();
        layers[0].weight.iter_mut().for_each(|w| *w /= 50.0);
        let net = build(&layers, Activation::Sigmoid, &dev).unwrap();
        let (checks, _) = robustness_checks(&net, &points, 0.1, InputNorm::Linf, probe(), &dev).unwrap();
        let cert = checks.iter().find(|c| c.name == "certified_robust_accuracy").unwrap();
        assert!(!cert.pass && cert.value < 1.0, "{cert:?}");
        assert!(checks.iter().find(|c| c.name == "assumption2_separation").unwrap().pass);
    }
}
