//! The one check every loaded weight passes before any number is computed from it: no NaN
//! or infinite value in any tensor (BatchNorm's running statistics included), and every
//! BatchNorm running variance > 0. A NaN weight would otherwise surface much later as an
//! SVD that does not converge, a Lipschitz bound of 0 or an accuracy that looks real.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use std::path::Path;

/// The suffix of BatchNorm's running variance in a state_dict.
pub const RUNNING_VAR: &str = ".running_var";

/// What is wrong with one tensor's values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BadValues {
    /// NaN entries.
    pub nan: usize,
    /// +∞ or −∞ entries.
    pub inf: usize,
    /// Finite entries ≤ 0 where only positive values are valid (running variances).
    pub non_positive: usize,
    /// Entries in the tensor.
    pub total: usize,
}

impl BadValues {
    /// Counts the invalid entries of `t`; `positive` asks that every finite entry be > 0.
    /// Integer tensors (BatchNorm's `num_batches_tracked`) cannot be invalid.
    pub fn of(t: &Tensor, positive: bool) -> Result<Self> {
        let mut bad = Self { total: t.elem_count(), ..Self::default() };
        if !matches!(t.dtype(), DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
            return Ok(bad);
        }
        let values = t.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        for v in values {
            if v.is_nan() {
                bad.nan += 1;
            } else if v.is_infinite() {
                bad.inf += 1;
            } else if positive && v <= 0.0 {
                bad.non_positive += 1;
            }
        }
        Ok(bad)
    }

    /// Whether every entry is valid.
    pub fn is_clean(&self) -> bool {
        self.nan + self.inf + self.non_positive == 0
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.nan > 0 {
            parts.push(format!("{} NaN", self.nan));
        }
        if self.inf > 0 {
            parts.push(format!("{} infinite", self.inf));
        }
        if self.non_positive > 0 {
            parts.push(format!("{} ≤ 0", self.non_positive));
        }
        let why = if self.non_positive > 0 { " (a BatchNorm running variance must be > 0)" } else { "" };
        format!("{} of {} values{why}", parts.join(", "), self.total)
    }
}

/// Refuses weights with invalid values, naming every bad tensor of `source` with its counts
/// in one error. `tensors` are (state_dict name, tensor); names ending in `.running_var`
/// must also be > 0.
pub fn check_weights<'a>(source: &Path, tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Result<()> {
    let mut problems = Vec::new();
    for (name, t) in tensors {
        let bad = BadValues::of(t, name.ends_with(RUNNING_VAR))?;
        if !bad.is_clean() {
            problems.push(format!("{name}: {}", bad.describe()));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: invalid weights in {} tensor(s), so no numbers are computed from them:\n  {}\nThe file is damaged or comes from a run that diverged: use an earlier checkpoint, or retrain.",
            source.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn counts_each_kind_of_bad_value() {
        let t = Tensor::new(&[1.0f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -2.0], &Device::Cpu).unwrap();
        assert_eq!(BadValues::of(&t, false).unwrap(), BadValues { nan: 1, inf: 2, non_positive: 0, total: 6 });
        assert_eq!(BadValues::of(&t, true).unwrap(), BadValues { nan: 1, inf: 2, non_positive: 2, total: 6 });
        let ints = Tensor::new(&[-1i64], &Device::Cpu).unwrap();
        assert!(BadValues::of(&ints, true).unwrap().is_clean());
    }

    #[test]
    fn names_every_bad_tensor_in_one_error() {
        let ok = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let nan = Tensor::new(&[f32::NAN, 2.0], &Device::Cpu).unwrap();
        let var = Tensor::new(&[0.5f32, -1.0, 0.0], &Device::Cpu).unwrap();
        let weights = [("a.weight", &ok), ("b.weight", &nan), ("b.running_var", &var), ("c.running_mean", &var)];
        let e = check_weights(Path::new("x.pt"), weights).unwrap_err().to_string();
        assert!(e.contains("x.pt") && e.contains("2 tensor(s)"), "{e}");
        assert!(e.contains("b.weight: 1 NaN of 2 values"), "{e}");
        assert!(e.contains("b.running_var: 2 ≤ 0"), "{e}");
        assert!(!e.contains("a.weight") && !e.contains("c.running_mean"), "{e}");
        check_weights(Path::new("x.pt"), [("a.weight", &ok), ("c.running_mean", &var)]).unwrap();
    }
}
