//! Mean and sample standard deviation of a setting's accuracies over seeds.

/// Mean ± sd of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanSd {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (n − 1 in the denominator); 0 for one value.
    pub sd: f64,
    /// How many values.
    pub n: usize,
}

/// Mean and sample sd of the finite values of `xs`; `None` when there are none.
pub fn mean_sd(xs: impl IntoIterator<Item = f64>) -> Option<MeanSd> {
    let v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    Some(MeanSd { mean, sd, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // 2, 4, 9: mean 5, squared deviations 9 + 1 + 16 = 26, sd = √13.
        let m = mean_sd([2.0, 4.0, 9.0, f64::NAN]).unwrap();
        assert_eq!((m.mean, m.n), (5.0, 3));
        assert!((m.sd - 13f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd([7.0]).unwrap().sd, 0.0);
        assert!(mean_sd([]).is_none());
    }
}
