//! The tensor kernels the models are built from: convolution, BatchNorm, linear.
//!
//! Models call these functions, never candle's ops directly, so that a faster kernel (a
//! custom op for conv backward, a fused BatchNorm) replaces the generic one in one place and
//! can be tested against candle's own op.

pub mod bn;
#[cfg(feature = "cudnn")]
pub mod bn_cudnn;
pub mod conv;
#[cfg(feature = "cudnn")]
pub mod conv_cudnn;
pub mod conv_device;
#[cfg(feature = "cuda")]
mod cuda_ptr;
#[cfg(feature = "cudnn")]
pub mod cudnn;
pub mod dense;
pub mod fused;
#[cfg(feature = "cuda")]
pub mod fused_cuda;
pub mod gemm;
pub mod grouped;
mod padded;
pub mod pointwise;
pub mod reduce;
#[cfg(test)]
mod reference;
pub mod stack;
pub mod winograd;

use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor, Var, D};

pub use fused::{add_relu, cross_entropy};
use std::sync::atomic::{AtomicU8, Ordering};

/// Which kernels the ops run: normlab's (the default), a device-generic convolution backward,
/// or candle's own (kept to measure against and to test with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// CPU: im2col/col2im + GEMM convolutions and a fused BatchNorm, forward and backward.
    /// CUDA: convolutions forward and backward as single cuDNN calls ([`conv_cudnn`], with
    /// the `cudnn` feature; else as [`Kernels::Portable`]).
    Fast,
    /// CPU: as `Fast`. Other devices: candle's forward, and the backward as a forward
    /// convolution plus one matrix product ([`conv_device`]).
    Portable,
    /// candle's own conv2d (backward through conv_transpose2d) and BatchNorm from generic ops.
    Stock,
}

static KERNELS: AtomicU8 = AtomicU8::new(0);

impl Kernels {
    /// `fast`, `portable` or `stock`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "fast" => Ok(Self::Fast),
            "portable" => Ok(Self::Portable),
            "stock" => Ok(Self::Stock),
            other => anyhow::bail!("unknown kernels '{other}': expected fast, portable or stock"),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Portable => "portable",
            Self::Stock => "stock",
        }
    }
}

/// Selects the kernels for the whole process (benchmarks compare the two).
pub fn set_kernels(kernels: Kernels) {
    KERNELS.store(kernels as u8, Ordering::Relaxed);
}

/// The kernels in use.
pub fn kernels() -> Kernels {
    match KERNELS.load(Ordering::Relaxed) {
        0 => Kernels::Fast,
        1 => Kernels::Portable,
        _ => Kernels::Stock,
    }
}

/// The values of a custom op's f32, contiguous CPU input; `op` and `what` name it in the
/// error (the wrappers below only hand the ops such tensors).
fn cpu_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("normlab {op}: {what} must be f32") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("normlab {op}: {what} must be contiguous"),
    }
}

/// A `len`-value output built in parallel, chunk `i` (of `chunk` values) from the values of
/// `values(i)`, written straight into the new allocation: `vec![0.0; len]` then a pass over it
/// writes the memory twice (calloc zeroes reused memory), which for the large activations of a
/// memory-bound op (BatchNorm) is a pass of its own. Panics, before exposing any of the
/// allocation, when a chunk's iterator yields fewer values than the chunk holds.
pub(crate) fn par_collect<I: Iterator<Item = f32>>(len: usize, chunk: usize, values: impl Fn(usize) -> I + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(len);
    let written: usize = out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, dst)| {
            let mut count = 0;
            for (d, v) in dst.iter_mut().zip(values(i)) {
                d.write(v);
                count += 1;
            }
            count
        })
        .sum();
    assert_eq!(written, len, "par_collect: a chunk's values ended early");
    // SAFETY: each chunk wrote at most its length from its start, and the counts add up to
    // `len`, so each chunk wrote all of its values: the first `len` are initialised.
    unsafe { out.set_len(len) };
    out
}

/// The sum over `items` of `len`-value vectors, item `i` added into an accumulator by
/// `add(i, &mut state, &mut acc)` (`state`: per-task scratch from `init`), in parallel and
/// bitwise repeatable: the items are dealt in fixed contiguous runs to one accumulator per
/// thread, and the accumulators added in order. rayon's `fold` regroups the sums with its
/// work stealing, so weight gradients summed with it differed bitwise from run to run.
pub(crate) fn par_sum<S>(len: usize, items: usize, init: impl Fn() -> S + Sync, add: impl Fn(usize, &mut S, &mut [f32]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let runs = rayon::current_num_threads().clamp(1, items.max(1));
    let parts: Vec<Vec<f32>> = (0..runs)
        .into_par_iter()
        .map(|r| {
            let (mut state, mut acc) = (init(), vec![0f32; len]);
            for i in r * items / runs..(r + 1) * items / runs {
                add(i, &mut state, &mut acc);
            }
            acc
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for part in parts {
        total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
    }
    total
}

/// Whether `t` runs on normlab's CPU kernels: f32 on the CPU, not [`Kernels::Stock`].
fn fast(t: &Tensor) -> bool {
    kernels() != Kernels::Stock && t.device().is_cpu() && t.dtype() == DType::F32
}

/// 2-D convolution with zero padding, as PyTorch's `F.conv2d` (weight: out × in/groups × kh × kw).
/// On the CPU an im2col + GEMM custom op ([`conv::Conv2dOp`]) whose backward computes only the
/// gradients needed (none for the images, none for a detached weight); on CUDA cuDNN for all
/// three passes ([`conv_cudnn`]) or candle's forward with [`conv_device`]'s backward; candle's
/// own with [`Kernels::Stock`].
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    let on_device = !x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    let y = if fast(x) && weight.dtype() == DType::F32 {
        x.contiguous()?.apply_op2(&weight.contiguous()?, conv::Conv2dOp { stride, padding, groups })?
    } else if on_device && kernels() == Kernels::Fast && x.device().is_cuda() && cfg!(feature = "cudnn") {
        cudnn_conv2d(x, weight, stride, padding, groups)?
    } else if on_device && kernels() != Kernels::Stock && weight.dim(2)? == weight.dim(3)? && padding < weight.dim(2)? {
        conv_device::conv2d(x, weight, stride, padding, groups)?
    } else {
        x.conv2d(weight, padding, stride, 1, groups)?
    };
    match bias {
        Some(b) => add_channel_bias(&y, b),
        None => Ok(y),
    }
}

/// `y + b` with one value of `b` per channel of `y (n, c, h, w)`: on the CPU one pass
/// ([`pointwise::ChannelBias`]).
fn add_channel_bias(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(y) && b.dtype() == DType::F32 {
        y.apply_op2(&b.contiguous()?, pointwise::ChannelBias)
    } else {
        y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)
    }
}

/// [`conv_cudnn::CudnnConv2d`] on `x` and `weight` (built with the `cudnn` feature).
#[cfg(feature = "cudnn")]
fn cudnn_conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&weight.contiguous()?, conv_cudnn::CudnnConv2d { stride, padding, groups })
}

#[cfg(not(feature = "cudnn"))]
fn cudnn_conv2d(_: &Tensor, _: &Tensor, _: usize, _: usize, _: usize) -> Result<Tensor> {
    candle_core::bail!("cuDNN convolution asked for in a build without the `cudnn` feature")
}

/// `max(x, 0)`; on the CPU a one-pass op with a one-pass backward ([`pointwise::Relu`]).
/// On CUDA one kernel each way ([`fused`]).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fast(x) {
        return x.contiguous()?.apply_op1(pointwise::Relu);
    }
    if let Some(y) = fused::relu(x)? {
        return Ok(y);
    }
    x.relu()
}

/// Max pooling over non-overlapping `k × k` windows, as PyTorch's `F.max_pool2d(x, k)`, whose
/// backward sends each gradient to its window's maximum. On the CPU [`pointwise::MaxPool`];
/// elsewhere two max reductions over a `(n, c, h/k, k, w/k, k)` view, not candle's
/// `max_pool2d`: candle 0.11's backward of that scales the gradient by the window's share of
/// maxima (1/k² for a unique maximum: 1/4 per 2×2 pool).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if fast(x) {
        return x.contiguous()?.apply_op1(pointwise::MaxPool { k });
    }
    max_pool2d_generic(x, k)
}

/// [`max_pool2d`] from candle's reductions (any device).
fn max_pool2d_generic(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || h < k || w < k {
        candle_core::bail!("max_pool2d: window {k} does not fit a {h}×{w} map")
    }
    let (oh, ow) = (h / k, w / k);
    let x = x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?.contiguous()?;
    x.reshape((n, c, oh, k, ow, k))?.max(5)?.max(3)
}

/// Fully connected layer `x · Wᵀ + b` (weight: out × in), as PyTorch's `F.linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `Σ_m |x[o, m, i]|` of `x` seen as `(outer, mid, inner)`: an `(outer, inner)` tensor, no
/// gradient. On the CPU one multi-threaded pass ([`reduce::AbsSumMid`]).
pub fn abs_sum_mid(x: &Tensor, dims: (usize, usize, usize)) -> Result<Tensor> {
    let x = x.detach();
    if fast(&x) {
        return x.contiguous()?.apply_op1_no_bwd(&reduce::AbsSumMid { dims });
    }
    if let Some(m) = abs_sum_mid_cuda(&x, dims)? {
        return Ok(m);
    }
    x.abs()?.reshape(dims)?.sum(1)
}

/// [`abs_sum_mid`] as one CUDA kernel (`None`: not a case for it).
#[cfg(feature = "cuda")]
fn abs_sum_mid_cuda(x: &Tensor, dims: (usize, usize, usize)) -> Result<Option<Tensor>> {
    if !fused::on(x.device()) || x.dtype() != DType::F32 {
        return Ok(None);
    }
    x.contiguous()?.apply_op1_no_bwd(&fused_cuda::AbsSumMid { dims }).map(Some)
}

#[cfg(not(feature = "cuda"))]
fn abs_sum_mid_cuda(_: &Tensor, _: (usize, usize, usize)) -> Result<Option<Tensor>> {
    Ok(None)
}

/// `y + a·x` (same shapes), no gradient. On the CPU one multi-threaded pass ([`reduce::Axpy`]).
pub fn axpy(y: &Tensor, a: f64, x: &Tensor) -> Result<Tensor> {
    let (y, x) = (y.detach(), x.detach());
    if fast(&y) && x.dtype() == DType::F32 {
        return y.contiguous()?.apply_op2_no_bwd(&x.contiguous()?, &reduce::Axpy { a: a as f32 });
    }
    y + (x * a)?
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
/// normalise with the running statistics. On the CPU the fused ops of [`bn`] (same
/// semantics, statistics in f64 across planes); elsewhere candle's generic ops.
/// On CUDA in train mode one cuDNN call each way ([`bn_cudnn`], with the `cudnn` feature).
pub fn batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState, train: bool) -> Result<Tensor> {
    if fast(x) && gamma.dtype() == DType::F32 && beta.dtype() == DType::F32 {
        return batch_norm_fused(x, gamma, beta, state, train, false);
    }
    if train {
        if let Some(y) = batch_norm_cudnn(x, gamma, beta, state)? {
            return Ok(y);
        }
    }
    batch_norm_generic(x, gamma, beta, state, train)
}

/// Train-mode [`batch_norm`] through cuDNN (`None`: not a case for it: not CUDA, not f32,
/// `--kernels stock`, or ε below cuDNN's minimum).
#[cfg(feature = "cudnn")]
fn batch_norm_cudnn(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState) -> Result<Option<Tensor>> {
    let f32s = [x, gamma, beta, state.running_mean.as_tensor(), state.running_var.as_tensor()].iter().all(|t| t.dtype() == DType::F32);
    if !fused::on(x.device()) || !f32s || x.rank() != 4 || state.eps < bn_cudnn::MIN_EPS {
        return Ok(None);
    }
    let c = x.dim(1)?;
    let op = bn_cudnn::CudnnBatchNormTrain {
        running_mean: state.running_mean.as_tensor().clone(),
        running_var: state.running_var.as_tensor().clone(),
        saved: unsafe { Tensor::empty((2, c), DType::F32, x.device())? },
        eps: state.eps,
        momentum: state.momentum,
    };
    x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op).map(Some)
}

#[cfg(not(feature = "cudnn"))]
fn batch_norm_cudnn(_: &Tensor, _: &Tensor, _: &Tensor, _: &BatchNormState) -> Result<Option<Tensor>> {
    Ok(None)
}

/// `relu(batch_norm(…))`, the pair every model uses: on the CPU in train mode one fused op
/// ([`bn::BatchNormTrain`] with `relu`), else the two ops.
pub fn batch_norm_relu(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState, train: bool) -> Result<Tensor> {
    if fast(x) && gamma.dtype() == DType::F32 && beta.dtype() == DType::F32 {
        return batch_norm_fused(x, gamma, beta, state, train, true);
    }
    relu(&batch_norm(x, gamma, beta, state, train)?)
}

/// [`batch_norm`] from candle's generic ops (any device).
fn batch_norm_generic(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState, train: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let shape = (1, c, 1, 1);
    let (mean, var) = if train {
        let xc = x.transpose(0, 1)?.reshape((c, n * h * w))?;
        let mean = xc.mean(D::Minus1)?;
        let var = xc.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(D::Minus1)?;
        update_running(state, &mean.detach(), &var.detach(), n * h * w)?;
        (mean, var)
    } else {
        (state.running_mean.as_tensor().detach(), state.running_var.as_tensor().detach())
    };
    let inv_std = (var + state.eps)?.sqrt()?.recip()?;
    let scale = (gamma * inv_std)?;
    let shift = (beta - (mean * &scale)?)?;
    x.broadcast_mul(&scale.reshape(shape)?)?.broadcast_add(&shift.reshape(shape)?)
}

/// Updates the running statistics from a batch's mean and biased variance (PyTorch: unbiased
/// variance, weight `momentum` for the new batch).
fn update_running(state: &BatchNormState, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
    let m = state.momentum;
    let count = count as f64;
    let unbiased = (var * (count / (count - 1.0).max(1.0)))?;
    let rm = ((state.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
    let rv = ((state.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
    state.running_mean.set(&rm.to_dtype(state.running_mean.dtype())?)?;
    state.running_var.set(&rv.to_dtype(state.running_var.dtype())?)
}

/// [`batch_norm`] through the fused CPU ops; `relu` (train mode only) clamps in the same op.
fn batch_norm_fused(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState, train: bool, relu: bool) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let x = x.contiguous()?;
    let inv_std = |var: Vec<f32>| -> Vec<f32> { var.iter().map(|&v| 1.0 / (v as f64 + state.eps).sqrt() as f32).collect() };
    if train {
        let (mean, var) = bn::batch_stats(&x)?;
        update_running(state, &mean, &var, n * h * w)?;
        let op = bn::BatchNormTrain { mean: mean.to_vec1()?, inv_std: inv_std(var.to_vec1()?), relu };
        return x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op);
    }
    let y = if gamma.track_op() || beta.track_op() {
        // Eval mode with γ, β wanted: the generic path differentiates them.
        let rm = state.running_mean.as_tensor().detach();
        let inv = (state.running_var.as_tensor().detach() + state.eps)?.sqrt()?.recip()?;
        let scale = (gamma * inv)?;
        let shift = (beta - (rm * &scale)?)?;
        let c = scale.elem_count();
        x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)?
    } else {
        let rm: Vec<f32> = state.running_mean.as_tensor().to_dtype(DType::F32)?.to_vec1()?;
        let is = inv_std(state.running_var.as_tensor().to_dtype(DType::F32)?.to_vec1()?);
        let (g, b): (Vec<f32>, Vec<f32>) = (gamma.to_vec1()?, beta.to_vec1()?);
        let (scale, shift) = bn::scale_shift(&g, &b, &rm, &is);
        x.apply_op1(bn::ChannelAffine { scale, shift })?
    };
    // Eval mode: the ReLU as its own op (attacks and evaluation, not the training step).
    if relu {
        self::relu(&y)
    } else {
        Ok(y)
    }
}

#[cfg(test)]
mod tests;
