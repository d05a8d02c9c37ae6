//! 2-D convolution on CUDA through cuDNN, forward and both gradients, as candle custom ops
//! (built with the `cudnn` feature).
//!
//! candle 0.11 runs only the forward on cuDNN; its backward is a naive `conv_transpose2d`
//! kernel (input gradient) and a convolution with an output-sized kernel (weight gradient),
//! and it splits a grouped convolution into one call per group. Here all three passes are
//! single cuDNN calls (`cudnnConvolutionForward`, `…BackwardData`, `…BackwardFilter`, with
//! the group count set) through [`super::cudnn`]'s plans: descriptors built once per shape,
//! the algorithm timed once per shape and pass (as PyTorch's `cudnn.benchmark`), one kept
//! workspace; cuDNN's default math (TF32 tensor cores on Ampere and later, as PyTorch's
//! default `cudnn.allow_tf32`), or exact f32 when [`crate::device::set_tf32`] forbids TF32.
//! Checked against the CPU by `normlab selftest --device cuda:0`.

use super::conv::Geom;
use super::cuda_ptr::not_on_cpu;
use super::cudnn::{address, slice_address, with_context, ConvKey, Pass};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// The convolution's parameters (square stride and padding, groups).
#[derive(Debug, Clone, Copy)]
pub struct CudnnConv2d {
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channel groups.
    pub groups: usize,
}

/// Runs `pass` of the convolution `g` on the operands `a`, `b` into a new `out_len`-value
/// output on their device.
fn run(g: Geom, pass: Pass, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout, out_len: usize, what: [&str; 2]) -> Result<CudaStorage> {
    let dev = s1.device().clone();
    let (a, b) = (address(s1, l1, what[0])?, address(s2, l2, what[1])?);
    let out = unsafe { dev.alloc::<f32>(out_len)? };
    let key = ConvKey { g, tf32: crate::device::tf32() };
    with_context(&dev, |ctx, dev| ctx.conv(dev, &key, pass, a, b, slice_address(&out)))?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}


impl CustomOp2 for CudnnConv2d {
    fn name(&self) -> &'static str {
        "normlab-cudnn-conv2d"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cuDNN convolution")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding, self.groups)?;
        let y = run(g, Pass::Forward, s1, l1, s2, l2, g.out_shape().elem_count(), ["input", "kernel"])?;
        Ok((y, g.out_shape()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() { Some(dy.apply_op2_no_bwd(w, &BackwardData { op: *self, x_dims: x.dims4()? })?) } else { None };
        let dw = if w.track_op() { Some(dy.apply_op2_no_bwd(x, &BackwardFilter { op: *self, w_dims: w.dims4()? })?) } else { None };
        Ok((dx, dw))
    }
}

/// The input gradient as an op on `(dy, w)`.
struct BackwardData {
    op: CudnnConv2d,
    x_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for BackwardData {
    fn name(&self) -> &'static str {
        "normlab-cudnn-conv2d-backward-data"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cuDNN convolution")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let (n, c, h, wd) = self.x_dims;
        let g = Geom::new(&[n, c, h, wd], l2.dims(), self.op.stride, self.op.padding, self.op.groups)?;
        if l1.dims() != g.out_shape().dims() {
            bail!("cudnn conv2d backward: gradient {:?} does not match the output {:?}", l1.dims(), g.out_shape())
        }
        let dx = run(g, Pass::BackwardData, s1, l1, s2, l2, n * c * h * wd, ["gradient", "kernel"])?;
        Ok((dx, Shape::from(self.x_dims)))
    }
}

/// The weight gradient as an op on `(dy, x)`.
struct BackwardFilter {
    op: CudnnConv2d,
    w_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for BackwardFilter {
    fn name(&self) -> &'static str {
        "normlab-cudnn-conv2d-backward-filter"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cuDNN convolution")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let (o, cg, kh, kw) = self.w_dims;
        let g = Geom::new(l2.dims(), &[o, cg, kh, kw], self.op.stride, self.op.padding, self.op.groups)?;
        if l1.dims() != g.out_shape().dims() {
            bail!("cudnn conv2d backward: gradient {:?} does not match the output {:?}", l1.dims(), g.out_shape())
        }
        let dw = run(g, Pass::BackwardFilter, s1, l1, s2, l2, o * cg * kh * kw, ["gradient", "input"])?;
        Ok((dw, Shape::from(self.w_dims)))
    }
}
