//! 2-D convolution backward for devices other than the CPU (CUDA), built from candle's own
//! ops: the input gradient is one forward convolution of the output gradient with the
//! flipped, transposed kernel (so it runs on cuDNN's forward kernels where candle has them),
//! and the weight gradient is one matrix product (cuBLAS) of the output gradient with the
//! unfolded input patches.
//!
//! candle 0.11 differentiates a convolution with a naive `conv_transpose2d` kernel (input
//! gradient) and a convolution whose kernel is the whole output map (weight gradient): on a
//! GPU both are far slower than the forward. The forward stays candle's (`Tensor::conv2d`,
//! cuDNN when built with the `cudnn` feature); [`ConvGrad`] only attaches this backward.
//! Everything here is device-generic, so it is tested on the CPU against candle's backward
//! (src/ops/tests.rs).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

/// Convolution `x (n, c, h, w) ⋆ weight (o, c/groups, k, k)` whose backward is
/// [`input_grad`] and [`weight_grad`] instead of candle's. Any device; square kernels.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    let y = x.detach().conv2d(&weight.detach(), padding, stride, 1, groups)?;
    if !x.track_op() && !weight.track_op() {
        return Ok(y);
    }
    y.apply_op3(x, weight, ConvGrad { stride, padding, groups })
}

/// The identity on a precomputed convolution output `y`, with the gradients of `x` and
/// `weight` as its backward (the op's second and third arguments).
struct ConvGrad {
    stride: usize,
    padding: usize,
    groups: usize,
}

/// A contiguous copy of the first operand's storage (the op's forward is the identity).
fn copy_first<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    if !l.is_contiguous() || l.start_offset() != 0 {
        bail!("conv2d backward op: the forward output must be contiguous")
    }
    Ok((s.try_clone(l)?, l.shape().clone()))
}

impl CustomOp3 for ConvGrad {
    fn name(&self) -> &'static str {
        "normlab-conv2d-device-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        copy_first(s1, l1)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        copy_first(s1, l1)
    }

    fn bwd(&self, _y: &Tensor, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let dx = if x.track_op() { Some(input_grad(&dy, w, (h, wd), self.stride, self.padding, self.groups)?) } else { None };
        let dw = if w.track_op() { Some(weight_grad(&dy, x, w.dims(), self.stride, self.padding, self.groups)?) } else { None };
        Ok((None, dx, dw))
    }
}

/// The gradient with respect to the input, of size `hw`, of a convolution whose output
/// gradient is `dy`: `dy`, dilated by the stride and padded by `k − 1 − padding` (plus what
/// the stride left uncovered at the bottom and right), convolved with the kernel flipped in
/// space and with input and output channels swapped within each group.
pub fn input_grad(dy: &Tensor, w: &Tensor, hw: (usize, usize), stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    let (o, cg, kh, kw) = w.dims4()?;
    let (n, _, oh, ow) = dy.dims4()?;
    if kh != kw || padding + 1 > kh {
        bail!("conv2d backward: needs a square kernel with padding < kernel size, got {kh}×{kw} padding {padding}")
    }
    let k = kh;
    // (o, cg, k, k) → (g, o/g, cg, k, k) → (g, cg, o/g, k, k) → (c, o/g, k, k), flipped.
    let flip = Tensor::arange_step(k as i64 - 1, -1, -1, w.device())?.to_dtype(candle_core::DType::U32)?;
    let wt = w
        .reshape((groups, o / groups, cg, k, k))?
        .transpose(1, 2)?
        .reshape((groups * cg, o / groups, k, k))?
        .index_select(&flip, 2)?
        .index_select(&flip, 3)?
        .contiguous()?;
    let edge = k - 1 - padding;
    if stride == 1 {
        return dy.conv2d(&wt, edge, 1, 1, groups);
    }
    // Insert stride − 1 zeros after every element, then drop the trailing ones the stride
    // does not reach and pad: top/left `edge`, bottom/right `edge` + the uncovered remainder.
    let zeros = dy.zeros_like()?;
    let mut parts = vec![dy.unsqueeze(3)?];
    parts.extend(std::iter::repeat_n(zeros.unsqueeze(3)?, stride - 1));
    let rows = Tensor::cat(&parts, 3)?.reshape((n, o, oh * stride, ow))?;
    let mut parts = vec![rows.unsqueeze(4)?];
    let zeros = rows.zeros_like()?;
    parts.extend(std::iter::repeat_n(zeros.unsqueeze(4)?, stride - 1));
    let dilated = Tensor::cat(&parts, 4)?.reshape((n, o, oh * stride, ow * stride))?;
    let (rh, rw) = ((hw.0 + 2 * padding - k) % stride, (hw.1 + 2 * padding - k) % stride);
    let dilated = dilated.narrow(2, 0, (oh - 1) * stride + 1 + rh)?.narrow(3, 0, (ow - 1) * stride + 1 + rw)?;
    let padded = dilated.pad_with_zeros(2, edge, edge)?.pad_with_zeros(3, edge, edge)?;
    padded.conv2d(&wt, 0, 1, 1, groups)
}

/// The gradient with respect to the kernel (shape `w_dims`) of a convolution of `x` whose
/// output gradient is `dy`: per group, `dy` as an `(o/g) × (n·oh·ow)` matrix times the
/// unfolded input patches as an `(n·oh·ow) × (c/g·k·k)` matrix.
pub fn weight_grad(dy: &Tensor, x: &Tensor, w_dims: &[usize], stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    let &[o, cg, k, _] = w_dims else { bail!("conv2d backward: expected a 4-d kernel, got {w_dims:?}") };
    let (n, c, _, _) = x.dims4()?;
    let (_, _, oh, ow) = dy.dims4()?;
    // Channel-major padded input (c, n, h + 2p, w + 2p), with room for `oh·stride` rows and
    // `ow·stride` columns from every kernel offset.
    let xt = x.transpose(0, 1)?;
    let (hp, wp) = (x.dim(2)? + 2 * padding, x.dim(3)? + 2 * padding);
    let (need_h, need_w) = ((k - 1) + oh * stride, (k - 1) + ow * stride);
    let xp = xt
        .pad_with_zeros(2, padding, padding + need_h.saturating_sub(hp))?
        .pad_with_zeros(3, padding, padding + need_w.saturating_sub(wp))?;
    let mut patches = Vec::with_capacity(k * k);
    for dy_off in 0..k {
        for dx_off in 0..k {
            let p = xp.narrow(2, dy_off, oh * stride)?.narrow(3, dx_off, ow * stride)?;
            patches.push(if stride == 1 {
                p
            } else {
                p.reshape((c, n, oh, stride, ow * stride))?.narrow(3, 0, 1)?.reshape((c, n, oh, ow, stride))?.narrow(4, 0, 1)?.squeeze(4)?
            });
        }
    }
    // Stacked along a new first axis: (k·k, c, n, oh, ow), one strided copy of every patch.
    let cols = Tensor::stack(&patches, 0)?.reshape((k * k, groups, cg, n * oh * ow))?;
    // Per group: (g, k·k·cg, n·oh·ow).
    let cols = if groups == 1 { cols } else { cols.transpose(0, 1)?.contiguous()? };
    let cols = cols.reshape((groups, k * k * cg, n * oh * ow))?;
    let dy_m = dy.transpose(0, 1)?.contiguous()?.reshape((groups, o / groups, n * oh * ow))?;
    // (g, o/g, k·k·cg) → (o, k, k, cg) → (o, cg, k, k).
    let dw = dy_m.matmul(&cols.transpose(D::Minus1, D::Minus2)?)?;
    dw.reshape((o, k, k, cg))?.permute((0, 3, 1, 2))?.contiguous()
}
