//! Proposition 2: Theorem 2's certified robustness survives a Lipschitz constant as large as
//! anyone asks. Robustness is a property of the network on the data's ε-balls; the
//! Lipschitz constant is a supremum over all of input space, so a steep piece away from the
//! balls raises it without touching robustness.
//!
//! The construction adds a branch to Theorem 2's network: a layer-1 unit
//! `u = σ(κ(x_a − t) + t_u)` on one input axis a, with t the largest value of x_a on any
//! ε-ball (so on the balls u is off, within p_u of inf σ), a layer-2 unit
//! `b = σ(μ(u − inf σ) + t_b)` (off on the balls) and the output `z₀ += b − inf σ`. The
//! branch is block-diagonal to the rest, so on the balls it adds at most H/8 to one logit,
//! less than the 3H/4 margin, and the certificate (which sees the branch) still proves every
//! ball. Past the threshold both units sit at a steep point t_mid of σ, where the slope of
//! z₀ along axis a is σ'(t_mid)²·μ·κ; κ is chosen so that this is ≥ 2(ξ + L), L the
//! norm-product bound ([`lipschitz_bound`]) on the rest of the network's Lipschitz constant, so the witness pair
//! (two inputs 2·10⁻³/κ apart on that axis around the steep point) shows a ratio ≥ ξ.

use super::network::{build, LayerWeights};
use super::thm2::{construct_layers, robustness_checks, DataSource, ProbeOptions};
use super::{Activation, Check, InputNorm, Mlp, Report};
use anyhow::{bail, Result};
use candle_core::Device;
use serde_json::json;

/// The activation's steep point: where the branch's units are evaluated by the witness.
fn steep_point(activation: Activation) -> f64 {
    match activation {
        Activation::Relu => 1.0,
        Activation::Tanh | Activation::Sigmoid => 0.0,
        Activation::Softplus => 2.0,
    }
}

/// An upper bound on the Lipschitz constant of `net` from the input norm to ℓ∞ on the
/// outputs: ‖W₁‖_{p→∞} · Π_{l>1} (Lip σ · ‖W_l‖_∞), where ‖W₁‖_{p→∞} is the largest dual norm
/// of a row of W₁ (for p = ∞ that is W₁'s ℓ∞ norm) and ‖W_l‖_∞ is Theorem 1's ℓ∞ norm.
pub fn lipschitz_bound(net: &Mlp, norm: InputNorm) -> Result<f64> {
    let first = &net.layers[0];
    let mut bound = first.weight_vec()?.chunks(first.inputs()).map(|row| norm.dual(row)).fold(0.0, f64::max);
    for layer in &net.layers[1..] {
        let w = layer.weight_vec()?;
        bound *= net.activation.lipschitz() * crate::norms::conv_norm(&layer.spec, &w, crate::norms::NormKind::Linf).value;
    }
    Ok(bound)
}

/// The witness: two inputs and the ratio ‖f(a) − f(b)‖_∞ / ‖a − b‖ between them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Witness {
    /// The axis the two inputs differ on.
    pub axis: usize,
    /// The point whose copy the pair modifies.
    pub base_point: usize,
    /// The value of x_axis at a and at b.
    pub values: (f64, f64),
    /// ‖a − b‖ in the input norm.
    pub distance: f64,
    /// ‖f(a) − f(b)‖_∞.
    pub output_change: f64,
    /// output_change / distance: a lower bound on the Lipschitz constant.
    pub ratio: f64,
}

/// Runs Proposition 2 on `source` at radius `eps` with Lipschitz target `xi`.
pub fn run(source: &DataSource, eps: f64, xi: f64, activation: Activation, norm: InputNorm, probe: ProbeOptions, device: &Device) -> Result<Report> {
    if !(xi.is_finite() && xi > 0.0) {
        bail!("--xi {xi} must be a positive number");
    }
    let points = source.load(norm)?;
    let (mut layers, design) = construct_layers(&points, eps, activation, norm)?;
    let rest = build(&layers, activation, device)?;
    let rest_bound = lipschitz_bound(&rest, norm)?;

    let floor = activation.floor();
    let on = design.on_level;
    let t_mid = steep_point(activation);
    let t_b = activation.off_below(on / 8.0) - 1.0;
    let mu = (t_mid - t_b) / (activation.value(t_mid) - floor);
    let t_u = activation.off_below(1.0 / mu);
    let slope_per_kappa = activation.derivative(t_mid).powi(2) * mu;
    let kappa = 2.0 * (xi + rest_bound) / slope_per_kappa;
    // The axis and the largest value of x_axis on any ball: every ball lies below it.
    let axis = 0;
    let (base_point, top) =
        (0..points.len()).map(|i| (i, points.point(i)[axis])).fold((0, f64::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b });
    let threshold = top + eps;

    let [l1, l2, l3] = &mut layers[..] else { bail!("Theorem 2's construction has three layers") };
    let (unit_u, unit_b) = (l1.outputs, l2.outputs);
    *l1 = append_row(l1, |row| row[axis] = kappa, -kappa * threshold + t_u);
    *l2 = append_column(l2);
    *l2 = append_row(l2, |row| row[unit_u] = mu, t_b - mu * floor);
    *l3 = append_column(l3);
    *l3.at(0, unit_b) = 1.0;
    l3.bias[0] -= floor;
    let net = build(&layers, activation, device)?;

    let (mut checks, checked) = robustness_checks(&net, &points, eps, norm, probe, device)?;
    // The witness: around x_axis where u's pre-activation is t_mid, ±10⁻³ in that argument.
    let centre = threshold + (t_mid - t_u) / kappa;
    let step = 1e-3 / kappa;
    let mut a = points.point(base_point).to_vec();
    let mut b = a.clone();
    a[axis] = centre - step;
    b[axis] = centre + step;
    let out = net.logits(&[a.clone(), b.clone()].concat(), device)?;
    let output_change = out[0].iter().zip(&out[1]).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    let distance = norm.distance(&a, &b);
    let witness = Witness { axis, base_point, values: (a[axis], b[axis]), distance, output_change, ratio: output_change / distance };
    let bound = lipschitz_bound(&net, norm)?;
    checks.push(Check::new(
        "lipschitz_witness",
        witness.ratio >= xi,
        witness.ratio,
        format!("≥ ξ = {}", super::fmt_value(xi)),
        format!(
            "‖f(a) − f(b)‖_∞ / ‖a − b‖_{norm} for a, b = point {base_point} with x_{axis} set to {} and {}",
            witness.values.0, witness.values.1
        ),
    ));
    checks.push(Check::new(
        "witness_below_norm_bound",
        witness.ratio <= bound * (1.0 + 1e-9),
        bound,
        format!("≥ witness ratio {}", super::fmt_value(witness.ratio)),
        "the product-of-norms upper bound on the Lipschitz constant must dominate any measured ratio (a consistency check of the witness)",
    ));
    let setting = json!({"data": source.describe(), "eps": eps, "xi": xi, "activation": activation, "norm": norm});
    let facts = json!({
        "separation": design.separation,
        "network": net.describe(),
        "design": design,
        "steep_branch": {"axis": axis, "threshold": threshold, "kappa": kappa, "mu": mu, "t_u": t_u, "t_b": t_b, "t_mid": t_mid},
        "lipschitz_bound_without_branch": rest_bound,
        "lipschitz_bound": bound,
        "witness": witness,
        "checked": checked,
    });
    Ok(Report::new(
        "proposition2",
        "the network stays certified-robust at radius ε while its Lipschitz constant is ≥ ξ",
        setting,
        facts,
        checks,
    ))
}

/// `layer` with one more output row, filled by `fill`, with bias `bias`.
fn append_row(layer: &LayerWeights, fill: impl FnOnce(&mut [f64]), bias: f64) -> LayerWeights {
    let mut out = layer.clone();
    let mut row = vec![0.0; layer.inputs];
    fill(&mut row);
    out.weight.extend(row);
    out.bias.push(bias);
    out.outputs += 1;
    out
}

/// `layer` with one more input column of zeros.
fn append_column(layer: &LayerWeights) -> LayerWeights {
    let mut out = LayerWeights::zeros(&layer.name, layer.inputs + 1, layer.outputs);
    for r in 0..layer.outputs {
        out.weight[r * out.inputs..][..layer.inputs].copy_from_slice(layer.row(r));
    }
    out.bias = layer.bias.clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> DataSource {
        DataSource::Synthetic { points: 12, dim: 5, classes: 3, separation: 0.3, seed: 3 }
    }

    #[test]
    fn large_lipschitz_constant_with_certified_robustness() {
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid, Activation::Softplus] {
            for norm in [InputNorm::Linf, InputNorm::L2] {
                let r = run(&source(), 0.1, 1e6, act, norm, ProbeOptions { per_point: 4, seed: 0, pgd_steps: 20, pgd_restarts: 1 }, &Device::Cpu).unwrap();
                assert!(r.pass, "{act} {norm}\n{}", r.to_text());
            }
        }
    }

    #[test]
    fn overlapping_balls_still_fail() {
        let r = run(&source(), 0.2, 1e3, Activation::Relu, InputNorm::Linf, ProbeOptions { per_point: 4, seed: 0, pgd_steps: 20, pgd_restarts: 1 }, &Device::Cpu).unwrap();
        let failed: Vec<&str> = r.failed().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(&failed[..3], ["assumption2_separation", "certified_robust_accuracy", "probed_ball_points"]);
    }
}
