//! What a run records per epoch (`metrics.csv`): loss, accuracies, speed, and the sum and
//! maximum over the conv and linear layers of their exact ℓ1 and ℓ∞ norms (Theorem 1, the
//! norms tables' [`crate::norms::NormSummary`], computed on the host from the weights).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One row of `metrics.csv`, written after each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// The epoch just finished, counted from 1.
    pub epoch: usize,
    /// Its learning rate.
    pub lr: f64,
    /// Mean cross-entropy over its training batches (train mode, augmented).
    pub train_loss: f64,
    /// Accuracy on its training batches, in % (train mode, augmented).
    pub train_acc: f64,
    /// Accuracy on the (subset of the) test set in eval mode, in %.
    pub test_acc: f64,
    /// Wall-clock seconds of the epoch: training steps, evaluation and norms.
    pub seconds: f64,
    /// Training images per second over the epoch's training steps only.
    pub images_per_s: f64,
    /// Seconds spent in the regularizer (gradient transform and SVC) during the epoch.
    pub reg_seconds: f64,
    /// Sum over conv and linear layers of the exact ℓ1 norm.
    pub l1_sum: f64,
    /// Largest ℓ1 norm of a conv or linear layer.
    pub l1_max: f64,
    /// Sum over conv and linear layers of the exact ℓ∞ norm.
    pub linf_sum: f64,
    /// Largest ℓ∞ norm of a conv or linear layer.
    pub linf_max: f64,
}

/// Writes all rows so far as `path` (header + one line per epoch), atomically.
pub fn write_csv(path: &Path, rows: &[EpochRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        // The header alone, so a run that diverged in its first epoch still has the file.
        w.write_record(["epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds", "images_per_s", "reg_seconds", "l1_sum", "l1_max", "linf_sum", "linf_max"])?;
    }
    for r in rows {
        w.serialize(r)?;
    }
    let bytes = w.into_inner().context("cannot format metrics.csv")?;
    crate::util::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_one_row_per_epoch_and_the_same_header_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        write_csv(&p, &[]).unwrap();
        let empty_header = std::fs::read_to_string(&p).unwrap();
        let row = EpochRow { epoch: 1, lr: 0.01, train_loss: 2.0, train_acc: 10.0, test_acc: 11.0, seconds: 1.0, images_per_s: 5.0, reg_seconds: 0.1, l1_sum: 1.0, l1_max: 1.0, linf_sum: 1.0, linf_max: 1.0 };
        write_csv(&p, &[row.clone(), EpochRow { epoch: 2, ..row }]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(text.lines().next().unwrap(), empty_header.trim_end());
    }
}
