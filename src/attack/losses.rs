//! The per-sample losses attacks ascend, and the one place that turns a loss into an input
//! gradient.
//!
//! With z the logits, y the true class and π the classes sorted by decreasing logit:
//! - CE: −log softmax(z)_y;
//! - DLR (Croce & Hein 2020): −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12), invariant to
//!   shifting and scaling the logits, so its steps do not vanish on saturated softmaxes;
//! - targeted DLR towards t: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12).
//!
//! The sort is done on the host from detached logits; the loss then gathers the chosen
//! logits from the live tensor, so gradients flow through the selected entries exactly as
//! they do through PyTorch's `sort` values.

use super::{argmax_rows, Logits};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};

/// What an attack ascends, per sample. Larger is closer to (or deeper into) misclassification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss<'a> {
    /// Cross-entropy of the true class.
    Ce,
    /// Difference of logits ratio (untargeted); needs at least 3 classes.
    Dlr,
    /// Targeted DLR towards one class per sample; needs at least 4 classes.
    TargetedDlr(&'a [u32]),
}

impl Loss<'_> {
    /// The per-sample loss (length N) of `logits` (N × K) for true classes `y`.
    pub fn per_sample(&self, logits: &Tensor, y: &[u32]) -> Result<Tensor> {
        let host = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        self.per_sample_with(logits, &host, y)
    }

    /// As [`Loss::per_sample`], given a host copy of the logits (saves a transfer).
    fn per_sample_with(&self, logits: &Tensor, host: &[Vec<f32>], y: &[u32]) -> Result<Tensor> {
        match self {
            Loss::Ce => cross_entropy(logits, y),
            Loss::Dlr => dlr_with(logits, host, y),
            Loss::TargetedDlr(t) => targeted_dlr_with(logits, host, y, t),
        }
    }
}

/// Per-sample cross-entropy −log softmax(z)_y (length N).
pub fn cross_entropy(logits: &Tensor, y: &[u32]) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    check_labels(n, k, y, "labels")?;
    let idx = Tensor::from_slice(y, (n, 1), logits.device())?;
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    Ok(logp.gather(&idx, 1)?.squeeze(1)?.neg()?)
}

/// Per-sample DLR loss −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12) (length N).
pub fn dlr(logits: &Tensor, y: &[u32]) -> Result<Tensor> {
    Loss::Dlr.per_sample(logits, y)
}

/// Per-sample targeted DLR loss −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12) (length N).
pub fn targeted_dlr(logits: &Tensor, y: &[u32], target: &[u32]) -> Result<Tensor> {
    Loss::TargetedDlr(target).per_sample(logits, y)
}

fn dlr_with(logits: &Tensor, host: &[Vec<f32>], y: &[u32]) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    check_labels(n, k, y, "labels")?;
    if k < 3 {
        bail!("the DLR loss needs at least 3 classes (it divides by z_π1 − z_π3), the classifier has {k}: use CE");
    }
    // Columns: y, the best other class, π1, π3.
    let mut idx = Vec::with_capacity(n * 4);
    for (row, &yi) in host.iter().zip(y) {
        let order = descending(row);
        let other = if order[0] == yi { order[1] } else { order[0] };
        idx.extend([yi, other, order[0], order[2]]);
    }
    let g = logits.gather(&Tensor::from_vec(idx, (n, 4), logits.device())?, 1)?;
    let col = |j: usize| g.narrow(1, j, 1);
    let num = (col(0)? - col(1)?)?;
    let den = ((col(2)? - col(3)?)? + 1e-12)?;
    Ok(num.div(&den)?.neg()?.squeeze(1)?)
}

fn targeted_dlr_with(logits: &Tensor, host: &[Vec<f32>], y: &[u32], target: &[u32]) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    check_labels(n, k, y, "labels")?;
    check_labels(n, k, target, "targets")?;
    if k < 4 {
        bail!("the targeted DLR loss needs at least 4 classes (it uses z_π4), the classifier has {k}: use CE or DLR");
    }
    // Columns: y, t, π1, π3, π4.
    let mut idx = Vec::with_capacity(n * 5);
    for ((row, &yi), &ti) in host.iter().zip(y).zip(target) {
        let order = descending(row);
        idx.extend([yi, ti, order[0], order[2], order[3]]);
    }
    let g = logits.gather(&Tensor::from_vec(idx, (n, 5), logits.device())?, 1)?;
    let col = |j: usize| g.narrow(1, j, 1);
    let num = (col(0)? - col(1)?)?;
    let den = ((col(2)? - ((col(3)? + col(4)?)? * 0.5)?)? + 1e-12)?;
    Ok(num.div(&den)?.neg()?.squeeze(1)?)
}

/// Class indices by decreasing logit.
pub(crate) fn descending(row: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    order
}

fn check_labels(n: usize, k: usize, labels: &[u32], what: &str) -> Result<()> {
    if labels.len() != n {
        bail!("{} {what} for {n} rows of logits", labels.len());
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= k) {
        bail!("{what} hold class {bad}, but the classifier has {k} classes");
    }
    Ok(())
}

/// One evaluation of a classifier with the input gradient of a loss.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The logits on the host, N rows of K values.
    pub logits: Vec<Vec<f32>>,
    /// Per-sample loss values.
    pub loss: Vec<f32>,
    /// ∂(Σ loss)/∂x, shaped as x: each sample's gradient of its own loss, since samples do
    /// not interact in an eval-mode classifier.
    pub grad: Tensor,
}

impl Evaluated {
    /// The predicted class of each sample.
    pub fn predictions(&self) -> Vec<u32> {
        argmax_rows(&self.logits)
    }
}

/// Evaluates `f` at `x` with the gradient of `loss` (for labels `y`) with respect to x only.
pub fn loss_and_input_grad(f: &Logits, x: &Tensor, loss: Loss, y: &[u32]) -> Result<Evaluated> {
    loss_fn_and_input_grad(f, x, &|logits, host| loss.per_sample_with(logits, host, y))
}

/// A per-sample loss of the logits: gets the live logits (N × K) and a host copy of them,
/// returns N values.
pub type PerSampleLoss<'a> = dyn Fn(&Tensor, &[Vec<f32>]) -> Result<Tensor> + 'a;

/// As [`loss_and_input_grad`] for any per-sample loss of the logits (the closure gets the
/// live logits and a host copy of them), e.g. TRADES' KL term.
pub fn loss_fn_and_input_grad(f: &Logits, x: &Tensor, loss: &PerSampleLoss) -> Result<Evaluated> {
    let var = Var::from_tensor(&x.detach())?;
    let logits = f(var.as_tensor())?;
    let host = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let per_sample = loss(&logits, &host)?;
    let values = per_sample.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let grads = per_sample.sum_all()?.backward()?;
    let grad = grads
        .get(var.as_tensor())
        .context("the classifier's logits do not depend on its input: no input gradient to attack with")?
        .detach();
    Ok(Evaluated { logits: host, loss: values, grad })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits(rows: &[[f32; 5]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 5), &Device::Cpu).unwrap()
    }

    #[test]
    fn dlr_matches_hand_values() {
        // Row 0: y = 0 is the top class; best other = 3.0 (class 1); π1 = 5, π3 = 1.
        //   −(5 − 3)/(5 − 1) = −0.5.
        // Row 1: y = 2 (value 1) is misclassified; best other = π1 = 4; π3 = 1 (class 2).
        //   −(1 − 4)/(4 − 1) = 1.
        let z = logits(&[[5.0, 3.0, 1.0, 0.0, -2.0], [0.0, 4.0, 1.0, 2.0, -1.0]]);
        let l = dlr(&z, &[0, 2]).unwrap().to_vec1::<f32>().unwrap();
        assert!((l[0] + 0.5).abs() < 1e-6, "{l:?}");
        assert!((l[1] - 1.0).abs() < 1e-6, "{l:?}");
    }

    #[test]
    fn targeted_dlr_matches_hand_values() {
        // Row 0: y = 0, t = 3; sorted 5, 3, 1, 0, −2: −(5 − 0)/(5 − (1 + 0)/2) = −5/4.5.
        // Row 1: y = 1, t = 0; sorted 4, 2, 1, 0, −1: −(4 − 0)/(4 − (1 + 0)/2) = −4/3.5.
        let z = logits(&[[5.0, 3.0, 1.0, 0.0, -2.0], [0.0, 4.0, 1.0, 2.0, -1.0]]);
        let l = targeted_dlr(&z, &[0, 1], &[3, 0]).unwrap().to_vec1::<f32>().unwrap();
        assert!((l[0] + 5.0 / 4.5).abs() < 1e-6, "{l:?}");
        assert!((l[1] + 4.0 / 3.5).abs() < 1e-6, "{l:?}");
    }

    #[test]
    fn cross_entropy_matches_hand_values() {
        let z = logits(&[[0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0]]);
        let l = cross_entropy(&z, &[1, 0]).unwrap().to_vec1::<f32>().unwrap();
        assert!((l[0] - 5f32.ln()).abs() < 1e-6);
        let want = -(2f32.exp() / (2f32.exp() + 4.0)).ln();
        assert!((l[1] - want).abs() < 1e-6);
    }

    #[test]
    fn losses_reject_too_few_classes_and_bad_labels() {
        let z = Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu).unwrap();
        assert!(dlr(&z, &[0]).is_err());
        assert!(targeted_dlr(&z, &[0], &[1]).is_err());
        assert!(cross_entropy(&z, &[2]).is_err());
        assert!(cross_entropy(&z, &[0, 1]).is_err());
    }

    #[test]
    fn dlr_gradient_flows_through_selected_logits() {
        // f(x) = x itself as logits (K = 5): the DLR gradient at row 0 of the first test is
        // −1/4 on z_y, +1/4 on the best other and the quotient rule on π1 (= y) and π3:
        // d/dz_y = −1/(z1 − z3) + (z_y − z_o)/(z1 − z3)² = −0.25 + 2/16 = −0.125;
        // d/dz_o = +0.25; d/dz_π3 = −(z_y − z_o)/(z1 − z3)² = −0.125.
        let x = logits(&[[5.0, 3.0, 1.0, 0.0, -2.0]]);
        let id = |t: &Tensor| Ok(t.clone());
        let e = loss_and_input_grad(&id, &x, Loss::Dlr, &[0]).unwrap();
        let g = e.grad.to_vec2::<f32>().unwrap();
        let want = [-0.125f32, 0.25, -0.125, 0.0, 0.0];
        for (a, b) in g[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{g:?}");
        }
        assert!((e.loss[0] + 0.5).abs() < 1e-6);
    }
}
