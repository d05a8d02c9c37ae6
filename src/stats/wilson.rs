//! The Wilson score interval of a binomial proportion (Wilson 1927): for k successes in n
//! trials and z the normal quantile of the confidence,
//! centre (p̂ + z²/2n) / (1 + z²/n), half-width z/(1 + z²/n) · √(p̂(1−p̂)/n + z²/4n²).
//! Unlike p̂ ± z·√(p̂(1−p̂)/n) it stays inside [0, 1] and keeps its coverage near 0 and 1,
//! where robust accuracies of strongly regularized models can lie.

use statrs::distribution::{ContinuousCDF, Normal};

/// A closed interval [lo, hi] of proportions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// The interval scaled by `f` (fractions to %).
    pub fn scaled(self, f: f64) -> Self {
        Self { lo: self.lo * f, hi: self.hi * f }
    }
}

/// The Wilson interval at `confidence` (e.g. 0.95) of `k` successes in `n` trials; `None`
/// when n = 0 or k > n.
pub fn wilson(k: u64, n: u64, confidence: f64) -> Option<Interval> {
    if n == 0 || k > n || !(0.0..1.0).contains(&confidence) {
        return None;
    }
    let z = Normal::new(0.0, 1.0).expect("the standard normal").inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval { lo: (centre - half).max(0.0), hi: (centre + half).min(1.0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn hand_computed_intervals() {
        // 8 of 10, z = 1.959964, z² = 3.841459: denominator 1.3841459, centre
        // (0.8 + 0.1920729)/1.3841459 = 0.716740, half-width
        // 1.959964/1.3841459 · √(0.016 + 0.0096036) = 1.415999 · 0.1600112 = 0.226576.
        let i = wilson(8, 10, 0.95).unwrap();
        assert!(close(i.lo, 0.490162) && close(i.hi, 0.943318), "{i:?}");
        // 0 of 10: centre = half-width = 0.1920729/1.3841459 = 0.138766 → [0, 0.277533].
        let i = wilson(0, 10, 0.95).unwrap();
        assert!(close(i.lo, 0.0) && close(i.hi, 0.277533), "{i:?}");
        // Symmetric: 10 of 10 mirrors 0 of 10.
        let i = wilson(10, 10, 0.95).unwrap();
        assert!(close(i.lo, 1.0 - 0.277533) && close(i.hi, 1.0), "{i:?}");
        // A wider confidence gives a wider interval; more images a narrower one.
        let (a, b) = (wilson(624, 1024, 0.95).unwrap(), wilson(624, 1024, 0.99).unwrap());
        assert!(b.lo < a.lo && b.hi > a.hi);
        assert!(close(a.lo, 0.579137) && close(a.hi, 0.638796), "{a:?}");
        assert!(wilson(0, 0, 0.95).is_none() && wilson(3, 2, 0.95).is_none());
    }
}
