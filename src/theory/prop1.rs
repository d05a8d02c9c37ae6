//! Proposition 1: layer norms can be arbitrarily large while the network's Lipschitz
//! constant is 0. So a bound on the Lipschitz constant by the product of layer norms says
//! nothing about how small the constant is, and large norms cannot be what makes a network
//! fragile.
//!
//! The paper's example, `c·ReLU(a·x) − c·ReLU(a·x)`, cancels two copies exactly in real
//! arithmetic; in floating point the two copies meet inside one dot product, where fused
//! multiply-adds leave a rounding residue of order c·a·2⁻⁵³ that grows with the scale. This
//! construction reaches the same conclusion exactly, in floating point too: the
//! second-to-last layer has non-positive weights and a negative bias, and its inputs are ReLU
//! outputs (non-negative), so every pre-activation is a sum of non-positive terms plus a
//! negative number — negative after any rounding — and the following ReLU outputs 0 on every
//! input. The network is the constant `b_out`, its Lipschitz constant is 0 and its input
//! gradient is exactly 0, while every layer (random Gaussian, scaled) has ℓ1, ℓ∞ and spectral
//! norm ≥ S.

use super::network::{build, LayerWeights};
use super::probe::standard_normal;
use super::{Activation, Check, Mlp, Report};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Input dimension: a CIFAR-10 image, 3×32×32.
pub const INPUTS: usize = 3 * 32 * 32;
/// Outputs: CIFAR-10's ten logits.
pub const OUTPUTS: usize = 10;

/// Proposition 1's network: `depth` layers (≥ 3) of width `width`, each with ℓ1, ℓ∞ and
/// spectral norm ≥ `scale`, constant on all of ℝ^3072.
pub fn construct(scale: f64, width: usize, depth: usize, seed: u64, device: &Device) -> Result<Mlp> {
    if depth < 3 {
        bail!("--depth {depth}: the construction needs at least 3 layers (a hidden layer, the layer that its ReLU silences, the output)");
    }
    if width == 0 {
        bail!("--width must be ≥ 1");
    }
    if !(scale.is_finite() && scale > 0.0) {
        bail!("--scale {scale} must be a positive number");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut layers = Vec::with_capacity(depth);
    for l in 0..depth {
        let inputs = if l == 0 { INPUTS } else { width };
        let outputs = if l + 1 == depth { OUTPUTS } else { width };
        let silencing = l + 2 == depth;
        let mut layer = LayerWeights::zeros(&format!("fc{}", l + 1), inputs, outputs);
        for w in &mut layer.weight {
            let g = standard_normal(&mut rng);
            *w = if silencing { -g.abs() } else { g };
        }
        // Scale so that the smallest of the three norms is 1.01·S: all three are ≥ S.
        let dense = layer.to_dense(device)?;
        let factor = 1.01 * scale / dense.norms()?.min();
        layer.weight.iter_mut().for_each(|w| *w *= factor);
        layer.bias = if silencing { vec![-scale; outputs] } else { (0..outputs).map(|_| rng.gen_range(-1.0..1.0)).collect() };
        layers.push(layer);
    }
    build(&layers, Activation::Relu, device)
}

/// The inputs the outputs are compared on: `random` uniform images in [0, 1], Gaussian
/// vectors at scales 1 and 1e3, and for each of the first layer's rows (up to 64) the input
/// ±1e3·sign(row): the vertex of the ℓ∞ ball where that unit's pre-activation is largest,
/// the input that attains the layer's ℓ∞ norm. Row-major, `INPUTS` per row.
pub fn probe_inputs(net: &Mlp, random: usize, seed: u64) -> Result<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
    let mut rows = Vec::new();
    for _ in 0..random {
        rows.extend((0..INPUTS).map(|_| rng.gen::<f64>()));
    }
    for s in [1.0, 1e3] {
        for _ in 0..random {
            rows.extend((0..INPUTS).map(|_| s * standard_normal(&mut rng)));
        }
    }
    let w = net.layers[0].weight_vec()?;
    for row in w.chunks(INPUTS).take(64) {
        for sign in [1.0, -1.0] {
            rows.extend(row.iter().map(|v| sign * 1e3 * v.signum()));
        }
    }
    Ok(rows)
}

/// The largest |∂(r·f(x))/∂x| over `rows`, for a random weighting r of the outputs: zero
/// exactly when every output's input gradient is zero (almost surely in r).
pub fn max_input_gradient(net: &Mlp, rows: &[f64], seed: u64, device: &Device) -> Result<f64> {
    let n = rows.len() / INPUTS;
    let x = Var::from_tensor(&Tensor::from_slice(rows, (n, INPUTS), device)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x51);
    let r: Vec<f64> = (0..n * OUTPUTS).map(|_| standard_normal(&mut rng)).collect();
    let r = Tensor::from_vec(r, (n, OUTPUTS), device)?;
    let objective = (net.forward(x.as_tensor())? * r)?.sum_all()?;
    let grads = objective.backward()?;
    let Some(g) = grads.get(x.as_tensor()) else {
        bail!("backward pass returned no gradient for the input");
    };
    Ok(g.abs()?.max_all()?.to_scalar::<f64>()?)
}

/// Runs Proposition 1.
pub fn run(scale: f64, width: usize, depth: usize, seed: u64, device: &Device) -> Result<Report> {
    let net = construct(scale, width, depth, seed, device)?;
    let (checks, facts) = check(&net, scale, seed, device)?;
    Ok(Report::new(
        "proposition1",
        "every layer's ℓ1, ℓ∞ and spectral norm is ≥ S, yet the network's Lipschitz constant is 0",
        json!({"scale": scale, "width": width, "depth": depth, "seed": seed, "inputs": INPUTS, "outputs": OUTPUTS, "activation": "relu"}),
        facts,
        checks,
    ))
}

/// Proposition 1's checks on `net`: every layer's norms ≥ `scale`, output spread 0 and input
/// gradient 0 on the probe inputs. Returns the checks and the measured facts.
pub fn check(net: &Mlp, scale: f64, seed: u64, device: &Device) -> Result<(Vec<Check>, serde_json::Value)> {
    let mut checks = Vec::new();
    let mut norms = Vec::new();
    for layer in &net.layers {
        let n = layer.norms()?;
        checks.push(Check::new(
            &format!("norms_{}", layer.spec.prefix()),
            n.min() >= scale,
            n.min(),
            format!("≥ S = {}", super::fmt_value(scale)),
            format!("smallest of ℓ1 {}, ℓ∞ {} (Theorem 1's code), spectral {} (SVD)", super::fmt_value(n.l1), super::fmt_value(n.linf), super::fmt_value(n.spectral)),
        ));
        norms.push(json!({"layer": layer.spec.prefix(), "in": layer.inputs(), "out": layer.outputs(), "l1": n.l1, "linf": n.linf, "spectral": n.spectral}));
    }
    let rows = probe_inputs(net, 64, seed)?;
    let outputs = net.logits(&rows, device)?;
    let spread = outputs.iter().flat_map(|z| z.iter().zip(&outputs[0]).map(|(a, b)| (a - b).abs())).fold(0.0, f64::max);
    let n_inputs = outputs.len();
    checks.push(Check::new(
        "output_spread",
        spread == 0.0,
        spread,
        "= 0",
        format!("max |f(x) − f(x₀)| over {n_inputs} inputs: 64 uniform images, 64 Gaussian at scale 1 and at 1e3, and ±1e3·sign(row) for 64 rows of layer 1 (where its ℓ∞ norm is attained)"),
    ));
    let grad = max_input_gradient(net, &rows, seed, device)?;
    checks.push(Check::new("input_gradient", grad == 0.0, grad, "= 0", format!("max |∂(r·f)/∂x| over the same {n_inputs} inputs, r random")));
    // The silence is not trivial: layer 1's ReLU outputs vary with the input.
    let x = candle_core::Tensor::from_slice(&rows, (rows.len() / INPUTS, INPUTS), device)?;
    let hidden: Vec<Vec<f64>> = net.activation.apply(&net.layers[0].forward(&x)?)?.to_vec2()?;
    let hidden_spread = hidden.iter().flat_map(|h| h.iter().zip(&hidden[0]).map(|(a, b)| (a - b).abs())).fold(0.0, f64::max);
    let norm_product: f64 = net.layers.iter().map(|l| l.norms().map(|n| n.linf)).collect::<Result<Vec<_>>>()?.iter().product();
    let facts = json!({
        "layers": norms,
        "output": outputs[0],
        "layer1_output_spread": hidden_spread,
        "linf_norm_product": norm_product,
        "lipschitz_constant": 0.0,
        "why": "layer fc(depth−1) has weights ≤ 0 and bias −S on non-negative ReLU outputs: its ReLU outputs 0 for every input",
    });
    Ok((checks, facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_norms_and_a_constant_function() {
        let r = run(1e4, 8, 3, 0, &Device::Cpu).unwrap();
        assert!(r.pass, "{}", r.to_text());
        assert_eq!(r.checks.len(), 5);
    }

    #[test]
    fn the_checks_catch_a_network_that_is_not_constant() {
        // Flip the silencing layer's sign: its ReLU now passes signal and the checks must fail.
        let dev = Device::Cpu;
        let mut net = construct(10.0, 8, 3, 0, &dev).unwrap();
        let l = &mut net.layers[1];
        l.weight = l.weight.neg().unwrap();
        l.bias = l.bias.neg().unwrap();
        let (checks, _) = check(&net, 10.0, 0, &dev).unwrap();
        let failed: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name.as_str()).collect();
        assert_eq!(failed, ["output_spread", "input_gradient"]);
        // ... and one whose layers are too small for the asked scale.
        let (checks, _) = check(&construct(10.0, 8, 3, 0, &dev).unwrap(), 1e3, 0, &dev).unwrap();
        assert_eq!(checks.iter().filter(|c| !c.pass).count(), 3);
        assert!(construct(10.0, 8, 2, 0, &dev).is_err());
    }
}
