//! The exact spectral norm (ℓ2 → ℓ2 operator norm, the largest singular value) of a layer:
//! for a conv, of the zero-padded, strided, grouped convolution on its real input size.
//!
//! - conv: block power iteration (subspace iteration with Rayleigh–Ritz) on AᵀA, applying
//!   the conv and its transpose ([`ConvOperator`]) in f64, from a block of random starts
//!   seeded by the layer name (so the result is reproducible). Small operators (one side
//!   ≤ [`DENSE_LIMIT`]) are built explicitly and decomposed by SVD instead.
//! - linear: SVD of the weight (faer).
//! - BatchNorm (eval): max |γ| / √(var + eps), the diagonal's largest entry.
//!
//! ## When to stop
//! With Ritz values θ₁ ≥ … ≥ θ_b of AᵀA on the current block and residual norms
//! r_i = ‖AᵀA x_i − θ_i x_i‖ of the Ritz vectors:
//! - √θ₁ is a lower bound of ‖A‖₂, unconditionally (Ritz values never exceed the
//!   eigenvalues they approximate);
//! - for a split c of the block, if the next eigenvalue λ_{c+1} ≤ α = θ_{c+1} + r_{c+1} and
//!   θ_c > α, the block quadratic residual bound (Temple's inequality for c = 1) gives
//!   λ₁ ≤ θ₁ + (r₁² + … + r_c²)/(θ_c − α). We take the smallest such upper bound over c.
//!
//! Iteration stops when upper/lower − 1 ≤ `tol` on the singular value. The upper bound
//! assumes that the Ritz value θ_{c+1} has locked onto λ_{c+1} (it cannot be one of the
//! eigenvalues above it), which holds once the block has captured the top of the spectrum,
//! as subspace iteration from random starts does; unlike a "the estimate stopped changing"
//! rule, it cannot stop early on a slowly converging layer, because the residuals stay
//! large until the top singular vector has actually been found. When the iteration cap is
//! reached first, the result says `converged: false` with its bracket, and callers warn.

use super::conv_operator::ConvOperator;
use super::theorem1::batch_norm_norm;
use crate::models::{layers::BN_EPS, LayerKind, LayerSpec};
use anyhow::{bail, Context, Result};
use faer::{Mat, MatRef, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Operators with min(in, out) dimension at most this are solved by dense SVD.
pub const DENSE_LIMIT: usize = 768;

/// Knobs of the power iteration.
#[derive(Debug, Clone, Copy)]
pub struct SpectralOptions {
    /// Relative accuracy of the singular value that the stopping rule certifies.
    pub tol: f64,
    /// Random start vectors iterated together (≥ 2, for the gap estimate).
    pub block: usize,
    /// Iteration cap; reaching it returns `converged: false`.
    pub max_iter: usize,
}

impl Default for SpectralOptions {
    /// 1e-5 relative (the accuracy), a block of 6, at most 3,000 iterations.
    fn default() -> Self {
        Self { tol: 1e-5, block: 6, max_iter: 3000 }
    }
}

impl SpectralOptions {
    /// The defaults with another tolerance.
    pub fn with_tol(tol: f64) -> Self {
        Self { tol, ..Self::default() }
    }
}

/// A spectral norm with the bracket that certifies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectralNorm {
    /// The estimate: the largest Ritz value's square root (a guaranteed lower bound).
    pub value: f64,
    /// The upper bound from the residuals (equal to `value` for exact methods).
    pub upper: f64,
    /// Power iterations done (0 for exact methods).
    pub iterations: usize,
    /// Whether upper/value − 1 ≤ tol was reached.
    pub converged: bool,
}

impl SpectralNorm {
    fn exact(value: f64) -> Self {
        Self { value, upper: value, iterations: 0, converged: true }
    }
}

/// The spectral norm of any layer kind; `running_var` is needed for BatchNorm.
pub fn layer_spectral_norm(spec: &LayerSpec, weight: &[f64], running_var: Option<&[f64]>, opts: &SpectralOptions) -> Result<SpectralNorm> {
    match spec.kind {
        LayerKind::Bn => {
            let var = running_var.with_context(|| format!("{}: BatchNorm's spectral norm needs its running_var", spec.name))?;
            if var.len() != weight.len() {
                bail!("{}: {} γ values but {} running variances", spec.name, weight.len(), var.len());
            }
            Ok(SpectralNorm::exact(batch_norm_norm(weight, var, BN_EPS).value))
        }
        LayerKind::Linear => {
            if weight.len() != spec.out_c * spec.in_c {
                bail!("{}: weight has {} values, expected {}x{}", spec.name, weight.len(), spec.out_c, spec.in_c);
            }
            Ok(SpectralNorm::exact(largest_singular_value(weight, spec.out_c, spec.in_c)?))
        }
        LayerKind::Conv => conv_spectral_norm(spec, weight, opts),
    }
}

/// The largest singular value of a row-major `rows × cols` matrix (faer SVD).
pub fn largest_singular_value(a: &[f64], rows: usize, cols: usize) -> Result<f64> {
    if rows == 0 || cols == 0 {
        return Ok(0.0);
    }
    let m = MatRef::from_row_major_slice(a, rows, cols);
    let s = m.singular_values().map_err(|e| anyhow::anyhow!("SVD did not converge: {e:?}"))?;
    Ok(s.first().copied().unwrap_or(0.0))
}

/// The spectral norm of the zero-padded conv `spec` with `weight` (PyTorch layout, f64) on
/// its input size: dense SVD for small operators, block power iteration otherwise.
pub fn conv_spectral_norm(spec: &LayerSpec, weight: &[f64], opts: &SpectralOptions) -> Result<SpectralNorm> {
    let op = ConvOperator::new(spec, weight)?;
    if weight.iter().all(|&w| w == 0.0) {
        return Ok(SpectralNorm::exact(0.0));
    }
    if op.in_len().min(op.out_len()) <= DENSE_LIMIT {
        return Ok(SpectralNorm::exact(largest_singular_value(&op.dense_matrix(), op.out_len(), op.in_len())?));
    }
    power_iteration(&op, &spec.name, opts)
}

/// Block power iteration with Rayleigh–Ritz on AᵀA (see the module doc for the stopping rule).
pub fn power_iteration(op: &ConvOperator, seed_name: &str, opts: &SpectralOptions) -> Result<SpectralNorm> {
    let n = op.in_len();
    let b = opts.block.max(2).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(seed_name));
    let mut x: Vec<f64> = (0..b * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    orthonormalise(&mut x, n, &mut rng);
    let mut best = SpectralNorm { value: 0.0, upper: f64::INFINITY, iterations: 0, converged: false };
    for it in 1..=opts.max_iter {
        let y = op.apply(&x, b);
        let z = op.apply_transpose(&y, b);
        // H = Xᵀ AᵀA X = Yᵀ Y, symmetric b × b.
        let m = op.out_len();
        let h = Mat::from_fn(b, b, |i, j| dot(&y[i * m..][..m], &y[j * m..][..m]));
        let eig = h.self_adjoint_eigen(Side::Lower).map_err(|e| anyhow::anyhow!("eigensolver failed: {e:?}"))?;
        // Ritz pairs in decreasing order.
        let order: Vec<usize> = (0..b).rev().collect();
        let theta: Vec<f64> = order.iter().map(|&k| eig.S().column_vector()[k].max(0.0)).collect();
        let v = eig.U();
        let mut xr = vec![0f64; b * n];
        let mut zr = vec![0f64; b * n];
        for (p, &k) in order.iter().enumerate() {
            for q in 0..b {
                let c = v[(q, k)];
                axpy(&mut xr[p * n..][..n], c, &x[q * n..][..n]);
                axpy(&mut zr[p * n..][..n], c, &z[q * n..][..n]);
            }
        }
        let resid: Vec<f64> = (0..b)
            .map(|p| {
                let (zp, xp) = (&zr[p * n..][..n], &xr[p * n..][..n]);
                zp.iter().zip(xp).map(|(a, c)| (a - theta[p] * c).powi(2)).sum::<f64>().sqrt()
            })
            .collect();
        let upper_sq = upper_bound(&theta, &resid);
        let lower = theta[0].sqrt();
        let upper = upper_sq.sqrt().max(lower);
        if lower > best.value || upper < best.upper {
            best = SpectralNorm { value: lower.max(best.value), upper: upper.min(best.upper), iterations: it, converged: false };
        }
        best.iterations = it;
        if best.value > 0.0 && best.upper / best.value - 1.0 <= opts.tol {
            best.converged = true;
            return Ok(best);
        }
        x = zr;
        orthonormalise(&mut x, n, &mut rng);
    }
    Ok(best)
}

/// Lanczos on AᵀA (the Krylov method on the same products as power iteration: every
/// iterate of power iteration lies in its Krylov space, so it converges at least as fast,
/// and far faster on the clustered spectra of conv layers), with full
/// reorthogonalisation, restarted from the top Ritz vector every `block · 40` steps to bound
/// memory. Ritz values of the tridiagonal T are lower bounds, residuals are
/// β_j·|last component of the Ritz vector|, and the stopping rule is the one of the module
/// doc. One random start seeded by `seed_name`.
pub fn lanczos(op: &ConvOperator, seed_name: &str, opts: &SpectralOptions) -> Result<SpectralNorm> {
    let n = op.in_len();
    let cycle = (opts.block.max(2) * 40).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(seed_name));
    let mut start: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut best = SpectralNorm { value: 0.0, upper: f64::INFINITY, iterations: 0, converged: false };
    let mut it = 0;
    while it < opts.max_iter {
        let norm = dot(&start, &start).sqrt();
        start.iter_mut().for_each(|v| *v /= norm);
        let mut q: Vec<Vec<f64>> = vec![start.clone()];
        let (mut alpha, mut beta): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        let mut top_ritz: Option<Vec<f64>> = None;
        for j in 0..cycle {
            it += 1;
            let mut w = op.apply_transpose(&op.apply(&q[j], 1), 1);
            alpha.push(dot(&q[j], &w));
            for _ in 0..2 {
                for qi in &q {
                    let c = dot(qi, &w);
                    axpy(&mut w, -c, qi);
                }
            }
            let b = dot(&w, &w).sqrt();
            // Ritz pairs of the (j+1)×(j+1) tridiagonal.
            let k = j + 1;
            let t = Mat::from_fn(k, k, |r, c| {
                if r == c {
                    alpha[r]
                } else if r + 1 == c || c + 1 == r {
                    beta[r.min(c)]
                } else {
                    0.0
                }
            });
            let eig = t.self_adjoint_eigen(Side::Lower).map_err(|e| anyhow::anyhow!("eigensolver failed: {e:?}"))?;
            let order: Vec<usize> = (0..k).rev().collect();
            let theta: Vec<f64> = order.iter().map(|&i| eig.S().column_vector()[i].max(0.0)).collect();
            let resid: Vec<f64> = order.iter().map(|&i| b * eig.U()[(k - 1, i)].abs()).collect();
            let lower = theta[0].sqrt();
            let upper = if b <= 1e-14 * theta[0] { lower } else { upper_bound(&theta, &resid).sqrt().max(lower) };
            best.value = best.value.max(lower);
            best.upper = best.upper.min(upper);
            best.iterations = it;
            let done = best.value > 0.0 && best.upper / best.value - 1.0 <= opts.tol;
            if done || j + 1 == cycle || it >= opts.max_iter || b <= 1e-14 * theta[0] {
                best.converged = done || b <= 1e-14 * theta[0];
                if best.converged {
                    return Ok(best);
                }
                let mut y = vec![0f64; n];
                for (i, qi) in q.iter().enumerate() {
                    axpy(&mut y, eig.U()[(i, order[0])], qi);
                }
                top_ritz = Some(y);
                break;
            }
            beta.push(b);
            q.push(w.iter().map(|v| v / b).collect());
        }
        start = top_ritz.expect("a Lanczos cycle ends with its top Ritz vector");
    }
    Ok(best)
}

/// The smallest certified upper bound of λ₁ over the splits of the block (module doc);
/// infinity when no split has a positive gap yet.
fn upper_bound(theta: &[f64], resid: &[f64]) -> f64 {
    let mut best = f64::INFINITY;
    let mut r_sq = 0.0;
    for c in 1..theta.len() {
        r_sq += resid[c - 1].powi(2);
        let alpha = theta[c] + resid[c];
        let gap = theta[c - 1] - alpha;
        if gap > 0.0 {
            best = best.min(theta[0] + r_sq / gap);
        }
    }
    best
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(dst: &mut [f64], c: f64, src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += c * s;
    }
}

/// Modified Gram–Schmidt, twice, over `b = x.len() / n` contiguous vectors; a vector that
/// collapses (the operator's null space) is replaced by a fresh random one.
fn orthonormalise(x: &mut [f64], n: usize, rng: &mut ChaCha8Rng) {
    let b = x.len() / n;
    for p in 0..b {
        for attempt in 0..4 {
            let before = dot(&x[p * n..][..n], &x[p * n..][..n]).sqrt();
            for _ in 0..2 {
                for q in 0..p {
                    let (done, rest) = x.split_at_mut(p * n);
                    let (xq, xp) = (&done[q * n..][..n], &mut rest[..n]);
                    let c = dot(xq, xp);
                    axpy(xp, -c, xq);
                }
            }
            let xp = &mut x[p * n..][..n];
            let norm = dot(xp, xp).sqrt();
            if norm > 1e-10 * before.max(f64::MIN_POSITIVE) && norm > 0.0 {
                xp.iter_mut().for_each(|v| *v /= norm);
                break;
            }
            assert!(attempt < 3, "cannot orthonormalise a block of {b} vectors in dimension {n}");
            xp.iter_mut().for_each(|v| *v = rng.gen_range(-1.0..1.0));
        }
    }
}

/// A stable 64-bit hash of a layer name (FNV-1a), to seed its random starts.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, c| (h ^ c as u64).wrapping_mul(0x0100_0000_01b3))
}
