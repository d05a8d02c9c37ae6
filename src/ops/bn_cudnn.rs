//! Train-mode BatchNorm2d on CUDA through cuDNN (built with the `cudnn` feature): one
//! `cudnnBatchNormalizationForwardTraining` call for the batch statistics, the normalisation
//! and the running-statistics update, one `cudnnBatchNormalizationBackward` call for the input,
//! γ and β gradients. candle's generic path is about 60 kernels per layer (statistics,
//! broadcasts, the running update, and their gradients through candle's autograd).
//!
//! Semantics are PyTorch's, which runs the same cuDNN calls: the batch is normalised with the
//! biased variance, the running mean and variance move by `momentum` towards the batch mean and
//! the unbiased variance (cuDNN's `exponentialAverageFactor`), updated in place as
//! [`candle_core::Var::set`] would. cuDNN also returns the batch mean and 1/√(var + ε), which
//! the backward reuses. ε must be at least cuDNN's minimum, 1e-5 (normlab's BatchNorm uses it).
//! Checked against the CPU's fused BatchNorm by `normlab selftest --device cuda:0` (train
//! logits, running statistics, gradients).

use super::cuda_ptr::not_on_cpu;
use super::cudnn::{address, alpha_beta, check, ptr, slice_address, tensor_address, with_context, BN_MODE};
use candle_core::backend::BackendStorage;
use candle_core::counters::{record, Counter};
use candle_core::cuda::cudarc::cudnn::sys;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// cuDNN's smallest allowed ε (`CUDNN_BN_MIN_EPSILON`).
pub const MIN_EPS: f64 = 1e-5;

fn dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        other => bail!("cuDNN batch_norm: expected an n×c×h×w input, got {other:?}"),
    }
}

/// Train-mode BatchNorm on `(x, γ, β)`: normalises with the batch statistics and updates the
/// running ones in place; `saved` (2 × c, written here) receives the batch mean and
/// 1/√(var + ε) for the backward.
pub struct CudnnBatchNormTrain {
    /// Running mean (c, f32), updated in place.
    pub running_mean: Tensor,
    /// Running (unbiased) variance (c, f32), updated in place.
    pub running_var: Tensor,
    /// Batch mean and inverse standard deviation (2 × c, f32), written by the forward.
    pub saved: Tensor,
    /// ε added to the variance.
    pub eps: f64,
    /// Weight of the batch in the running statistics.
    pub momentum: f64,
}


impl CustomOp3 for CudnnBatchNormTrain {
    fn name(&self) -> &'static str {
        "normlab-cudnn-bn-train"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cuDNN BatchNorm")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout, s3: &CudaStorage, l3: &Layout) -> Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = dims(l1)?;
        if l2.shape().elem_count() != c || l3.shape().elem_count() != c || self.saved.elem_count() != 2 * c {
            bail!("cuDNN batch_norm: {c} channels but weight {:?}, bias {:?}", l2.dims(), l3.dims())
        }
        if self.eps < MIN_EPS {
            bail!("cuDNN batch_norm: eps {} is below cuDNN's minimum {MIN_EPS}", self.eps)
        }
        let dev = s1.device().clone();
        let (x, gamma, beta) = (address(s1, l1, "input")?, address(s2, l2, "weight")?, address(s3, l3, "bias")?);
        let (rm, rv) = (tensor_address(&self.running_mean, "running mean")?, tensor_address(&self.running_var, "running variance")?);
        let saved = tensor_address(&self.saved, "saved statistics")?;
        let y = unsafe { dev.alloc::<f32>(n * c * h * w)? };
        let yp = slice_address(&y);
        with_context(&dev, |ctx, _| {
            let (d, handle) = ctx.bn(n, c, h, w)?;
            let (one, zero) = alpha_beta();
            record(Counter::Cudnn, 1);
            let status = unsafe {
                sys::cudnnBatchNormalizationForwardTraining(
                    handle,
                    BN_MODE,
                    one,
                    zero,
                    d.x.0,
                    ptr(x),
                    d.x.0,
                    ptr(yp),
                    d.channel.0,
                    ptr(gamma),
                    ptr(beta),
                    self.momentum,
                    ptr(rm),
                    ptr(rv),
                    self.eps,
                    ptr(saved),
                    ptr(saved + 4 * c as u64),
                )
            };
            check(status, "cudnnBatchNormalizationForwardTraining")
        })?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, _beta: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        // γ's and β's gradients, written by the op below beside dx.
        let dgb = unsafe { Tensor::empty((2, c), DType::F32, dy.device())? };
        let op = CudnnBatchNormBackward { gamma: gamma.detach(), saved: self.saved.clone(), dgamma_dbeta: dgb.clone(), eps: self.eps };
        let dx = dy.contiguous()?.apply_op2_no_bwd(&x.contiguous()?, &op)?;
        Ok((Some(dx), Some(dgb.get(0)?), Some(dgb.get(1)?)))
    }
}

/// The train-mode backward on `(dy, x)`: returns dx and writes γ's and β's gradients into
/// `dgamma_dbeta` (2 × c).
struct CudnnBatchNormBackward {
    gamma: Tensor,
    saved: Tensor,
    dgamma_dbeta: Tensor,
    eps: f64,
}

impl CustomOp2 for CudnnBatchNormBackward {
    fn name(&self) -> &'static str {
        "normlab-cudnn-bn-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cuDNN BatchNorm")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = dims(l2)?;
        if l1.dims() != l2.dims() {
            bail!("cuDNN batch_norm backward: gradient {:?} and input {:?} differ", l1.dims(), l2.dims())
        }
        let dev = s1.device().clone();
        let (dy, x) = (address(s1, l1, "gradient")?, address(s2, l2, "input")?);
        let gamma = tensor_address(&self.gamma, "weight")?;
        let saved = tensor_address(&self.saved, "saved statistics")?;
        let dgb = tensor_address(&self.dgamma_dbeta, "parameter gradients")?;
        let dx = unsafe { dev.alloc::<f32>(n * c * h * w)? };
        let dxp = slice_address(&dx);
        with_context(&dev, |ctx, _| {
            let (d, handle) = ctx.bn(n, c, h, w)?;
            let (one, zero) = alpha_beta();
            record(Counter::Cudnn, 1);
            let status = unsafe {
                sys::cudnnBatchNormalizationBackward(
                    handle,
                    BN_MODE,
                    one,
                    zero,
                    one,
                    zero,
                    d.x.0,
                    ptr(x),
                    d.x.0,
                    ptr(dy),
                    d.x.0,
                    ptr(dxp),
                    d.channel.0,
                    ptr(gamma),
                    ptr(dgb),
                    ptr(dgb + 4 * c as u64),
                    self.eps,
                    ptr(saved),
                    ptr(saved + 4 * c as u64),
                )
            };
            check(status, "cudnnBatchNormalizationBackward")
        })?;
        Ok((CudaStorage::wrap_cuda_slice(dx, dev), l2.shape().clone()))
    }
}
