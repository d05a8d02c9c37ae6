//! The small CPU ops around the convolutions, each one pass forward and one backward: ReLU,
//! non-overlapping max pooling and a per-channel bias. candle's generic versions take several
//! passes backward (ReLU: compare, cast, multiply; max pooling: upsample, compare, cast,
//! average, multiply, upsample, multiply; bias: a reduction over three axes).

use super::{cpu_f32, par_collect};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task of the elementwise ops.
const GRAIN: usize = 1 << 14;

/// `max(x, 0)`; backward `dy` where the output is positive (PyTorch's threshold_backward).
pub struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "normlab-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32("op", s, l, "input")?;
        let y = par_collect(x.len(), GRAIN, |i| x[i * GRAIN..][..GRAIN.min(x.len() - i * GRAIN)].iter().map(|&v| v.max(0.0)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(y, &ReluBackward)?))
    }
}

/// `dy · [y > 0]` on `(dy, y)`.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "normlab-relu-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (dy, y) = (cpu_f32("op", s1, l1, "gradient")?, cpu_f32("op", s2, l2, "output")?);
        if dy.len() != y.len() {
            bail!("relu backward: gradient of {} values for an output of {}", dy.len(), y.len())
        }
        let dx = par_collect(dy.len(), GRAIN, |i| {
            let r = i * GRAIN..(i * GRAIN + GRAIN).min(dy.len());
            dy[r.clone()].iter().zip(&y[r]).map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        other => bail!("normlab op: expected an n×c×h×w tensor, got {other:?}"),
    }
}

/// The index in `plane` (rows of `w`) of the first maximum of the `k × k` window whose top-left
/// corner is `top`; a NaN wins (as PyTorch propagates it), the last one if several. The
/// forward and the backward both pick through here, so the gradient goes where the value came
/// from. k = 2 (every pool of the models) gets its own unrolled, branch-free copy.
#[inline(always)]
fn window_argmax(plane: &[f32], w: usize, top: usize, k: usize) -> usize {
    #[inline(always)]
    fn scan(plane: &[f32], w: usize, top: usize, k: usize) -> usize {
        let (mut m, mut at) = (f32::NEG_INFINITY, top);
        for dy in 0..k {
            for dx in 0..k {
                let i = top + dy * w + dx;
                let v = plane[i];
                // Selects, not a branch: which element wins is data-dependent and a branch
                // mispredicts about half the time.
                let take = (v > m) | v.is_nan();
                at = if take { i } else { at };
                m = if take { v } else { m };
            }
        }
        at
    }
    match k {
        2 => scan(plane, w, top, 2),
        _ => scan(plane, w, top, k),
    }
}

/// Max pooling over non-overlapping `k × k` windows (stride k, no padding, floor), as
/// PyTorch's `max_pool2d(x, k)`; backward sends each gradient to the window's first maximum.
pub struct MaxPool {
    /// Window side and stride.
    pub k: usize,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "normlab-max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let k = self.k;
        if k == 0 || h < k || w < k {
            bail!("max_pool2d: window {k} does not fit a {h}×{w} map")
        }
        let (oh, ow) = (h / k, w / k);
        let x = cpu_f32("op", s, l, "input")?;
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow).enumerate().for_each(|(j, out)| {
            let plane = &x[j * h * w..][..h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    out[oy * ow + ox] = plane[window_argmax(plane, w, (oy * k) * w + ox * k, k)];
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(&x.contiguous()?, &MaxPoolBackward { k: self.k })?))
    }
}

/// The max-pool input gradient on `(dy, x)`.
struct MaxPoolBackward {
    k: usize,
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "normlab-max-pool-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l2)?;
        let k = self.k;
        let (oh, ow) = (h / k, w / k);
        if l1.dims() != [n, c, oh, ow] {
            bail!("max_pool2d backward: gradient {:?} does not match the output {:?}", l1.dims(), [n, c, oh, ow])
        }
        let (g, x) = (cpu_f32("op", s1, l1, "gradient")?, cpu_f32("op", s2, l2, "input")?);
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(h * w).enumerate().for_each(|(j, d)| {
            let plane = &x[j * h * w..][..h * w];
            let gp = &g[j * oh * ow..][..oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    d[window_argmax(plane, w, (oy * k) * w + ox * k, k)] += gp[oy * ow + ox];
                }
            }
        });
        Ok((CpuStorage::F32(dx), l2.shape().clone()))
    }
}

/// `y + b` with `b` one value per channel of `y (n, c, h, w)`; backward `dy` and the
/// per-channel sums of `dy`.
pub struct ChannelBias;

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "normlab-channel-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = dims4(l1)?;
        let (y, b) = (cpu_f32("op", s1, l1, "input")?, cpu_f32("op", s2, l2, "bias")?);
        if b.len() != c {
            bail!("channel bias: {} values for {c} channels", b.len())
        }
        let hw = h * w;
        let out = par_collect(y.len(), hw, |j| {
            let bias = b[j % c];
            y[j * hw..][..hw].iter().map(move |&v| v + bias)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, y: &Tensor, b: &Tensor, _out: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy_in = if y.track_op() { Some(dy.clone()) } else { None };
        let db = if b.track_op() { Some(dy.contiguous()?.apply_op1_no_bwd(&ChannelSum)?) } else { None };
        Ok((dy_in, db))
    }
}

/// Per-channel sums of `(n, c, h, w)`, as a `c` tensor.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "normlab-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let x = cpu_f32("op", s, l, "input")?;
        let hw = h * w;
        let sums: Vec<f32> =
            (0..c).into_par_iter().map(|ch| (0..n).map(|i| x[(i * c + ch) * hw..][..hw].iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() as f32).collect();
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}
