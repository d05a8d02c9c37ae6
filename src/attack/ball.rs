//! The threat model: which norm bounds a perturbation ([`Norm`]), the feasible set of an
//! attack — the ε-ball around a clean input intersected with the image range [0, 1]
//! ([`Ball`]) — and the check every adversarial input passes before it leaves the module
//! ([`check_in_ball`]).
//!
//! The ℓ2 projection is AutoAttack's (`autopgd_base.py` lines 338–340): rescale the
//! perturbation δ = z − x to length min(ε, ‖δ‖₂), then clip to [0, 1]. That is not the exact
//! Euclidean projection onto ball ∩ box, but it lands inside both: clipping moves every
//! coordinate towards x (x itself lies in [0, 1]), so it never lengthens δ.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// How far (absolute, in input units) a returned ℓ∞ perturbation may exceed ε or stray
/// outside [0, 1] before [`check_in_ball`] calls it a bug: f32 rounding of `x ± ε` is ~1e-7.
pub const BALL_TOLERANCE: f64 = 1e-6;

/// How far a returned ℓ2 perturbation may exceed ε, relative to ε (plus [`BALL_TOLERANCE`]):
/// f32 rescaling of a 3,072-entry perturbation to length ε and adding it to x round its
/// length by a few 1e-6 at most.
pub const L2_RELATIVE_TOLERANCE: f64 = 1e-5;

/// The norm that bounds a perturbation. Written `linf` / `l2` in plans, on the command line
/// and in results columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// max_i |δ_i| (the paper's threat model).
    #[default]
    Linf,
    /// (Σ_i δ_i²)^½.
    L2,
}

impl Norm {
    /// Both norms.
    pub const ALL: [Norm; 2] = [Norm::Linf, Norm::L2];

    /// The name in plans, on the command line and in results: `linf` or `l2`.
    pub fn name(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }

    /// The symbol for people: ℓ∞ or ℓ2.
    pub fn symbol(self) -> &'static str {
        match self {
            Norm::Linf => "ℓ∞",
            Norm::L2 => "ℓ2",
        }
    }

    /// Parses `linf` or `l2` (case-insensitive); the error lists both.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        match Self::ALL.into_iter().find(|n| n.name() == t) {
            Some(n) => Ok(n),
            None => bail!("unknown norm '{text}': expected linf or l2"),
        }
    }

    /// Whether this is ℓ∞, the default (for `skip_serializing_if`: a default norm leaves a
    /// cell's configuration JSON, and so its id, as it was before norms were a setting).
    pub fn is_linf(&self) -> bool {
        *self == Norm::Linf
    }

    /// The largest radius that is not vacuous for inputs of `dim` values in [0, 1]: the
    /// diameter of the cube [0, 1]^dim, 1 in ℓ∞ and √dim in ℓ2. A larger ball holds the
    /// same images.
    pub fn diameter(self, dim: usize) -> f64 {
        match self {
            Norm::Linf => 1.0,
            Norm::L2 => (dim as f64).sqrt(),
        }
    }

    /// The norm of a host vector, accumulated in f64.
    pub fn of(self, v: impl IntoIterator<Item = f64>) -> f64 {
        match self {
            Norm::Linf => v.into_iter().fold(0.0, |m, a| m.max(a.abs())),
            Norm::L2 => v.into_iter().map(|a| a * a).sum::<f64>().sqrt(),
        }
    }

    /// The norm of each row of `t` (N × …), as a length-N tensor.
    pub fn rows(self, t: &Tensor) -> Result<Tensor> {
        let flat = t.flatten_from(1)?;
        Ok(match self {
            Norm::Linf => flat.abs()?.max(1)?,
            Norm::L2 => flat.sqr()?.sum(1)?.sqrt()?,
        })
    }

    /// Each row of `t` divided by its norm + 1e-12 (AutoAttack's `normalize`,
    /// `autopgd_base.py` lines 176–189): a unit vector, or 0 for a zero row.
    pub fn normalize_rows(self, t: &Tensor) -> Result<Tensor> {
        let norms = (self.rows(t)? + 1e-12)?;
        Ok(t.broadcast_div(&per_row(&norms, t)?)?)
    }
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The feasible set of an attack: the ε-ball (in its norm) around each clean input,
/// intersected with the image range [0, 1].
#[derive(Debug, Clone)]
pub struct Ball {
    set: Set,
}

#[derive(Debug, Clone)]
enum Set {
    /// ℓ∞: the box [max(x − ε, 0), min(x + ε, 1)].
    Box { lo: Tensor, hi: Tensor },
    /// ℓ2: the clean inputs and the radius.
    L2 { x: Tensor, eps: f64 },
}

impl Ball {
    /// The ball of radius `eps` in `norm` around the clean inputs `x` (values in [0, 1]).
    pub fn new(x: &Tensor, norm: Norm, eps: f64) -> Result<Self> {
        let set = match norm {
            Norm::Linf => Set::Box { lo: (x - eps)?.maximum(0f64)?, hi: (x + eps)?.minimum(1f64)? },
            Norm::L2 => Set::L2 { x: x.clone(), eps },
        };
        Ok(Self { set })
    }

    /// A point of the set near `z`: for ℓ∞ the nearest (elementwise clamp to the box), for
    /// ℓ2 AutoAttack's rescale-then-clip (see the module doc).
    pub fn project(&self, z: &Tensor) -> Result<Tensor> {
        match &self.set {
            Set::Box { lo, hi } => Ok(z.maximum(lo)?.minimum(hi)?),
            Set::L2 { x, eps } => {
                let delta = (z - x)?;
                let len = Norm::L2.rows(&delta)?;
                let scale = (len.clamp(0f64, *eps)? / (&len + 1e-12)?)?;
                Ok((x + delta.broadcast_mul(&per_row(&scale, &delta)?)?)?.clamp(0f64, 1f64)?)
            }
        }
    }

    /// The sets of the inputs at positions `idx` (dimension 0).
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        let set = match &self.set {
            Set::Box { lo, hi } => Set::Box { lo: lo.index_select(idx, 0)?, hi: hi.index_select(idx, 0)? },
            Set::L2 { x, eps } => Set::L2 { x: x.index_select(idx, 0)?, eps: *eps },
        };
        Ok(Self { set })
    }
}

/// Errors unless every row of `x_adv` lies within `eps` of its row of `x` in `norm` and
/// inside [0, 1], up to the tolerances above: the invariant every attack promises, checked on
/// every result. Distances are computed on the host in f64.
pub fn check_in_ball(x: &Tensor, x_adv: &Tensor, norm: Norm, eps: f64) -> Result<()> {
    if x.dims() != x_adv.dims() {
        bail!("adversarial inputs have shape {:?}, clean inputs {:?}", x_adv.dims(), x.dims());
    }
    if x.elem_count() == 0 {
        return Ok(());
    }
    let rows = |t: &Tensor| -> Result<Vec<Vec<f32>>> { Ok(t.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?) };
    let (a, b) = (rows(x)?, rows(x_adv)?);
    let allowed = match norm {
        Norm::Linf => eps + BALL_TOLERANCE,
        Norm::L2 => eps * (1.0 + L2_RELATIVE_TOLERANCE) + BALL_TOLERANCE,
    };
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for (i, (ra, rb)) in a.iter().zip(&b).enumerate() {
        let dist = norm.of(ra.iter().zip(rb).map(|(&p, &q)| q as f64 - p as f64));
        if dist.is_nan() || dist > allowed {
            bail!("attack bug: adversarial input {i} lies {dist:e} from its clean input in {}, beyond ε = {eps:e}", norm.symbol());
        }
        for &v in rb {
            if v.is_nan() {
                bail!("attack bug: adversarial input {i} holds NaN");
            }
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if (lo as f64) < -BALL_TOLERANCE || hi as f64 > 1.0 + BALL_TOLERANCE {
        bail!("attack bug: adversarial inputs span [{lo}, {hi}], outside the image range [0, 1]");
    }
    Ok(())
}

/// A length-N tensor shaped N × 1 × … × 1 to broadcast against `like`.
pub(crate) fn per_row(v: &Tensor, like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = v.dim(0)?;
    Ok(v.reshape(shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn linf_projection_stays_inside_and_check_catches_escapes() {
        let d = Device::Cpu;
        let x = Tensor::new(&[[0.0f32, 0.5, 1.0, 0.02]], &d).unwrap();
        let ball = Ball::new(&x, Norm::Linf, 0.1).unwrap();
        let z = Tensor::new(&[[-1.0f32, 0.9, 0.95, 0.1]], &d).unwrap();
        let p = ball.project(&z).unwrap();
        let v = p.to_vec2::<f32>().unwrap();
        assert_eq!(v[0][0], 0.0);
        assert!((v[0][1] - 0.6).abs() < 1e-6);
        assert_eq!(v[0][2], 0.95);
        assert!((v[0][3] - 0.1).abs() < 1e-6);
        check_in_ball(&x, &p, Norm::Linf, 0.1).unwrap();
        assert!(check_in_ball(&x, &z, Norm::Linf, 0.1).is_err(), "outside the ball and [0, 1]");
        let over = Tensor::new(&[[0.0f32, 0.5, 1.0, 0.2]], &d).unwrap();
        assert!(check_in_ball(&x, &over, Norm::Linf, 0.1).is_err(), "0.18 from the clean input");
        let neg = Tensor::new(&[[-0.05f32, 0.5, 1.0, 0.02]], &d).unwrap();
        assert!(check_in_ball(&x, &neg, Norm::Linf, 0.1).is_err(), "below 0");
    }

    #[test]
    fn l2_projection_stays_on_the_ball_and_in_the_box() {
        let d = Device::Cpu;
        // Row 0: δ = (0.3, 0.4), length 0.5 → rescaled to 0.25: (0.15, 0.2), inside [0, 1].
        // Row 1: already inside (length 0.1): unchanged. Row 2: rescaled, then clipped at 1
        // (which shortens it further).
        let x = Tensor::new(&[[0.5f32, 0.5], [0.2, 0.2], [0.9, 0.5]], &d).unwrap();
        let z = Tensor::new(&[[0.8f32, 0.9], [0.26, 0.28], [1.9, 0.5]], &d).unwrap();
        let ball = Ball::new(&x, Norm::L2, 0.25).unwrap();
        let p = ball.project(&z).unwrap().to_vec2::<f32>().unwrap();
        assert!((p[0][0] - 0.65).abs() < 1e-6 && (p[0][1] - 0.7).abs() < 1e-6, "{p:?}");
        assert!((p[1][0] - 0.26).abs() < 1e-6 && (p[1][1] - 0.28).abs() < 1e-6, "{p:?}");
        assert_eq!(p[2], vec![1.0, 0.5]);
        let pt = ball.project(&z).unwrap();
        check_in_ball(&x, &pt, Norm::L2, 0.25).unwrap();
        // ℓ2 and ℓ∞ checks differ: (0.15, 0.2) is 0.25 in ℓ2 but only 0.2 in ℓ∞.
        assert!(check_in_ball(&x, &pt, Norm::L2, 0.24).is_err());
        check_in_ball(&x, &pt, Norm::Linf, 0.2).unwrap();
        // Selecting rows keeps each row's own centre.
        let one = ball.select(&Tensor::new(&[2u32], &d).unwrap()).unwrap();
        let q = one.project(&Tensor::new(&[[0.9f32, 0.0]], &d).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert!((q[0][0] - 0.9).abs() < 1e-6 && (q[0][1] - 0.25).abs() < 1e-6, "{q:?}");
    }

    #[test]
    fn norms_parse_and_measure() {
        assert_eq!(Norm::parse(" L2 ").unwrap(), Norm::L2);
        assert!(Norm::parse("l1").unwrap_err().to_string().contains("linf or l2"));
        assert_eq!(Norm::Linf.of([0.5, -2.0, 1.0]), 2.0);
        assert_eq!(Norm::L2.of([3.0, -4.0]), 5.0);
        assert_eq!(Norm::L2.diameter(4), 2.0);
        let t = Tensor::new(&[[3.0f32, -4.0], [0.0, 0.0]], &candle_core::Device::Cpu).unwrap();
        assert_eq!(Norm::L2.rows(&t).unwrap().to_vec1::<f32>().unwrap(), vec![5.0, 0.0]);
        assert_eq!(Norm::Linf.normalize_rows(&t).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0.75, -1.0], vec![0.0, 0.0]]);
    }
}
