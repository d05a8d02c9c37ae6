//! The exact McNemar test of two classifiers on the same images: only the discordant images
//! count, b where only the first is right and c where only the second is; under "the two
//! are equally accurate" each discordant image goes either way with probability ½, so
//! b ~ Binomial(b + c, ½), and the two-sided p-value is min(1, 2·P(X ≤ min(b, c))).
//! Pairing removes the images' own difficulty, which two separate intervals keep: two
//! models that differ on few images can be told apart where their intervals overlap.

use statrs::distribution::{Binomial, DiscreteCDF};

/// The outcome of a paired comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// Images only the first classifier got right.
    pub b: u64,
    /// Images only the second got right.
    pub c: u64,
    /// Images compared.
    pub n: u64,
    /// The exact two-sided p-value.
    pub p: f64,
}

impl Paired {
    /// The second's accuracy minus the first's, in the compared images' fractions.
    pub fn difference(&self) -> f64 {
        (self.c as f64 - self.b as f64) / self.n.max(1) as f64
    }
}

/// The exact two-sided McNemar p-value of `b` and `c` discordant pairs (1 when there are none).
pub fn p_value(b: u64, c: u64) -> f64 {
    if b + c == 0 {
        return 1.0;
    }
    let x = Binomial::new(0.5, b + c).expect("p = ½ is a probability");
    (2.0 * x.cdf(b.min(c))).min(1.0)
}

/// Compares `first` and `second`, the per-image correctness of two classifiers on the same
/// images in the same order; `None` when the lists differ in length or are empty.
pub fn mcnemar(first: &[bool], second: &[bool]) -> Option<Paired> {
    if first.len() != second.len() || first.is_empty() {
        return None;
    }
    let b = first.iter().zip(second).filter(|(a, b)| **a && !**b).count() as u64;
    let c = first.iter().zip(second).filter(|(a, b)| !**a && **b).count() as u64;
    Some(Paired { b, c, n: first.len() as u64, p: p_value(b, c) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_p_values() {
        // b = 1, c = 9: P(X ≤ 1) = (C(10,0) + C(10,1))/2¹⁰ = 11/1024; p = 22/1024.
        assert!(close(p_value(1, 9), 22.0 / 1024.0));
        assert!(close(p_value(9, 1), 22.0 / 1024.0), "two-sided: symmetric");
        // b = 2, c = 8: (1 + 10 + 45)/1024 = 56/1024; p = 112/1024.
        assert!(close(p_value(2, 8), 112.0 / 1024.0));
        // b = 0, c = 5: 2 · 1/32.
        assert!(close(p_value(0, 5), 1.0 / 16.0));
        // Balanced: 2 · P(X ≤ 3 of 6) = 2 · 42/64 > 1 → 1; no discordant pair → 1.
        assert_eq!(p_value(3, 3), 1.0);
        assert_eq!(p_value(0, 0), 1.0);
        // b = 40, c = 60: 2 · Σ_{i≤40} C(100, i)/2¹⁰⁰ = 0.0568879336 (exact sum).
        assert!((p_value(40, 60) - 0.056_887_933_64).abs() < 1e-8, "{}", p_value(40, 60));
    }

    #[test]
    fn counts_the_discordant_images() {
        let plain = [true, true, true, false, false, true];
        let other = [true, false, false, false, true, true];
        let t = mcnemar(&plain, &other).unwrap();
        assert_eq!((t.b, t.c, t.n), (2, 1, 6));
        assert!(close(t.p, 1.0), "2 · P(X ≤ 1 of 3) = 2 · 4/8");
        assert!(close(t.difference(), -1.0 / 6.0));
        assert!(mcnemar(&plain, &other[..5]).is_none());
        assert!(mcnemar(&[], &[]).is_none());
    }
}
