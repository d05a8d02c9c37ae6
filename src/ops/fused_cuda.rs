//! normlab's fused CUDA kernels (`kernels/fused.cu`, compiled to PTX at build time by the
//! pinned nvcc; built with the `cuda` feature) as candle custom ops and launches: ReLU and
//! add + ReLU with one-kernel backwards, cross-entropy, a multi-tensor SGD update with the
//! regularizer's term folded in, norm decay's buffer update from a maximiser index that stays
//! on the device, and the |W| mass norm decay reduces.
//!
//! Each replaces a chain of candle's generic kernels (an allocation, a launch and often a layout
//! upload each): candle's ReLU backward is four kernels (zeros, compare, cast, multiply), its
//! cross-entropy a dozen, SGD five per tensor, norm decay's buffer update about twelve per layer
//! plus one copy to the host per step. The CPU twins the tests hold them to are in
//! [`super::fused`]; `normlab selftest --device cuda:0` compares each with the CPU.

use super::cuda_ptr::{address, not_on_cpu, slice_address, tensor_address, u32_address};
use super::fused::{NdShape, SgdEntry, SGD_MAX};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};

/// The PTX of `kernels/fused.cu`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
/// The name candle caches the loaded module under.
const MODULE: &str = "normlab_fused";

const THREADS: u32 = 256;

/// A launch of enough `THREADS`-thread blocks to cover `n` elements (grid-stride beyond).
fn cover(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 8192) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn cuda_device(d: &Device) -> Result<&CudaDevice> {
    match d {
        Device::Cuda(c) => Ok(c),
        _ => bail!("normlab's fused CUDA kernels need a CUDA device"),
    }
}


/// Launches kernel `name` over `cfg` with `args` (device addresses and scalars, pushed in the
/// order the kernel declares them).
macro_rules! launch {
    ($dev:expr, $name:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        let func = $dev.get_or_load_custom_func($name, MODULE, PTX)?;
        let mut builder = func.builder();
        $(
            let a = $arg;
            builder.arg(&a);
        )*
        unsafe { builder.launch($cfg) }.map_err(candle_core::Error::wrap)?;
    }};
}

/// `max(x, 0)` with a one-kernel backward from the output.
pub struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "normlab-cuda-relu"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("ReLU")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = l.shape().elem_count();
        let dev = s.device().clone();
        let x = address(s, l, "input")?;
        let y = unsafe { dev.alloc::<f32>(n)? };
        launch!(dev, "relu_fwd", cover(n), x, slice_address(&y), n as u64);
        Ok((CudaStorage::wrap_cuda_slice(y, dev), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &ReluBackward)?))
    }
}

/// `max(a + b, 0)` (a residual sum and its ReLU) with one backward kernel, whose result both
/// inputs receive.
pub struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "normlab-cuda-add-relu"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("add + ReLU")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!("add_relu: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
        }
        let n = l1.shape().elem_count();
        let dev = s1.device().clone();
        let (a, b) = (address(s1, l1, "lhs")?, address(s2, l2, "rhs")?);
        let y = unsafe { dev.alloc::<f32>(n)? };
        launch!(dev, "add_relu_fwd", cover(n), a, b, slice_address(&y), n as u64);
        Ok((CudaStorage::wrap_cuda_slice(y, dev), l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = y.apply_op2_no_bwd(&dy.contiguous()?, &ReluBackward)?;
        Ok((Some(dx.clone()), Some(dx)))
    }
}

/// `dy` where the ReLU's output `y` is positive, on `(y, dy)`.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "normlab-cuda-relu-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("ReLU backward")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = l1.shape().elem_count();
        if l2.shape().elem_count() != n {
            bail!("relu backward: output {:?} and gradient {:?} differ", l1.dims(), l2.dims())
        }
        let dev = s1.device().clone();
        let (y, dy) = (address(s1, l1, "output")?, address(s2, l2, "gradient")?);
        let dx = unsafe { dev.alloc::<f32>(n)? };
        launch!(dev, "relu_bwd", cover(n), y, dy, slice_address(&dx), n as u64);
        Ok((CudaStorage::wrap_cuda_slice(dx, dev), l1.shape().clone()))
    }
}

/// Mean cross-entropy of logits `(n, k)` against u32 labels `(n)`: a scalar. `lse` (n, f32,
/// written by the forward) keeps each row's log-sum-exp for the backward.
pub struct CrossEntropy {
    /// The labels (n, u32, on the device).
    pub labels: Tensor,
    /// Per-row log-sum-exp, written by the forward.
    pub lse: Tensor,
}

/// Threads of the one-block cross-entropy forward (`CE_THREADS` in fused.cu).
const CE_THREADS: u32 = 256;

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "normlab-cuda-cross-entropy"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cross-entropy")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let &[n, k] = l.dims() else { bail!("cross_entropy: expected (batch, classes) logits, got {:?}", l.dims()) };
        if self.labels.dims() != [n] || self.lse.elem_count() != n || n == 0 || k == 0 {
            bail!("cross_entropy: {n}×{k} logits but labels {:?}", self.labels.dims())
        }
        let dev = s.device().clone();
        let x = address(s, l, "logits")?;
        let y = u32_address(&self.labels, "labels")?;
        let lse = tensor_address(&self.lse, "log-sum-exp")?;
        let loss = unsafe { dev.alloc::<f32>(1)? };
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (CE_THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(dev, "cross_entropy_fwd", cfg, x, y, slice_address(&loss), lse, n as u32, k as u32);
        Ok((CudaStorage::wrap_cuda_slice(loss, dev), Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _loss: &Tensor, dloss: &Tensor) -> Result<Option<Tensor>> {
        let op = CrossEntropyBackward { labels: self.labels.clone(), lse: self.lse.clone() };
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&dloss.contiguous()?, &op)?))
    }
}

/// Cross-entropy's input gradient on `(logits, dloss)`.
struct CrossEntropyBackward {
    labels: Tensor,
    lse: Tensor,
}

impl CustomOp2 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "normlab-cuda-cross-entropy-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("cross-entropy backward")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let &[n, k] = l1.dims() else { bail!("cross_entropy backward: expected (batch, classes) logits, got {:?}", l1.dims()) };
        let dev = s1.device().clone();
        let (x, dloss) = (address(s1, l1, "logits")?, address(s2, l2, "loss gradient")?);
        let (y, lse) = (u32_address(&self.labels, "labels")?, tensor_address(&self.lse, "log-sum-exp")?);
        let dx = unsafe { dev.alloc::<f32>(n * k)? };
        launch!(dev, "cross_entropy_bwd", cover(n * k), x, y, lse, dloss, slice_address(&dx), n as u32, k as u32);
        Ok((CudaStorage::wrap_cuda_slice(dx, dev), l1.shape().clone()))
    }
}

/// `Σ_m |x[o, m, i]|` of `x` seen as `(outer, mid, inner)`, one kernel (norm decay's mass).
pub struct AbsSumMid {
    /// (outer, mid, inner).
    pub dims: (usize, usize, usize),
}

impl CustomOp1 for AbsSumMid {
    fn name(&self) -> &'static str {
        "normlab-cuda-abs-sum-mid"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        not_on_cpu("|x| sum")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (outer, mid, inner) = self.dims;
        if outer * mid * inner != l.shape().elem_count() {
            bail!("abs_sum_mid: {:?} is not {outer}×{mid}×{inner}", l.dims())
        }
        let dev = s.device().clone();
        let x = address(s, l, "input")?;
        let out = unsafe { dev.alloc::<f32>(outer * inner)? };
        launch!(dev, "abs_sum_mid", cover(outer * inner), x, slice_address(&out), outer as u32, mid as u32, inner as u32);
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((outer, inner))))
    }
}

/// `SgdChunk` of fused.cu, passed by value as the kernel's one parameter.
#[repr(C)]
#[derive(Clone, Copy)]
struct SgdChunk {
    g: [u64; SGD_MAX],
    p: [u64; SGD_MAX],
    buf: [u64; SGD_MAX],
    t: [u64; SGD_MAX],
    len: [u64; SGD_MAX],
    coef: [f32; SGD_MAX],
    first: [i32; SGD_MAX],
    count: i32,
    neg_lr: f32,
    mom: f32,
}

// SAFETY: plain old data with the layout of the CUDA struct (repr(C), same field order and
// types: pointers as u64).
unsafe impl DeviceRepr for SgdChunk {}

// The kernel's parameter as nvcc laid it out (`.param .align 8 .b8 sgd_multi_param_0[1168]` in
// the PTX): the launch copies exactly this many bytes.
const _: () = assert!(std::mem::size_of::<SgdChunk>() == 1168);

/// One multi-tensor SGD update over `entries` (all on `device`), `SGD_MAX` tensors per launch:
/// see `sgd_multi` in fused.cu and its CPU twin [`super::fused::sgd_update_cpu`]. Parameters
/// and momentum buffers are updated in place.
pub fn sgd_multi(device: &Device, entries: &[SgdEntry], lr: f64, momentum: f64) -> Result<()> {
    let dev = cuda_device(device)?;
    for chunk in entries.chunks(SGD_MAX) {
        let mut c = SgdChunk { g: [0; SGD_MAX], p: [0; SGD_MAX], buf: [0; SGD_MAX], t: [0; SGD_MAX], len: [0; SGD_MAX], coef: [0.0; SGD_MAX], first: [0; SGD_MAX], count: chunk.len() as i32, neg_lr: -lr as f32, mom: momentum as f32 };
        let mut longest = 0;
        for (k, e) in chunk.iter().enumerate() {
            let len = e.param.elem_count();
            if e.grad.elem_count() != len {
                bail!("sgd: gradient of {} values for a parameter of {len}", e.grad.elem_count())
            }
            c.g[k] = tensor_address(&e.grad, "gradient")?;
            c.p[k] = tensor_address(&e.param, "parameter")?;
            if let Some(b) = &e.buffer {
                c.buf[k] = tensor_address(b, "momentum buffer")?;
            }
            if let Some((coef, t)) = &e.term {
                c.t[k] = tensor_address(t, "regularizer term")?;
                c.coef[k] = *coef as f32;
            }
            c.len[k] = len as u64;
            c.first[k] = e.first as i32;
            longest = longest.max(len);
        }
        let mut cfg = cover(longest);
        cfg.grid_dim.0 = cfg.grid_dim.0.min(1024);
        cfg.grid_dim.1 = chunk.len() as u32;
        launch!(dev, "sgd_multi", cfg, c);
    }
    Ok(())
}

/// Norm decay's buffer update for one layer from the flat maximiser index `flat` (a u32 on the
/// device): see `nd_update` in fused.cu and its CPU twin [`super::fused::nd_update_cpu`].
/// `h_hat` is updated in place.
#[allow(clippy::too_many_arguments)]
pub fn nd_update(weight: &Tensor, h_hat: &Tensor, indicator: &Tensor, flat: &Tensor, shape: &NdShape, inv_scale: f32, paper_coef: f32) -> Result<()> {
    let dev = cuda_device(weight.device())?;
    let (w, h, ind) = (tensor_address(weight, "weight")?, tensor_address(h_hat, "norm-decay buffer")?, tensor_address(indicator, "indicator")?);
    let f = u32_address(flat, "maximiser index")?;
    let s = shape;
    let slice = s.cin_g.max(s.out_c / s.groups) * s.khw;
    launch!(dev, "nd_update", cover(slice), w, h, ind, f, s.linf as i32, s.paper as i32, s.out_c as u32, s.cin_g as u32, s.groups as u32, s.khw as u32, s.pairs as u32, inv_scale, paper_coef);
    Ok(())
}
