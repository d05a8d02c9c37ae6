//! Sound certification by interval bound propagation (IBP): for each point, a lower bound on
//! its logit margin `z_y − max_{c≠y} z_c` that holds at every input of its ε-ball. A
//! positive bound proves the point is classified correctly on the whole ball.
//!
//! The first layer is affine, so its pre-activations over the ball are bounded exactly:
//! `Wx₀ + b ± ε‖w_i‖_*` with the dual norm (ℓ1 rows for ℓ∞ balls, ℓ2 rows for ℓ2 balls). An
//! increasing activation maps an interval's ends to the image's ends. A later affine layer
//! maps an interval with centre m and radius r into centre `Wm + b`, radius `|W| r`. The last
//! layer is bounded per pair (y, c) through the difference of the two rows, which is tighter
//! than subtracting the logits' separate bounds. Arithmetic is f64; the constructions keep
//! margins many orders above its rounding.

use super::{InputNorm, Mlp};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// The certified margins of a set of points.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Per point, a lower bound on `z_y − max_{c≠y} z_c` over its ε-ball.
    pub margins: Vec<f64>,
}

impl Certificate {
    /// The share of points whose bound is positive: certified robust accuracy.
    pub fn accuracy(&self) -> f64 {
        if self.margins.is_empty() {
            return 0.0;
        }
        self.margins.iter().filter(|&&m| m > 0.0).count() as f64 / self.margins.len() as f64
    }

    /// The smallest bound (the weakest point) and its index.
    pub fn weakest(&self) -> (usize, f64) {
        self.margins.iter().copied().enumerate().fold((0, f64::INFINITY), |b, (i, m)| if m < b.1 { (i, m) } else { b })
    }
}

/// Certifies `net` on the points `rows` (N × inputs, host, row-major) with labels `labels`
/// against every perturbation of `norm` at most `eps`.
pub fn certify(net: &Mlp, rows: &[f64], labels: &[usize], eps: f64, norm: InputNorm, device: &Device) -> Result<Certificate> {
    let d = net.inputs();
    let n = labels.len();
    if rows.len() != n * d {
        bail!("{} coordinates for {n} points of dimension {d}", rows.len());
    }
    if eps.is_nan() || eps < 0.0 {
        bail!("ε = {eps} must be ≥ 0");
    }
    if n == 0 {
        return Ok(Certificate { margins: Vec::new() });
    }
    if net.layers.len() < 2 {
        bail!("certify needs a network with a hidden layer (got {} layer)", net.layers.len());
    }
    let x = Tensor::from_slice(rows, (n, d), device)?;
    let layers = &net.layers;
    // First layer: exact bounds over the ball.
    let first = &layers[0];
    let centre = first.forward(&x)?;
    let dual: Vec<f64> = first.weight_vec()?.chunks(d).map(|row| eps * norm.dual(row)).collect();
    let radius = Tensor::from_vec(dual, (1, first.outputs()), device)?;
    let (mut lo, mut hi) = (centre.broadcast_sub(&radius)?, centre.broadcast_add(&radius)?);
    // Hidden layers: activation then affine, on intervals.
    for layer in &layers[1..layers.len() - 1] {
        let (a, b) = (net.activation.apply(&lo)?, net.activation.apply(&hi)?);
        let mid = ((&a + &b)? * 0.5)?;
        let rad = ((&b - &a)? * 0.5)?;
        let c = layer.forward(&mid)?;
        let r = rad.matmul(&layer.weight.abs()?.t()?)?;
        lo = (&c - &r)?;
        hi = (&c + &r)?;
    }
    // Last layer: per pair (y, c), the margin row w_y − w_c over the interval.
    let (a, b) = (net.activation.apply(&lo)?, net.activation.apply(&hi)?);
    let mid: Vec<Vec<f64>> = ((&a + &b)? * 0.5)?.to_vec2()?;
    let rad: Vec<Vec<f64>> = ((&b - &a)? * 0.5)?.to_vec2()?;
    let last = &layers[layers.len() - 1];
    let (k, h) = (last.outputs(), last.inputs());
    let w = last.weight_vec()?;
    let bias = last.bias_vec()?;
    let mut margins = Vec::with_capacity(n);
    for p in 0..n {
        let y = labels[p];
        if y >= k {
            bail!("label {y} of point {p} is not below the network's {k} outputs");
        }
        let mut worst = f64::INFINITY;
        for c in (0..k).filter(|&c| c != y) {
            let mut m = bias[y] - bias[c];
            for j in 0..h {
                let diff = w[y * h + j] - w[c * h + j];
                m += diff * mid[p][j] - diff.abs() * rad[p][j];
            }
            worst = worst.min(m);
        }
        margins.push(worst);
    }
    Ok(Certificate { margins })
}
