//! Adversarial robustness: the losses attacks climb (CE, DLR, targeted DLR), FGSM and PGD,
//! APGD, FAB-T and Square as in AutoAttack, the AutoAttack-style evaluation protocol with its
//! suites (the paper's APGD-CE + APGD-T, AutoAttack's standard four), the accuracy that layer
//! norms alone can certify, and adversarial examples for PGD-AT and TRADES training.
//!
//! Every attack sees a classifier only as a logits function ([`Logits`]), so the same code
//! attacks the CIFAR-10 models (`|x| model.forward(x, false)`: eval-mode BatchNorm, weights
//! entered as constants so a backward pass yields input gradients only) and the theory
//! module's small networks. Every adversarial input an attack returns lies inside the
//! ε-ball (ℓ∞ or ℓ2, [`Norm`]) around its clean input and inside [0, 1]: attacks keep to that
//! set ([`Ball`]) and [`check_in_ball`] verifies it before a result leaves the module.

pub mod adversarial;
pub mod apgd;
pub mod ball;
pub mod certified;
pub mod cli;
pub mod fab;
pub mod fab_projection;
pub mod losses;
pub mod pgd;
pub mod protocol;
pub mod square;
#[cfg(test)]
mod testing;

pub use apgd::{apgd, ApgdConfig};
pub use ball::{check_in_ball, Ball, Norm, BALL_TOLERANCE};
pub use certified::{certify, Certified};
pub use fab::{fab_t, FabConfig};
pub use losses::Loss;
pub use pgd::{fgsm, pgd, PgdConfig};
pub use protocol::{evaluate, evaluate_with_progress, AttackConfig, AttackKind, RobustReport, Suite};
pub use square::{square, SquareConfig};

use anyhow::Result;
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A classifier as the attacks see it: inputs N × … in [0, 1] to logits N × K. It must use
/// fixed statistics (eval mode) so each sample's logits do not depend on the rest of the
/// batch, and should enter its weights as constants so backward passes are input-only.
pub type Logits<'a> = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a;

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

/// Parses an ℓ∞ radius as a fraction `a/b` (`8/255`) or a decimal (`0.0039`, `0`); it must
/// lie in [0, 1], the input range (ℓ2 radii are [`crate::values::Radius`]es, bounded by the
/// configuration that knows the norm).
pub fn parse_eps(text: &str) -> Result<f64> {
    let r = crate::values::Radius::parse(text).map_err(|e| anyhow::anyhow!("ε {e} (expected e.g. 8/255, 1/255, 0.0039 or 0)"))?;
    if r.get() > 1.0 {
        anyhow::bail!("ε '{text}' = {} is outside [0, 1]: inputs are images in [0, 1] (expected e.g. 8/255)", r.get());
    }
    Ok(r.get())
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

/// The random stream of the point at `position` in run `run` of an attack seeded with
/// `seed`: one ChaCha stream per point, so a point's random choices do not depend on which
/// other points share its batch.
pub(crate) fn point_rng(seed: u64, run: u64, position: usize) -> ChaCha8Rng {
    let key = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ run.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut rng = ChaCha8Rng::seed_from_u64(key);
    rng.set_stream(position as u64);
    rng
}

/// Random-start directions t shaped as `x`, row i from [`point_rng`]`(seed, run,
/// positions[i])`: uniform in [−1, 1) for ℓ∞ (`2 * torch.rand - 1`), standard normal for ℓ2
/// (`torch.randn`), as APGD draws them (`autopgd_base.py` lines 206–213).
pub(crate) fn start_directions(x: &Tensor, positions: &[usize], seed: u64, run: u64, norm: Norm) -> Result<Tensor> {
    let per_row = x.elem_count() / x.dim(0)?.max(1);
    let mut values = Vec::with_capacity(positions.len() * per_row);
    for &p in positions {
        let mut rng = point_rng(seed, run, p);
        match norm {
            Norm::Linf => values.extend((0..per_row).map(|_| 2.0 * rng.gen::<f32>() - 1.0)),
            Norm::L2 => values.extend((0..per_row).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn eps_accepts_fractions_and_decimals() {
        assert_eq!(parse_eps("8/255").unwrap(), 8.0 / 255.0);
        assert_eq!(parse_eps("0.0039").unwrap(), 0.0039);
        assert_eq!(parse_eps("0").unwrap(), 0.0);
        for bad in ["", "x", "1/0", "-0.1", "2", "8/", "nan"] {
            assert!(parse_eps(bad).is_err(), "{bad}");
        }
        assert!(parse_eps("2").unwrap_err().to_string().contains("outside [0, 1]"));
    }

    #[test]
    fn start_directions_follow_the_norm_and_the_point() {
        let x = Tensor::zeros((3, 2000), DType::F32, &Device::Cpu).unwrap();
        let u = start_directions(&x, &[0, 1, 2], 7, 0, Norm::Linf).unwrap().to_vec2::<f32>().unwrap();
        assert!(u.iter().flatten().all(|v| (-1.0..1.0).contains(v)));
        let g = start_directions(&x, &[0, 1, 2], 7, 0, Norm::L2).unwrap().to_vec2::<f32>().unwrap();
        let (mean, var) = (g[0].iter().sum::<f32>() / 2000.0, g[0].iter().map(|v| v * v).sum::<f32>() / 2000.0);
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
        assert!(g.iter().flatten().any(|v| v.abs() > 1.0), "Gaussian, not uniform");
        // A point's row depends on its position, not on its batch.
        let alone = start_directions(&x.narrow(0, 0, 1).unwrap(), &[2], 7, 0, Norm::L2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(alone[0], g[2]);
    }

    #[test]
    fn argmax_takes_first_on_ties() {
        assert_eq!(argmax_rows(&[vec![1.0, 3.0, 3.0], vec![2.0, 1.0, 0.0]]), vec![1, 0]);
    }
}
