//! 2-D convolution on CUDA through cuDNN, forward and both gradients, as candle custom ops
//! (built with the `cudnn` feature).
//!
//! candle 0.11 runs only the forward on cuDNN; its backward is a naive `conv_transpose2d`
//! kernel (input gradient) and a convolution with an output-sized kernel (weight gradient),
//! and it splits a grouped convolution into one call per group. Here all three passes are
//! single cuDNN calls (`cudnnConvolutionForward`, `…BackwardData`, `…BackwardFilter`, with
//! the group count set), with cuDNN's heuristic algorithm choice and its default math mode
//! (TF32 tensor cores on Ampere and later, as PyTorch's default `cudnn.allow_tf32`), or exact
//! f32 when [`crate::device::set_tf32`] forbids TF32.
//! Checked against the CPU by `normlab selftest --device cuda:0`.

use super::conv::Geom;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::cudnn::{sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor, TensorDescriptor};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

thread_local! {
    /// One cuDNN handle per device and thread, bound to candle's stream for that device.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream())?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

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

/// Descriptors of one convolution `x (n, c, h, w) ⋆ w (o, c/g, kh, kw) → y (n, o, oh, ow)`.
struct Descs {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

fn descs(cudnn: &Arc<Cudnn>, g: &Geom) -> Result<Descs> {
    let i = |v: usize| v as i32;
    let (p, s) = (i(g.pad), i(g.stride));
    let mut conv = cudnn.create_conv2d::<f32>([p, p], [s, s], [1, 1], sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION)?;
    conv.set_group_count(i(g.groups))?;
    if !crate::device::tf32() {
        conv.set_math_type(sys::cudnnMathType_t::CUDNN_FMA_MATH)?;
    }
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let x = cudnn.create_4d_tensor::<f32>(nchw, [i(g.n), i(g.c), i(g.h), i(g.w)])?;
    let w = cudnn.create_4d_filter::<f32>(nchw, [i(g.o), i(g.c / g.groups), i(g.kh), i(g.kw)])?;
    let y = cudnn.create_4d_tensor::<f32>(nchw, [i(g.n), i(g.o), i(g.oh()), i(g.ow())])?;
    Ok(Descs { conv, x, w, y })
}

/// The f32 data of a contiguous CUDA operand.
fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("cudnn conv2d: {what} must be contiguous") };
    Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
}

/// A workspace of `bytes` (none when zero).
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    Ok(if bytes == 0 { None } else { Some(unsafe { dev.alloc::<u8>(bytes)? }) })
}

fn not_on_cpu<T>() -> Result<T> {
    bail!("normlab's cuDNN convolution runs on CUDA tensors only")
}

impl CustomOp2 for CudnnConv2d {
    fn name(&self) -> &'static str {
        "normlab-cudnn-conv2d"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu()
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding, self.groups)?;
        let dev = s1.device().clone();
        let cudnn = handle(&dev)?;
        let d = descs(&cudnn, &g)?;
        let (x, w) = (view(s1, l1, "input")?, view(s2, l2, "kernel")?);
        let mut y = unsafe { dev.alloc::<f32>(g.out_shape().elem_count())? };
        let op = ConvForward { conv: &d.conv, x: &d.x, w: &d.w, y: &d.y };
        let algo = op.pick_algorithm()?;
        let mut ws = workspace(&dev, op.get_workspace_size(algo)?)?;
        unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &x, &w, &mut y)? };
        Ok((CudaStorage::wrap_cuda_slice(y, dev), g.out_shape()))
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
        not_on_cpu()
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let (n, c, h, wd) = self.x_dims;
        let g = Geom::new(&[n, c, h, wd], l2.dims(), self.op.stride, self.op.padding, self.op.groups)?;
        if l1.dims() != g.out_shape().dims() {
            bail!("cudnn conv2d backward: gradient {:?} does not match the output {:?}", l1.dims(), g.out_shape())
        }
        let dev = s1.device().clone();
        let cudnn = handle(&dev)?;
        let d = descs(&cudnn, &g)?;
        let (dy, w) = (view(s1, l1, "gradient")?, view(s2, l2, "kernel")?);
        let mut dx = unsafe { dev.alloc::<f32>(n * c * h * wd)? };
        let op = ConvBackwardData { conv: &d.conv, dx: &d.x, w: &d.w, dy: &d.y };
        let algo = op.pick_algorithm()?;
        let mut ws = workspace(&dev, op.get_workspace_size(algo)?)?;
        unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &mut dx, &w, &dy)? };
        Ok((CudaStorage::wrap_cuda_slice(dx, dev), Shape::from(self.x_dims)))
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
        not_on_cpu()
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let (o, cg, kh, kw) = self.w_dims;
        let g = Geom::new(l2.dims(), &[o, cg, kh, kw], self.op.stride, self.op.padding, self.op.groups)?;
        if l1.dims() != g.out_shape().dims() {
            bail!("cudnn conv2d backward: gradient {:?} does not match the output {:?}", l1.dims(), g.out_shape())
        }
        let dev = s1.device().clone();
        let cudnn = handle(&dev)?;
        let d = descs(&cudnn, &g)?;
        let (dy, x) = (view(s1, l1, "gradient")?, view(s2, l2, "input")?);
        let mut dw = unsafe { dev.alloc::<f32>(o * cg * kh * kw)? };
        let op = ConvBackwardFilter { conv: &d.conv, x: &d.x, dw: &d.w, dy: &d.y };
        let algo = op.pick_algorithm()?;
        let mut ws = workspace(&dev, op.get_workspace_size(algo)?)?;
        unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &x, &mut dw, &dy)? };
        Ok((CudaStorage::wrap_cuda_slice(dw, dev), Shape::from(self.w_dims)))
    }
}
