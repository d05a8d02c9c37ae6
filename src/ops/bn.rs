//! Fused BatchNorm2d on the CPU: batch statistics in one pass, normalisation in one pass, and
//! the train-mode backward (input, γ and β gradients, through the batch statistics) in two
//! passes, as candle custom ops. candle builds BatchNorm from a dozen generic ops, each a pass
//! over the activations forward and more backward.
//!
//! In train mode the ReLU that follows a BatchNorm in every model can run inside it: the
//! forward clamps in the same pass and the backward masks `dy` where the output was clamped,
//! recomputing the mask from `x` (no extra read), so the ReLU's own forward and backward
//! passes and its activation gradient (which candle's backward allocates, zero-fills and adds
//! into) disappear.

use super::{cpu_f32, par_collect};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    match l.dims() {
        &[n, c, h, w] => Ok((n, c, h * w)),
        other => bail!("normlab batch_norm: expected an n×c×h×w input, got {other:?}"),
    }
}

/// Lane-parallel sums over a slice (vectorisable), `(Σ f(a, b) over pairs)`.
#[inline]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Images per task of [`channel_pair_sums`]: fixed, so the order of the additions (and with it
/// the result) does not depend on the number of threads.
const SUM_CHUNK: usize = 4;

/// Per-channel pairs of sums over `n` images of `c` channels, `plane(img, ch)` giving one
/// plane's pair. Parallel over fixed chunks of whole images, so each task reads contiguous
/// memory (parallel over channels, each task read `n` planes a whole image apart: 6–13 GB/s
/// on RegNet's 8×8 maps), and the chunks' sums are added in order.
fn channel_pair_sums(n: usize, c: usize, plane: impl Fn(usize, usize) -> (f64, f64) + Sync) -> Vec<(f64, f64)> {
    let parts: Vec<Vec<(f64, f64)>> = (0..n.div_ceil(SUM_CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![(0f64, 0f64); c];
            for img in chunk * SUM_CHUNK..((chunk + 1) * SUM_CHUNK).min(n) {
                for (ch, a) in acc.iter_mut().enumerate() {
                    let (s, q) = plane(img, ch);
                    a.0 += s;
                    a.1 += q;
                }
            }
            acc
        })
        .collect();
    let mut total = vec![(0f64, 0f64); c];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            t.0 += p.0;
            t.1 += p.1;
        }
    }
    total
}

/// Per-channel mean and biased variance of `x (n, c, hw)`: sums shifted by the channel's
/// first value (against cancellation), in f32 within a plane and f64 across planes.
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (n * hw) as f64;
    let sums = channel_pair_sums(n, c, |img, ch| {
        let k = x[ch * hw];
        let plane = &x[(img * c + ch) * hw..][..hw];
        (lane_sum(plane, plane, |v, _| v - k) as f64, lane_sum(plane, plane, |v, _| (v - k) * (v - k)) as f64)
    });
    sums.iter()
        .enumerate()
        .map(|(ch, &(s, q))| {
            let mean_shifted = s / count;
            let var = (q / count - mean_shifted * mean_shifted).max(0.0);
            ((mean_shifted + x[ch * hw] as f64) as f32, var as f32)
        })
        .unzip()
}

/// Per-channel `y = x·scale + shift` over `x (n, c, hw)`, clamped at 0 when `relu`.
fn affine(x: &[f32], c: usize, hw: usize, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    par_collect(x.len(), hw, |j| {
        let (a, b) = (scale[j % c], shift[j % c]);
        x[j * hw..][..hw].iter().map(move |&s| if relu { (s * a + b).max(0.0) } else { s * a + b })
    })
}

/// Where a fused ReLU passed its input: `x·scale + shift > 0`, computed exactly as [`affine`]
/// computed the output (same operations in the same order, so the same rounding).
#[derive(Debug, Clone)]
struct ReluMask {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl ReluMask {
    /// Channel `ch`'s scale and shift.
    fn at(&self, ch: usize) -> (f32, f32) {
        (self.scale[ch], self.shift[ch])
    }
}

/// `Σ pass(dy, x)` and `Σ pass(dy, x)·(x − m)` over one plane, where `pass` masks `dy` for a
/// fused ReLU (generic, so each case's loop is vectorised).
fn plane_sums(g: &[f32], v: &[f32], m: f32, pass: impl Fn(f32, f32) -> f32) -> (f64, f64) {
    (lane_sum(g, v, &pass) as f64, lane_sum(g, v, |a, b| pass(a, b) * (b - m)) as f64)
}

/// The batch statistics of `x` as a `(2, c)` tensor: mean, biased variance (no gradient).
struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "normlab-bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l)?;
        let (mut mean, var) = channel_stats(cpu_f32("batch_norm", s, l, "input")?, n, c, hw);
        mean.extend(var);
        Ok((CpuStorage::F32(mean), Shape::from((2, c))))
    }
}

/// Mean and biased variance per channel of `x (n, c, h, w)` (CPU, f32), as two `c` tensors.
pub fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = x.contiguous()?.apply_op1_no_bwd(&ChannelStats)?;
    Ok((s.get(0)?, s.get(1)?))
}

/// Train-mode BatchNorm on `(x, γ, β)` with the batch statistics already computed, followed
/// by a ReLU when `relu`.
pub struct BatchNormTrain {
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel 1/√(var + eps).
    pub inv_std: Vec<f32>,
    /// Clamp the output at 0 (a fused ReLU).
    pub relu: bool,
}

impl BatchNormTrain {
    /// The per-channel scale and shift of the forward ([`scale_shift`]).
    fn scale_shift(&self, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        scale_shift(gamma, beta, &self.mean, &self.inv_std)
    }
}

/// BatchNorm as a per-channel affine map: `scale = γ·inv_std`, `shift = β − mean·scale`
/// (train mode with the batch statistics, eval mode with the running ones).
pub fn scale_shift(gamma: &[f32], beta: &[f32], mean: &[f32], inv_std: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(inv_std).map(|(g, i)| g * i).collect();
    let shift = beta.iter().zip(mean.iter().zip(&scale)).map(|(b, (m, s))| b - m * s).collect();
    (scale, shift)
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "normlab-bn-train"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims(l1)?;
        let (gamma, beta) = (cpu_f32("batch_norm", s2, l2, "weight")?, cpu_f32("batch_norm", s3, l3, "bias")?);
        if gamma.len() != c || beta.len() != c || self.mean.len() != c {
            bail!("normlab batch_norm: {c} channels but weight {} and bias {}", gamma.len(), beta.len())
        }
        let (scale, shift) = self.scale_shift(gamma, beta);
        Ok((CpuStorage::F32(affine(cpu_f32("batch_norm", s1, l1, "input")?, c, hw, &scale, &shift, self.relu)), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let gamma_v: Vec<f32> = gamma.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let mask = if self.relu {
            let (scale, shift) = self.scale_shift(&gamma_v, &beta.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
            Some(ReluMask { scale, shift })
        } else {
            None
        };
        let sums = dy.apply_op2_no_bwd(x, &BackwardSums { mean: self.mean.clone(), inv_std: self.inv_std.clone(), mask: mask.clone() })?;
        let dx = if x.track_op() {
            let s = sums.to_vec2::<f32>()?;
            let op = BackwardData {
                mean: self.mean.clone(),
                inv_std: self.inv_std.clone(),
                gamma: gamma_v,
                sum_dy: s[0].clone(),
                sum_dy_xhat: s[1].clone(),
                mask,
            };
            Some(dy.apply_op2_no_bwd(x, &op)?)
        } else {
            None
        };
        let dgamma = if gamma.track_op() { Some(sums.get(1)?) } else { None };
        let dbeta = if beta.track_op() { Some(sums.get(0)?) } else { None };
        Ok((dx, dgamma, dbeta))
    }
}

/// Per-channel `Σ dy` and `Σ dy·x̂` on `(dy, x)`, as a `(2, c)` tensor: β's and γ's gradients
/// (`dy` masked by the fused ReLU, if any).
struct BackwardSums {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    mask: Option<ReluMask>,
}

impl CustomOp2 for BackwardSums {
    fn name(&self) -> &'static str {
        "normlab-bn-backward-sums"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l1)?;
        let (dy, x) = (cpu_f32("batch_norm", s1, l1, "gradient")?, cpu_f32("batch_norm", s2, l2, "input")?);
        let sums = channel_pair_sums(n, c, |img, ch| {
            let m = self.mean[ch];
            let off = (img * c + ch) * hw;
            let (g, v) = (&dy[off..off + hw], &x[off..off + hw]);
            match &self.mask {
                Some(mask) => {
                    let (sc, sh) = mask.at(ch);
                    plane_sums(g, v, m, |g, x| if x * sc + sh > 0.0 { g } else { 0.0 })
                }
                None => plane_sums(g, v, m, |g, _| g),
            }
        });
        let sums = sums.iter().zip(&self.inv_std).map(|(&(sd, sdx), &is)| (sd as f32, (sdx * is as f64) as f32));
        let (mut out, sdx): (Vec<f32>, Vec<f32>) = sums.unzip();
        out.extend(sdx);
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// The input gradient through the batch statistics on `(dy, x)`:
/// `dx = γ·inv_std·(dy − Σdy/M − x̂·Σdy·x̂/M)` (`dy` masked by the fused ReLU, if any).
struct BackwardData {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    sum_dy: Vec<f32>,
    sum_dy_xhat: Vec<f32>,
    mask: Option<ReluMask>,
}

impl CustomOp2 for BackwardData {
    fn name(&self) -> &'static str {
        "normlab-bn-backward-data"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l1)?;
        let (dy, x) = (cpu_f32("batch_norm", s1, l1, "gradient")?, cpu_f32("batch_norm", s2, l2, "input")?);
        let count = (n * hw) as f32;
        let dx = par_collect(dy.len(), hw, |j| {
            let ch = j % c;
            let (m, is) = (self.mean[ch], self.inv_std[ch]);
            let k = self.gamma[ch] * is;
            let (mean_dy, mean_dy_xhat) = (self.sum_dy[ch] / count, self.sum_dy_xhat[ch] / count);
            let (relu, (sc, sh)) = self.mask.as_ref().map_or((false, (0.0, 0.0)), |mask| (true, mask.at(ch)));
            let (g, v) = (&dy[j * hw..][..hw], &x[j * hw..][..hw]);
            g.iter().zip(v).map(move |(&gy, &xv)| {
                let gy = if !relu || xv * sc + sh > 0.0 { gy } else { 0.0 };
                k * (gy - mean_dy - (xv - m) * is * mean_dy_xhat)
            })
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Eval-mode BatchNorm (a fixed per-channel affine map) on `x`, with γ and β as constants:
/// its backward is `dx = dy·scale`.
pub struct ChannelAffine {
    /// Per-channel factor.
    pub scale: Vec<f32>,
    /// Per-channel offset.
    pub shift: Vec<f32>,
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "normlab-channel-affine"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims(l)?;
        if self.scale.len() != c {
            bail!("normlab batch_norm: {c} channels but {} scales", self.scale.len())
        }
        Ok((CpuStorage::F32(affine(cpu_f32("batch_norm", s, l, "input")?, c, hw, &self.scale, &self.shift, false)), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let zero = vec![0f32; self.scale.len()];
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&ChannelAffine { scale: self.scale.clone(), shift: zero })?))
    }
}
