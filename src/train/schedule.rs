//! The learning-rate schedule of the paper's protocol: lr × 0.1 at each milestone (epochs 75,
//! 90 and 100 of 120, as torch's `MultiStepLR`), with the milestones scaled in proportion
//! when a run has fewer (or more) epochs.

/// The paper's number of epochs.
pub const PAPER_EPOCHS: u32 = 120;
/// The paper's milestones (epochs, counted from 0, at which the lr is multiplied by 0.1).
pub const PAPER_MILESTONES: [u32; 3] = [75, 90, 100];
/// The factor applied at each milestone.
pub const DECAY: f64 = 0.1;

/// The paper's milestones scaled to a run of `epochs` epochs: round(m · epochs / 120), keeping
/// those strictly inside the run, each once. For 120 epochs they are 75, 90, 100; for 12 they
/// are 8, 9, 10; for 2 only 1; for 1 none (a one-epoch run keeps the base lr throughout).
/// A milestone at or after the last epoch would never change the rate, so dropping it changes
/// no run.
pub fn scaled_milestones(epochs: u32) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for m in PAPER_MILESTONES {
        let e = (m as f64 * epochs as f64 / PAPER_EPOCHS as f64).round() as u32;
        if e >= 1 && e < epochs && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// The learning rate of epoch `epoch` (from 0): `base` × 0.1 per milestone ≤ `epoch`.
pub fn lr_at(base: f64, milestones: &[u32], epoch: usize) -> f64 {
    let passed = milestones.iter().filter(|&&m| epoch >= m as usize).count();
    base * DECAY.powi(passed as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_schedule() {
        let m = scaled_milestones(120);
        assert_eq!(m, vec![75, 90, 100]);
        let lr = |e| lr_at(0.01, &m, e);
        assert_eq!(lr(0), 0.01);
        assert_eq!(lr(74), 0.01);
        assert!((lr(75) - 1e-3).abs() < 1e-15);
        assert!((lr(90) - 1e-4).abs() < 1e-15);
        assert!((lr(119) - 1e-5).abs() < 1e-15);
    }

    #[test]
    fn milestones_scale_in_proportion() {
        assert_eq!(scaled_milestones(12), vec![8, 9, 10]);
        assert_eq!(scaled_milestones(10), vec![6, 8]);
        assert_eq!(scaled_milestones(2), vec![1]);
        assert!(scaled_milestones(1).is_empty());
        assert_eq!(lr_at(0.01, &scaled_milestones(1), 0), 0.01);
    }
}
