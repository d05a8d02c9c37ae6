//! The plan file's schema: what a RON plan may say, with the paper's protocol (paper.md §5)
//! as the default of every field, so a plan states only what differs. Every struct denies
//! unknown keys: a misspelt key is an error at its line, never a silently ignored setting.

use super::values::{Eps, Fraction, NonEmpty, PlanName, Positive};
use crate::models::Arch;
use crate::norms::NormKind;
use serde::{Deserialize, Serialize};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;

/// A whole plan file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Names the results: `<results>/<name>.csv` and `<results>/<name>/cells/`.
    pub name: PlanName,
    /// Where the CIFAR-10 data is (default: `data/cifar10`, imported from ../shared/data or
    /// the official URL).
    #[serde(default)]
    pub data: DataSpec,
    /// The models, each crossed with every regularizer setting and seed.
    pub models: NonEmpty<Arch>,
    /// Whether each model also gets an unregularized cell (default true).
    #[serde(default = "yes")]
    pub plain: bool,
    /// The regularizers, each with its list of strengths.
    #[serde(default)]
    pub regularizers: Vec<RegularizerSpec>,
    /// The training protocol.
    #[serde(default)]
    pub training: TrainingSpec,
    /// The evaluation protocol.
    #[serde(default)]
    pub evaluation: EvaluationSpec,
}

fn yes() -> bool {
    true
}

/// Where the data lives: a directory in CIFAR-10's binary layout, and where to import it from
/// when that directory is not complete yet (`normlab data --source SRC --out DIR`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    /// The directory holding data_batch_1..5.bin and test_batch.bin (relative paths are
    /// relative to the directory `normlab run` is started in).
    pub dir: PathBuf,
    /// Import sources tried in order when `dir` is incomplete: an archive or directory path,
    /// or an http(s) URL.
    pub sources: Vec<String>,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/cifar10"),
            sources: vec![
                "../shared/data/cifar10-jpeg.tar.gz".to_string(),
                "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".to_string(),
            ],
        }
    }
}

/// One regularizer with the strengths to try (paper.md §4).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RegularizerSpec {
    /// Coupled weight decay, g ← g + β·θ.
    WeightDecay {
        /// The strengths β.
        betas: NonEmpty<Positive>,
    },
    /// Singular value clipping (Sedghi et al. 2019) at each clip value C.
    Svc {
        /// The clip values C.
        clips: NonEmpty<Positive>,
        /// Clip every this many steps (paper: 100).
        #[serde(default = "svc_every")]
        every: NonZeroU32,
    },
    /// Norm decay (Algorithm 1) on the ℓ1 or ℓ∞ norm.
    NormDecay {
        /// `l1` or `linf`.
        norm: NormKind,
        /// The strengths β.
        betas: NonEmpty<Positive>,
        /// Running-average factor γ (paper: 0.5).
        #[serde(default = "half")]
        gamma: Fraction,
        /// `reference` (the published code, default) or `paper` (the pseudo-code).
        #[serde(default)]
        variant: NdVariant,
        /// Also decay BatchNorm layers (default false, as the paper).
        #[serde(default)]
        include_bn: bool,
    },
}

fn svc_every() -> NonZeroU32 {
    NonZeroU32::new(100).expect("100 > 0")
}

fn half() -> Fraction {
    Fraction(0.5)
}

/// Which norm-decay update (paper.md §3): the training loop's own type, so a plan names
/// exactly what `normlab train --nd-variant` takes.
pub use crate::regularize::NdVariant;

/// The training protocol (paper.md §5 defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSpec {
    /// Epochs (paper: 120).
    pub epochs: NonZeroU32,
    /// Initial learning rate (paper: 0.01).
    pub lr: Positive,
    /// SGD momentum (paper: 0.9).
    pub momentum: Fraction,
    /// Batch size (paper: 128).
    pub batch: NonZeroUsize,
    /// Epochs at which the learning rate is multiplied by 0.1; absent: the paper's 75, 90,
    /// 100 of 120, scaled to `epochs`.
    pub milestones: Option<Vec<u32>>,
    /// Seeds, one cell each (paper: 1).
    pub seeds: NonEmpty<u64>,
    /// Train on the first N training records only (absent: all 50,000).
    pub train_subset: Option<NonZeroUsize>,
    /// Measure per-epoch test accuracy on the first N test records only (absent: all).
    pub test_subset: Option<NonZeroUsize>,
    /// Training modes, one cell each: `none` (standard), `pgd(...)`, `trades(...)`.
    pub adv: NonEmpty<AdvSpec>,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            epochs: NonZeroU32::new(120).expect("120 > 0"),
            lr: Positive(0.01),
            momentum: Fraction(0.9),
            batch: NonZeroUsize::new(128).expect("128 > 0"),
            milestones: None,
            seeds: NonEmpty(vec![1]),
            train_subset: None,
            test_subset: None,
            adv: NonEmpty(vec![AdvSpec::None]),
        }
    }
}

/// Standard or adversarial training (paper.md §7 defaults: PGD-10, ε 8/255, step 2/255).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AdvSpec {
    /// Standard training on clean images.
    None,
    /// PGD adversarial training (Madry et al.).
    Pgd {
        /// Radius (default 8/255).
        #[serde(default = "adv_eps")]
        eps: Eps,
        /// Step size (default 2/255).
        #[serde(default = "adv_step")]
        step: Eps,
        /// Steps (default 10).
        #[serde(default = "adv_steps")]
        steps: NonZeroU32,
    },
    /// TRADES (Zhang et al.).
    Trades {
        /// Radius (default 8/255).
        #[serde(default = "adv_eps")]
        eps: Eps,
        /// Step size (default 2/255).
        #[serde(default = "adv_step")]
        step: Eps,
        /// Steps (default 10).
        #[serde(default = "adv_steps")]
        steps: NonZeroU32,
        /// The TRADES trade-off β (default 6).
        #[serde(default = "trades_beta")]
        beta: Positive,
    },
}

impl AdvSpec {
    /// `none`, `pgd` or `trades`: the results column's value.
    pub fn label(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pgd { .. } => "pgd",
            Self::Trades { .. } => "trades",
        }
    }
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

/// The evaluation protocol (paper.md §5 defaults).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationSpec {
    /// Clean accuracy on the first N test images (absent: the full 10,000, as the paper).
    pub clean_subset: Option<NonZeroUsize>,
    /// Robust accuracy (absent: the paper's APGD-CE + APGD-T at 1/255 on 1,024 images;
    /// `None`: not measured).
    pub robust: Option<RobustSpec>,
    /// Certified accuracy from the layers' ℓ∞ norms (default true).
    pub certified: bool,
}

impl Default for EvaluationSpec {
    fn default() -> Self {
        Self { clean_subset: None, robust: Some(RobustSpec::default()), certified: true }
    }
}

/// Empirical robust accuracy: the attacks run in order on the points still standing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustSpec {
    /// Attacks in order (paper: AutoAttack's apgd_ce then apgd_t).
    pub attacks: NonEmpty<Attack>,
    /// ℓ∞ radii, one robust-accuracy column each (paper: 1/255).
    pub eps: NonEmpty<Eps>,
    /// Test images drawn at random (paper: 1,024).
    pub n: NonZeroUsize,
    /// Seed of the draw.
    pub seed: u64,
    /// Iterations per attack (AutoAttack standard: 100).
    pub iters: NonZeroU32,
}

impl Default for RobustSpec {
    fn default() -> Self {
        Self {
            attacks: NonEmpty(vec![Attack::ApgdCe, Attack::ApgdT]),
            eps: NonEmpty(vec![Eps(1.0 / 255.0)]),
            n: NonZeroUsize::new(1024).expect("1024 > 0"),
            seed: 0,
            iters: NonZeroU32::new(100).expect("100 > 0"),
        }
    }
}

/// The attacks `normlab attack` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// One signed-gradient step.
    Fgsm,
    /// Projected gradient descent.
    Pgd,
    /// APGD on cross-entropy.
    ApgdCe,
    /// Targeted APGD on the DLR loss (9 target classes).
    ApgdT,
    /// APGD on the DLR loss.
    ApgdDlr,
}

impl Attack {
    /// The name `normlab attack --attacks` takes: `apgd-ce`, `apgd-t`, ...
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::Fgsm => "fgsm",
            Self::Pgd => "pgd",
            Self::ApgdCe => "apgd-ce",
            Self::ApgdT => "apgd-t",
            Self::ApgdDlr => "apgd-dlr",
        }
    }
}
