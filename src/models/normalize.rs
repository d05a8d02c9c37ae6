//! Input normalization as the first layer of a model: x ↦ (x − μ_c) / σ_c per colour
//! channel, as many PyTorch models (RobustBench's zoo among them) apply inside the network
//! to images in [0, 1]. It comes from `--normalize cifar10` or from a checkpoint's `mu` /
//! `sigma` tensors (RobustBench's registered buffers, shape 1×3×1×1).
//!
//! For the norms it is a diagonal affine map: its shift cancels in every difference of
//! outputs, and its linear part diag(1/σ_c) has ℓ1 = ℓ∞ = spectral norm = max_c 1/σ_c. That
//! factor enters the model's Lipschitz bounds ([`super::Model::lipschitz_bound`]), so
//! certified accuracies stay sound for inputs in pixel units; the per-layer norm tables are
//! of the layers after it and do not change.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

/// The CIFAR-10 channel means RobustBench uses (`CIFAR10_MEAN`).
pub const CIFAR10_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
/// The CIFAR-10 channel standard deviations RobustBench uses (`CIFAR10_STD`).
pub const CIFAR10_STD: [f64; 3] = [0.2471, 0.2435, 0.2616];

/// The state_dict name of the means (RobustBench's buffer).
pub const MU: &str = "mu";
/// The state_dict name of the standard deviations.
pub const SIGMA: &str = "sigma";

/// What `--normalize` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NormalizeArg {
    /// CIFAR-10's mean (0.4914, 0.4822, 0.4465) and std (0.2471, 0.2435, 0.2616).
    Cifar10,
    /// No normalization: the model takes pixels in [0, 1].
    None,
}

/// Per-channel input normalization.
#[derive(Debug, Clone)]
pub struct Normalization {
    /// μ per channel.
    pub mean: [f64; 3],
    /// σ per channel (all > 0).
    pub std: [f64; 3],
    /// Where it came from, for the output (`--normalize cifar10`, `mu/sigma in FILE`).
    pub origin: String,
    mean_t: Tensor,
    std_t: Tensor,
}

impl Normalization {
    /// μ and σ from `origin`, with tensors on `device`; σ must be finite and > 0.
    pub fn new(mean: [f64; 3], std: [f64; 3], origin: &str, device: &Device) -> Result<Self> {
        if !mean.iter().chain(&std).all(|v| v.is_finite()) || std.iter().any(|&s| s <= 0.0) {
            bail!("{origin}: input normalization needs finite means and standard deviations > 0, got mean {mean:?}, std {std:?}");
        }
        let t = |v: [f64; 3]| Tensor::new(&v.map(|x| x as f32), device)?.reshape((1, 3, 1, 1));
        Ok(Self { mean, std, origin: origin.to_string(), mean_t: t(mean)?, std_t: t(std)? })
    }

    /// CIFAR-10's statistics, as `--normalize cifar10` gives them.
    pub fn cifar10(device: &Device) -> Result<Self> {
        Self::new(CIFAR10_MEAN, CIFAR10_STD, "--normalize cifar10", device)
    }

    /// μ and σ read from a checkpoint's `mu` and `sigma` tensors (3 values each).
    pub fn from_tensors(mu: &Tensor, sigma: &Tensor, origin: &str, device: &Device) -> Result<Self> {
        let three = |t: &Tensor, name: &str| -> Result<[f64; 3]> {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            match <[f64; 3]>::try_from(v.as_slice()) {
                Ok(a) => Ok(a),
                Err(_) => bail!("{origin}: '{name}' has shape {:?}; input normalization needs one value per colour channel (3)", t.dims()),
            }
        };
        Self::new(three(mu, MU)?, three(sigma, SIGMA)?, origin, device)
    }

    /// (x − μ) / σ per channel, on a batch N × 3 × H × W.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_sub(&self.mean_t)?.broadcast_div(&self.std_t)
    }

    /// The ℓ1, ℓ∞ and spectral norm of the map's linear part diag(1/σ): max_c 1/σ_c.
    pub fn lipschitz_factor(&self) -> f64 {
        self.std.iter().map(|s| 1.0 / s).fold(0.0, f64::max)
    }

    /// Whether `other` has the same statistics to 1e-6 (their origins aside).
    pub fn same_values(&self, other: &Normalization) -> bool {
        self.mean.iter().chain(&self.std).zip(other.mean.iter().chain(&other.std)).all(|(a, b)| (a - b).abs() <= 1e-6)
    }

    /// `mu` and `sigma` as RobustBench registers them (1×3×1×1, f32, CPU), for saving.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![(MU.into(), self.mean_t.to_device(&Device::Cpu)?), (SIGMA.into(), self.std_t.to_device(&Device::Cpu)?)])
    }

    /// The statistics, their origin and the Lipschitz factor as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "mean": self.mean, "std": self.std, "origin": self.origin, "lipschitz_factor": self.lipschitz_factor() })
    }

    /// One line for the commands' output.
    pub fn describe(&self) -> String {
        let f = |v: [f64; 3]| v.map(|x| format!("{x:.4}")).join(", ");
        format!(
            "input normalization ({}): mean ({}), std ({}); a diagonal map with l1 = linf = spectral norm = max 1/std = {:.4}, a factor of the Lipschitz bounds",
            self.origin,
            f(self.mean),
            f(self.std),
            self.lipschitz_factor()
        )
    }
}

/// The normalization a model gets: from the checkpoint's `mu`/`sigma` when it holds them,
/// else from `--normalize` (none when the flag is absent). A flag that contradicts the
/// checkpoint is an error that names both.
pub fn resolve(arg: Option<NormalizeArg>, from_file: Option<Normalization>, device: &Device) -> Result<Option<Normalization>> {
    let from_flag = match arg {
        Some(NormalizeArg::Cifar10) => Some(Normalization::cifar10(device)?),
        Some(NormalizeArg::None) | None => None,
    };
    match (arg, from_file, from_flag) {
        (None, file, _) => Ok(file),
        (Some(_), None, flag) => Ok(flag),
        (Some(NormalizeArg::None), Some(file), _) => {
            bail!("--normalize none, but {} holds the model's own normalization (mean {:?}, std {:?}): leave out --normalize", file.origin, file.mean, file.std)
        }
        (Some(_), Some(file), Some(flag)) if flag.same_values(&file) => Ok(Some(file)),
        (Some(_), Some(file), flag) => bail!(
            "{} holds mean {:?}, std {:?}, which differ from {} (mean {:?}, std {:?}): leave out --normalize to use the checkpoint's",
            file.origin,
            file.mean,
            file.std,
            flag.as_ref().map_or("--normalize", |f| f.origin.as_str()),
            flag.as_ref().map(|f| f.mean),
            flag.as_ref().map(|f| f.std)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_per_channel_and_bounds_by_the_smallest_std() {
        let n = Normalization::cifar10(&Device::Cpu).unwrap();
        let x = Tensor::ones((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let y = n.forward(&x).unwrap();
        let flat = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for c in 0..3 {
            let want = ((1.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]) as f32;
            assert!((flat[c * 16] - want).abs() < 1e-5, "channel {c}");
        }
        assert!((n.lipschitz_factor() - 1.0 / 0.2435).abs() < 1e-12);
    }

    #[test]
    fn flag_and_checkpoint_must_agree() {
        let cpu = Device::Cpu;
        let file = || Normalization::new([0.5; 3], [0.5; 3], "mu/sigma in x.pt", &cpu).unwrap();
        assert!(resolve(None, None, &cpu).unwrap().is_none());
        assert_eq!(resolve(None, Some(file()), &cpu).unwrap().unwrap().mean, [0.5; 3]);
        assert_eq!(resolve(Some(NormalizeArg::Cifar10), None, &cpu).unwrap().unwrap().std, CIFAR10_STD);
        let e = resolve(Some(NormalizeArg::None), Some(file()), &cpu).unwrap_err().to_string();
        assert!(e.contains("x.pt") && e.contains("leave out --normalize"), "{e}");
        let e = resolve(Some(NormalizeArg::Cifar10), Some(file()), &cpu).unwrap_err().to_string();
        assert!(e.contains("differ"), "{e}");
        let same = Normalization::new(CIFAR10_MEAN, CIFAR10_STD, "mu/sigma in y.pt", &cpu).unwrap();
        assert_eq!(resolve(Some(NormalizeArg::Cifar10), Some(same), &cpu).unwrap().unwrap().origin, "mu/sigma in y.pt");
        assert!(Normalization::new([0.0; 3], [0.2, 0.0, 0.2], "t", &cpu).is_err());
    }
}
