//! The FFT + SVD method of Sedghi, Gupta & Long (ICLR 2019): the singular values of a conv
//! with *circular* padding on an n×n input are the singular values of the d_out × d_in
//! matrices P(u, v) = Σ_{k,t} K[:, :, k, t] e^{−2πi(uk + vt)/n}, one per frequency (u, v):
//! a 2-D FFT of the kernel zero-padded to n×n (rustfft), then an SVD per frequency (faer,
//! complex), in parallel over frequencies (rayon). Singular value clipping (SVC) clips each
//! P(u, v)'s singular values at C, transforms back, keeps the real part and crops the kernel
//! to its kh×kw support; the crop is the method's approximation.
//!
//! Conventions (the same as the reference code, stated because they are approximations of
//! the zero-padded convs the models use):
//! - **Padding**: the operator is the circular conv on the n×n torus, not the zero-padded
//!   one: its norm is an upper bound of the zero-padded conv's at stride 1 (for n ≥ input
//!   size + padding the zero-padded conv is a submatrix of it), not the exact value.
//! - **Stride**: ignored. We compute the stride-1 circular operator, as the reference code
//!   does. A strided conv keeps a subset of its output rows, so its singular values are
//!   bounded by these; clipping the stride-1 operator at C bounds the strided one by C too,
//!   but the values are not the strided operator's.
//! - **Groups**: a grouped conv is block-diagonal over its groups, so its singular values are
//!   the union over groups g of those of the cout/g × cin/g matrices P_g(u, v); clipping
//!   acts on each block.
//! - **Kernel larger than the torus** (a 3×3 kernel on n = 2): the taps wrap around
//!   (k mod n) for the singular values, which is the exact circular operator; clipping needs
//!   the kernel to fit and uses a torus of max(n, kh, kw).

use crate::models::LayerSpec;
use faer::{c64, Mat};
use rayon::prelude::*;
use rustfft::FftPlanner;

/// A conv kernel in PyTorch layout (out_c × cin/groups × kh × kw) in f64, on an nh × nw torus.
#[derive(Debug, Clone, Copy)]
struct Kernel<'a> {
    w: &'a [f64],
    out_c: usize,
    cin_g: usize,
    kh: usize,
    kw: usize,
    groups: usize,
}

impl<'a> Kernel<'a> {
    fn new(w: &'a [f64], out_c: usize, in_c: usize, kh: usize, kw: usize, groups: usize) -> Self {
        assert!(groups > 0 && in_c.is_multiple_of(groups) && out_c.is_multiple_of(groups), "{groups} groups must divide in_c {in_c} and out_c {out_c}");
        let cin_g = in_c / groups;
        assert_eq!(w.len(), out_c * cin_g * kh * kw, "kernel of {out_c}x{cin_g}x{kh}x{kw} has {} values", w.len());
        Self { w, out_c, cin_g, kh, kw, groups }
    }

    fn cout_g(&self) -> usize {
        self.out_c / self.groups
    }
}

/// The kernel's transform, frequency-major: for each frequency f = u·nw + v, the
/// out_c × cin_g matrix (row-major) of P(u, v) (groups stacked by rows).
fn transform(k: &Kernel, nh: usize, nw: usize) -> Vec<c64> {
    let pairs = k.out_c * k.cin_g;
    let plane = nh * nw;
    let mut grid = vec![c64::new(0.0, 0.0); pairs * plane];
    for p in 0..pairs {
        for a in 0..k.kh {
            for b in 0..k.kw {
                grid[p * plane + (a % nh) * nw + (b % nw)] += c64::new(k.w[(p * k.kh + a) * k.kw + b], 0.0);
            }
        }
    }
    fft2(&mut grid, nh, nw, false);
    let mut freq = vec![c64::new(0.0, 0.0); pairs * plane];
    for p in 0..pairs {
        for f in 0..plane {
            freq[f * pairs + p] = grid[p * plane + f];
        }
    }
    freq
}

/// In-place 2-D DFT of consecutive nh × nw planes (inverse: unnormalised conjugate transform).
fn fft2(grid: &mut [c64], nh: usize, nw: usize, inverse: bool) {
    let mut planner = FftPlanner::<f64>::new();
    let (row, col) = if inverse { (planner.plan_fft_inverse(nw), planner.plan_fft_inverse(nh)) } else { (planner.plan_fft_forward(nw), planner.plan_fft_forward(nh)) };
    let plane = nh * nw;
    grid.par_chunks_mut(plane).for_each(|g| {
        row.process(g);
        let mut t = vec![c64::new(0.0, 0.0); plane];
        for a in 0..nh {
            for b in 0..nw {
                t[b * nh + a] = g[a * nw + b];
            }
        }
        col.process(&mut t);
        for a in 0..nh {
            for b in 0..nw {
                g[a * nw + b] = t[b * nh + a];
            }
        }
    });
}

/// The per-frequency, per-group block of the transform as a faer matrix.
fn block(freq: &[c64], k: &Kernel, f: usize, g: usize) -> Mat<c64> {
    let pairs = k.out_c * k.cin_g;
    let base = f * pairs + g * k.cout_g() * k.cin_g;
    Mat::from_fn(k.cout_g(), k.cin_g, |i, j| freq[base + i * k.cin_g + j])
}

fn singular_values_of(k: &Kernel, nh: usize, nw: usize) -> Vec<f64> {
    let freq = transform(k, nh, nw);
    let jobs: Vec<(usize, usize)> = (0..nh * nw).flat_map(|f| (0..k.groups).map(move |g| (f, g))).collect();
    let mut s: Vec<f64> = jobs
        .par_iter()
        .flat_map_iter(|&(f, g)| block(&freq, k, f, g).singular_values().expect("complex SVD did not converge"))
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// All singular values (largest first) of the circular conv with `weight` (out_c × in_c ×
/// kh × kw, groups = 1) on an n×n input. See the module doc for stride and padding.
pub fn conv_singular_values(weight: &[f32], out_c: usize, in_c: usize, kh: usize, kw: usize, n: usize) -> Vec<f64> {
    grouped_conv_singular_values(weight, out_c, in_c, kh, kw, n, 1)
}

/// All singular values (largest first) of the grouped circular conv: `in_c` is the conv's
/// input channels, `weight` is out_c × in_c/groups × kh × kw.
#[allow(clippy::too_many_arguments)]
pub fn grouped_conv_singular_values(weight: &[f32], out_c: usize, in_c: usize, kh: usize, kw: usize, n: usize, groups: usize) -> Vec<f64> {
    let w: Vec<f64> = weight.iter().map(|&v| v as f64).collect();
    singular_values_of(&Kernel::new(&w, out_c, in_c, kh, kw, groups), n, n)
}

/// The largest singular value of the grouped circular conv on an n×n input.
#[allow(clippy::too_many_arguments)]
pub fn max_singular_value(weight: &[f32], out_c: usize, in_c: usize, kh: usize, kw: usize, n: usize, groups: usize) -> f64 {
    grouped_conv_singular_values(weight, out_c, in_c, kh, kw, n, groups).first().copied().unwrap_or(0.0)
}

/// The FFT + SVD largest singular value of a layer's circular conv on its in_h × in_w input
/// (f64 weight in PyTorch layout); stride ignored as the module doc says. The bench's method.
pub fn layer_max_singular_value(spec: &LayerSpec, weight: &[f64]) -> f64 {
    let k = Kernel::new(weight, spec.out_c, spec.in_c, spec.kh, spec.kw, spec.groups);
    singular_values_of(&k, spec.in_h, spec.in_w).first().copied().unwrap_or(0.0)
}

/// Singular value clipping (groups = 1): clips the singular values of the circular conv on
/// an n×n input at `clip` and returns the clipped kernel cropped back to kh × kw, with the
/// crop error: the spectral norm of the circular conv of the taps the crop dropped, so that
/// the returned kernel's largest singular value is at most `clip + crop_error` (triangle
/// inequality). A kernel whose singular values are all ≤ `clip` comes back unchanged with
/// crop error 0.
pub fn clip_conv_kernel(weight: &[f32], out_c: usize, in_c: usize, kh: usize, kw: usize, n: usize, clip: f64) -> (Vec<f32>, f64) {
    let (kernel, crop) = clip_grouped_conv_kernel(weight, out_c, in_c, kh, kw, n, 1, clip, true);
    (kernel, crop.unwrap_or(0.0))
}

/// Clipping of a 1×1 conv: its transform is the same real matrix at every frequency, so the
/// n² SVDs of the general method are one real SVD per group, and the result stays 1×1
/// (nothing is cropped: the crop error is exactly 0). A 368-channel 1×1 conv on an 8×8 map
/// takes one SVD instead of 64 complex ones.
fn clip_pointwise(weight: &[f32], k: &Kernel, clip: f64) -> Vec<f32> {
    let (cout_g, cin_g) = (k.cout_g(), k.cin_g);
    let blocks: Vec<Option<Mat<f64>>> = (0..k.groups)
        .into_par_iter()
        .map(|g| {
            let m = Mat::from_fn(cout_g, cin_g, |i, j| k.w[(g * cout_g + i) * cin_g + j]);
            let svd = m.thin_svd().expect("SVD did not converge");
            let s = svd.S().column_vector();
            if (0..s.nrows()).all(|i| s[i] <= clip) {
                return None;
            }
            let (u, v) = (svd.U(), svd.V());
            let scaled = Mat::from_fn(u.nrows(), u.ncols(), |i, t| u[(i, t)] * s[t].min(clip));
            Some(&scaled * v.transpose())
        })
        .collect();
    let mut out = weight.to_vec();
    for (g, q) in blocks.iter().enumerate() {
        if let Some(q) = q {
            for i in 0..cout_g {
                for j in 0..cin_g {
                    out[(g * cout_g + i) * cin_g + j] = q[(i, j)] as f32;
                }
            }
        }
    }
    out
}

/// Singular value clipping of a grouped conv (`in_c` the conv's input channels, weight
/// out_c × in_c/groups × kh × kw): each group's block is clipped at every frequency. See
/// [`clip_conv_kernel`]. The crop error costs a second SVD at every frequency, so it is
/// computed only when `measure_crop` (tests and diagnostics; training does not need it).
#[allow(clippy::too_many_arguments)]
pub fn clip_grouped_conv_kernel(
    weight: &[f32],
    out_c: usize,
    in_c: usize,
    kh: usize,
    kw: usize,
    n: usize,
    groups: usize,
    clip: f64,
    measure_crop: bool,
) -> (Vec<f32>, Option<f64>) {
    assert!(clip >= 0.0, "clip value {clip} must be non-negative");
    let w: Vec<f64> = weight.iter().map(|&v| v as f64).collect();
    let k = Kernel::new(&w, out_c, in_c, kh, kw, groups);
    if kh == 1 && kw == 1 {
        return (clip_pointwise(weight, &k, clip), Some(0.0));
    }
    let (nh, nw) = (n.max(kh), n.max(kw));
    let plane = nh * nw;
    let pairs = out_c * k.cin_g;
    let mut freq = transform(&k, nh, nw);
    let jobs: Vec<(usize, usize)> = (0..plane).flat_map(|f| (0..groups).map(move |g| (f, g))).collect();
    let clipped: Vec<(usize, usize, Mat<c64>)> = jobs
        .par_iter()
        .filter_map(|&(f, g)| {
            let p = block(&freq, &k, f, g);
            let svd = p.thin_svd().expect("complex SVD did not converge");
            let s = svd.S().column_vector();
            if (0..s.nrows()).all(|i| s[i].re <= clip) {
                return None;
            }
            // Q = U · diag(min(σ, C)) · Vᴴ, as one matrix product.
            let (u, v) = (svd.U(), svd.V());
            let scaled = Mat::from_fn(u.nrows(), u.ncols(), |i, t| u[(i, t)] * s[t].re.min(clip));
            let q = &scaled * v.adjoint();
            Some((f, g, q))
        })
        .collect();
    if clipped.is_empty() {
        return (weight.to_vec(), Some(0.0));
    }
    let cout_g = k.cout_g();
    for (f, g, q) in &clipped {
        let base = f * pairs + g * cout_g * k.cin_g;
        for i in 0..cout_g {
            for j in 0..k.cin_g {
                freq[base + i * k.cin_g + j] = q[(i, j)];
            }
        }
    }
    // Back to the spatial domain, pair by pair.
    let mut grid = vec![c64::new(0.0, 0.0); pairs * plane];
    for p in 0..pairs {
        for f in 0..plane {
            grid[p * plane + f] = freq[f * pairs + p];
        }
    }
    fft2(&mut grid, nh, nw, true);
    let scale = 1.0 / plane as f64;
    let mut cropped = vec![0f32; pairs * kh * kw];
    let mut dropped = vec![0f64; pairs * plane];
    for p in 0..pairs {
        for a in 0..nh {
            for b in 0..nw {
                let v = grid[p * plane + a * nw + b].re * scale;
                if a < kh && b < kw {
                    cropped[(p * kh + a) * kw + b] = v as f32;
                } else {
                    dropped[p * plane + a * nw + b] = v;
                }
            }
        }
    }
    if !measure_crop {
        return (cropped, None);
    }
    let e = Kernel::new(&dropped, out_c, in_c, nh, nw, groups);
    let crop_error = singular_values_of(&e, nh, nw).first().copied().unwrap_or(0.0);
    (cropped, Some(crop_error))
}
