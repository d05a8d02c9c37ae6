//! The small networks the theory builds: fully connected layers (normlab's `ops::linear`,
//! each described by a `LayerSpec` so the norms code measures it) joined by one of four
//! activations, and the layer norms that Proposition 1 is about.

use crate::models::LayerSpec;
use crate::norms::{conv_norm, NormKind};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// The activation between layers. All four are continuous, increasing and non-affine, which
/// is what interval bounds ([`crate::theory::certify`]) and Theorem 2 need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(t, 0).
    Relu,
    /// tanh t, in (−1, 1).
    Tanh,
    /// 1 / (1 + e^−t), in (0, 1).
    Sigmoid,
    /// ln(1 + e^t), a smooth ReLU.
    Softplus,
}

impl Activation {
    /// `relu`, `tanh`, `sigmoid` or `softplus`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Tanh => "tanh",
            Self::Sigmoid => "sigmoid",
            Self::Softplus => "softplus",
        }
    }

    /// The activation applied elementwise to a tensor (any float dtype).
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => candle_nn::ops::sigmoid(x),
            // relu(t) + ln(1 + e^−|t|): no overflow for large |t|.
            Self::Softplus => x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?,
        }
    }

    /// σ(t) for one number, for designing a construction's parameters.
    pub fn value(self, t: f64) -> f64 {
        match self {
            Self::Relu => t.max(0.0),
            Self::Tanh => t.tanh(),
            Self::Sigmoid => 1.0 / (1.0 + (-t).exp()),
            Self::Softplus => t.max(0.0) + (-t.abs()).exp().ln_1p(),
        }
    }

    /// σ'(t) (for ReLU, 1 for t > 0 and 0 otherwise).
    pub fn derivative(self, t: f64) -> f64 {
        match self {
            Self::Relu => f64::from(t > 0.0),
            Self::Tanh => 1.0 - t.tanh().powi(2),
            Self::Sigmoid => {
                let s = Self::Sigmoid.value(t);
                s * (1.0 - s)
            }
            Self::Softplus => Self::Sigmoid.value(t),
        }
    }

    /// inf σ: the level a unit rests at when it is "off" (−1 for tanh, 0 otherwise).
    pub fn floor(self) -> f64 {
        match self {
            Self::Tanh => -1.0,
            _ => 0.0,
        }
    }

    /// An argument t_p with σ(t) − inf σ ≤ p for every t ≤ t_p (0 < p): where the unit is
    /// off up to p. From e^t bounds on the left tails: sigmoid(t), softplus(t) ≤ e^t,
    /// 1 + tanh(t) = 2·sigmoid(2t) ≤ 2e^{2t}; ReLU is exactly 0 for t ≤ 0.
    pub fn off_below(self, p: f64) -> f64 {
        match self {
            Self::Relu => 0.0,
            Self::Sigmoid | Self::Softplus => p.ln(),
            Self::Tanh => (p / 2.0).ln() / 2.0,
        }
    }

    /// sup |σ'|: the Lipschitz constant of the activation.
    pub fn lipschitz(self) -> f64 {
        match self {
            Self::Sigmoid => 0.25,
            _ => 1.0,
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fully connected layer `x ↦ W x + b` with its `LayerSpec` (kind linear).
#[derive(Debug, Clone)]
pub struct Dense {
    /// The description the norms code reads (a linear layer is a 1×1 conv on a 1×1 input).
    pub spec: LayerSpec,
    /// out × in, f64.
    pub weight: Tensor,
    /// out, f64.
    pub bias: Tensor,
}

/// The operator norms of one layer (as an ℓp → ℓp map).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerNorms {
    /// Max absolute column sum (Theorem 1's code, `norms::conv_norm`).
    pub l1: f64,
    /// Max absolute row sum (Theorem 1's code).
    pub linf: f64,
    /// Largest singular value.
    pub spectral: f64,
}

impl LayerNorms {
    /// The smallest of the three.
    pub fn min(&self) -> f64 {
        self.l1.min(self.linf).min(self.spectral)
    }
}

/// The `LayerSpec` of a `inputs → outputs` fully connected layer named `name.weight`.
pub fn linear_spec(name: &str, inputs: usize, outputs: usize) -> LayerSpec {
    LayerSpec::linear(name, inputs, outputs)
}

impl Dense {
    /// A layer from a row-major `outputs × inputs` weight and `outputs` biases, in f64 on `device`.
    pub fn new(name: &str, inputs: usize, outputs: usize, weight: Vec<f64>, bias: Vec<f64>, device: &Device) -> Result<Self> {
        if weight.len() != inputs * outputs || bias.len() != outputs {
            bail!("layer {name}: {} weights and {} biases for {outputs}×{inputs}", weight.len(), bias.len());
        }
        Ok(Self {
            spec: linear_spec(name, inputs, outputs),
            weight: Tensor::from_vec(weight, (outputs, inputs), device)?,
            bias: Tensor::from_vec(bias, outputs, device)?,
        })
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.spec.in_c
    }

    /// Output features.
    pub fn outputs(&self) -> usize {
        self.spec.out_c
    }

    /// `x Wᵀ + b` for a batch `x` (N × in), through normlab's `ops::linear`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::linear(x, &self.weight, Some(&self.bias))
    }

    /// The weight, row-major, on the host.
    pub fn weight_vec(&self) -> Result<Vec<f64>> {
        Ok(self.weight.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }

    /// The bias on the host.
    pub fn bias_vec(&self) -> Result<Vec<f64>> {
        Ok(self.bias.to_dtype(DType::F64)?.to_vec1()?)
    }

    /// ℓ1 and ℓ∞ from Theorem 1's code on the layer's spec, the spectral norm from the norms
    /// module's SVD.
    pub fn norms(&self) -> Result<LayerNorms> {
        let w = self.weight_vec()?;
        Ok(LayerNorms {
            l1: conv_norm(&self.spec, &w, NormKind::L1).value,
            linf: conv_norm(&self.spec, &w, NormKind::Linf).value,
            spectral: crate::norms::spectral::largest_singular_value(&w, self.outputs(), self.inputs())?,
        })
    }
}

/// A dense layer's numbers on the host, before they become tensors: constructions build
/// these, and Proposition 2 extends Theorem 2's before building the network.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// The layer's name (its weight is `<name>.weight`).
    pub name: String,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// `outputs × inputs`, row-major.
    pub weight: Vec<f64>,
    /// `outputs`.
    pub bias: Vec<f64>,
}

impl LayerWeights {
    /// An all-zero `inputs → outputs` layer.
    pub fn zeros(name: &str, inputs: usize, outputs: usize) -> Self {
        Self { name: name.to_string(), inputs, outputs, weight: vec![0.0; inputs * outputs], bias: vec![0.0; outputs] }
    }

    /// Entry (row, col) of the weight.
    pub fn at(&mut self, row: usize, col: usize) -> &mut f64 {
        &mut self.weight[row * self.inputs + col]
    }

    /// Row `row` of the weight.
    pub fn row(&self, row: usize) -> &[f64] {
        &self.weight[row * self.inputs..][..self.inputs]
    }

    /// The layer as tensors on `device`.
    pub fn to_dense(&self, device: &Device) -> Result<Dense> {
        Dense::new(&self.name, self.inputs, self.outputs, self.weight.clone(), self.bias.clone(), device)
    }
}

/// A network from host layers.
pub fn build(layers: &[LayerWeights], activation: Activation, device: &Device) -> Result<Mlp> {
    Mlp::new(layers.iter().map(|l| l.to_dense(device)).collect::<Result<_>>()?, activation)
}

/// A feed-forward network: dense layers with `activation` after every layer but the last,
/// whose outputs are the logits.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// The layers, input to output.
    pub layers: Vec<Dense>,
    /// The activation between layers.
    pub activation: Activation,
}

impl Mlp {
    /// A network from its layers, checking that consecutive widths agree.
    pub fn new(layers: Vec<Dense>, activation: Activation) -> Result<Self> {
        if layers.is_empty() {
            bail!("a network needs at least one layer");
        }
        for pair in layers.windows(2) {
            if pair[0].outputs() != pair[1].inputs() {
                bail!("layer {} gives {} features but {} takes {}", pair[0].spec.name, pair[0].outputs(), pair[1].spec.name, pair[1].inputs());
            }
        }
        Ok(Self { layers, activation })
    }

    /// Input dimension.
    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    /// Number of logits.
    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }

    /// Logits of a batch `x` (N × inputs, any float dtype; computed in f64).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.to_dtype(DType::F64)?;
        for (l, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if l + 1 < self.layers.len() {
                h = self.activation.apply(&h)?;
            }
        }
        Ok(h)
    }

    /// Logits of host rows (each `inputs` long), on the host.
    pub fn logits(&self, rows: &[f64], device: &Device) -> Result<Vec<Vec<f64>>> {
        let d = self.inputs();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let x = Tensor::from_slice(rows, (rows.len() / d, d), device)?;
        Ok(self.forward(&x)?.to_vec2()?)
    }

    /// The predicted class (first on ties) of each host row.
    pub fn predict(&self, rows: &[f64], device: &Device) -> Result<Vec<usize>> {
        Ok(self.logits(rows, device)?.iter().map(|z| argmax(z)).collect())
    }

    /// Shapes for reports: `[{"name", "in", "out"}]`.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.layers.iter().map(|l| serde_json::json!({"name": l.spec.prefix(), "in": l.inputs(), "out": l.outputs()})).collect(),
        )
    }
}

/// The index of the largest entry (the first on ties).
pub fn argmax(z: &[f64]) -> usize {
    (0..z.len()).fold(0, |best, k| if z[k] > z[best] { k } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_and_scalar_activations_agree_and_off_below_holds() {
        let ts = [-40.0, -3.0, -0.5, 0.0, 0.7, 5.0, 40.0];
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid, Activation::Softplus] {
            let x = Tensor::new(&ts, &Device::Cpu).unwrap();
            let y: Vec<f64> = act.apply(&x).unwrap().to_vec1().unwrap();
            for (t, v) in ts.iter().zip(&y) {
                assert!((v - act.value(*t)).abs() < 1e-12, "{act} at {t}: {v} vs {}", act.value(*t));
            }
            for p in [1e-2, 1e-6, 1e-12] {
                let t = act.off_below(p);
                assert!(act.value(t) - act.floor() <= p, "{act}: σ({t}) − floor > {p}");
            }
        }
    }

    #[test]
    fn norms_of_a_small_layer_match_hand_values() {
        // [[1, -2], [3, 4]]: column sums 4, 6; row sums 3, 7; singular values √(15 ± √125).
        let d = Dense::new("fc", 2, 2, vec![1.0, -2.0, 3.0, 4.0], vec![0.0; 2], &Device::Cpu).unwrap();
        let n = d.norms().unwrap();
        assert_eq!((n.l1, n.linf), (6.0, 7.0));
        assert!((n.spectral - (15.0 + 125f64.sqrt()).sqrt()).abs() < 1e-12);
        let net = Mlp::new(vec![d], Activation::Relu).unwrap();
        assert_eq!(net.logits(&[1.0, 1.0], &Device::Cpu).unwrap(), vec![vec![-1.0, 7.0]]);
    }
}
