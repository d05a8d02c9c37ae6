//! Adversarial robustness: the losses attacks climb (CE, DLR, targeted DLR), FGSM and PGD,
//! APGD as in AutoAttack, the AutoAttack-style evaluation protocol, the accuracy that layer
//! norms alone can certify, and adversarial examples for PGD-AT and TRADES training.
//!
//! Every attack sees a classifier only as a logits function ([`Logits`]), so the same code
//! attacks the CIFAR-10 models (`|x| model.forward(x, false)`: eval-mode BatchNorm, weights
//! entered as constants so a backward pass yields input gradients only) and the theory
//! module's small networks. Every adversarial input an attack returns lies inside the
//! ℓ∞ ε-ball around its clean input and inside [0, 1]: attacks project onto that box
//! ([`Ball`]) and [`check_in_ball`] verifies it before a result leaves the module.

pub mod adversarial;
pub mod apgd;
pub mod certified;
pub mod cli;
pub mod losses;
pub mod pgd;
pub mod protocol;
#[cfg(test)]
mod testing;

pub use apgd::{apgd, ApgdConfig};
pub use certified::{certify, Certified};
pub use losses::Loss;
pub use pgd::{fgsm, pgd, PgdConfig};
pub use protocol::{evaluate, evaluate_with_progress, AttackConfig, AttackKind, RobustReport};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A classifier as the attacks see it: inputs N × … in [0, 1] to logits N × K. It must use
/// fixed statistics (eval mode) so each sample's logits do not depend on the rest of the
/// batch, and should enter its weights as constants so backward passes are input-only.
pub type Logits<'a> = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a;

/// How far (absolute, in input units) a returned input may stray outside the ε-ball or
/// [0, 1] before [`check_in_ball`] calls it a bug: f32 rounding of `x ± ε` is ~1e-7.
pub const BALL_TOLERANCE: f64 = 1e-6;

/// What an attack returns: one input per clean input, and whether the attack reached a
/// misclassified one.
#[derive(Debug, Clone)]
pub struct Adversarial {
    /// N × … inputs, each inside its clean input's ε-ball and [0, 1]: the misclassified
    /// input where `fooled`, else the highest-loss input the attack reached.
    pub x_adv: Tensor,
    /// Per input: whether the classifier misclassifies `x_adv` (as the attack observed it).
    pub fooled: Vec<bool>,
}

/// The feasible set of an ℓ∞ attack: the box [max(x − ε, 0), min(x + ε, 1)] around each
/// clean input, where the ε-ball meets the valid image range.
#[derive(Debug, Clone)]
pub struct Ball {
    lo: Tensor,
    hi: Tensor,
}

impl Ball {
    /// The box around the clean inputs `x` (values in [0, 1]) of radius `eps`.
    pub fn new(x: &Tensor, eps: f64) -> Result<Self> {
        let lo = (x - eps)?.maximum(0f64)?;
        let hi = (x + eps)?.minimum(1f64)?;
        Ok(Self { lo, hi })
    }

    /// The nearest point of the box (elementwise clamp), i.e. the ℓ∞ projection
    /// clamp(min(max(z, x − ε), x + ε), 0, 1) in two operations.
    pub fn project(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.maximum(&self.lo)?.minimum(&self.hi)?)
    }

    /// The boxes of the inputs at positions `idx` (dimension 0).
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self { lo: self.lo.index_select(idx, 0)?, hi: self.hi.index_select(idx, 0)? })
    }
}

/// Errors unless every `x_adv` lies within `eps` (ℓ∞) of `x` and inside [0, 1], up to
/// [`BALL_TOLERANCE`]: the invariant every attack promises, checked on every result.
pub fn check_in_ball(x: &Tensor, x_adv: &Tensor, eps: f64) -> Result<()> {
    if x.dims() != x_adv.dims() {
        bail!("adversarial inputs have shape {:?}, clean inputs {:?}", x_adv.dims(), x.dims());
    }
    if x.elem_count() == 0 {
        return Ok(());
    }
    let dist = scalar(&(x_adv - x)?.abs()?.max_all()?)?;
    let lo = scalar(&x_adv.min_all()?)?;
    let hi = scalar(&x_adv.max_all()?)?;
    if dist.is_nan() || dist > eps + BALL_TOLERANCE {
        bail!("attack bug: an adversarial input lies {dist:e} from its clean input in ℓ∞, beyond ε = {eps:e}");
    }
    if lo.is_nan() || hi.is_nan() || lo < -BALL_TOLERANCE || hi > 1.0 + BALL_TOLERANCE {
        bail!("attack bug: adversarial inputs span [{lo}, {hi}], outside the image range [0, 1]");
    }
    Ok(())
}

/// Parses an ℓ∞ radius as a fraction `a/b` (`8/255`) or a decimal (`0.0039`, `0`); it must
/// lie in [0, 1], the input range.
pub fn parse_eps(text: &str) -> Result<f64> {
    let t = text.trim();
    let value = match t.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a.trim().parse().with_context(|| format!("ε '{text}': numerator '{a}' is not a number (expected e.g. 8/255)"))?;
            let b: f64 = b.trim().parse().with_context(|| format!("ε '{text}': denominator '{b}' is not a number (expected e.g. 8/255)"))?;
            if b == 0.0 {
                bail!("ε '{text}' divides by zero (expected e.g. 8/255)");
            }
            a / b
        }
        None => t.parse().with_context(|| format!("ε '{text}' is not a number or fraction (expected e.g. 8/255, 1/255, 0.0039 or 0)"))?,
    };
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        bail!("ε '{text}' = {value} is outside [0, 1]: inputs are images in [0, 1] (expected e.g. 8/255)");
    }
    Ok(value)
}

/// The index of the largest logit of each row (the first on ties, as PyTorch's `max`).
pub fn argmax_rows(logits: &[Vec<f32>]) -> Vec<u32> {
    logits
        .iter()
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// Logits of `x` in chunks of `batch` rows, on the host (N rows of K values).
pub fn logits_in_chunks(f: &Logits, x: &Tensor, batch: usize) -> Result<Vec<Vec<f32>>> {
    let n = x.dim(0)?;
    let mut rows = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let z = f(&x.narrow(0, start, len)?)?;
        rows.extend(z.to_dtype(DType::F32)?.to_vec2::<f32>()?);
        start += len;
    }
    Ok(rows)
}

/// A per-sample value (length N) shaped N × 1 × … × 1 to broadcast against `like`.
pub(crate) fn per_sample(values: &[f32], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = values.len();
    Ok(Tensor::from_slice(values, shape, like.device())?.to_dtype(like.dtype())?)
}

/// A per-sample boolean mask shaped N × 1 × … × 1 and broadcast to `like`'s shape, for
/// `where_cond` row selection.
pub(crate) fn row_mask(mask: &[bool], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = mask.len();
    let m: Vec<u8> = mask.iter().map(|&b| b as u8).collect();
    Ok(Tensor::from_vec(m, shape, like.device())?.broadcast_as(like.shape())?)
}

/// Row indices as a u32 tensor on `like`'s device.
pub(crate) fn index_tensor(idx: &[usize], like: &Tensor) -> Result<Tensor> {
    let v: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v, idx.len(), like.device())?)
}

/// Random-start directions t, uniform in [−1, 1), shaped as `x`: row i is drawn from its own
/// ChaCha stream keyed by (`seed`, `run`, `positions[i]`), so a point's start does not depend
/// on which other points share its batch.
pub(crate) fn uniform_directions(x: &Tensor, positions: &[usize], seed: u64, run: u64) -> Result<Tensor> {
    let per_row = x.elem_count() / x.dim(0)?.max(1);
    let mut values = Vec::with_capacity(positions.len() * per_row);
    let key = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ run.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for &p in positions {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        rng.set_stream(p as u64);
        values.extend((0..per_row).map(|_| 2.0 * rng.gen::<f32>() - 1.0));
    }
    Ok(Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// `full` with rows `idx` replaced by `rows` (exactly: scattered onto zeros, then selected).
pub(crate) fn set_rows(full: &Tensor, idx: &[usize], rows: &Tensor) -> Result<Tensor> {
    if idx.is_empty() {
        return Ok(full.clone());
    }
    let scattered = full.zeros_like()?.index_add(&index_tensor(idx, full)?, rows, 0)?;
    let mut mask = vec![false; full.dim(0)?];
    for &i in idx {
        mask[i] = true;
    }
    Ok(row_mask(&mask, full)?.where_cond(&scattered, full)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn eps_accepts_fractions_and_decimals() {
        assert_eq!(parse_eps("8/255").unwrap(), 8.0 / 255.0);
        assert_eq!(parse_eps("1/255").unwrap(), 1.0 / 255.0);
        assert_eq!(parse_eps("0.0039").unwrap(), 0.0039);
        assert_eq!(parse_eps("0").unwrap(), 0.0);
        for bad in ["", "x", "1/0", "-0.1", "2", "8/", "nan"] {
            assert!(parse_eps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ball_projection_stays_inside_and_check_catches_escapes() {
        let d = Device::Cpu;
        let x = Tensor::new(&[[0.0f32, 0.5, 1.0, 0.02]], &d).unwrap();
        let ball = Ball::new(&x, 0.1).unwrap();
        let z = Tensor::new(&[[-1.0f32, 0.9, 0.95, 0.1]], &d).unwrap();
        let p = ball.project(&z).unwrap();
        let v = p.to_vec2::<f32>().unwrap();
        assert_eq!(v[0][0], 0.0);
        assert!((v[0][1] - 0.6).abs() < 1e-6);
        assert_eq!(v[0][2], 0.95);
        assert!((v[0][3] - 0.1).abs() < 1e-6);
        check_in_ball(&x, &p, 0.1).unwrap();
        assert!(check_in_ball(&x, &z, 0.1).is_err(), "outside the ball and [0, 1]");
        let over = Tensor::new(&[[0.0f32, 0.5, 1.0, 0.2]], &d).unwrap();
        assert!(check_in_ball(&x, &over, 0.1).is_err(), "0.18 from the clean input");
        let neg = Tensor::new(&[[-0.05f32, 0.5, 1.0, 0.02]], &d).unwrap();
        assert!(check_in_ball(&x, &neg, 0.1).is_err(), "below 0");
    }

    #[test]
    fn argmax_takes_first_on_ties() {
        assert_eq!(argmax_rows(&[vec![1.0, 3.0, 3.0], vec![2.0, 1.0, 0.0]]), vec![1, 0]);
    }
}
