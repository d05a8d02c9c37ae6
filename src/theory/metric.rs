//! The input norm a statement is about (ℓ∞ or ℓ2): distances, the dual norm that bounds an
//! affine map over a ball, and the direction that attains a distance.

use serde::{Deserialize, Serialize};

/// The norm of input perturbations: the ε-ball is `{x : ‖x − x₀‖ ≤ ε}` in this norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InputNorm {
    /// Max absolute coordinate (the paper's and AutoAttack's threat model).
    Linf,
    /// Euclidean.
    L2,
}

impl InputNorm {
    /// `linf` or `l2`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linf => "linf",
            Self::L2 => "l2",
        }
    }

    /// ‖a − b‖ in this norm.
    pub fn distance(self, a: &[f64], b: &[f64]) -> f64 {
        let diffs = a.iter().zip(b).map(|(x, y)| (x - y).abs());
        match self {
            Self::Linf => diffs.fold(0.0, f64::max),
            Self::L2 => diffs.map(|d| d * d).sum::<f64>().sqrt(),
        }
    }

    /// The dual norm ‖w‖_* (ℓ1 for ℓ∞, ℓ2 for ℓ2): by Hölder, an affine map `⟨w, x⟩ + b`
    /// varies by exactly ±ε‖w‖_* over an ε-ball, which makes the first layer's bounds exact.
    pub fn dual(self, w: &[f64]) -> f64 {
        match self {
            Self::Linf => w.iter().map(|v| v.abs()).sum(),
            Self::L2 => w.iter().map(|v| v * v).sum::<f64>().sqrt(),
        }
    }

    /// A vector `w` with ‖w‖_* = 1 and ⟨w, d⟩ = ‖d‖ (the direction in which `d`'s length
    /// is measured): `d/‖d‖₂` for ℓ2, `sign(d_k)·e_k` at the largest |d_k| for ℓ∞. `d ≠ 0`.
    pub fn dual_direction(self, d: &[f64]) -> Vec<f64> {
        match self {
            Self::Linf => {
                let k = (0..d.len()).fold(0, |best, k| if d[k].abs() > d[best].abs() { k } else { best });
                let mut w = vec![0.0; d.len()];
                w[k] = d[k].signum();
                w
            }
            Self::L2 => {
                let n = self.distance(d, &vec![0.0; d.len()]);
                d.iter().map(|v| v / n).collect()
            }
        }
    }
}

impl std::fmt::Display for InputNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_direction_attains_the_distance_with_unit_dual_norm() {
        let d = [0.3, -0.7, 0.1];
        for norm in [InputNorm::Linf, InputNorm::L2] {
            let w = norm.dual_direction(&d);
            let dot: f64 = w.iter().zip(&d).map(|(a, b)| a * b).sum();
            assert!((dot - norm.distance(&d, &[0.0; 3])).abs() < 1e-12, "{norm}");
            assert!((norm.dual(&w) - 1.0).abs() < 1e-12, "{norm}");
        }
        assert_eq!(InputNorm::Linf.distance(&d, &[0.0; 3]), 0.7);
    }
}
