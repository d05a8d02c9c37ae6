//! The training loss and hit count of each step, kept on the device and read back every
//! [`READ_EVERY`] steps in one copy.
//!
//! Reading them after every step made the host wait for the device once per step (on a GPU the
//! step's whole queue), so the host could not prepare the next batch and issue the next step
//! while the device worked. The values read are the same f32 numbers as before and are added
//! into the epoch's sums in the same order, so the metrics are bitwise what a per-step read
//! gives; a non-finite loss is found at the next read and reported at the step it happened.

use anyhow::Result;
use candle_core::Tensor;

/// Steps between read-backs.
pub const READ_EVERY: usize = 32;

/// The epoch's running sums, and the steps not yet read back.
#[derive(Debug, Default)]
pub struct StepStats {
    /// Σ loss × batch size over the steps read so far.
    pub loss_sum: f64,
    /// Correctly classified images so far.
    pub correct: f64,
    /// Images so far.
    pub seen: usize,
    /// Steps read so far.
    steps: usize,
    /// Each pending step's `[loss, hits]` (on the device) and batch size.
    pending: Vec<(Tensor, usize)>,
}

impl StepStats {
    /// Records a step's loss (a scalar) and hit count (a scalar) for `n` images, on the device.
    pub fn push(&mut self, loss: &Tensor, hits: &Tensor, n: usize) -> Result<()> {
        self.pending.push((Tensor::stack(&[&loss.detach(), hits], 0)?, n));
        Ok(())
    }

    /// Whether `every` steps are pending.
    pub fn due(&self, every: usize) -> bool {
        self.pending.len() >= every.max(1)
    }

    /// Reads the pending steps back in one copy and adds them to the sums in step order.
    /// Returns the step (from 1, within the epoch) whose loss was not finite, if one was: the
    /// sums then hold the steps before it.
    pub fn read(&mut self) -> Result<Option<usize>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let rows: Vec<Tensor> = self.pending.iter().map(|(t, _)| t.clone()).collect();
        let values = Tensor::stack(&rows, 0)?.flatten_all()?.to_vec1::<f32>()?;
        for (k, (_, n)) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            let (loss, hits) = (values[2 * k], values[2 * k + 1]);
            if !loss.is_finite() {
                return Ok(Some(self.steps + 1));
            }
            self.loss_sum += loss as f64 * n as f64;
            self.correct += hits as f64;
            self.seen += n;
            self.steps += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalars(loss: f32, hits: f32) -> (Tensor, Tensor) {
        (Tensor::new(loss, &Device::Cpu).unwrap(), Tensor::new(hits, &Device::Cpu).unwrap())
    }

    /// The old loop read each step's `[loss, hits]` right away and added it: reading every 1,
    /// 3 or 32 steps gives bitwise the same sums.
    #[test]
    fn batched_reads_give_the_per_step_sums() {
        let steps: Vec<(f32, f32, usize)> = (0..70).map(|i| (2.3 / (1.0 + i as f32 * 0.37), (i * 7 % 16) as f32, 16 - (i % 3))).collect();
        // The per-step read of the old loop.
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0f64, 0usize);
        for &(l, h, n) in &steps {
            let (lt, ht) = scalars(l, h);
            let stats = Tensor::stack(&[&lt, &ht], 0).unwrap().to_vec1::<f32>().unwrap();
            loss_sum += stats[0] as f64 * n as f64;
            correct += stats[1] as f64;
            seen += n;
        }
        for every in [1, 3, READ_EVERY] {
            let mut s = StepStats::default();
            for &(l, h, n) in &steps {
                let (lt, ht) = scalars(l, h);
                s.push(&lt, &ht, n).unwrap();
                if s.due(every) {
                    assert_eq!(s.read().unwrap(), None);
                }
            }
            assert_eq!(s.read().unwrap(), None);
            assert_eq!((s.loss_sum.to_bits(), s.correct.to_bits(), s.seen), (loss_sum.to_bits(), correct.to_bits(), seen), "every {every}");
        }
    }

    #[test]
    fn a_non_finite_loss_is_reported_at_its_step() {
        let mut s = StepStats::default();
        for (i, l) in [1.0, 2.0, f32::NAN, 3.0].into_iter().enumerate() {
            let (lt, ht) = scalars(l, i as f32);
            s.push(&lt, &ht, 4).unwrap();
            if i == 0 {
                assert_eq!(s.read().unwrap(), None);
            }
        }
        assert_eq!(s.read().unwrap(), Some(3));
        assert_eq!((s.loss_sum, s.seen), (1.0 * 4.0 + 2.0 * 4.0, 8));
    }
}
