//! `TrainConfig`: everything that defines one training run (model, regularizer, protocol,
//! subsets, device). Serializable, so plans embed it and checkpoints record it; a resumed run
//! must have the same configuration (the device aside).

use super::schedule;
use crate::device::DeviceSpec;
use crate::models::Arch;
use crate::regularize::RegConfig;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// One training run. [`TrainConfig::paper`] gives the paper's protocol (paper.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model.
    pub arch: Arch,
    /// The regularizer and its strength.
    pub reg: RegConfig,
    /// Epochs to train (the paper: 120).
    pub epochs: usize,
    /// Base learning rate (the paper: 0.01).
    pub lr: f64,
    /// SGD momentum (the paper: 0.9).
    pub momentum: f64,
    /// Batch size (the paper: 128). The last batch of an epoch may be smaller.
    pub batch: usize,
    /// Seed of the initial weights, the epoch orders and the augmentation (the paper: 1).
    pub seed: u64,
    /// Train on the first N training images only (all when `None`).
    pub train_subset: Option<usize>,
    /// Evaluate on the first N test images only (all when `None`).
    pub test_subset: Option<usize>,
    /// Epochs (from 0) at which the lr is multiplied by 0.1 (the paper: 75, 90, 100 of 120;
    /// [`schedule::scaled_milestones`] scales them to other run lengths).
    pub milestones: Vec<usize>,
    /// Where to compute.
    pub device: DeviceSpec,
    /// Adversarial training (paper.md §7): the loss is taken on PGD or TRADES examples
    /// instead of the clean batch. `None`: standard training.
    #[serde(default)]
    pub adv: Option<AdvConfig>,
}

/// Adversarial training: how the examples the loss sees are made (ℓ∞, from the model in eval
/// mode with its weights as constants).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AdvConfig {
    /// PGD-AT (Madry et al.): cross-entropy on PGD examples.
    Pgd {
        /// ℓ∞ radius (paper: 8/255).
        eps: f64,
        /// Step size (paper: 2/255).
        step: f64,
        /// Steps (paper: 10).
        steps: usize,
    },
    /// TRADES (Zhang et al.): CE on clean images + β·KL(clean ‖ adversarial).
    Trades {
        /// ℓ∞ radius (paper: 8/255).
        eps: f64,
        /// Step size (paper: 2/255).
        step: f64,
        /// Steps (paper: 10).
        steps: usize,
        /// The trade-off β (TRADES: 6).
        beta: f64,
    },
}

impl TrainConfig {
    /// The paper's protocol for `arch` with `reg`: 120 epochs, lr 0.01 with milestones 75, 90,
    /// 100, momentum 0.9, batch 128, seed 1, the full data, on the CPU.
    pub fn paper(arch: Arch, reg: RegConfig) -> Self {
        Self {
            arch,
            reg,
            epochs: schedule::PAPER_EPOCHS,
            lr: 0.01,
            momentum: 0.9,
            batch: 128,
            seed: 1,
            train_subset: None,
            test_subset: None,
            milestones: schedule::scaled_milestones(schedule::PAPER_EPOCHS),
            device: DeviceSpec::Cpu,
            adv: None,
        }
    }

    /// The same run with `epochs` epochs and the paper's milestones scaled to it.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self.milestones = schedule::scaled_milestones(epochs);
        self
    }

    /// Checks every field; the error names the field and what is expected.
    pub fn validate(&self) -> Result<()> {
        self.reg.validate()?;
        if self.epochs == 0 {
            bail!("epochs must be at least 1, got 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lr must be a finite number > 0, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("momentum must be in [0, 1), got {}", self.momentum);
        }
        if self.batch == 0 {
            bail!("batch must be at least 1, got 0");
        }
        for (what, n) in [("train_subset", self.train_subset), ("test_subset", self.test_subset)] {
            if n == Some(0) {
                bail!("{what} must be at least 1 image (leave it out to use the whole split), got 0");
            }
        }
        Ok(())
    }

    /// Whether `other` describes the same run, so a checkpoint of one can continue the other.
    /// The device may differ (a run may move between machines).
    pub fn same_run(&self, other: &TrainConfig) -> bool {
        let mut a = self.clone();
        a.device = other.device;
        &a == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_and_round_trip() {
        let c = TrainConfig::paper(Arch::Vgg11, RegConfig::WeightDecay { beta: 1e-4 }).with_epochs(12);
        assert_eq!(c.milestones, vec![8, 9, 10]);
        c.validate().unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).unwrap(), c);
    }

    #[test]
    fn same_run_ignores_the_device_only() {
        let a = TrainConfig::paper(Arch::Vgg11, RegConfig::Plain);
        let mut b = a.clone();
        b.device = DeviceSpec::Cuda(0);
        assert!(a.same_run(&b));
        b.seed = 2;
        assert!(!a.same_run(&b));
    }

    #[test]
    fn rejects_bad_fields() {
        let ok = TrainConfig::paper(Arch::Vgg11, RegConfig::Plain);
        let mut c = ok.clone();
        c.batch = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.momentum = 1.0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.train_subset = Some(0);
        assert!(c.validate().is_err());
        let mut c = ok;
        c.lr = -1.0;
        assert!(c.validate().is_err());
    }
}
