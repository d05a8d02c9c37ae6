//! The fused training-step kernels as the rest of normlab sees them, on every device: on CUDA
//! (with the `cuda` feature, not `--kernels stock`) one kernel each from [`super::fused_cuda`];
//! elsewhere the ops normlab always ran, so CPU results stay bitwise what they were. Beside
//! them, the CPU twins of the CUDA kernels' arithmetic (plain Rust over host values, the same
//! f32 operations in the same order) that the tests hold against normlab's CPU path: the
//! semantics each kernel changes (persistent momentum, a maximiser index that stays on the
//! device) are tested there, without a GPU.

use super::{kernels, Kernels};
use candle_core::{DType, Result, Tensor};

/// Tensors per launch of the multi-tensor SGD kernel (`SGD_MAX` in kernels/fused.cu).
pub const SGD_MAX: usize = 24;

/// Whether the fused CUDA kernels run for tensors on `device`.
pub fn on(device: &candle_core::Device) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && kernels() != Kernels::Stock
}

/// `relu(a + b)`: on CUDA one kernel forward and one backward; elsewhere the add and
/// [`super::relu`] (what the residual blocks always computed).
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if on(a.device()) && a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.dims() == b.dims() {
        return add_relu_cuda(&a.contiguous()?, &b.contiguous()?);
    }
    super::relu(&(a + b)?)
}

/// ReLU on CUDA as one kernel each way (`None`: not a case for it).
pub(crate) fn relu(x: &Tensor) -> Result<Option<Tensor>> {
    if on(x.device()) && x.dtype() == DType::F32 {
        return relu_cuda(&x.contiguous()?).map(Some);
    }
    Ok(None)
}

/// Mean cross-entropy of `logits (n, k)` against `labels (n)` (u32), as
/// `candle_nn::loss::cross_entropy`: on CUDA one kernel forward and one backward; elsewhere
/// candle-nn's.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if on(logits.device()) && logits.dtype() == DType::F32 && labels.dtype() == DType::U32 && logits.rank() == 2 {
        return cross_entropy_cuda(&logits.contiguous()?, &labels.contiguous()?);
    }
    candle_nn::loss::cross_entropy(logits, labels)
}

#[cfg(feature = "cuda")]
fn add_relu_cuda(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, super::fused_cuda::AddRelu)
}

#[cfg(feature = "cuda")]
fn relu_cuda(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(super::fused_cuda::Relu)
}

#[cfg(feature = "cuda")]
fn cross_entropy_cuda(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let lse = unsafe { Tensor::empty(logits.dim(0)?, DType::F32, logits.device())? };
    logits.apply_op1(super::fused_cuda::CrossEntropy { labels: labels.clone(), lse })
}

#[cfg(not(feature = "cuda"))]
fn add_relu_cuda(_: &Tensor, _: &Tensor) -> Result<Tensor> {
    candle_core::bail!("fused CUDA kernels asked for in a build without the `cuda` feature")
}

#[cfg(not(feature = "cuda"))]
fn relu_cuda(_: &Tensor) -> Result<Tensor> {
    candle_core::bail!("fused CUDA kernels asked for in a build without the `cuda` feature")
}

#[cfg(not(feature = "cuda"))]
fn cross_entropy_cuda(_: &Tensor, _: &Tensor) -> Result<Tensor> {
    candle_core::bail!("fused CUDA kernels asked for in a build without the `cuda` feature")
}

/// One tensor of a multi-tensor SGD update: `g' = g + coef·t` (the regularizer's term, if
/// any), `buf = first ? g' : g' + μ·buf` (no buffer when μ = 0: `buf = g'`), `p = p − lr·buf`,
/// the parameter and the buffer updated in place.
#[derive(Debug, Clone)]
pub struct SgdEntry {
    /// The parameter (contiguous f32), updated in place.
    pub param: Tensor,
    /// Its gradient.
    pub grad: Tensor,
    /// Its momentum buffer (updated in place; written whole when `first`), none when μ = 0.
    pub buffer: Option<Tensor>,
    /// The regularizer's term `(coef, t)`: weight decay `(β, θ)`, norm decay `(β·scale, ĥ)`.
    pub term: Option<(f64, Tensor)>,
    /// The first step of this buffer (PyTorch: `buf = g` then).
    pub first: bool,
}

/// One multi-tensor SGD update on CUDA (see [`SgdEntry`]).
#[cfg(feature = "cuda")]
pub fn sgd_multi(device: &candle_core::Device, entries: &[SgdEntry], lr: f64, momentum: f64) -> Result<()> {
    super::fused_cuda::sgd_multi(device, entries, lr, momentum)
}

#[cfg(not(feature = "cuda"))]
pub fn sgd_multi(_: &candle_core::Device, _: &[SgdEntry], _: f64, _: f64) -> Result<()> {
    candle_core::bail!("the multi-tensor SGD kernel needs a build with the `cuda` feature")
}

/// The CPU twin of the SGD kernel for one tensor, on host values: `p`, `buf` updated in place
/// (`buf` empty when μ = 0), `t` the regularizer's term (empty for none). The same f32
/// operations in the same order as the kernel and as normlab's CPU path (regularizer axpy,
/// momentum axpy, update axpy).
#[allow(clippy::too_many_arguments)]
pub fn sgd_update_cpu(p: &mut [f32], g: &[f32], buf: &mut [f32], t: &[f32], coef: f64, first: bool, lr: f64, momentum: f64) {
    let (coef, neg_lr, mom) = (coef as f32, -lr as f32, momentum as f32);
    for i in 0..p.len() {
        let mut gi = g[i];
        if !t.is_empty() {
            gi += coef * t[i];
        }
        let mut b = gi;
        if !buf.is_empty() {
            if !first {
                b = gi + mom * buf[i];
            }
            buf[i] = b;
        }
        p[i] += neg_lr * b;
    }
}

/// A norm-decayed layer's shape, as the norm-decay kernel sees the weight: (out_c, cin_g, khw)
/// with `groups` groups and `pairs` position-set pairs.
#[derive(Debug, Clone, Copy)]
pub struct NdShape {
    /// ℓ∞ (true: the active slice is an output channel) or ℓ1 (an input channel of a group).
    pub linf: bool,
    /// The paper's variant (true: h ← γh + (1−γ)p) or the reference one (h ← p where active).
    pub paper: bool,
    /// Output channels.
    pub out_c: usize,
    /// Input channels per group.
    pub cin_g: usize,
    /// Groups.
    pub groups: usize,
    /// Kernel positions.
    pub khw: usize,
    /// Position-set pairs.
    pub pairs: usize,
}

/// The CPU twin of the norm-decay kernel: updates `h_hat` on the active slice of the maximiser
/// `flat` (channel × pairs + pair), with `ind` the khw × pairs indicator, `inv_scale` = 1/scale
/// and `paper_coef` = (1−γ)/scale as f32. The kernel runs one thread per slice entry with these
/// operations.
pub fn nd_update_cpu(w: &[f32], h_hat: &mut [f32], ind: &[f32], flat: u32, s: &NdShape, inv_scale: f32, paper_coef: f32) {
    let (channel, pair) = (flat as usize / s.pairs, flat as usize % s.pairs);
    let cout_g = s.out_c / s.groups;
    let slice = if s.linf { s.cin_g * s.khw } else { cout_g * s.khw };
    for e in 0..slice {
        let pos = e % s.khw;
        let idx = if s.linf {
            channel * s.cin_g * s.khw + e
        } else {
            let (gi, j, o) = (channel / s.cin_g, channel % s.cin_g, e / s.khw);
            ((gi * cout_g + o) * s.cin_g + j) * s.khw + pos
        };
        let m = ind[pos * s.pairs + pair];
        let wv = w[idx];
        let sgn = f32::from(wv > 0.0) - f32::from(wv < 0.0);
        let p = sgn * m;
        let old = h_hat[idx];
        h_hat[idx] = if s.paper { old + p * paper_coef } else { old * (-m + 1.0) + p * inv_scale };
    }
}

/// The CPU twin of the cross-entropy kernels: the mean loss and the logits' gradient (for an
/// incoming gradient `dloss`), log-sum-exp per row after subtracting the row's maximum, the
/// batch sum in f64 as the kernel's block reduction.
pub fn cross_entropy_cpu(x: &[f32], y: &[u32], k: usize, dloss: f32) -> (f32, Vec<f32>) {
    let n = y.len();
    let mut lse = vec![0f32; n];
    let mut acc = 0f64;
    for r in 0..n {
        let row = &x[r * k..(r + 1) * k];
        let mx = row.iter().copied().fold(row[0], f32::max);
        let s: f32 = row.iter().map(|&v| (v - mx).exp()).sum();
        lse[r] = mx + s.ln();
        acc += (lse[r] - row[y[r] as usize]) as f64;
    }
    let scale = dloss / n as f32;
    let dx = (0..n * k).map(|i| scale * ((x[i] - lse[i / k]).exp() - if (i % k) as u32 == y[i / k] { 1.0 } else { 0.0 })).collect();
    ((acc / n as f64) as f32, dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ParamStore, Role};
    use crate::optim::Sgd;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1f32..1f32)).collect()
    }

    /// The SGD kernel's arithmetic (CPU twin) against normlab's CPU path, step by step, with the
    /// momentum buffer kept between steps (the kernel updates it in place where the CPU path
    /// makes a new tensor): weight decay's and norm decay's terms folded in, and μ = 0.
    #[test]
    fn sgd_twin_matches_the_cpu_path_with_persistent_momentum() {
        for (momentum, coef) in [(0.9, 0.0), (0.9, 1e-2), (0.0, 1e-2)] {
            let mut store = ParamStore::new();
            let v: Var = store.insert("w", Tensor::from_vec(random(37, 1), 37, &Device::Cpu).unwrap(), Role::Trainable).unwrap();
            let mut sgd = Sgd::new(0.1, momentum);
            let (mut p, mut buf) = (random(37, 1), Vec::new());
            for step in 0..4u64 {
                let g = random(37, 10 + step);
                let t = random(37, 20 + step);
                // The CPU path: the regularizer's axpy on the gradient, then Sgd::step.
                let mut grads = v.as_tensor().sum_all().unwrap().backward().unwrap();
                let gt = Tensor::from_vec(g.clone(), 37, &Device::Cpu).unwrap();
                let gt = if coef != 0.0 { crate::ops::axpy(&gt, coef, &Tensor::from_vec(t.clone(), 37, &Device::Cpu).unwrap()).unwrap() } else { gt };
                grads.insert(v.as_tensor(), gt);
                sgd.step(&store, &grads, &crate::optim::GradTerms::default()).unwrap();
                // The twin, its buffer persistent.
                if momentum != 0.0 && buf.is_empty() {
                    buf = vec![f32::NAN; 37];
                    sgd_update_cpu(&mut p, &g, &mut buf, if coef != 0.0 { &t } else { &[] }, coef, true, 0.1, momentum);
                } else {
                    sgd_update_cpu(&mut p, &g, &mut buf, if coef != 0.0 { &t } else { &[] }, coef, false, 0.1, momentum);
                }
                assert_eq!(v.as_tensor().to_vec1::<f32>().unwrap(), p, "momentum {momentum} coef {coef} step {step}: parameters");
                if momentum != 0.0 {
                    assert_eq!(sgd.state()["w"].to_vec1::<f32>().unwrap(), buf, "step {step}: momentum buffer");
                }
            }
        }
    }

    /// The cross-entropy twin against candle-nn's loss and its autograd gradient.
    #[test]
    fn cross_entropy_twin_matches_candle_nn() {
        let (n, k) = (6, 10);
        let x = random(n * k, 3).iter().map(|v| 4.0 * v).collect::<Vec<f32>>();
        let y: Vec<u32> = (0..n as u32).map(|i| (i * 7) % k as u32).collect();
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (n, k), &Device::Cpu).unwrap()).unwrap();
        let loss = candle_nn::loss::cross_entropy(xv.as_tensor(), &Tensor::new(y.as_slice(), &Device::Cpu).unwrap()).unwrap();
        let want = loss.to_scalar::<f32>().unwrap();
        let grad = loss.backward().unwrap().get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, dx) = cross_entropy_cpu(&x, &y, k, 1.0);
        assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{got} vs {want}");
        for (a, b) in dx.iter().zip(&grad) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
}
