//! The exact spectral norm (ℓ2 → ℓ2 operator norm, the largest singular value) of a layer:
//! for a conv, of the zero-padded, strided, grouped convolution on its real input size.
//!
//! - conv: Lanczos on AᵀA ([`lanczos`]), applying the conv and its transpose
//!   ([`ConvOperator`]) in f64 from a random start seeded by the layer name (reproducible).
//!   Lanczos is power iteration's Krylov refinement: it uses the same conv / transposed-conv
//!   products and every power iterate lies in its search space, so it needs far fewer of
//!   them (on resnet18's layers about 100 instead of ~500 × a block of 6). Plain block power
//!   iteration ([`power_iteration`]) is kept as the baseline `bench norms` times. Small
//!   operators (one side ≤ [`DENSE_LIMIT`]) are built explicitly and decomposed by SVD.
//! - linear: SVD of the weight (faer).
//! - BatchNorm (eval): max |γ| / √(var + eps), the diagonal's largest entry.
//!
//! ## When to stop
//! Both iterations produce Ritz values θ₁ ≥ θ₂ ≥ … of AᵀA and the residual norms
//! r_i = ‖AᵀA y_i − θ_i y_i‖ of their Ritz vectors. Then:
//! - √θ₁ ≤ ‖A‖₂ always (Ritz values never exceed the eigenvalues they approximate): the
//!   reported value is this lower bound;
//! - there is an eigenvalue of AᵀA within r₁ of θ₁ (the Ritz pair is an eigenpair to
//!   relative accuracy r₁/θ₁);
//! - for a split c, if λ_{c+1} ≤ α = θ_{c+1} + r_{c+1} and θ_c > α, the quadratic residual
//!   bound (Temple's inequality for c = 1) gives λ₁ ≤ θ₁ + (r₁² + … + r_c²)/(θ_c − α); the
//!   upper bound is the smallest over c.
//!
//! A step certifies `tol` when r₁ ≤ 2·tol·θ₁ (θ₁ is an eigenvalue to the singular value's
//! relative tol) and upper/lower − 1 ≤ tol; we stop after two certifying steps in a row.
//! The upper bound rests on one assumption, that θ_{c+1} has locked onto λ_{c+1} rather than
//! onto a lower eigenvalue; early in the iteration it does not hold (we measured false
//! "brackets" after 2–3 Lanczos steps), which is why the residual condition on the top pair
//! is required too: it cannot be met before the top Ritz vector is an eigenvector to 2·tol.
//! What remains unprovable without the spectrum is only that this eigenvector is the top
//! one, i.e. that the random start was not orthogonal to it (probability zero). A rule such
//! as "the estimate changed by less than tol" is not used: it stops early on the slowly
//! converging, clustered spectra of conv layers. Reaching the iteration cap returns
//! `converged: false` with the bracket, and callers warn.

use super::conv_operator::ConvOperator;
use super::theorem1::batch_norm_norm;
use crate::models::{layers::BN_EPS, LayerKind, LayerSpec};
use anyhow::{bail, Context, Result};
use faer::{Mat, MatRef, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Operators with min(in, out) dimension at most this are solved by dense SVD.
pub const DENSE_LIMIT: usize = 768;

/// Knobs of the iterations.
#[derive(Debug, Clone, Copy)]
pub struct SpectralOptions {
    /// Relative accuracy of the singular value that the stopping rule certifies.
    pub tol: f64,
    /// Block power iteration: random start vectors iterated together (≥ 2, for the gap).
    pub block: usize,
    /// Lanczos: steps before a restart from the top Ritz vector (bounds the memory to this
    /// many input-sized vectors).
    pub krylov_dim: usize,
    /// Iteration cap (conv + transposed-conv products per start vector); reaching it
    /// returns `converged: false`.
    pub max_iter: usize,
}

impl Default for SpectralOptions {
    /// 1e-5 relative (the accuracy), a block of 6, Lanczos restarts every 200 steps,
    /// at most 3,000 iterations.
    fn default() -> Self {
        Self { tol: 1e-5, block: 6, krylov_dim: 200, max_iter: 3000 }
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
/// its input size: dense SVD for small operators, Lanczos otherwise.
pub fn conv_spectral_norm(spec: &LayerSpec, weight: &[f64], opts: &SpectralOptions) -> Result<SpectralNorm> {
    let op = ConvOperator::new(spec, weight)?;
    if weight.iter().all(|&w| w == 0.0) {
        return Ok(SpectralNorm::exact(0.0));
    }
    if op.in_len().min(op.out_len()) <= DENSE_LIMIT {
        return Ok(SpectralNorm::exact(largest_singular_value(&op.dense_matrix(), op.out_len(), op.in_len())?));
    }
    lanczos(&op, &spec.name, opts)
}

/// Block power iteration with Rayleigh–Ritz on AᵀA (see the module doc for the stopping rule).
pub fn power_iteration(op: &ConvOperator, seed_name: &str, opts: &SpectralOptions) -> Result<SpectralNorm> {
    let n = op.in_len();
    let b = opts.block.max(2).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(seed_name));
    let mut x: Vec<f64> = (0..b * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    orthonormalise(&mut x, n, &mut rng);
    let mut best = SpectralNorm { value: 0.0, upper: f64::INFINITY, iterations: 0, converged: false };
    let mut streak = 0;
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
        let (lower, upper, certified) = bracket(&theta, &resid, opts.tol);
        best = SpectralNorm { value: best.value.max(lower), upper, iterations: it, converged: false };
        streak = if certified { streak + 1 } else { 0 };
        if streak >= 2 {
            best.converged = true;
            return Ok(best);
        }
        x = zr;
        orthonormalise(&mut x, n, &mut rng);
    }
    Ok(best)
}

/// Lanczos on AᵀA with full reorthogonalisation, restarted from the top Ritz vector every
/// `krylov_dim` steps. Ritz values are those of the tridiagonal T, residuals
/// β_j·|last component of T's eigenvector|; the stopping rule is the module doc's. One
/// random start seeded by `seed_name`.
pub fn lanczos(op: &ConvOperator, seed_name: &str, opts: &SpectralOptions) -> Result<SpectralNorm> {
    let n = op.in_len();
    let cycle = opts.krylov_dim.max(2).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(seed_name));
    let mut start: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut best = SpectralNorm { value: 0.0, upper: f64::INFINITY, iterations: 0, converged: false };
    let mut it = 0;
    let mut streak = 0;
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
            let invariant = b <= 1e-14 * theta[0];
            let (lower, upper, certified) = bracket(&theta, &resid, opts.tol);
            best = SpectralNorm { value: best.value.max(lower), upper: if invariant { lower } else { upper }, iterations: it, converged: false };
            streak = if certified { streak + 1 } else { 0 };
            let done = streak >= 2 || invariant;
            if done || j + 1 == cycle || it >= opts.max_iter {
                best.converged = done;
                if done {
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

/// One step's bracket of ‖A‖₂ from the Ritz values θ (decreasing) of AᵀA and their residual
/// norms: (√θ₁, the upper bound of [`upper_bound`], whether the step certifies `tol`: the top
/// Ritz pair is an eigenpair to 2·tol relative, r₁ ≤ 2·tol·θ₁, and upper/lower − 1 ≤ tol).
fn bracket(theta: &[f64], resid: &[f64], tol: f64) -> (f64, f64, bool) {
    let lower = theta[0].sqrt();
    let upper = upper_bound(theta, resid).sqrt().max(lower);
    let certified = theta[0] > 0.0 && resid[0] <= 2.0 * tol * theta[0] && upper / lower - 1.0 <= tol;
    (lower, upper, certified)
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
