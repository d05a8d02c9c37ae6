//! FAB's projection onto a hyperplane inside the image box (`fab_projections.py`,
//! `projection_linf` lines 7–59 and `projection_l2` lines 62–114): the smallest perturbation
//! d, in ℓ∞ or ℓ2, with w·(t + d) = b and t + d ∈ [0, 1]^n; where the box holds no point of
//! the hyperplane, the box corner that moves w·x furthest towards b.
//!
//! Both reduce to one monotone scalar equation. Flip signs so that c = w·t − b ≥ 0 must be
//! removed; coordinate i then moves towards its corner a_i (0 where w_i > 0, 1 where w_i < 0)
//! and has room p_i = |a_i − t_i|. With a multiplier λ ≥ 0 the optimal move is
//! - ℓ∞: |d_i| = min(λ, p_i) (every free coordinate moves by the same λ);
//! - ℓ2: |d_i| = min(λ·|w_i|, p_i) (the KKT point −λ·w, clipped to the box);
//!
//! and the decrease g(λ) = Σ |w_i|·|d_i| is piecewise linear and increasing, with a kink
//! where coordinate i saturates (λ = p_i in ℓ∞, p_i/|w_i| in ℓ2). The reference finds the
//! segment holding g(λ) = c by bisection over the sorted kinks; here one sweep over them
//! does, with the same result. Coordinates whose weight is 0 (ℓ∞) or below 1e-8 in absolute
//! value (ℓ2, as the reference masks them) do not move.

use super::Norm;

/// Writes into `d` the projection step of `t` onto {x : w·x = b} ∩ [0, 1]^n in `norm` (see
/// the module doc). `t`, `w` and `d` have one entry per input coordinate.
pub fn project(norm: Norm, t: &[f32], w: &[f32], b: f64, d: &mut [f32]) {
    debug_assert!(t.len() == w.len() && w.len() == d.len());
    let c = t.iter().zip(w).map(|(&ti, &wi)| ti as f64 * wi as f64).sum::<f64>() - b;
    // The reference flips so that c ≥ 0 (`2 * (c >= 0) - 1`).
    let flip = if c >= 0.0 { 1.0 } else { -1.0 };
    let c = c * flip;
    // Per moving coordinate: (kink, slope it contributes before the kink, decrease at it).
    let mut kinks: Vec<(f64, f64, f64)> = Vec::with_capacity(t.len());
    let mut full = 0.0;
    for (i, (&ti, &wi)) in t.iter().zip(w).enumerate() {
        let wi = wi as f64 * flip;
        if !moves(norm, wi) {
            d[i] = 0.0;
            continue;
        }
        let room = if wi > 0.0 { ti as f64 } else { 1.0 - ti as f64 };
        let aw = wi.abs();
        let kink = match norm {
            Norm::Linf => (room, aw),
            Norm::L2 => (room / aw, aw * aw),
        };
        kinks.push((kink.0, kink.1, aw * room));
        full += aw * room;
    }
    let lambda = if c >= full {
        // No point of the hyperplane in the box: every coordinate goes to its corner.
        f64::INFINITY
    } else {
        solve(&mut kinks, c)
    };
    for (i, (&ti, &wi)) in t.iter().zip(w).enumerate() {
        let wi = wi as f64 * flip;
        if !moves(norm, wi) {
            continue;
        }
        let room = if wi > 0.0 { ti as f64 } else { 1.0 - ti as f64 };
        let step = match norm {
            Norm::Linf => lambda.min(room),
            Norm::L2 => (lambda * wi.abs()).min(room),
        };
        d[i] = (-wi.signum() * step) as f32;
    }
}

/// Whether a coordinate with (sign-flipped) weight `w` moves at all.
fn moves(norm: Norm, w: f64) -> bool {
    match norm {
        Norm::Linf => w != 0.0,
        Norm::L2 => w.abs() > 1e-8,
    }
}

/// The λ ≥ 0 with g(λ) = c for g(λ) = Σ_i min(λ·slope_i, decrease_i) written through its
/// kinks (λ_i, slope_i, decrease_i = λ_i·slope_i); c lies below g's maximum.
fn solve(kinks: &mut [(f64, f64, f64)], c: f64) -> f64 {
    kinks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut slope: f64 = kinks.iter().map(|k| k.1).sum();
    let mut saturated = 0.0;
    for &(kink, s, dec) in kinks.iter() {
        if saturated + kink * slope >= c {
            break;
        }
        saturated += dec;
        slope -= s;
    }
    if slope <= 0.0 {
        return f64::INFINITY;
    }
    ((c - saturated) / slope).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    #[test]
    fn linf_projection_moves_every_free_coordinate_by_the_same_amount() {
        // Hyperplane x0 + 2·x1 = 1 from t = (0.5, 0.5) (w·t = 1.5): decrease 0.5 with
        // |w|₁ = 3 → λ = 1/6, both coordinates down by 1/6.
        let (t, w) = ([0.5f32, 0.5], [1.0f32, 2.0]);
        let mut d = [0f32; 2];
        project(Norm::Linf, &t, &w, 1.0, &mut d);
        assert!((d[0] + 1.0 / 6.0).abs() < 1e-6 && (d[1] + 1.0 / 6.0).abs() < 1e-6, "{d:?}");
        // From t = (0.05, 0.5) to x0 + 2·x1 = 0.45 (c = 0.6): x0 saturates at 0.05, so
        // 0.05 + 2λ = 0.6 → λ = 0.275 for x1.
        let t = [0.05f32, 0.5];
        project(Norm::Linf, &t, &w, 0.45, &mut d);
        assert!((d[0] + 0.05).abs() < 1e-6 && (d[1] + 0.275).abs() < 1e-6, "{d:?}");
        let moved: Vec<f32> = t.iter().zip(&d).map(|(a, b)| a + b).collect();
        assert!((dot(&moved, &w) - 0.45).abs() < 1e-6);
        // Unreachable inside the box (w·x ≥ 0 there, b = −1): the corner (0, 0).
        project(Norm::Linf, &t, &w, -1.0, &mut d);
        assert!((d[0] + 0.05).abs() < 1e-7 && (d[1] + 0.5).abs() < 1e-7, "{d:?}");
        // The other side: b above w·t moves up; a zero weight never moves.
        let mut d3 = [0f32; 3];
        project(Norm::Linf, &[0.5, 0.5, 0.5], &[1.0, -1.0, 0.0], 0.4, &mut d3);
        assert!((d3[0] - 0.2).abs() < 1e-6 && (d3[1] + 0.2).abs() < 1e-6 && d3[2] == 0.0, "{d3:?}");
    }

    #[test]
    fn l2_projection_is_the_clipped_orthogonal_step() {
        // Inside the box: d = −(c/‖w‖²)·w, the orthogonal projection.
        let (t, w) = ([0.5f32, 0.5], [1.0f32, 2.0]);
        let mut d = [0f32; 2];
        project(Norm::L2, &t, &w, 1.0, &mut d);
        assert!((d[0] + 0.1).abs() < 1e-6 && (d[1] + 0.2).abs() < 1e-6, "{d:?}");
        // x1 would leave the box: it stops at 0 and x0 carries the rest.
        // t = (0.5, 0.1), w = (1, 2), b = 0.3: c = 0.4. Unclipped λ = 0.08 would move x1 by
        // 0.16 > 0.1, so x1 saturates (decrease 0.2) and x0 moves 0.2 (λ = 0.2 ≥ 0.1/2).
        let t = [0.5f32, 0.1];
        project(Norm::L2, &t, &w, 0.3, &mut d);
        assert!((d[0] + 0.2).abs() < 1e-6 && (d[1] + 0.1).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn projections_are_no_longer_than_any_other_feasible_move() {
        // Random instances: the projection lands on the hyperplane and no random feasible
        // point of the hyperplane is closer.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for norm in Norm::ALL {
            for _ in 0..50 {
                let n = 6;
                let t: Vec<f32> = (0..n).map(|_| rng.gen_range(0.1..0.9)).collect();
                let w: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let b = dot(&t, &w) + rng.gen_range(-0.3..0.3);
                let mut d = vec![0f32; n];
                project(norm, &t, &w, b, &mut d);
                let x: Vec<f32> = t.iter().zip(&d).map(|(a, b)| a + b).collect();
                assert!(x.iter().all(|&v| (-1e-6..=1.0 + 1e-6).contains(&v)));
                if (dot(&x, &w) - b).abs() > 1e-5 {
                    continue; // unreachable in the box: the corner
                }
                let best = norm.of(d.iter().map(|&v| v as f64));
                for _ in 0..200 {
                    // A random feasible point of the hyperplane: move along w to it.
                    let mut y: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..1.0)).collect();
                    let gap = (b - dot(&y, &w)) / dot(&w, &w);
                    y.iter_mut().zip(&w).for_each(|(v, &wi)| *v += (gap * wi as f64) as f32);
                    if y.iter().any(|&v| !(0.0..=1.0).contains(&v)) {
                        continue;
                    }
                    let other = norm.of(y.iter().zip(&t).map(|(&a, &b)| a as f64 - b as f64));
                    assert!(best <= other + 1e-5, "{norm}: projection {best} beaten by {other}");
                }
            }
        }
    }
}
