//! What the layer norms alone certify: the share of points whose clean logit margin is too
//! large for any perturbation in the ε-ball to overturn, given a Lipschitz bound L of the
//! whole network built from per-layer operator norms ([`Model::lipschitz_bound`]).
//!
//! ℓ∞ certificate. Let L bound the network's ℓ∞ → ℓ∞ Lipschitz constant: a product of the
//! layers' exact ℓ∞ operator norms (Theorem 1; biases cancel in differences; BatchNorm in
//! eval mode is the diagonal |γ|/√(var + eps); ReLU and max/avg pooling are 1-Lipschitz in
//! ℓ∞; a residual block x + h(x) contributes 1 + L_h). For ‖δ‖∞ ≤ ε,
//! ‖z(x + δ) − z(x)‖∞ ≤ L·ε, so every logit moves by at most L·ε and every difference
//! z_y − z_j by at most 2·L·ε. If the margin m = z_y(x) − max_{j≠y} z_j(x) exceeds 2·L·ε,
//! then z_y(x + δ) − z_j(x + δ) ≥ m − 2·L·ε > 0 for every j ≠ y and every δ in the ball:
//! the point is certified robust (the clip to [0, 1] only shrinks the set of δ).
//!
//! Models without such a bound (SENet: the squeeze-and-excitation gate multiplies two
//! functions of the input, which no product of layer norms bounds) get n/a and the reason.
//! Expect certified accuracy near 0 for normally trained networks: L is astronomically
//! large, while attacks still fail on many points, the gap the paper is about.

use crate::models::{LayerKind, Model};
use crate::norms::{layer_norm, NormKind};
use anyhow::{bail, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A certified accuracy and the bound it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certified {
    /// The norm of the threat model and of the layer norms (`linf`).
    pub norm: String,
    /// The network's Lipschitz bound; `None` where the architecture has none.
    pub lipschitz_bound: Option<f64>,
    /// Share of the evaluated points certified at the radius; `None` where there is no bound.
    pub certified_acc: Option<f64>,
    /// Why the certificate is n/a, when it is.
    pub note: Option<String>,
}

/// The exact ℓ∞ operator norm of every conv, linear and BatchNorm layer of `model`, keyed by
/// weight name (Theorem 1, computed on the host in f64).
pub fn linf_layer_norms(model: &Model) -> Result<HashMap<String, f64>> {
    let host = |name: &str| -> Result<Vec<f64>> { Ok(model.params.get(name)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
    let mut norms = HashMap::new();
    for spec in &model.layers {
        let weight = host(&spec.name)?;
        let running_var = match spec.kind {
            LayerKind::Bn => Some(host(&spec.tensor_name("running_var"))?),
            _ => None,
        };
        norms.insert(spec.name.clone(), layer_norm(spec, &weight, running_var.as_deref(), NormKind::Linf).value);
    }
    Ok(norms)
}

/// Share of `margins` strictly above `threshold` (misclassified points have margin ≤ 0 and
/// are never certified).
pub fn certified_share(margins: &[f64], threshold: f64) -> f64 {
    if margins.is_empty() {
        return 0.0;
    }
    margins.iter().filter(|&&m| m > threshold).count() as f64 / margins.len() as f64
}

/// The ℓ∞ certified accuracy at radius `eps` of points with clean logit margins `margins`
/// (z_y − max_{j≠y} z_j, as [`super::RobustReport::margins`] holds them): the share with
/// margin > 2·ε·L, L the product bound of the layers' ℓ∞ norms; n/a where the model has none.
pub fn certify(model: &Model, margins: &[f64], eps: f64) -> Result<Certified> {
    let norms = linf_layer_norms(model)?;
    let bound = model.lipschitz_bound(&|name| norms.get(name).copied().unwrap_or(f64::NAN));
    Ok(match bound {
        None => Certified {
            norm: "linf".into(),
            lipschitz_bound: None,
            certified_acc: None,
            note: Some(format!(
                "n/a: {} has no layer-norm Lipschitz bound (its squeeze-and-excitation gate multiplies two functions of the input)",
                model.arch
            )),
        },
        Some(l) if l.is_nan() => bail!("the Lipschitz bound of {} asked for a layer norm that is not in its layer list", model.arch),
        Some(l) => Certified { norm: "linf".into(), lipschitz_bound: Some(l), certified_acc: Some(certified_share(margins, 2.0 * eps * l)), note: None },
    })
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
    }

    #[test]
    fn vgg_bound_is_the_product_of_its_layer_norms_and_senet_is_na() {
        let m = Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap();
        let norms = linf_layer_norms(&m).unwrap();
        assert_eq!(norms.len(), m.layers.len());
        let product: f64 = norms.values().product();
        let c = certify(&m, &[0.999 * product, 1.001 * product], 0.5).unwrap();
        let l = c.lipschitz_bound.unwrap();
        assert!((l / product - 1.0).abs() < 1e-9, "{l} vs {product}");
        // At ε = 0.5 the threshold is 2·0.5·L = L: only the larger margin clears it.
        assert_eq!(c.certified_acc, Some(0.5));
        let s = Model::new(Arch::Senet18, 0, &Device::Cpu).unwrap();
        let c = certify(&s, &[1.0], 0.1).unwrap();
        assert!(c.certified_acc.is_none() && c.lipschitz_bound.is_none());
        assert!(c.note.unwrap().contains("n/a"));
    }
}
