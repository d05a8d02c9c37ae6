//! Square Attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
//! adversarial attack via random search"), ℓ∞ and ℓ2, as AutoAttack's standard version runs
//! it (fra31/auto-attack, `square.py`; settings from `autoattack.py` lines 42–43 and 320:
//! 5,000 queries, p_init = 0.8, one restart, the margin loss, no schedule rescaling).
//!
//! Random search on the margin m = z_y − max_{j≠y} z_j (`margin_and_loss`, lines 68–86): a
//! candidate replaces the point's best when its margin is lower (for the margin loss,
//! "lower loss or misclassified", lines 272–287, is exactly that), and a point stops once
//! its best is misclassified (lines 244 and 302). Forward passes only: no gradients.
//!
//! - ℓ∞ (lines 233–303): start from vertical stripes x + ε·s, one random sign s per channel
//!   and column, clipped to [0, 1]; each query moves one random square window of side s_p
//!   (every channel by ±2ε, one sign per channel) and projects back onto the ball ∩ [0, 1].
//! - ℓ2 (lines 305–420): start from a 5 × 5 grid of ±`eta` blocks of side ⌊h/5⌋, rescaled to
//!   length ε; each query redistributes the perturbation's mass from a second random window
//!   into the first, adds a fresh ±`eta` pattern there, and rescales the whole perturbation
//!   to length ε before clipping to [0, 1].
//! - The window side follows p(i) (`p_selection`, lines 192–219): p_init halved after query
//!   10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000, s = round(√(p·h·w)) (Python's
//!   round, ties to even), at least 1 (ℓ∞) or 3 and odd (ℓ2), at most min(h, w).
//!
//! The reference draws one window position and one sign pattern per query for the whole
//! batch; here every point draws its own from its own ChaCha stream keyed by (seed, point),
//! in the reference's order, so a point's attack does not depend on its batch — the same
//! distribution per point. Window positions are ⌊(h − s)·u⌋ as `random_int(0, h - s)` draws
//! them (the last position h − s is never drawn, as in the reference).

use super::{argmax_rows, check_in_ball, logits_in_chunks, point_rng, set_rows, Adversarial, Logits, Norm};
use super::fab::batch_of;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The key that separates Square's random streams from the other attacks' (run numbers).
const SQUARE_RUN: u64 = 0x5351_5541_5245; // "SQUARE"

/// Square's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareConfig {
    /// The norm of the ball.
    pub norm: Norm,
    /// Radius in input units.
    pub eps: f64,
    /// Queries after the start (the reference's `n_queries`).
    pub queries: usize,
    /// Initial share of the image a window covers (`p_init`).
    pub p_init: f64,
    /// Seed of the random search.
    pub seed: u64,
    /// Points per forward batch.
    pub batch: usize,
}

impl SquareConfig {
    /// AutoAttack's standard Square: 5,000 queries, p_init = 0.8 (`autoattack.py` lines
    /// 42–43, 320).
    pub fn standard(norm: Norm, eps: f64) -> Self {
        Self { norm, eps, queries: 5000, p_init: 0.8, seed: 0, batch: 256 }
    }

    fn validate(&self, dims: &[usize]) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bail!("Square ε = {} must be a finite number ≥ 0", self.eps);
        }
        if self.queries == 0 || self.batch == 0 {
            bail!("Square needs queries ≥ 1 and batch ≥ 1 (got {}, {})", self.queries, self.batch);
        }
        if !(self.p_init > 0.0 && self.p_init <= 1.0) {
            bail!("Square p_init = {} must lie in (0, 1]", self.p_init);
        }
        let &[_, _, h, w] = dims else {
            bail!("Square attacks images N × C × H × W; got inputs of shape {dims:?}");
        };
        if self.norm == Norm::L2 && h.min(w) < 5 {
            bail!("ℓ2 Square starts from a 5 × 5 grid of blocks: images of {h} × {w} are too small");
        }
        Ok(())
    }
}

/// The share p of the image a window covers at query `it` (`p_selection`, lines 192–219,
/// without rescaling: AutoAttack passes `resc_schedule=False`).
pub fn p_selection(p_init: f64, it: usize) -> f64 {
    let div = match it {
        0..=10 => 1.0,
        11..=50 => 2.0,
        51..=200 => 4.0,
        201..=500 => 8.0,
        501..=1000 => 16.0,
        1001..=2000 => 32.0,
        2001..=4000 => 64.0,
        4001..=6000 => 128.0,
        6001..=8000 => 256.0,
        _ => 512.0,
    };
    p_init / div
}

/// The window side at share `p` on h × w images: round(√(p·h·w)), floored at 1 (ℓ∞) or at 3
/// and made odd (ℓ2), capped at min(h, w) (lines 255–256 and 341–344).
pub fn window_side(norm: Norm, p: f64, h: usize, w: usize) -> usize {
    let s = (p * (h * w) as f64).sqrt().round_ties_even() as usize;
    let s = match norm {
        Norm::Linf => s.max(1),
        Norm::L2 => {
            let s = s.max(3);
            s + s.is_multiple_of(2) as usize
        }
    };
    s.min(h.min(w))
}

/// Runs Square on images `x` (N × C × H × W, values in [0, 1]) with true classes `y`,
/// calling `tick` after every query of every batch. Returns, per point, its first
/// misclassified candidate where one was found, else its lowest-margin one.
pub fn square(f: &Logits, x: &Tensor, y: &[u32], cfg: &SquareConfig, tick: &dyn Fn()) -> Result<Adversarial> {
    cfg.validate(x.dims())?;
    let n = x.dim(0)?;
    if y.len() != n {
        bail!("{} labels for {n} inputs", y.len());
    }
    let mut fooled = vec![false; n];
    if n == 0 {
        return Ok(Adversarial { x_adv: x.clone(), fooled });
    }
    let (c, h, w) = (x.dim(1)?, x.dim(2)?, x.dim(3)?);
    let clean = argmax_rows(&logits_in_chunks(f, x, cfg.batch)?);
    let rows: Vec<Vec<f32>> = x.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let todo: Vec<usize> = (0..n).filter(|&i| clean[i] == y[i]).collect();
    for i in 0..n {
        fooled[i] = clean[i] != y[i];
    }
    let mut x_adv = x.clone();
    for chunk in todo.chunks(cfg.batch) {
        let mut run = Run::start(f, x, &rows, chunk, y, (c, h, w), cfg)?;
        for it in 0..cfg.queries {
            if !run.query(f, x, &rows, it, cfg)? {
                break;
            }
            tick();
        }
        let flat: Vec<f32> = run.points.iter().flat_map(|p| p.best.iter().copied()).collect();
        x_adv = set_rows(&x_adv, chunk, &batch_of(flat, chunk.len(), x)?)?;
        for (&i, p) in chunk.iter().zip(&run.points) {
            fooled[i] = p.done;
        }
    }
    check_in_ball(x, &x_adv, cfg.norm, cfg.eps)?;
    Ok(Adversarial { x_adv, fooled })
}

/// One point's search state.
struct Point {
    /// Position in the caller's inputs (keys its random stream).
    index: usize,
    label: u32,
    rng: ChaCha8Rng,
    /// The lowest-margin input so far (flattened C × H × W).
    best: Vec<f32>,
    margin: f32,
    /// `best` is misclassified: the point is flipped and no longer queried.
    done: bool,
}

/// A batch of points under attack.
struct Run {
    points: Vec<Point>,
    shape: (usize, usize, usize),
}

impl Run {
    /// The starting inputs and their margins (the first query, `n_queries = 1`).
    fn start(f: &Logits, like: &Tensor, rows: &[Vec<f32>], chunk: &[usize], y: &[u32], shape: (usize, usize, usize), cfg: &SquareConfig) -> Result<Self> {
        let (c, h, w) = shape;
        let eps = cfg.eps as f32;
        let mut points: Vec<Point> = chunk
            .iter()
            .map(|&i| {
                let mut rng = point_rng(cfg.seed, SQUARE_RUN, i);
                let x = &rows[i];
                let best = match cfg.norm {
                    // x + ε·s, s one sign per channel and column (`random_choice([n, c, 1, w])`).
                    Norm::Linf => {
                        let signs: Vec<f32> = (0..c * w).map(|_| sign(&mut rng)).collect();
                        (0..c * h * w).map(|j| (x[j] + eps * signs[(j / (h * w)) * w + j % w]).clamp(0.0, 1.0)).collect()
                    }
                    Norm::L2 => {
                        let mut delta = vec![0f32; c * h * w];
                        let s = h / 5;
                        let sp = (h - s * 5) / 2;
                        for bi in 0..h / s {
                            for bj in 0..w / s {
                                let (vh, vw) = (sp + bi * s, sp + bj * s);
                                let pattern = eta(s, rng.gen::<f32>() > 0.5);
                                let signs: Vec<f32> = (0..c).map(|_| sign(&mut rng)).collect();
                                // Blocks past the image's edge are empty slices in the reference.
                                if vh + s > h || vw + s > w {
                                    continue;
                                }
                                for (ch, &sg) in signs.iter().enumerate() {
                                    for r in 0..s {
                                        for q in 0..s {
                                            delta[(ch * h + vh + r) * w + vw + q] += pattern[r * s + q] * sg;
                                        }
                                    }
                                }
                            }
                        }
                        rescaled(x, &delta, eps)
                    }
                };
                Point { index: i, label: y[i], rng, best, margin: f32::INFINITY, done: false }
            })
            .collect();
        let all: Vec<usize> = (0..points.len()).collect();
        let candidates: Vec<Vec<f32>> = points.iter().map(|p| p.best.clone()).collect();
        let (margins, preds) = margins(f, like, &candidates, &points, &all, cfg.batch)?;
        for (k, p) in points.iter_mut().enumerate() {
            p.margin = margins[k];
            p.done = preds[k] != p.label;
        }
        Ok(Self { points, shape })
    }

    /// Query `it`: one candidate per point not yet flipped, kept where its margin is lower.
    /// Returns false when every point is flipped (nothing was queried).
    fn query(&mut self, f: &Logits, like: &Tensor, rows: &[Vec<f32>], it: usize, cfg: &SquareConfig) -> Result<bool> {
        let active: Vec<usize> = (0..self.points.len()).filter(|&k| !self.points[k].done).collect();
        if active.is_empty() {
            return Ok(false);
        }
        let (c, h, w) = self.shape;
        let p = p_selection(cfg.p_init, it);
        let s = window_side(cfg.norm, p, h, w);
        let eps = cfg.eps as f32;
        let candidates: Vec<Vec<f32>> = active
            .iter()
            .map(|&k| {
                let pt = &mut self.points[k];
                let x = &rows[pt.index];
                match cfg.norm {
                    Norm::Linf => linf_candidate(x, &pt.best, &mut pt.rng, (c, h, w), s, eps),
                    Norm::L2 => l2_candidate(x, &pt.best, &mut pt.rng, (c, h, w), s, eps),
                }
            })
            .collect();
        let (margins, preds) = margins(f, like, &candidates, &self.points, &active, cfg.batch)?;
        for (((&k, cand), m), pred) in active.iter().zip(candidates).zip(margins).zip(preds) {
            let pt = &mut self.points[k];
            if m < pt.margin {
                pt.margin = m;
                pt.best = cand;
                pt.done = pred != pt.label;
            }
        }
        Ok(true)
    }
}

/// ℓ∞ candidate (lines 254–266): the best input with one random window moved by ±2ε per
/// channel, projected onto the ball ∩ [0, 1] (only the window changes).
fn linf_candidate(x: &[f32], best: &[f32], rng: &mut ChaCha8Rng, (c, h, w): (usize, usize, usize), s: usize, eps: f32) -> Vec<f32> {
    let vh = random_int(rng, h - s);
    let vw = random_int(rng, w - s);
    let signs: Vec<f32> = (0..c).map(|_| sign(rng)).collect();
    let mut out = best.to_vec();
    for (ch, &sg) in signs.iter().enumerate() {
        for r in vh..vh + s {
            for q in vw..vw + s {
                let j = (ch * h + r) * w + q;
                out[j] = (best[j] + 2.0 * eps * sg).clamp(x[j] - eps, x[j] + eps).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// ℓ2 candidate (lines 339–380): move the perturbation's mass in window 2 and window 1 into
/// window 1 with a fresh ±`eta` pattern, then rescale the whole perturbation to length ε and
/// clip to [0, 1].
fn l2_candidate(x: &[f32], best: &[f32], rng: &mut ChaCha8Rng, (c, h, w): (usize, usize, usize), s: usize, eps: f32) -> Vec<f32> {
    let mut delta: Vec<f32> = best.iter().zip(x).map(|(&b, &a)| b - a).collect();
    let (vh, vw) = (random_int(rng, h - s), random_int(rng, w - s));
    let (vh2, vw2) = (random_int(rng, h - s), random_int(rng, w - s));
    let in1 = |r: usize, q: usize| (vh..vh + s).contains(&r) && (vw..vw + s).contains(&q);
    let in2 = |r: usize, q: usize| (vh2..vh2 + s).contains(&r) && (vw2..vw2 + s).contains(&q);
    let at = |ch: usize, r: usize, q: usize| (ch * h + r) * w + q;
    let norm_image = l2(&delta);
    let pattern = eta(s, rng.gen::<f32>() > 0.5);
    let signs: Vec<f32> = (0..c).map(|_| sign(rng)).collect();
    for (ch, &sg) in signs.iter().enumerate() {
        let window1 = (0..s * s).map(|j| delta[at(ch, vh + j / s, vw + j % s)]);
        let norm_window1 = l2_iter(window1.clone());
        let norm_windows = l2_iter((0..h * w).filter(|&j| in1(j / w, j % w) || in2(j / w, j % w)).map(|j| delta[ch * h * w + j]));
        let mut new: Vec<f32> = window1.zip(&pattern).map(|(d, &e)| e * sg + d / (1e-12 + norm_window1)).collect();
        let budget = ((eps * eps - norm_image * norm_image).max(0.0) / c as f32 + norm_windows * norm_windows).sqrt();
        let scale = budget / (1e-12 + l2(&new));
        new.iter_mut().for_each(|v| *v *= scale);
        for r in vh2..vh2 + s {
            for q in vw2..vw2 + s {
                delta[at(ch, r, q)] = 0.0;
            }
        }
        for (j, v) in new.into_iter().enumerate() {
            delta[at(ch, vh + j / s, vw + j % s)] = v;
        }
    }
    rescaled(x, &delta, eps)
}

/// clip₀₁(x + ε·δ/(‖δ‖₂ + 1e-12)) (`normalize`, lines 121–132).
fn rescaled(x: &[f32], delta: &[f32], eps: f32) -> Vec<f32> {
    let k = eps / (l2(delta) + 1e-12);
    x.iter().zip(delta).map(|(&a, &d)| (a + d * k).clamp(0.0, 1.0)).collect()
}

/// The ℓ2 pattern of side s (`eta`, lines 172–190): a positive nest of squares in the top
/// ⌊s/2⌋ rows and a negative one below, unit length, transposed when `transpose`.
fn eta(s: usize, transpose: bool) -> Vec<f32> {
    let (top, bottom) = (eta_rectangles(s / 2, s), eta_rectangles(s - s / 2, s));
    let mut d: Vec<f32> = top.into_iter().chain(bottom.into_iter().map(|v| -v)).collect();
    let len = l2(&d);
    d.iter_mut().for_each(|v| *v /= len);
    if transpose {
        d = (0..s * s).map(|j| d[(j % s) * s + j / s]).collect();
    }
    d
}

/// `eta_rectangles(x, y)` (lines 143–157): nested rectangles centred at (x/2, y/2), the k-th
/// (k = 0, 1, …) of side 2k + 1 adding 1/(k + 1)², normalised to unit length (rows × cols).
fn eta_rectangles(rows: usize, cols: usize) -> Vec<f32> {
    let mut d = vec![0f32; rows * cols];
    if rows == 0 {
        return d;
    }
    let (xc, yc) = (rows / 2 + 1, cols / 2 + 1);
    let (mut c0, mut c1) = (xc as i64 - 1, yc as i64 - 1);
    for k in 0..xc.max(yc) as i64 {
        let (r0, r1) = (c0.max(0) as usize, ((c0 + 2 * k + 1) as usize).min(rows));
        let (q0, q1) = (c1.max(0) as usize, ((c1 + 2 * k + 1) as usize).min(cols));
        for r in r0..r1 {
            for q in q0..q1 {
                d[r * cols + q] += 1.0 / ((k + 1) * (k + 1)) as f32;
            }
        }
        c0 -= 1;
        c1 -= 1;
    }
    let len = l2(&d);
    d.iter_mut().for_each(|v| *v /= len);
    d
}

/// Margins z_y − max_{j≠y} z_j and predictions of `candidates` (rows of the points
/// `active`), one batched forward pass.
fn margins(f: &Logits, like: &Tensor, candidates: &[Vec<f32>], points: &[Point], active: &[usize], batch: usize) -> Result<(Vec<f32>, Vec<u32>)> {
    let flat: Vec<f32> = candidates.iter().flatten().copied().collect();
    let logits = logits_in_chunks(f, &batch_of(flat, candidates.len(), like)?, batch)?;
    let preds = argmax_rows(&logits);
    let margins = logits
        .iter()
        .zip(active)
        .map(|(row, &k)| {
            let y = points[k].label as usize;
            let other = row.iter().enumerate().filter(|&(j, _)| j != y).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
            row[y] - other
        })
        .collect();
    Ok((margins, preds))
}

/// `random_int(0, n)`: ⌊n·u⌋, u uniform in [0, 1).
fn random_int(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (n as f64 * rng.gen::<f64>()) as usize
}

/// `random_choice`: sign(2u − 1), u uniform in [0, 1) (0 with probability ~2⁻²⁴, as in the
/// reference).
fn sign(rng: &mut ChaCha8Rng) -> f32 {
    let t = 2.0 * rng.gen::<f32>() - 1.0;
    if t > 0.0 {
        1.0
    } else if t < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn l2(v: &[f32]) -> f32 {
    l2_iter(v.iter().copied())
}

fn l2_iter(v: impl Iterator<Item = f32>) -> f32 {
    v.map(|a| a as f64 * a as f64).sum::<f64>().sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_and_window_sides_match_the_reference() {
        let p: Vec<f64> = [0, 10, 11, 50, 51, 200, 201, 500, 1000, 2000, 4000, 4001, 4999].iter().map(|&i| p_selection(0.8, i)).collect();
        let want = [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.00625];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
        // 32 × 32: √(0.8·1024) = 28.6 → 29; the ℓ2 sides are odd and at least 3.
        let linf: Vec<usize> = [0.8, 0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125, 0.0015625].iter().map(|&p| window_side(Norm::Linf, p, 32, 32)).collect();
        assert_eq!(linf, vec![29, 20, 14, 10, 7, 5, 4, 3, 2, 1]);
        let l2: Vec<usize> = [0.8, 0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625].iter().map(|&p| window_side(Norm::L2, p, 32, 32)).collect();
        assert_eq!(l2, vec![29, 21, 15, 11, 7, 5, 5, 3]);
        // Python rounds half to even: √(0.25·36·...) — side 2.5 rounds to 2, 3.5 to 4.
        assert_eq!(window_side(Norm::Linf, 6.25 / 100.0, 10, 10), 2);
        assert_eq!(window_side(Norm::Linf, 12.25 / 100.0, 10, 10), 4);
    }

    #[test]
    fn eta_patterns_have_unit_length_and_opposite_halves() {
        // eta_rectangles(2, 4): centre (1, 2); k = 0 adds 1 at (1, 2); k = 1 adds 1/4 over
        // rows 0..2, cols 1..4; k = 2 adds 1/9 over rows 0..2, cols 0..4.
        let r = eta_rectangles(2, 4);
        let raw = [1.0 / 9.0, 1.0 / 9.0 + 0.25, 1.0 / 9.0 + 0.25, 1.0 / 9.0 + 0.25, 1.0 / 9.0, 1.0 / 9.0 + 0.25, 1.0 + 1.0 / 9.0 + 0.25, 1.0 / 9.0 + 0.25];
        let len = raw.iter().map(|v: &f64| v * v).sum::<f64>().sqrt();
        for (a, b) in r.iter().zip(raw) {
            assert!((*a as f64 - b / len).abs() < 1e-6, "{r:?}");
        }
        for s in [3, 4, 5, 29] {
            let e = eta(s, false);
            assert!((l2(&e) - 1.0).abs() < 1e-5);
            let top: f32 = e[..(s / 2) * s].iter().sum();
            let bottom: f32 = e[(s / 2) * s..].iter().sum();
            assert!(top > 0.0 && bottom < 0.0, "s = {s}");
            let t = eta(s, true);
            assert_eq!(t[1], e[s], "transposed");
        }
    }

    /// A linear classifier on 3 × 8 × 8 images whose class-1 logit grows with the mean of
    /// the top-left 4 × 4 corner of channel 0 (a window the search must hit).
    fn corner_model() -> impl Fn(&Tensor) -> candle_core::Result<Tensor> {
        let mut w = vec![0f32; 3 * 64 * 2];
        for r in 0..4 {
            for q in 0..4 {
                w[(r * 8 + q) * 2 + 1] = 1.0 / 16.0;
            }
        }
        let w = Tensor::from_vec(w, (192, 2), &Device::Cpu).unwrap();
        let b = Tensor::new(&[[0.0f32, -0.6]], &Device::Cpu).unwrap();
        move |x: &Tensor| x.flatten_from(1)?.matmul(&w)?.broadcast_add(&b)
    }

    #[test]
    fn square_finds_a_flip_inside_the_ball_and_never_leaves_it() {
        // Images at 0.5: z = (0, 0.5 − 0.6) → class 0, margin 0.1. Raising the corner's mean
        // by 0.1 flips it: within ℓ∞ ε = 0.15 (every corner pixel +0.15), not at ℓ∞ 0.05, and
        // never within ℓ2 0.35 (the shortest flip, +0.1 on each of the 16 corner pixels, has
        // length 0.4). At ℓ2 the random search spends most of its budget outside the corner:
        // AutoAttack's own Square (pyautoattack 0.2, 300 queries, seeds 0–2) flips none of the
        // four images at ε = 0.6 (nor with 5,000 queries), one of twelve at 1.2 and all at
        // 1.5 — so 1.5 is the ℓ2 case here.
        let f = corner_model();
        let x = Tensor::full(0.5f32, (4, 3, 8, 8), &Device::Cpu).unwrap();
        let y = vec![0u32; 4];
        for (norm, eps, flips) in [(Norm::Linf, 0.15, true), (Norm::L2, 1.5, true), (Norm::Linf, 0.05, false), (Norm::L2, 0.35, false)] {
            let cfg = SquareConfig { queries: 300, seed: 3, batch: 3, ..SquareConfig::standard(norm, eps) };
            let adv = square(&f, &x, &y, &cfg, &|| {}).unwrap();
            assert_eq!(adv.fooled, vec![flips; 4], "{norm} ε = {eps}");
            check_in_ball(&x, &adv.x_adv, norm, eps).unwrap();
            let preds = argmax_rows(&logits_in_chunks(&f, &adv.x_adv, 8).unwrap());
            assert!(preds.iter().all(|&p| (p == 1) == flips));
            // Same seed, same result; a point's search does not depend on its batch.
            let again = square(&f, &x, &y, &SquareConfig { batch: 4, ..cfg.clone() }, &|| {}).unwrap();
            let (a, b) = (adv.x_adv.flatten_all().unwrap().to_vec1::<f32>().unwrap(), again.x_adv.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            assert_eq!(a, b);
        }
    }

    #[test]
    fn square_rejects_what_it_cannot_attack() {
        let f = corner_model();
        let flat = Tensor::zeros((2, 192), DType::F32, &Device::Cpu).unwrap();
        assert!(square(&f, &flat, &[0, 0], &SquareConfig::standard(Norm::Linf, 0.1), &|| {}).unwrap_err().to_string().contains("N × C × H × W"));
        let tiny = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(square(&f, &tiny, &[0], &SquareConfig::standard(Norm::L2, 0.1), &|| {}).is_err());
    }
}
