//! cuDNN state kept across calls (built with the `cudnn` feature): one handle per device and
//! thread, convolution plans and BatchNorm descriptors per shape, one grow-only workspace.
//!
//! candle's and cudarc's safe cuDNN wrappers rebuild descriptors, rerun the algorithm
//! heuristic and allocate a zero-filled workspace on every call (about 0.5 ms of host time per
//! convolution, `docs/gpu-step.md` §3), and do not expose the raw descriptors that
//! `cudnnFind*AlgorithmEx` needs. Here, as PyTorch does with `cudnn.benchmark`:
//! - a [`ConvKey`] (shapes, stride, padding, groups, TF32) maps to descriptors built once;
//! - each pass (forward, input gradient, weight gradient) times cuDNN's algorithms once per
//!   key on the call's own buffers (`cudnnFind…AlgorithmEx`) and keeps the fastest, falling
//!   back to cuDNN's heuristic if the search fails;
//! - one workspace per device and thread, grown (never shrunk) to the largest need;
//! - BatchNorm's tensor descriptors per input shape.
//!
//! Steady state: one cuDNN call per convolution pass or BatchNorm pass, no allocation besides
//! the output. cuDNN handles are neither `Send` nor `Sync`: the state is thread-local, and the
//! handle is bound to candle's stream of the device.

use super::conv::Geom;
use candle_core::counters::{record, Counter};
use candle_core::cuda::cudarc::cudnn::sys;
pub(crate) use super::cuda_ptr::{address, slice_address, tensor_address};
use candle_core::cuda::cudarc::driver::{CudaSlice, DevicePtr};
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::{bail, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

/// An error for a failed cuDNN call `what`.
pub(crate) fn check(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        bail!("cuDNN {what} failed: {status:?}")
    }
}

/// Workspace given to `cudnnFind…AlgorithmEx` while it times the algorithms (freed after): the
/// chosen algorithm's own need, at most this, is what the kept workspace grows to.
const FIND_WORKSPACE_BYTES: usize = 512 << 20;

/// Owns a raw descriptor and destroys it on drop.
macro_rules! descriptor {
    ($name:ident, $raw:ty, $create:ident, $destroy:ident) => {
        pub(crate) struct $name(pub(crate) $raw);

        impl $name {
            fn new() -> Result<Self> {
                let mut raw = std::ptr::null_mut();
                check(unsafe { sys::$create(&mut raw) }, stringify!($create))?;
                Ok(Self(raw))
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                unsafe { sys::$destroy(self.0) };
            }
        }
    };
}

descriptor!(TensorDesc, sys::cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor);
descriptor!(FilterDesc, sys::cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor);
descriptor!(ConvDesc, sys::cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor, cudnnDestroyConvolutionDescriptor);

const F32: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
const NCHW: sys::cudnnTensorFormat_t = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;

fn tensor4d(n: usize, c: usize, h: usize, w: usize) -> Result<TensorDesc> {
    let d = TensorDesc::new()?;
    check(unsafe { sys::cudnnSetTensor4dDescriptor(d.0, NCHW, F32, n as i32, c as i32, h as i32, w as i32) }, "cudnnSetTensor4dDescriptor")?;
    Ok(d)
}

/// One convolution's shape ([`Geom`]) and whether TF32 tensor cores may be used: what a
/// plan is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvKey {
    /// Shapes, stride, padding, groups.
    pub g: Geom,
    /// TF32 allowed.
    pub tf32: bool,
}

/// The three passes of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// `y = x ⋆ w`.
    Forward,
    /// `dx` from `dy` and `w`.
    BackwardData,
    /// `dw` from `dy` and `x`.
    BackwardFilter,
}

/// A pass's algorithm.
#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t),
    BackwardFilter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// A pass's chosen algorithm and its workspace.
#[derive(Debug, Clone, Copy)]
struct Choice {
    algo: Algo,
    workspace: usize,
}

/// Descriptors of one [`ConvKey`], built once, and each pass's algorithm once chosen. Each pass
/// has its own convolution descriptor so its math type can follow the algorithm chosen.
struct ConvPlan {
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    conv: [ConvDesc; 3],
    choice: [Option<Choice>; 3],
}

impl ConvPlan {
    fn new(key: &ConvKey) -> Result<Self> {
        let (k, tf32) = (&key.g, key.tf32);
        let i = |v: usize| v as i32;
        let x = tensor4d(k.n, k.c, k.h, k.w)?;
        let y = tensor4d(k.n, k.o, k.oh(), k.ow())?;
        let w = FilterDesc::new()?;
        check(unsafe { sys::cudnnSetFilter4dDescriptor(w.0, F32, NCHW, i(k.o), i(k.c / k.groups), i(k.kh), i(k.kw)) }, "cudnnSetFilter4dDescriptor")?;
        let conv = |_| -> Result<ConvDesc> {
            let d = ConvDesc::new()?;
            let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
            check(unsafe { sys::cudnnSetConvolution2dDescriptor(d.0, i(k.pad), i(k.pad), i(k.stride), i(k.stride), 1, 1, mode, F32) }, "cudnnSetConvolution2dDescriptor")?;
            check(unsafe { sys::cudnnSetConvolutionGroupCount(d.0, i(k.groups)) }, "cudnnSetConvolutionGroupCount")?;
            // TF32 allowed: cuDNN's default math (TF32 tensor cores on Ampere and later, as
            // PyTorch's `cudnn.allow_tf32`); forbidden: exact f32 only.
            let math = if tf32 { sys::cudnnMathType_t::CUDNN_DEFAULT_MATH } else { sys::cudnnMathType_t::CUDNN_FMA_MATH };
            check(unsafe { sys::cudnnSetConvolutionMathType(d.0, math) }, "cudnnSetConvolutionMathType")?;
            Ok(d)
        };
        Ok(Self { x, w, y, conv: [conv(0)?, conv(1)?, conv(2)?], choice: [None; 3] })
    }
}

/// BatchNorm's descriptors for one input shape: the input's (also the output's and the
/// gradients') and the derived per-channel one.
pub(crate) struct BnDescs {
    pub(crate) x: TensorDesc,
    pub(crate) channel: TensorDesc,
}

/// cuDNN state of one device on this thread.
pub(crate) struct Context {
    handle: sys::cudnnHandle_t,
    workspace: Option<CudaSlice<u8>>,
    plans: HashMap<ConvKey, ConvPlan>,
    bn: HashMap<(usize, usize, usize, usize), BnDescs>,
}

impl Drop for Context {
    fn drop(&mut self) {
        self.plans.clear();
        self.bn.clear();
        unsafe { sys::cudnnDestroy(self.handle) };
    }
}

thread_local! {
    static CONTEXTS: RefCell<HashMap<DeviceId, Context>> = RefCell::new(HashMap::new());
}

/// Runs `f` with this thread's cuDNN state for `dev` (created on first use, its handle bound to
/// candle's stream for `dev`).
pub(crate) fn with_context<R>(dev: &CudaDevice, f: impl FnOnce(&mut Context, &CudaDevice) -> Result<R>) -> Result<R> {
    CONTEXTS.with(|all| {
        let mut all = all.borrow_mut();
        if !all.contains_key(&dev.id()) {
            let mut handle = std::ptr::null_mut();
            check(unsafe { sys::cudnnCreate(&mut handle) }, "cudnnCreate")?;
            let stream = dev.cuda_stream().cu_stream() as sys::cudaStream_t;
            check(unsafe { sys::cudnnSetStream(handle, stream) }, "cudnnSetStream")?;
            all.insert(dev.id(), Context { handle, workspace: None, plans: HashMap::new(), bn: HashMap::new() });
        }
        let ctx = all.get_mut(&dev.id()).expect("inserted above");
        f(ctx, dev)
    })
}

fn void(p: u64) -> *mut c_void {
    p as usize as *mut c_void
}

static ONE: f32 = 1.0;
static ZERO: f32 = 0.0;
fn one() -> *const c_void {
    &ONE as *const f32 as *const c_void
}
fn zero() -> *const c_void {
    &ZERO as *const f32 as *const c_void
}

impl Context {
    /// The kept workspace, grown to at least `bytes` (to the next power of two, so a few
    /// growths cover every shape): its address and size. Freeing the old one is ordered on
    /// the stream after the calls that used it.
    fn workspace(&mut self, dev: &CudaDevice, bytes: usize) -> Result<(u64, usize)> {
        if bytes == 0 {
            return Ok((0, 0));
        }
        if self.workspace.as_ref().is_none_or(|w| w.len() < bytes) {
            self.workspace = Some(unsafe { dev.alloc::<u8>(bytes.next_power_of_two())? });
        }
        let w = self.workspace.as_ref().expect("allocated above");
        let (ptr, _sync) = w.device_ptr(w.stream());
        Ok((ptr, w.len()))
    }

    /// Runs one pass of the convolution `key` on the given device addresses (`a`, `b`: the
    /// pass's inputs, `out`: its output, overwritten): forward `(x, w) → y`, input gradient
    /// `(dy, w) → dx`, weight gradient `(dy, x) → dw`.
    pub(crate) fn conv(&mut self, dev: &CudaDevice, key: &ConvKey, pass: Pass, a: u64, b: u64, out: u64) -> Result<()> {
        if !self.plans.contains_key(key) {
            self.plans.insert(*key, ConvPlan::new(key)?);
        }
        let p = pass as usize;
        let choice = match self.plans[key].choice[p] {
            Some(c) => c,
            None => {
                let c = self.choose(dev, key, pass, a, b, out)?;
                self.plans.get_mut(key).expect("inserted above").choice[p] = Some(c);
                c
            }
        };
        let (ws, ws_len) = self.workspace(dev, choice.workspace)?;
        let plan = &self.plans[key];
        let h = self.handle;
        let conv = plan.conv[p].0;
        record(Counter::Cudnn, 1);
        unsafe {
            match choice.algo {
                Algo::Forward(algo) => check(sys::cudnnConvolutionForward(h, one(), plan.x.0, void(a), plan.w.0, void(b), conv, algo, void(ws), ws_len, zero(), plan.y.0, void(out)), "cudnnConvolutionForward"),
                Algo::BackwardData(algo) => check(sys::cudnnConvolutionBackwardData(h, one(), plan.w.0, void(b), plan.y.0, void(a), conv, algo, void(ws), ws_len, zero(), plan.x.0, void(out)), "cudnnConvolutionBackwardData"),
                Algo::BackwardFilter(algo) => check(sys::cudnnConvolutionBackwardFilter(h, one(), plan.x.0, void(b), plan.y.0, void(a), conv, algo, void(ws), ws_len, zero(), plan.w.0, void(out)), "cudnnConvolutionBackwardFilter"),
            }
        }
    }

    /// Times the pass's algorithms on these buffers (`cudnnFind…AlgorithmEx`, which overwrites
    /// `out`; the real call follows) and returns the fastest, setting the pass's math type to
    /// the one it was timed with when TF32 is allowed; cuDNN's heuristic if the search fails.
    fn choose(&mut self, dev: &CudaDevice, key: &ConvKey, pass: Pass, a: u64, b: u64, out: u64) -> Result<Choice> {
        let scratch = unsafe { dev.alloc::<u8>(FIND_WORKSPACE_BYTES) }.ok();
        let (ws, ws_len) = match &scratch {
            Some(s) => {
                let (ptr, _sync) = s.device_ptr(s.stream());
                (ptr, s.len())
            }
            None => (0, 0),
        };
        let plan = &self.plans[key];
        let (h, conv) = (self.handle, plan.conv[pass as usize].0);
        const N: usize = 16;
        let mut count = 0i32;
        record(Counter::Cudnn, 1);
        // (algo, succeeded, memory, math) of each result, fastest first.
        let found: Vec<(Algo, bool, usize, sys::cudnnMathType_t)> = unsafe {
            match pass {
                Pass::Forward => {
                    let mut r: [sys::cudnnConvolutionFwdAlgoPerf_t; N] = std::mem::zeroed();
                    let s = sys::cudnnFindConvolutionForwardAlgorithmEx(h, plan.x.0, void(a), plan.w.0, void(b), conv, plan.y.0, void(out), N as i32, &mut count, r.as_mut_ptr(), void(ws), ws_len);
                    let ok = s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
                    r[..if ok { count as usize } else { 0 }].iter().map(|p| (Algo::Forward(p.algo), p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS, p.memory, p.mathType)).collect()
                }
                Pass::BackwardData => {
                    let mut r: [sys::cudnnConvolutionBwdDataAlgoPerf_t; N] = std::mem::zeroed();
                    let s = sys::cudnnFindConvolutionBackwardDataAlgorithmEx(h, plan.w.0, void(b), plan.y.0, void(a), conv, plan.x.0, void(out), N as i32, &mut count, r.as_mut_ptr(), void(ws), ws_len);
                    let ok = s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
                    r[..if ok { count as usize } else { 0 }].iter().map(|p| (Algo::BackwardData(p.algo), p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS, p.memory, p.mathType)).collect()
                }
                Pass::BackwardFilter => {
                    let mut r: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; N] = std::mem::zeroed();
                    let s = sys::cudnnFindConvolutionBackwardFilterAlgorithmEx(h, plan.x.0, void(b), plan.y.0, void(a), conv, plan.w.0, void(out), N as i32, &mut count, r.as_mut_ptr(), void(ws), ws_len);
                    let ok = s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
                    r[..if ok { count as usize } else { 0 }].iter().map(|p| (Algo::BackwardFilter(p.algo), p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS, p.memory, p.mathType)).collect()
                }
            }
        };
        drop(scratch);
        // cuDNN returns the results fastest first.
        if let Some(&(algo, _, memory, math)) = found.iter().find(|r| r.1 && (key.tf32 || r.3 != sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH)) {
            if key.tf32 {
                check(unsafe { sys::cudnnSetConvolutionMathType(conv, math) }, "cudnnSetConvolutionMathType")?;
            }
            return Ok(Choice { algo, workspace: memory });
        }
        self.heuristic(key, pass)
    }

    /// cuDNN's first heuristic choice for the pass and its workspace size.
    fn heuristic(&self, key: &ConvKey, pass: Pass) -> Result<Choice> {
        let plan = &self.plans[key];
        let (h, conv) = (self.handle, plan.conv[pass as usize].0);
        let mut count = 0i32;
        let mut bytes = 0usize;
        unsafe {
            match pass {
                Pass::Forward => {
                    let mut r: sys::cudnnConvolutionFwdAlgoPerf_t = std::mem::zeroed();
                    check(sys::cudnnGetConvolutionForwardAlgorithm_v7(h, plan.x.0, plan.w.0, conv, plan.y.0, 1, &mut count, &mut r), "cudnnGetConvolutionForwardAlgorithm_v7")?;
                    check(sys::cudnnGetConvolutionForwardWorkspaceSize(h, plan.x.0, plan.w.0, conv, plan.y.0, r.algo, &mut bytes), "cudnnGetConvolutionForwardWorkspaceSize")?;
                    Ok(Choice { algo: Algo::Forward(r.algo), workspace: bytes })
                }
                Pass::BackwardData => {
                    let mut r: sys::cudnnConvolutionBwdDataAlgoPerf_t = std::mem::zeroed();
                    check(sys::cudnnGetConvolutionBackwardDataAlgorithm_v7(h, plan.w.0, plan.y.0, conv, plan.x.0, 1, &mut count, &mut r), "cudnnGetConvolutionBackwardDataAlgorithm_v7")?;
                    check(sys::cudnnGetConvolutionBackwardDataWorkspaceSize(h, plan.w.0, plan.y.0, conv, plan.x.0, r.algo, &mut bytes), "cudnnGetConvolutionBackwardDataWorkspaceSize")?;
                    Ok(Choice { algo: Algo::BackwardData(r.algo), workspace: bytes })
                }
                Pass::BackwardFilter => {
                    let mut r: sys::cudnnConvolutionBwdFilterAlgoPerf_t = std::mem::zeroed();
                    check(sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, plan.x.0, plan.y.0, conv, plan.w.0, 1, &mut count, &mut r), "cudnnGetConvolutionBackwardFilterAlgorithm_v7")?;
                    check(sys::cudnnGetConvolutionBackwardFilterWorkspaceSize(h, plan.x.0, plan.y.0, conv, plan.w.0, r.algo, &mut bytes), "cudnnGetConvolutionBackwardFilterWorkspaceSize")?;
                    Ok(Choice { algo: Algo::BackwardFilter(r.algo), workspace: bytes })
                }
            }
        }
    }

    /// BatchNorm's descriptors for an `(n, c, h, w)` input, built on first use.
    pub(crate) fn bn(&mut self, n: usize, c: usize, h: usize, w: usize) -> Result<(&BnDescs, sys::cudnnHandle_t)> {
        let key = (n, c, h, w);
        if !self.bn.contains_key(&key) {
            let x = tensor4d(n, c, h, w)?;
            let channel = TensorDesc::new()?;
            check(unsafe { sys::cudnnDeriveBNTensorDescriptor(channel.0, x.0, BN_MODE) }, "cudnnDeriveBNTensorDescriptor")?;
            self.bn.insert(key, BnDescs { x, channel });
        }
        Ok((&self.bn[&key], self.handle))
    }
}

/// BatchNorm over (n, h, w) per channel, as `nn.BatchNorm2d`.
pub(crate) const BN_MODE: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// The cuDNN pointers for scalars 1 and 0 (f32 tensors).
pub(crate) fn alpha_beta() -> (*const c_void, *const c_void) {
    (one(), zero())
}

/// A device address as cuDNN's pointer type.
pub(crate) fn ptr(p: u64) -> *mut c_void {
    void(p)
}
