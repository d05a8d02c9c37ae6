//! The ops of a stacked model ([`crate::models::StackedModel`]): K copies of a model trained
//! side by side on the same batch, their activations stacked along the channels (image n's
//! slice-s channels are channels `s·C..(s+1)·C` of an `(N, K·C, H, W)` tensor) and every
//! parameter stacked along its first dimension (slice s of a conv weight is output channels
//! `s·O..(s+1)·O`).
//!
//! In that layout BatchNorm, the bias, ReLU, pooling and the residual additions are the
//! single model's ops run once over all K slices (each channel's arithmetic is its own), so
//! only the layers that mix channels need stacked versions, here:
//! - [`conv2d`]: per slice ([`StackConv::PerSlice`], the CPU default: each slice's channels
//!   gathered and convolved by the single model's kernels, so its arithmetic is the single
//!   cell's bit for bit) or as one convolution with K times the groups
//!   ([`StackConv::Grouped`]: one call, what a GPU wants; other devices always take it);
//! - [`linear`]: one batched matrix product whose per-slice products are the single layer's;
//! - [`cross_entropy`]: each slice's mean loss, from the same ops as the single loss, without
//!   cutting the logits into slices (whose gradients candle would pad with zeros per slice).

use super::conv::{self, Geom};
use super::{cpu_f32, fast};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a stacked model's convolutions run (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackConv {
    /// Each slice's own convolution with the single model's kernels (CPU).
    PerSlice,
    /// One convolution over all slices with K times the groups (a shared input: K times the
    /// output channels).
    Grouped,
}

impl StackConv {
    /// `per-slice` or `grouped`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "per-slice" => Ok(Self::PerSlice),
            "grouped" => Ok(Self::Grouped),
            other => anyhow::bail!("unknown stacked convolution '{other}': expected per-slice or grouped"),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::PerSlice => "per-slice",
            Self::Grouped => "grouped",
        }
    }
}

static GROUPED: AtomicBool = AtomicBool::new(false);

/// Selects the stacked convolution for the whole process (`normlab bench stack` measures one
/// against the other).
pub fn set_stack_conv(mode: StackConv) {
    GROUPED.store(mode == StackConv::Grouped, Ordering::Relaxed);
}

/// The stacked convolution in use (default [`StackConv::PerSlice`]; devices other than the CPU
/// run [`StackConv::Grouped`] whatever is set).
pub fn stack_conv() -> StackConv {
    if GROUPED.load(Ordering::Relaxed) {
        StackConv::Grouped
    } else {
        StackConv::PerSlice
    }
}

/// `k` convolutions side by side: `x` is either every slice's input stacked along the channels
/// `(N, K·C, H, W)` or one input all slices share `(N, C, H, W)` (the images), `weight` the
/// slices' kernels stacked `(K·O, C/groups, kh, kw)`, `bias` their biases `(K·O)`; the result
/// is `(N, K·O, OH, OW)`, slice s's output in channels `s·O..(s+1)·O`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, groups: usize, k: usize) -> Result<Tensor> {
    conv2d_as(stack_conv(), x, weight, bias, stride, padding, groups, k)
}

/// [`conv2d`] run as `mode` says.
#[allow(clippy::too_many_arguments)]
fn conv2d_as(mode: StackConv, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, groups: usize, k: usize) -> Result<Tensor> {
    let y = if k == 1 {
        super::conv2d(x, weight, None, stride, padding, groups)?
    } else if fast(x) && weight.dtype() == DType::F32 && mode == StackConv::PerSlice {
        x.contiguous()?.apply_op2(&weight.contiguous()?, StackedConv2d { k, stride, padding, groups })?
    } else {
        let c = weight.dim(1)? * groups;
        match x.dim(1)? {
            // A shared input and ungrouped kernels: one convolution with every slice's filters.
            xc if xc == c && groups == 1 => super::conv2d(x, weight, None, stride, padding, 1)?,
            xc if xc == c => super::conv2d(&x.repeat((1, k, 1, 1))?, weight, None, stride, padding, groups * k)?,
            _ => super::conv2d(x, weight, None, stride, padding, groups * k)?,
        }
    };
    match bias {
        Some(b) => super::add_channel_bias(&y, b),
        None => Ok(y),
    }
}

/// The fully connected layers of `k` slices: `x (N, K·F)` (slice s's features in columns
/// `s·F..(s+1)·F`), `weight (K·O, F)`, `bias (K·O)`; the result is `(K, N, O)`, slice s's
/// `x_s·W_sᵀ + b_s`. One batched product whose per-slice products are the single layer's
/// ([`super::linear`]: same shapes and strides), and one broadcast addition.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, k: usize) -> Result<Tensor> {
    let (n, kf) = x.dims2()?;
    let (ko, f) = weight.dims2()?;
    if kf != k * f || ko % k != 0 {
        bail!("stacked linear: input {:?} and weight {:?} are not {k} slices of one layer", x.dims(), weight.dims())
    }
    let o = ko / k;
    let xs = x.reshape((n, k, f))?.transpose(0, 1)?.contiguous()?;
    let y = xs.matmul(&weight.reshape((k, o, f))?.transpose(1, 2)?)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((k, 1, o))?),
        None => Ok(y),
    }
}

/// Each slice's mean cross-entropy of `logits (K, N, classes)` against `target (N)`: a `(K)`
/// tensor whose entry s is what `candle_nn::loss::cross_entropy(logits_s, target)` gives, by
/// the same ops (log-softmax over the classes, the target's entry, the sum over the batch,
/// times −1/N). Summing the entries gives every slice's loss a gradient of exactly 1, so each
/// slice's gradients are its own.
pub fn cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (k, n, _) = logits.dims3()?;
    if target.dims() != [n] {
        bail!("stacked cross-entropy: {} targets for batches of {n}", target.elem_count())
    }
    let log_sm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let index = target.reshape((1, n, 1))?.broadcast_as((k, n, 1))?.contiguous()?;
    log_sm.gather(&index, D::Minus1)?.reshape((k, n))?.sum(1)?.affine(-1.0 / n as f64, 0.0)
}

/// Correct predictions per slice of `logits (K, N, classes)` against `target (N)`, as an f32
/// `(K)` tensor (exact counts).
pub fn hits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    logits.argmax(D::Minus1)?.broadcast_eq(&target.unsqueeze(0)?)?.to_dtype(DType::F32)?.sum(1)
}

/// [`conv2d`] per slice on the CPU (see [`StackConv::PerSlice`]).
#[derive(Debug, Clone, Copy)]
struct StackedConv2d {
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl StackedConv2d {
    /// One slice's geometry, and whether the input is shared by all slices.
    fn geom(&self, x: &[usize], w: &[usize]) -> Result<(Geom, bool)> {
        let (&[n, xc, h, wd], &[ko, cg, kh, kw]) = (x, w) else {
            bail!("stacked conv2d: expected 4-d input and kernel, got {x:?} and {w:?}")
        };
        let c = cg * self.groups;
        if ko % self.k != 0 || (xc != c && xc != self.k * c) {
            bail!("stacked conv2d: input {x:?} and kernel {w:?} are not {} slices of one convolution", self.k)
        }
        let g = Geom::new(&[n, c, h, wd], &[ko / self.k, cg, kh, kw], self.stride, self.padding, self.groups)?;
        Ok((g, xc == c))
    }
}

/// Slice `s` of `k` of a channel-stacked tensor whose images hold `len` values per slice:
/// `(n, len)`, contiguous.
fn gather(x: &[f32], n: usize, k: usize, len: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * len];
    out.par_chunks_mut(len).enumerate().for_each(|(i, dst)| dst.copy_from_slice(&x[(i * k + s) * len..][..len]));
    out
}

/// Writes `src (n, len)` as slice `s` of `k` of the channel-stacked `dst`.
fn scatter(dst: &mut [f32], src: &[f32], k: usize, len: usize, s: usize) {
    dst.par_chunks_mut(k * len).zip(src.par_chunks(len)).for_each(|(d, v)| d[s * len..][..len].copy_from_slice(v));
}

/// Slice `s`'s input: the shared input itself, or its channels gathered.
fn slice_input<'a>(x: &'a [f32], g: &Geom, k: usize, shared: bool, s: usize) -> Cow<'a, [f32]> {
    if shared {
        Cow::Borrowed(x)
    } else {
        Cow::Owned(gather(x, g.n, k, g.c * g.h * g.w, s))
    }
}

impl CustomOp2 for StackedConv2d {
    fn name(&self) -> &'static str {
        "normlab-stacked-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, shared) = self.geom(l1.dims(), l2.dims())?;
        let (x, w) = (cpu_f32("stacked conv2d", s1, l1, "input")?, cpu_f32("stacked conv2d", s2, l2, "kernel")?);
        let (out_len, w_len) = (g.o * g.oh() * g.ow(), w.len() / self.k);
        let mut y = vec![0f32; g.n * self.k * out_len];
        for s in 0..self.k {
            let ys = conv::forward(&slice_input(x, &g, self.k, shared, s), &w[s * w_len..][..w_len], &g, conv::threading());
            scatter(&mut y, &ys, self.k, out_len, s);
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, self.k * g.o, g.oh(), g.ow()))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() { Some(dy.apply_op2_no_bwd(w, &StackedConvData { op: *self, x_dims: x.dims4()? })?) } else { None };
        let dw = if w.track_op() { Some(dy.apply_op2_no_bwd(x, &StackedConvWeight { op: *self, w_dims: w.dims4()? })?) } else { None };
        Ok((dx, dw))
    }
}

/// The input gradient of [`StackedConv2d`] on `(dy, w)`, per slice by
/// [`conv::backward_data`]; a shared input gets the slices' gradients added in slice order.
struct StackedConvData {
    op: StackedConv2d,
    x_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for StackedConvData {
    fn name(&self) -> &'static str {
        "normlab-stacked-conv2d-backward-data"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, xc, h, wd) = self.x_dims;
        let (g, shared) = self.op.geom(&[n, xc, h, wd], l2.dims())?;
        let k = self.op.k;
        let (dy, w) = (cpu_f32("stacked conv2d", s1, l1, "gradient")?, cpu_f32("stacked conv2d", s2, l2, "kernel")?);
        let (out_len, in_len, w_len) = (g.o * g.oh() * g.ow(), g.c * g.h * g.w, w.len() / k);
        if dy.len() != n * k * out_len {
            bail!("stacked conv2d backward: gradient {:?} does not match the output", l1.dims())
        }
        let mut dx = vec![0f32; if shared { 0 } else { n * xc * h * wd }];
        for s in 0..k {
            let dxs = conv::backward_data(&gather(dy, n, k, out_len, s), &w[s * w_len..][..w_len], &g, conv::threading());
            match (shared, s) {
                (true, 0) => dx = dxs,
                (true, _) => dx.par_iter_mut().zip(dxs.par_iter()).for_each(|(d, v)| *d += v),
                (false, _) => scatter(&mut dx, &dxs, k, in_len, s),
            }
        }
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims)))
    }
}

/// The weight gradient of [`StackedConv2d`] on `(dy, x)`, per slice by
/// [`conv::backward_weight`].
struct StackedConvWeight {
    op: StackedConv2d,
    w_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for StackedConvWeight {
    fn name(&self) -> &'static str {
        "normlab-stacked-conv2d-backward-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ko, cg, kh, kw) = self.w_dims;
        let (g, shared) = self.op.geom(l2.dims(), &[ko, cg, kh, kw])?;
        let k = self.op.k;
        let (dy, x) = (cpu_f32("stacked conv2d", s1, l1, "gradient")?, cpu_f32("stacked conv2d", s2, l2, "input")?);
        let out_len = g.o * g.oh() * g.ow();
        if dy.len() != g.n * k * out_len {
            bail!("stacked conv2d backward: gradient {:?} does not match the output", l1.dims())
        }
        let mut dw = Vec::with_capacity(ko * cg * kh * kw);
        for s in 0..k {
            dw.extend(conv::backward_weight(&gather(dy, g.n, k, out_len, s), &slice_input(x, &g, k, shared, s), &g, conv::threading()));
        }
        Ok((CpuStorage::F32(dw), Shape::from(self.w_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.gen_range(-1f32..1f32)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Slice `s` of `k` of a channel-stacked 4-d tensor.
    fn channels(t: &Tensor, k: usize, s: usize) -> Tensor {
        let c = t.dim(1).unwrap() / k;
        t.narrow(1, s * c, c).unwrap().contiguous().unwrap()
    }

    fn rows(t: &Tensor, k: usize, s: usize) -> Tensor {
        let d = t.dim(0).unwrap() / k;
        t.narrow(0, s * d, d).unwrap().contiguous().unwrap()
    }

    /// Per slice, forward and both gradients equal the single model's conv bit for bit, for a
    /// shared and a stacked input, with and without groups, on every kind of CPU kernel
    /// (im2col, Winograd for 64 channels on 8×8 maps, the grouped direct kernel, the dense one
    /// for 2×2 maps).
    #[test]
    fn per_slice_conv_is_the_single_conv_bit_for_bit() {
        let k = 3;
        // (n, c, hw, o, kernel, stride, padding, groups, shared)
        let cases = [
            (2, 3, 8, 4, 3, 1, 1, 1, true),
            (2, 4, 6, 6, 3, 2, 1, 1, false),
            (2, 64, 8, 128, 3, 1, 1, 1, false),
            (2, 16, 6, 16, 3, 1, 1, 2, false),
            (2, 16, 8, 16, 3, 2, 1, 2, false),
            (2, 8, 2, 8, 3, 1, 1, 1, false),
            (2, 8, 4, 8, 1, 1, 0, 1, false),
        ];
        for (i, &(n, c, hw, o, kk, stride, pad, groups, shared)) in cases.iter().enumerate() {
            let xc = if shared { c } else { k * c };
            let x = Var::from_tensor(&rand(&[n, xc, hw, hw], 10 + i as u64)).unwrap();
            let w = Var::from_tensor(&rand(&[k * o, c / groups, kk, kk], 20 + i as u64)).unwrap();
            let b = Var::from_tensor(&rand(&[k * o], 30 + i as u64)).unwrap();
            let y = conv2d_as(StackConv::PerSlice, x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), stride, pad, groups, k).unwrap();
            let dy = rand(y.dims(), 40 + i as u64);
            let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let mut dx_shared: Option<Tensor> = None;
            for s in 0..k {
                let xs = Var::from_tensor(&if shared { x.as_tensor().clone() } else { channels(x.as_tensor(), k, s) }).unwrap();
                let (ws, bs) = (Var::from_tensor(&rows(w.as_tensor(), k, s)).unwrap(), Var::from_tensor(&rows(b.as_tensor(), k, s)).unwrap());
                let ys = super::super::conv2d(xs.as_tensor(), ws.as_tensor(), Some(bs.as_tensor()), stride, pad, groups).unwrap();
                assert_eq!(bits(&ys), bits(&channels(&y, k, s)), "case {i} slice {s}: forward");
                let gs = (&ys * &channels(&dy, k, s)).unwrap().sum_all().unwrap().backward().unwrap();
                assert_eq!(bits(gs.get(ws.as_tensor()).unwrap()), bits(&rows(g.get(w.as_tensor()).unwrap(), k, s)), "case {i} slice {s}: dw");
                assert_eq!(bits(gs.get(bs.as_tensor()).unwrap()), bits(&rows(g.get(b.as_tensor()).unwrap(), k, s)), "case {i} slice {s}: db");
                let dxs = gs.get(xs.as_tensor()).unwrap().clone();
                if shared {
                    dx_shared = Some(match dx_shared {
                        None => dxs,
                        Some(acc) => (acc + dxs).unwrap(),
                    });
                } else {
                    assert_eq!(bits(&dxs), bits(&channels(g.get(x.as_tensor()).unwrap(), k, s)), "case {i} slice {s}: dx");
                }
            }
            if let Some(sum) = dx_shared {
                assert_eq!(bits(&sum), bits(g.get(x.as_tensor()).unwrap()), "case {i}: dx of the shared input");
            }
        }
    }

    /// The grouped form computes the same convolution (to rounding: other kernels).
    #[test]
    fn grouped_conv_matches_per_slice() {
        let k = 2;
        for (i, &(xc, c, groups)) in [(3usize, 3usize, 1usize), (2 * 16, 16, 1), (2 * 16, 16, 2)].iter().enumerate() {
            let x = rand(&[2, xc, 8, 8], i as u64);
            let w = rand(&[k * 8, c / groups, 3, 3], 9 + i as u64);
            let a = conv2d_as(StackConv::PerSlice, &x, &w, None, 1, 1, groups, k).unwrap();
            let b = conv2d_as(StackConv::Grouped, &x, &w, None, 1, 1, groups, k).unwrap();
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-5, "case {i}: {d}");
        }
    }

    /// The stacked linear layer and loss give each slice the single layer's and loss's values
    /// and gradients, bit for bit.
    #[test]
    fn linear_and_loss_are_the_single_ones_bit_for_bit() {
        let (k, n, f, o) = (3, 5, 12, 10);
        let x = Var::from_tensor(&rand(&[n, k * f], 1)).unwrap();
        let w = Var::from_tensor(&rand(&[k * o, f], 2)).unwrap();
        let b = Var::from_tensor(&rand(&[k * o], 3)).unwrap();
        let y = Tensor::new(&[3u32, 0, 9, 3, 7], &Device::Cpu).unwrap();
        let logits = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), k).unwrap();
        let losses = cross_entropy(&logits, &y).unwrap();
        let hit = hits(&logits, &y).unwrap().to_vec1::<f32>().unwrap();
        let g = losses.sum_all().unwrap().backward().unwrap();
        #[allow(clippy::needless_range_loop)] // `s` is also the slice index of the stacked tensors
        for s in 0..k {
            let xs = Var::from_tensor(&x.as_tensor().narrow(1, s * f, f).unwrap().contiguous().unwrap()).unwrap();
            let (ws, bs) = (Var::from_tensor(&rows(w.as_tensor(), k, s)).unwrap(), Var::from_tensor(&rows(b.as_tensor(), k, s)).unwrap());
            let ls = super::super::linear(xs.as_tensor(), ws.as_tensor(), Some(bs.as_tensor())).unwrap();
            assert_eq!(bits(&ls), bits(&logits.get(s).unwrap()), "slice {s}: logits");
            let loss = candle_nn::loss::cross_entropy(&ls, &y).unwrap();
            assert_eq!(loss.to_scalar::<f32>().unwrap().to_bits(), losses.get(s).unwrap().to_scalar::<f32>().unwrap().to_bits(), "slice {s}: loss");
            let h = ls.argmax(1).unwrap().eq(&y).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(h, hit[s], "slice {s}: hits");
            let gs = loss.backward().unwrap();
            assert_eq!(bits(gs.get(ws.as_tensor()).unwrap()), bits(&rows(g.get(w.as_tensor()).unwrap(), k, s)), "slice {s}: dw");
            assert_eq!(bits(gs.get(bs.as_tensor()).unwrap()), bits(&rows(g.get(b.as_tensor()).unwrap(), k, s)), "slice {s}: db");
            let dx = g.get(x.as_tensor()).unwrap().narrow(1, s * f, f).unwrap().contiguous().unwrap();
            assert_eq!(bits(gs.get(xs.as_tensor()).unwrap()), bits(&dx), "slice {s}: dx");
        }
    }
}
