//! Two one-pass, multi-threaded CPU ops for norm decay's per-step work over every weight:
//! the sum of |x| over the middle axis of an (outer, mid, inner) view (where a layer's norm
//! mass per channel and kernel position comes from), and `y + a·x` (adding β·h to a
//! gradient). candle's CPU versions are single-threaded and take two passes each (abs, then
//! a strided sum; a scaling, then an add).

use super::{cpu_f32, par_collect};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// From this many outer rows on, [`AbsSumMid`] runs in parallel over them; below, over the
/// middle axis ([`super::par_sum`]).
const MANY_ROWS: usize = 64;

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
        let add_rows = |acc: &mut [f32], o: usize, rows: std::ops::Range<usize>| {
            for m in rows {
                for (a, &v) in acc.iter_mut().zip(&x[(o * mid + m) * inner..][..inner]) {
                    *a += v.abs();
                }
            }
        };
        if outer >= MANY_ROWS {
            // Many short rows (ℓ∞: one per output channel): parallel over them.
            out.par_chunks_mut(inner).enumerate().for_each(|(o, acc)| add_rows(acc, o, 0..mid));
        } else {
            // Few long rows (ℓ1 of an ungrouped conv: one row for the whole layer, which ran
            // on one thread at 11 GB/s): the middle axis split over the threads, in order.
            for (o, acc) in out.chunks_mut(inner).enumerate() {
                acc.copy_from_slice(&super::par_sum(inner, mid, || (), |m, _, part| add_rows(part, o, m..m + 1)));
            }
        }
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
        // Written straight into the new allocation (no zero-filling pass first).
        let out = par_collect(y.len(), 1 << 14, |i| {
            let (y, x) = (&y[i << 14..], &x[i << 14..]);
            y.iter().zip(x).take(1 << 14).map(|(&y, &x)| y + self.a * x)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
