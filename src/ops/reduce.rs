//! Two one-pass, multi-threaded CPU ops for norm decay's per-step work over every weight:
//! the sum of |x| over the middle axis of an (outer, mid, inner) view (where a layer's norm
//! mass per channel and kernel position comes from), and `y + a·x` (adding β·h to a
//! gradient). candle's CPU versions are single-threaded and take two passes each (abs, then
//! a strided sum; a scaling, then an add).

use super::cpu_f32;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// `Σ_m |x[o, m, i]|` of `x` seen as `(outer, mid, inner)`, an `(outer, inner)` tensor.
pub struct AbsSumMid {
    /// The view's three extents.
    pub dims: (usize, usize, usize),
}

impl CustomOp1 for AbsSumMid {
    fn name(&self) -> &'static str {
        "normlab-abs-sum-mid"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (outer, mid, inner) = self.dims;
        let x = cpu_f32("op", s, l, "input")?;
        if x.len() != outer * mid * inner {
            bail!("abs_sum_mid: {} values are not {outer}×{mid}×{inner}", x.len())
        }
        let mut out = vec![0f32; outer * inner];
        out.par_chunks_mut(inner).enumerate().for_each(|(o, row)| {
            for m in 0..mid {
                for (acc, &v) in row.iter_mut().zip(&x[(o * mid + m) * inner..][..inner]) {
                    *acc += v.abs();
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((outer, inner))))
    }
}

/// `y + a·x` on `(y, x)` of the same shape.
pub struct Axpy {
    /// The factor of `x`.
    pub a: f32,
}

impl CustomOp2 for Axpy {
    fn name(&self) -> &'static str {
        "normlab-axpy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, x) = (cpu_f32("op", s1, l1, "y")?, cpu_f32("op", s2, l2, "x")?);
        if y.len() != x.len() {
            bail!("axpy: {} and {} values", y.len(), x.len())
        }
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(1 << 14).zip(y.par_chunks(1 << 14).zip(x.par_chunks(1 << 14))).for_each(|(d, (y, x))| {
            for ((d, &y), &x) in d.iter_mut().zip(y).zip(x) {
                *d = y + self.a * x;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
