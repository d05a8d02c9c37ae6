//! `TrainConfig`: everything that defines one training run — model, regularizer, training
//! mode, seed and protocol — and nothing about where it runs. The same value is what `normlab
//! train`'s flags build, what a plan's cell holds (its JSON is part of the cell's id), and what
//! a checkpoint records (a resumed run must have the same configuration).

use super::schedule;
use crate::models::Arch;
use crate::regularize::RegConfig;
use crate::values::{Eps, Fraction, Positive};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::num::{NonZeroU32, NonZeroUsize};

/// One training run. [`TrainConfig::paper`] gives the paper's protocol (paper.md §5).
///
/// Field order and names are the JSON shape of a plan cell's id: do not reorder them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model.
    pub model: Arch,
    /// The regularizer and its strength.
    pub regularizer: RegConfig,
    /// Standard or adversarial training (paper.md §7).
    #[serde(default)]
    pub adv: AdvConfig,
    /// Seed of the initial weights, the epoch orders and the augmentation (the paper: 1).
    pub seed: u64,
    /// Epochs, learning rate and its schedule, momentum, batch, subsets.
    pub training: TrainingProtocol,
}

/// The optimization protocol of a run (paper.md §5), fully resolved: milestones explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingProtocol {
    /// Epochs to train (the paper: 120).
    pub epochs: NonZeroU32,
    /// Base learning rate (the paper: 0.01).
    pub lr: Positive,
    /// SGD momentum (the paper: 0.9).
    pub momentum: Fraction,
    /// Batch size (the paper: 128). The last batch of an epoch may be smaller.
    pub batch: NonZeroUsize,
    /// Epochs (from 0) at which the lr is multiplied by 0.1, strictly increasing inside the
    /// run (the paper: 75, 90, 100 of 120; [`schedule::scaled_milestones`] scales them).
    pub milestones: Vec<u32>,
    /// Train on the first N training images only (all when `None`).
    pub train_subset: Option<NonZeroUsize>,
    /// Measure per-epoch test accuracy on the first N test images only (all when `None`).
    pub test_subset: Option<NonZeroUsize>,
}

/// A subset larger than the split it is taken from ([`TrainingProtocol::check_subsets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetTooLarge {
    /// The setting: `train_subset`, `test_subset` (or the evaluation's `clean_subset`, `n`).
    pub field: &'static str,
    /// `training` or `test`.
    pub split: &'static str,
    /// The subset asked for.
    pub asked: usize,
    /// The images the split holds.
    pub available: usize,
}

impl std::fmt::Display for SubsetTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {} is larger than the {} split, which holds {} images: lower it to at most {}{}",
            self.field,
            self.asked,
            self.split,
            self.available,
            self.available,
            if self.field.ends_with("subset") { ", or leave it out to use the whole split" } else { "" }
        )
    }
}

/// Standard training, or adversarial training: how the examples the loss sees are made
/// (ℓ∞, from the model in eval mode with its weights as constants). A plan's `adv` list holds
/// these (`none`, `pgd(eps: "8/255")`, `trades(beta: 6)`), defaults as the paper's §7.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AdvConfig {
    /// Standard training on clean images.
    #[default]
    None,
    /// PGD-AT (Madry et al.): cross-entropy on PGD examples.
    Pgd {
        /// ℓ∞ radius (default 8/255).
        #[serde(default = "adv_eps")]
        eps: Eps,
        /// Step size (default 2/255).
        #[serde(default = "adv_step")]
        step: Eps,
        /// Steps (default 10).
        #[serde(default = "adv_steps")]
        steps: NonZeroU32,
    },
    /// TRADES (Zhang et al.): CE on clean images + β·KL(clean ‖ adversarial).
    Trades {
        /// ℓ∞ radius (default 8/255).
        #[serde(default = "adv_eps")]
        eps: Eps,
        /// Step size (default 2/255).
        #[serde(default = "adv_step")]
        step: Eps,
        /// Steps (default 10).
        #[serde(default = "adv_steps")]
        steps: NonZeroU32,
        /// The trade-off β (default 6).
        #[serde(default = "trades_beta")]
        beta: Positive,
    },
}

fn adv_eps() -> Eps {
    Eps(8.0 / 255.0)
}
fn adv_step() -> Eps {
    Eps(2.0 / 255.0)
}
fn adv_steps() -> NonZeroU32 {
    NonZeroU32::new(10).expect("10 > 0")
}
fn trades_beta() -> Positive {
    Positive(6.0)
}

impl AdvConfig {
    /// PGD-AT with the paper's settings (ε 8/255, step 2/255, 10 steps).
    pub fn pgd() -> Self {
        Self::Pgd { eps: adv_eps(), step: adv_step(), steps: adv_steps() }
    }

    /// TRADES with the paper's settings (and β = 6).
    pub fn trades() -> Self {
        Self::Trades { eps: adv_eps(), step: adv_step(), steps: adv_steps(), beta: trades_beta() }
    }

    /// `none`, `pgd` or `trades`: the results column's value.
    pub fn label(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pgd { .. } => "pgd",
            Self::Trades { .. } => "trades",
        }
    }
}

impl TrainingProtocol {
    /// The paper's protocol: 120 epochs, lr 0.01 with milestones 75, 90, 100, momentum 0.9,
    /// batch 128, the full data.
    pub fn paper() -> Self {
        Self::paper_with_epochs(NonZeroU32::new(schedule::PAPER_EPOCHS).expect("120 > 0"))
    }

    /// The paper's protocol over `epochs` epochs, its milestones scaled in proportion.
    pub fn paper_with_epochs(epochs: NonZeroU32) -> Self {
        Self {
            epochs,
            lr: Positive(0.01),
            momentum: Fraction(0.9),
            batch: NonZeroUsize::new(128).expect("128 > 0"),
            milestones: schedule::scaled_milestones(epochs.get()),
            train_subset: None,
            test_subset: None,
        }
    }

    /// Epochs as a count.
    pub fn epochs(&self) -> usize {
        self.epochs.get() as usize
    }

    /// Errors naming the first subset that is larger than the split it is taken from
    /// (`train` training and `test` test images): a subset is never clamped, since the cell
    /// id and the results row would keep the number asked for.
    pub fn check_subsets(&self, train: usize, test: usize) -> Result<(), SubsetTooLarge> {
        let too_large = |field, split, asked: Option<NonZeroUsize>, available| {
            asked.filter(|n| n.get() > available).map(|n| SubsetTooLarge { field, split, asked: n.get(), available })
        };
        match too_large("train_subset", "training", self.train_subset, train).or_else(|| too_large("test_subset", "test", self.test_subset, test)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Checks what the field types cannot: milestones strictly increasing inside the run.
    pub fn validate(&self) -> Result<(), String> {
        let epochs = self.epochs.get();
        let ms = &self.milestones;
        for (i, &m) in ms.iter().enumerate() {
            if m == 0 || m >= epochs || (i > 0 && m <= ms[i - 1]) {
                return Err(format!(
                    "milestones {ms:?}: expected strictly increasing epochs in 1..{epochs} (epochs is {epochs}); \
                     leave them out for the paper's 75/90/100 of 120 scaled to the run"
                ));
            }
        }
        Ok(())
    }
}

impl TrainConfig {
    /// The paper's protocol for `model` with `regularizer`: 120 epochs, lr 0.01 with
    /// milestones 75, 90, 100, momentum 0.9, batch 128, seed 1, the full data.
    pub fn paper(model: Arch, regularizer: RegConfig) -> Self {
        Self { model, regularizer, adv: AdvConfig::None, seed: 1, training: TrainingProtocol::paper() }
    }

    /// The same run with `epochs` epochs and the paper's milestones scaled to it (epochs < 1
    /// count as 1).
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        let epochs = NonZeroU32::new(epochs.clamp(1, u32::MAX as usize) as u32).expect("clamped to ≥ 1");
        self.training.epochs = epochs;
        self.training.milestones = schedule::scaled_milestones(epochs.get());
        self
    }

    /// Checks what the field types cannot (the milestones).
    pub fn validate(&self) -> Result<()> {
        if let Err(e) = self.training.validate() {
            bail!("{e}");
        }
        Ok(())
    }

    /// Each setting in which `recorded` (a checkpoint's or a finished run's) differs from this
    /// configuration, as `training.lr: 0.1 recorded, 0.01 given`, found by comparing their
    /// JSON; one line when they are equal.
    pub fn differences_from(&self, recorded: &TrainConfig) -> Vec<String> {
        let json = |c: &TrainConfig| serde_json::to_value(c).expect("a configuration always serializes");
        let d = crate::util::json_differences(&json(recorded), &json(self));
        if d.is_empty() {
            return vec!["no setting differs".to_string()];
        }
        let mut lines: Vec<String> = d.into_iter().map(|(path, was, now)| format!("{path}: {was} recorded, {now} given")).collect();
        lines.push("resume with the recorded settings, or start the new run in another folder".to_string());
        lines
    }

    /// Reads a configuration from a checkpoint or status file's JSON, including the shape an
    /// older normlab wrote (`arch`, `reg` with a `reg` tag, flat protocol fields, `adv` as null
    /// or `{"kind":"pgd",...}`, a `device`), so runs started before 2026-12-07 still resume.
    pub fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(upgrade_legacy(value))
    }
}

/// Deserializes a [`TrainConfig`] through [`TrainConfig::from_json`] (for the `config` fields
/// of checkpoint and status files: `#[serde(deserialize_with = "read_recorded")]`).
pub fn read_recorded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TrainConfig, D::Error> {
    TrainConfig::from_json(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Today's JSON shape of a configuration an older normlab recorded (see
/// [`TrainConfig::from_json`]); today's shape passes unchanged.
fn upgrade_legacy(value: serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    let Value::Object(mut old) = value else { return value };
    if !old.contains_key("arch") {
        return Value::Object(old);
    }
    let mut take = |k: &str| old.remove(k).unwrap_or(Value::Null);
    let adv = match take("adv") {
        Value::Null => json!("none"),
        Value::Object(mut a) => match a.remove("kind") {
            Some(Value::String(kind)) => json!({ kind: a }),
            _ => Value::Object(a),
        },
        other => other,
    };
    let milestones = take("milestones");
    json!({
        "model": take("arch"),
        "regularizer": crate::regularize::upgrade_legacy(take("reg")),
        "adv": adv,
        "seed": take("seed"),
        "training": {
            "epochs": take("epochs"),
            "lr": take("lr"),
            "momentum": take("momentum"),
            "batch": take("batch"),
            "milestones": milestones,
            "train_subset": take("train_subset"),
            "test_subset": take("test_subset"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_and_round_trip() {
        let c = TrainConfig::paper(Arch::Vgg11, RegConfig::WeightDecay { beta: Positive(1e-4) }).with_epochs(12);
        assert_eq!(c.training.milestones, vec![8, 9, 10]);
        c.validate().unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).unwrap(), c);
        assert_eq!(TrainConfig::from_json(serde_json::from_str(&text).unwrap()).unwrap(), c);
    }

    #[test]
    fn milestones_outside_the_run_are_refused() {
        let mut c = TrainConfig::paper(Arch::Vgg11, RegConfig::Plain).with_epochs(10);
        for bad in [vec![0], vec![10], vec![6, 6], vec![8, 6]] {
            c.training.milestones = bad.clone();
            assert!(c.validate().unwrap_err().to_string().contains("milestones"), "{bad:?}");
        }
    }

    /// A configuration an older normlab wrote into a checkpoint (results/demo/cells/*/config.json
    /// hold such files) still reads, as the run it describes.
    #[test]
    fn legacy_checkpoint_configuration_reads() {
        let old = serde_json::json!({
            "arch": "vgg11",
            "reg": {"reg": "norm-decay", "kind": "linf", "beta": 0.01, "gamma": 0.5, "variant": "reference", "include_bn": false},
            "epochs": 2, "lr": 0.01, "momentum": 0.9, "batch": 128, "seed": 1,
            "train_subset": 3000, "test_subset": 1000, "milestones": [1], "device": "cpu",
            "adv": {"kind": "pgd", "eps": 0.03137254901960784, "step": 0.00784313725490196, "steps": 10}
        });
        let c = TrainConfig::from_json(old).unwrap();
        assert_eq!(c.model, Arch::Vgg11);
        assert_eq!(c.regularizer.name(), "nd-linf");
        assert_eq!(c.training.epochs.get(), 2);
        assert_eq!(c.training.train_subset.map(|n| n.get()), Some(3000));
        assert_eq!(c.adv, AdvConfig::pgd());
        let plain_old = serde_json::json!({"arch": "resnet18", "reg": {"reg": "plain"}, "epochs": 1, "lr": 0.1, "momentum": 0.9,
            "batch": 64, "seed": 3, "train_subset": null, "test_subset": null, "milestones": [], "device": {"cuda": 0}, "adv": null});
        let p = TrainConfig::from_json(plain_old).unwrap();
        assert_eq!((p.adv, p.seed, p.training.batch.get()), (AdvConfig::None, 3, 64));
    }
}
