//! The plan file's schema: what a RON plan may say, with the paper's protocol (paper.md §5)
//! as the default of every field, so a plan states only what differs. Every struct denies
//! unknown keys: a misspelt key is an error at its line, never a silently ignored setting.

use crate::attack::AttackConfig;
use crate::models::Arch;
use crate::norms::NormKind;
use crate::regularize::{Coverage, RegConfig, DEFAULT_GAMMA, DEFAULT_SVC_EVERY};
use crate::train::{AdvConfig, TrainingProtocol};
use crate::values::{Fraction, NonEmpty, PlanName, Positive};
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

/// One regularizer with the strengths to try (paper.md §4): a row of the grid. Each strength
/// becomes one cell's [`RegConfig`] (the training loop's own type, see [`Self::settings`]); the
/// other fields are that type's. Their defaults are the published table's protocol: the
/// reference code's `coverage` (where [`RegConfig`] itself, read from an older record without
/// the key, means `all`), no final SVC clip, no BatchNorm projection.
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
        /// `reference` (default: the reference code's convs and moments) or `all`.
        #[serde(default = "reference")]
        coverage: Coverage,
        /// Clip once more after the last step and re-estimate BatchNorm's statistics
        /// (default false, as the reference).
        #[serde(default)]
        final_clip: bool,
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
        /// `reference` (default: the reference code's layers) or `all`.
        #[serde(default = "reference")]
        coverage: Coverage,
        /// Project each BatchNorm layer's norm to at most this bound before every step (the
        /// reference's `train_nd_proj_bn.py`: 5; default: no projection).
        #[serde(default)]
        project_bn: Option<Positive>,
    },
}

fn reference() -> Coverage {
    Coverage::Reference
}

fn svc_every() -> NonZeroU32 {
    DEFAULT_SVC_EVERY
}

fn half() -> Fraction {
    DEFAULT_GAMMA
}

/// Which norm-decay update (paper.md §3): the training loop's own type, so a plan names
/// exactly what `normlab train --nd-variant` takes.
pub use crate::regularize::NdVariant;

impl RegularizerSpec {
    /// The regularizer of each strength, in the plan's order.
    pub fn settings(&self) -> Vec<RegConfig> {
        match self {
            Self::WeightDecay { betas } => betas.iter().map(|&beta| RegConfig::WeightDecay { beta }).collect(),
            &Self::Svc { ref clips, every, coverage, final_clip } => {
                clips.iter().map(|&clip| RegConfig::Svc { clip, every, coverage, final_clip }).collect()
            }
            &Self::NormDecay { norm, ref betas, gamma, variant, include_bn, coverage, project_bn } => {
                betas.iter().map(|&beta| RegConfig::NormDecay { norm, beta, gamma, variant, include_bn, coverage, project_bn }).collect()
            }
        }
    }
}

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
    pub adv: NonEmpty<AdvConfig>,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        let paper = TrainingProtocol::paper();
        Self {
            epochs: paper.epochs,
            lr: paper.lr,
            momentum: paper.momentum,
            batch: paper.batch,
            milestones: None,
            seeds: NonEmpty(vec![1]),
            train_subset: None,
            test_subset: None,
            adv: NonEmpty(vec![AdvConfig::None]),
        }
    }
}

impl TrainingSpec {
    /// The protocol every cell of the plan trains with (milestones resolved: the paper's,
    /// scaled to `epochs`, unless given).
    pub fn protocol(&self) -> TrainingProtocol {
        TrainingProtocol {
            epochs: self.epochs,
            lr: self.lr,
            momentum: self.momentum,
            batch: self.batch,
            milestones: self.milestones.clone().unwrap_or_else(|| crate::train::schedule::scaled_milestones(self.epochs.get())),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
        }
    }
}

/// The evaluation protocol (paper.md §5 defaults).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationSpec {
    /// Clean accuracy on the first N test images (absent: the full 10,000, as the paper).
    pub clean_subset: Option<NonZeroUsize>,
    /// Robust accuracy (absent: the paper's APGD-CE + APGD-T at 1/255 on 1,024 images;
    /// `None`: not measured): the attack protocol's own configuration.
    pub robust: Option<AttackConfig>,
    /// Certified accuracy at the first radius from the layer norms of the threat model's norm
    /// (ℓ∞ norms for `norm: linf`, spectral norms for `norm: l2`; default true).
    pub certified: bool,
}

impl Default for EvaluationSpec {
    fn default() -> Self {
        Self { clean_subset: None, robust: Some(AttackConfig::default()), certified: true }
    }
}
