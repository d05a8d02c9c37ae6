//! The tensor kernels the models are built from: convolution, BatchNorm, linear.
//!
//! Models call these functions, never candle's ops directly, so that a faster kernel (a
//! custom op for conv backward, a fused BatchNorm) replaces the generic one in one place and
//! can be tested against candle's own op.

use candle_core::{Result, Tensor, Var, D};
use std::sync::atomic::{AtomicBool, Ordering};

/// Which kernels the ops run on the CPU: normlab's fused custom ops (the default) or candle's
/// generic ones (kept to measure against and to test with). Other devices always use candle's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// im2col/col2im + GEMM convolutions and a fused BatchNorm, forward and backward.
    Fast,
    /// candle's own conv2d (backward through conv_transpose2d) and BatchNorm from generic ops.
    Stock,
}

static STOCK: AtomicBool = AtomicBool::new(false);

impl Kernels {
    /// `fast` or `stock`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "fast" => Ok(Self::Fast),
            "stock" => Ok(Self::Stock),
            other => anyhow::bail!("unknown kernels '{other}': expected fast or stock"),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Stock => "stock",
        }
    }
}

/// Selects the kernels for the whole process (benchmarks compare the two).
pub fn set_kernels(kernels: Kernels) {
    STOCK.store(kernels == Kernels::Stock, Ordering::Relaxed);
}

/// The kernels in use.
pub fn kernels() -> Kernels {
    if STOCK.load(Ordering::Relaxed) {
        Kernels::Stock
    } else {
        Kernels::Fast
    }
}

/// 2-D convolution with zero padding, as PyTorch's `F.conv2d` (weight: out × in/groups × kh × kw).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    let y = x.conv2d(weight, padding, stride, 1, groups)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// Fully connected layer `x · Wᵀ + b` (weight: out × in), as PyTorch's `F.linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The running statistics of one BatchNorm layer and its hyper-parameters.
pub struct BatchNormState<'a> {
    /// Running mean (updated in train mode).
    pub running_mean: &'a Var,
    /// Running variance, unbiased as PyTorch keeps it (updated in train mode).
    pub running_var: &'a Var,
    /// Added to the variance before the square root (1e-5).
    pub eps: f64,
    /// Weight of the new batch in the running statistics (PyTorch's 0.1).
    pub momentum: f64,
}

/// BatchNorm2d with PyTorch's semantics: in train mode, normalise with the batch statistics
/// (biased variance) and update the running ones (unbiased variance, momentum); in eval mode,
/// normalise with the running statistics.
pub fn batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState, train: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let shape = (1, c, 1, 1);
    if train {
        let count = (n * h * w) as f64;
        let xc = x.transpose(0, 1)?.reshape((c, n * h * w))?;
        let mean = xc.mean(D::Minus1)?;
        let centered = xc.broadcast_sub(&mean.unsqueeze(1)?)?;
        let var = centered.sqr()?.mean(D::Minus1)?;
        {
            let m = state.momentum;
            let mean_d = mean.detach();
            let unbiased = (var.detach() * (count / (count - 1.0).max(1.0)))?;
            let rm = ((state.running_mean.as_tensor() * (1.0 - m))? + (mean_d * m)?)?;
            let rv = ((state.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            state.running_mean.set(&rm.to_dtype(state.running_mean.dtype())?)?;
            state.running_var.set(&rv.to_dtype(state.running_var.dtype())?)?;
        }
        let inv_std = (var + state.eps)?.sqrt()?.recip()?;
        let scale = (gamma * inv_std)?;
        let shift = (beta - (&mean * &scale)?)?;
        x.broadcast_mul(&scale.reshape(shape)?)?.broadcast_add(&shift.reshape(shape)?)
    } else {
        let rm = state.running_mean.as_tensor().detach();
        let rv = state.running_var.as_tensor().detach();
        let inv_std = (rv + state.eps)?.sqrt()?.recip()?;
        let scale = (gamma * inv_std)?;
        let shift = (beta - (rm * &scale)?)?;
        x.broadcast_mul(&scale.reshape(shape)?)?.broadcast_add(&shift.reshape(shape)?)
    }
}
