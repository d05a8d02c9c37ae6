//! The three weight layers (conv, linear, BatchNorm) and the builder that registers their
//! tensors under PyTorch names, initialises them as PyTorch does, and records one
//! [`LayerSpec`] per layer while a model is built.

use super::params::{ParamStore, Role};
use super::spec::{LayerKind, LayerSpec};
use crate::ops;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use rand::distributions::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;

/// A 2-D convolution layer.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// The weight's state_dict name (the key of its [`LayerSpec`]).
    pub name: String,
    /// Kernel, out_c × in_c/groups × kh × kw.
    pub weight: Tensor,
    /// Optional bias of length out_c.
    pub bias: Option<Tensor>,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channel groups.
    pub groups: usize,
    /// Copies side by side (a stacked model's slices, [`super::StackedModel`]; 1 otherwise):
    /// `weight` and `bias` hold them stacked along their first dimension.
    pub stack: usize,
}

impl Conv2d {
    /// Applies the convolution. With `track` false the weights enter as constants, so a
    /// backward pass computes input gradients only (what attacks need).
    pub fn forward(&self, x: &Tensor, track: bool) -> candle_core::Result<Tensor> {
        let (w, b) = (tracked(&self.weight, track), self.bias.as_ref().map(|b| tracked(b, track)));
        if self.stack > 1 {
            return ops::stack::conv2d(x, &w, b.as_ref(), self.stride, self.padding, self.groups, self.stack);
        }
        ops::conv2d(x, &w, b.as_ref(), self.stride, self.padding, self.groups)
    }
}

/// A fully connected layer.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The weight's state_dict name (the key of its [`LayerSpec`]).
    pub name: String,
    /// Weight, out × in.
    pub weight: Tensor,
    /// Bias of length out.
    pub bias: Option<Tensor>,
    /// Copies side by side, as [`Conv2d::stack`]; stacked, the layer maps `(N, K·in)` to
    /// `(K, N, out)`.
    pub stack: usize,
}

impl Linear {
    /// Applies `x · Wᵀ + b` (weights as constants unless `track`).
    pub fn forward(&self, x: &Tensor, track: bool) -> candle_core::Result<Tensor> {
        let (w, b) = (tracked(&self.weight, track), self.bias.as_ref().map(|b| tracked(b, track)));
        if self.stack > 1 {
            return ops::stack::linear(x, &w, b.as_ref(), self.stack);
        }
        ops::linear(x, &w, b.as_ref())
    }
}

/// A BatchNorm2d layer with running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// The weight's state_dict name (the key of its [`LayerSpec`]).
    pub name: String,
    /// γ.
    pub weight: Tensor,
    /// β.
    pub bias: Tensor,
    /// Running mean (buffer).
    pub running_mean: Var,
    /// Running variance (buffer).
    pub running_var: Var,
}

/// PyTorch's BatchNorm eps.
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's BatchNorm momentum.
pub const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    /// Normalises with batch statistics (and updates the running ones) when `train`, else with
    /// the running statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ops::batch_norm(x, &tracked(&self.weight, train), &tracked(&self.bias, train), &self.state(), train)
    }

    /// `relu(forward(x))`, fused into one op where the kernels allow ([`ops::batch_norm_relu`]).
    pub fn forward_relu(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ops::batch_norm_relu(x, &tracked(&self.weight, train), &tracked(&self.bias, train), &self.state(), train)
    }

    fn state(&self) -> ops::BatchNormState<'_> {
        ops::BatchNormState { running_mean: &self.running_mean, running_var: &self.running_var, eps: BN_EPS, momentum: BN_MOMENTUM }
    }
}

/// The tensor itself when its gradient is wanted, else a detached view of the same storage
/// (no copy), so backward passes skip weight gradients in eval mode.
fn tracked(t: &Tensor, track: bool) -> Tensor {
    if track {
        t.clone()
    } else {
        t.detach()
    }
}

/// How a builder initialises conv and linear layers (BatchNorm is always γ = 1, β = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// PyTorch's default: kaiming_uniform with a = √5, U(±1/√fan_in) for weights and biases.
    PyTorch,
    /// RobustBench's WideResNet: conv weights N(0, 2/(kh·kw·out_c)), linear biases 0, the
    /// rest PyTorch's default.
    WideResNet,
}

/// Registers layers while a model is built: names, the initial weights drawn from a seeded
/// RNG (on the CPU, so every device starts from the same weights), and the layer list.
pub struct Builder {
    /// Tensors registered so far.
    pub store: ParamStore,
    /// Layers registered so far, in forward order.
    pub layers: Vec<LayerSpec>,
    /// The initialisation of the layers registered next (PyTorch's default unless a model
    /// sets its own).
    pub init: Init,
    rng: ChaCha8Rng,
    device: Device,
    stack: usize,
    /// Weights and biases 0 instead of drawn (a model's layout without its initialisation).
    zeros: bool,
}

impl Builder {
    /// A builder whose initial weights are drawn from `rng` and placed on `device`.
    pub fn new(rng: ChaCha8Rng, device: &Device) -> Self {
        Self::stacked(rng, device, 1)
    }

    /// A builder of a model with `stack` copies side by side ([`super::StackedModel`]): each
    /// tensor holds `stack` copies of the single model's along its first dimension, every copy
    /// the same draw from `rng` (so each slice starts where the single model does). The layer
    /// list describes one copy.
    pub fn stacked(rng: ChaCha8Rng, device: &Device, stack: usize) -> Self {
        Self { store: ParamStore::new(), layers: Vec::new(), init: Init::PyTorch, rng, device: device.clone(), stack: stack.max(1), zeros: false }
    }

    /// A builder of one model (no stack) whose weights and biases are all 0 (BatchNorm as
    /// initialised): the layers and parameter names of a model without the cost of drawing
    /// its initialisation.
    pub fn zeros(device: &Device) -> Self {
        Self { zeros: true, ..Self::new(<ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0), device) }
    }

    /// `stack` copies of `data` (one copy's values, of `shape`) side by side on the device.
    fn stacked_tensor(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let mut shape = shape.to_vec();
        shape[0] *= self.stack;
        let data = if self.stack == 1 { data } else { data.repeat(self.stack) };
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?.to_device(&self.device)?)
    }

    /// Zeros of `shape` (stacked) when the builder draws nothing ([`Builder::zeros`]).
    fn zeros_if_undrawn(&self, shape: &[usize]) -> Result<Option<Tensor>> {
        if !self.zeros {
            return Ok(None);
        }
        let mut shape = shape.to_vec();
        shape[0] *= self.stack;
        Ok(Some(Tensor::zeros(shape, candle_core::DType::F32, &self.device)?))
    }

    fn normal(&mut self, shape: &[usize], std: f64) -> Result<Tensor> {
        if let Some(t) = self.zeros_if_undrawn(shape)? {
            return Ok(t);
        }
        let n: usize = shape.iter().product();
        let dist = rand_distr::Normal::new(0f32, std as f32)?;
        let data: Vec<f32> = (0..n).map(|_| dist.sample(&mut self.rng)).collect();
        self.stacked_tensor(data, shape)
    }

    fn uniform(&mut self, shape: &[usize], bound: f64) -> Result<Tensor> {
        if let Some(t) = self.zeros_if_undrawn(shape)? {
            return Ok(t);
        }
        let n: usize = shape.iter().product();
        let dist = Uniform::new_inclusive(-bound as f32, bound as f32);
        let data: Vec<f32> = (0..n).map(|_| dist.sample(&mut self.rng)).collect();
        self.stacked_tensor(data, shape)
    }

    fn constant(&self, len: usize, value: f32) -> Result<Tensor> {
        Ok(Tensor::full(value, len * self.stack, &self.device)?)
    }

    /// A conv layer `prefix` on an `in_c × in_hw.0 × in_hw.1` input, initialised as
    /// [`Builder::init`] says (PyTorch's default: U(±1/√fan_in) for weight and bias).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        prefix: &str,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
        in_hw: (usize, usize),
    ) -> Result<Conv2d> {
        let spec = LayerSpec {
            name: format!("{prefix}.weight"),
            kind: LayerKind::Conv,
            in_c,
            in_h: in_hw.0,
            in_w: in_hw.1,
            out_c,
            kh: k,
            kw: k,
            stride,
            padding,
            groups,
            bias,
        };
        let bound = 1.0 / (spec.fan_in() as f64).sqrt();
        let w = match self.init {
            Init::PyTorch => self.uniform(&spec.weight_shape(), bound)?,
            Init::WideResNet => self.normal(&spec.weight_shape(), (2.0 / (k * k * out_c) as f64).sqrt())?,
        };
        let weight = self.store.insert(&spec.name, w, Role::Trainable)?.as_tensor().clone();
        let bias = if bias {
            let b = self.uniform(&[out_c], bound)?;
            Some(self.store.insert(&format!("{prefix}.bias"), b, Role::Trainable)?.as_tensor().clone())
        } else {
            None
        };
        let name = spec.name.clone();
        self.layers.push(spec);
        Ok(Conv2d { name, weight, bias, stride, padding, groups, stack: self.stack })
    }

    /// A linear layer `prefix`, PyTorch-initialised (U(±1/√in) for weight and bias; the bias
    /// 0 under [`Init::WideResNet`]).
    pub fn linear(&mut self, prefix: &str, in_f: usize, out_f: usize) -> Result<Linear> {
        let spec = LayerSpec::linear(prefix, in_f, out_f);
        let bound = 1.0 / (in_f as f64).sqrt();
        let w = self.uniform(&spec.weight_shape(), bound)?;
        let weight = self.store.insert(&spec.name, w, Role::Trainable)?.as_tensor().clone();
        let b = match self.init {
            Init::PyTorch => self.uniform(&[out_f], bound)?,
            Init::WideResNet => self.constant(out_f, 0.0)?,
        };
        let bias = Some(self.store.insert(&format!("{prefix}.bias"), b, Role::Trainable)?.as_tensor().clone());
        let name = spec.name.clone();
        self.layers.push(spec);
        Ok(Linear { name, weight, bias, stack: self.stack })
    }

    /// A BatchNorm2d layer `prefix` over `c` channels of an `in_hw` map (γ = 1, β = 0, running
    /// mean 0, running variance 1).
    pub fn batch_norm(&mut self, prefix: &str, c: usize, in_hw: (usize, usize)) -> Result<BatchNorm2d> {
        let spec = LayerSpec::batch_norm(prefix, c, in_hw);
        let weight = self.store.insert(&spec.name, self.constant(c, 1.0)?, Role::Trainable)?.as_tensor().clone();
        let bias = self.store.insert(&format!("{prefix}.bias"), self.constant(c, 0.0)?, Role::Trainable)?.as_tensor().clone();
        let running_mean = self.store.insert(&format!("{prefix}.running_mean"), self.constant(c, 0.0)?, Role::Buffer)?;
        let running_var = self.store.insert(&format!("{prefix}.running_var"), self.constant(c, 1.0)?, Role::Buffer)?;
        let name = spec.name.clone();
        self.layers.push(spec);
        Ok(BatchNorm2d { name, weight, bias, running_mean, running_var })
    }
}
