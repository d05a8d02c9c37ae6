//! What the layer norms alone certify: the share of points whose clean logit margin is too
//! large for any perturbation in the ℓ∞ ε-ball to overturn, given a Lipschitz bound of the
//! whole network built from per-layer operator norms (`norms::table::lipschitz_bounds`, i.e.
//! [`Model::lipschitz_bound`]: products along paths, 1 + branch for residual blocks,
//! BatchNorm in eval mode as its diagonal |γ|/√(var + eps), biases cancelling in
//! differences, ReLU and max/avg pooling 1-Lipschitz in ℓ∞ and ℓ2).
//!
//! ℓ∞ certificate. With L the product bound of the layers' exact ℓ∞ → ℓ∞ norms (Theorem 1),
//! ‖δ‖∞ ≤ ε gives ‖z(x + δ) − z(x)‖∞ ≤ L·ε: every logit moves by at most L·ε, so every
//! difference z_y − z_j moves by at most 2·L·ε. If the margin
//! m = z_y(x) − max_{j≠y} z_j(x) exceeds 2·L·ε, then z_y(x + δ) − z_j(x + δ) ≥ m − 2·L·ε > 0
//! for every j ≠ y and every δ in the ball: the point is certified (clipping to [0, 1] only
//! removes perturbations).
//!
//! ℓ2 certificate of the same ℓ∞ ball. With L₂ the product bound of the exact spectral
//! norms, and d the input dimension (3,072 for CIFAR-10), ‖δ‖∞ ≤ ε gives ‖δ‖₂ ≤ √d·ε, so
//! ‖z(x + δ) − z(x)‖₂ ≤ L₂·√d·ε, and |Δ(z_y − z_j)| = |(e_y − e_j)·Δz| ≤ √2·‖Δz‖₂. A
//! margin above √2·L₂·√d·ε certifies the point.
//!
//! ℓ2 certificate of the ℓ2 ball (the ℓ2 threat model). ‖δ‖₂ ≤ ε gives
//! ‖z(x + δ) − z(x)‖₂ ≤ L₂·ε, so a margin above √2·L₂·ε certifies the point: the certificate
//! follows the threat model's norm, ℓ∞ balls from the exact ℓ∞ norms, ℓ2 balls from the
//! spectral norms.
//!
//! Models without such a bound (SENet: the squeeze-and-excitation gate multiplies two
//! functions of the input, which no product of layer norms bounds) get n/a and the reason.
//! Expect certified accuracy near 0 for normally trained networks: their bounds are
//! astronomically large while attacks still fail on many points, the gap the paper is about.

use crate::models::Model;
use crate::norms::table::{lipschitz_bounds, model_norms};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// A certified accuracy and the bound it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certified {
    /// Which layer norms the bound multiplies: `linf` (Theorem 1) or `l2` (spectral).
    pub norm: String,
    /// The network's Lipschitz bound in that norm; `None` where the architecture has none.
    pub lipschitz_bound: Option<f64>,
    /// Share of the evaluated points certified in the ℓ∞ ε-ball; `None` without a bound.
    pub certified_acc: Option<f64>,
    /// Why the certificate is n/a, when it is.
    pub note: Option<String>,
}

/// Share of `margins` strictly above `threshold` (misclassified points have margin ≤ 0 and
/// are never certified).
pub fn certified_share(margins: &[f64], threshold: f64) -> f64 {
    if margins.is_empty() {
        return 0.0;
    }
    margins.iter().filter(|&&m| m > threshold).count() as f64 / margins.len() as f64
}

/// The margin an ℓ∞ bound L needs at radius ε: 2·ε·L.
pub fn linf_threshold(eps: f64, lipschitz: f64) -> f64 {
    2.0 * eps * lipschitz
}

/// The margin an ℓ2 bound L₂ needs for the ℓ∞ ball of radius ε in dimension d: √2·L₂·√d·ε.
pub fn l2_threshold(eps: f64, lipschitz: f64, input_dim: usize) -> f64 {
    std::f64::consts::SQRT_2 * lipschitz * (input_dim as f64).sqrt() * eps
}

/// The margin an ℓ2 bound L₂ needs for the ℓ2 ball of radius ε: √2·L₂·ε.
pub fn l2_ball_threshold(eps: f64, lipschitz: f64) -> f64 {
    std::f64::consts::SQRT_2 * lipschitz * eps
}

/// The certificates of the ball of radius `eps` in `norm`, the first one in that norm's own
/// layer norms: for ℓ∞ the ℓ∞ certificate, then (with `spectral`) the ℓ2 one of the same
/// ℓ∞ ball; for ℓ2 the spectral one (none without `spectral`: it needs the spectral norms).
pub fn certify_ball(model: &Model, margins: &[f64], norm: crate::attack::Norm, eps: f64, spectral: bool) -> Result<Vec<Certified>> {
    use crate::attack::Norm;
    Ok(match (norm, spectral) {
        (Norm::Linf, false) => vec![certify(model, margins, eps)?],
        (Norm::Linf, true) => certify_both(model, margins, eps)?.to_vec(),
        (Norm::L2, false) => Vec::new(),
        (Norm::L2, true) => {
            let norms = model_norms(model, true)?;
            let (_, l2) = lipschitz_bounds(model, &norms);
            vec![certificate(model, "l2", l2, margins, |l| l2_ball_threshold(eps, l))]
        }
    })
}

/// The ℓ∞ certified accuracy at radius `eps` of points with clean logit margins `margins`
/// (z_y − max_{j≠y} z_j, as [`super::RobustReport::margins`] holds them): the share with
/// margin > 2·ε·L; n/a where the model has no bound. Cheap: one pass over the weights.
pub fn certify(model: &Model, margins: &[f64], eps: f64) -> Result<Certified> {
    let norms = model_norms(model, false)?;
    let (linf, _) = lipschitz_bounds(model, &norms);
    Ok(certificate(model, "linf", linf, margins, |l| linf_threshold(eps, l)))
}

/// The ℓ∞ and the ℓ2 (spectral) certified accuracies at radius `eps`, in that order. The
/// spectral norms cost seconds to minutes per model (Lanczos on every layer).
pub fn certify_both(model: &Model, margins: &[f64], eps: f64) -> Result<[Certified; 2]> {
    let norms = model_norms(model, true)?;
    let (linf, l2) = lipschitz_bounds(model, &norms);
    let (c, h, w) = crate::models::INPUT_SHAPE;
    Ok([
        certificate(model, "linf", linf, margins, |l| linf_threshold(eps, l)),
        certificate(model, "l2", l2, margins, |l| l2_threshold(eps, l, c * h * w)),
    ])
}

fn certificate(model: &Model, norm: &str, bound: Option<f64>, margins: &[f64], threshold: impl Fn(f64) -> f64) -> Certified {
    match bound {
        Some(l) => Certified { norm: norm.into(), lipschitz_bound: Some(l), certified_acc: Some(certified_share(margins, threshold(l))), note: None },
        None => Certified {
            norm: norm.into(),
            lipschitz_bound: None,
            certified_acc: None,
            note: Some(if model.lipschitz_bound(&|_| 1.0).is_none() {
                format!("n/a: {} has no layer-norm Lipschitz bound (its squeeze-and-excitation gate multiplies two functions of the input)", model.arch)
            } else {
                format!("n/a: the {norm} layer norms of {} gave no finite bound", model.arch)
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use candle_core::Device;

    #[test]
    fn share_counts_strictly_larger_margins() {
        assert_eq!(certified_share(&[3.0, 1.0, -1.0, 0.5], 0.5), 0.5);
        assert_eq!(certified_share(&[3.0, 1.0, -1.0, 0.0], 0.0), 0.5);
        assert_eq!(certified_share(&[], 0.0), 0.0);
        assert_eq!(linf_threshold(0.5, 3.0), 3.0);
        assert!((l2_threshold(0.5, 3.0, 8) - 2f64.sqrt() * 3.0 * 8f64.sqrt() * 0.5).abs() < 1e-12);
        assert!((l2_ball_threshold(0.5, 3.0) - 2f64.sqrt() * 1.5).abs() < 1e-12);
    }

    #[test]
    fn vgg_bound_is_the_product_of_its_layer_norms_and_senet_is_na() {
        let m = Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap();
        let product: f64 = model_norms(&m, false).unwrap().iter().map(|n| n.linf).product();
        let c = certify(&m, &[0.999 * product, 1.001 * product], 0.5).unwrap();
        let l = c.lipschitz_bound.unwrap();
        assert!((l / product - 1.0).abs() < 1e-9, "{l} vs {product}");
        // At ε = 0.5 the threshold is 2·0.5·L = L: only the larger margin clears it.
        assert_eq!(c.certified_acc, Some(0.5));
        let s = Model::new(Arch::Senet18, 0, &Device::Cpu).unwrap();
        let c = certify(&s, &[1.0], 0.1).unwrap();
        assert!(c.certified_acc.is_none() && c.lipschitz_bound.is_none());
        assert!(c.note.unwrap().contains("squeeze-and-excitation"));
    }
}
