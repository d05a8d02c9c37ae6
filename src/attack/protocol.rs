//! Robust accuracy as AutoAttack measures it: n test images drawn at random (seeded), the
//! classifier in eval mode; only correctly classified points are attacked; the attacks run
//! in order, each on the points every earlier attack failed to flip; a point is robust only
//! if no attack flips it. Each attack's result is checked against the ε-ball ∩ [0, 1] and
//! re-classified before it counts (as AutoAttack re-evaluates its adversarial inputs).

use super::apgd::{apgd, ApgdConfig, ApgdLoss};
use super::fab::{fab_t, FabConfig};
use super::pgd::{fgsm, pgd, PgdConfig};
use super::square::{square, SquareConfig};
use super::{argmax_rows, check_in_ball, logits_in_chunks, Adversarial, Logits, Norm};
use crate::data::{Split, IMAGE_BYTES};
use crate::values::{NonEmpty, Radius};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Instant;

/// The attacks the protocol can run. In plans and JSON they are written `apgd_ce` (a cell id's
/// shape); `apgd-ce` is read too, and is the name on the command line and in results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// One signed-gradient step of size ε on CE (ℓ∞ only).
    Fgsm,
    /// PGD on CE: `iters` steps of 2.5·ε/iters from a random start (Madry et al.; ℓ∞ only).
    Pgd,
    /// APGD on CE (AutoAttack's first attack).
    #[serde(alias = "apgd-ce")]
    ApgdCe,
    /// APGD on the targeted DLR loss, the 9 runner-up classes as targets (AutoAttack's second).
    #[serde(alias = "apgd-t")]
    ApgdT,
    /// APGD on the untargeted DLR loss.
    #[serde(alias = "apgd-dlr")]
    ApgdDlr,
    /// Targeted FAB, the 9 runner-up classes as targets (AutoAttack's third).
    #[serde(alias = "fab-t")]
    FabT,
    /// Square Attack, 5,000 queries (AutoAttack's fourth; no gradients).
    Square,
}

impl AttackKind {
    /// Every attack, cheapest first.
    pub const ALL: [AttackKind; 7] =
        [AttackKind::Fgsm, AttackKind::Pgd, AttackKind::ApgdCe, AttackKind::ApgdT, AttackKind::ApgdDlr, AttackKind::FabT, AttackKind::Square];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "fgsm",
            AttackKind::Pgd => "pgd",
            AttackKind::ApgdCe => "apgd-ce",
            AttackKind::ApgdT => "apgd-t",
            AttackKind::ApgdDlr => "apgd-dlr",
            AttackKind::FabT => "fab-t",
            AttackKind::Square => "square",
        }
    }

    /// Parses one attack name; the error lists the known ones.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        match Self::ALL.into_iter().find(|a| a.name() == t) {
            Some(a) => Ok(a),
            None => bail!("unknown attack '{text}': expected one of {}", Self::ALL.map(|a| a.name()).join(", ")),
        }
    }

    /// Parses a comma-separated attack list (`apgd-ce,apgd-t`), in order.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let list = text.split(',').filter(|s| !s.trim().is_empty()).map(Self::parse).collect::<Result<Vec<_>>>()?;
        if list.is_empty() {
            bail!("empty attack list '{text}': give e.g. apgd-ce,apgd-t");
        }
        Ok(list)
    }

    /// Whether the attack runs under `norm` (FGSM and PGD take sign steps: ℓ∞ only).
    pub fn supports(self, norm: Norm) -> bool {
        norm == Norm::Linf || !matches!(self, AttackKind::Fgsm | AttackKind::Pgd)
    }
}

impl std::fmt::Display for AttackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A named list of attacks: the paper's (AutoAttack's APGD-CE then APGD-T, the default),
/// AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square, in `autoattack.py`'s order,
/// line 307), or any other list (custom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    /// APGD-CE, APGD-T (the paper's protocol).
    Paper,
    /// APGD-CE, APGD-T, FAB-T, Square (AutoAttack's standard version, RobustBench's).
    Standard,
    /// The `attacks` list as given.
    Custom,
}

impl Suite {
    /// Every suite.
    pub const ALL: [Suite; 3] = [Suite::Paper, Suite::Standard, Suite::Custom];
    const PAPER: [AttackKind; 2] = [AttackKind::ApgdCe, AttackKind::ApgdT];
    const STANDARD: [AttackKind; 4] = [AttackKind::ApgdCe, AttackKind::ApgdT, AttackKind::FabT, AttackKind::Square];

    /// The name in plans, on the command line and in results columns.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Paper => "paper",
            Suite::Standard => "standard",
            Suite::Custom => "custom",
        }
    }

    /// Parses `paper`, `standard` or `custom`; the error lists them.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        match Self::ALL.into_iter().find(|s| s.name() == t) {
            Some(s) => Ok(s),
            None => bail!("unknown suite '{text}': expected paper, standard or custom"),
        }
    }

    /// The suite's attacks in order; `None` for custom (the list is given).
    pub fn attacks(self) -> Option<&'static [AttackKind]> {
        match self {
            Suite::Paper => Some(&Self::PAPER),
            Suite::Standard => Some(&Self::STANDARD),
            Suite::Custom => None,
        }
    }

    /// The suite an attack list is: paper or standard when it is exactly theirs, else custom.
    pub fn of(attacks: &[AttackKind]) -> Self {
        [Suite::Paper, Suite::Standard].into_iter().find(|s| s.attacks() == Some(attacks)).unwrap_or(Suite::Custom)
    }

    /// The attack list a suite and an optional list name together: a named suite's own list
    /// (a list given beside it must equal it), or the given list for custom. Neither given:
    /// the paper's. Errors say which to drop or write.
    pub fn resolve(suite: Option<Suite>, attacks: Option<Vec<AttackKind>>) -> Result<Vec<AttackKind>, String> {
        let names = |l: &[AttackKind]| l.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
        match (suite, attacks) {
            (None, None) => Ok(Self::PAPER.to_vec()),
            (None, Some(list)) => Ok(list),
            (Some(Suite::Custom), None) => Err("suite: custom needs an attacks list (e.g. attacks: [apgd_ce, square])".into()),
            (Some(Suite::Custom), Some(list)) => Ok(list),
            (Some(s), None) => Ok(s.attacks().unwrap_or_default().to_vec()),
            (Some(s), Some(list)) => {
                let own = s.attacks().unwrap_or_default();
                if list == own {
                    Ok(list)
                } else {
                    Err(format!(
                        "attacks [{}] contradict suite {} (its attacks are {}): drop the attacks or use suite custom",
                        names(&list),
                        s.name(),
                        names(own)
                    ))
                }
            }
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to measure: the attacks, the radii and their norm, the sample. A plan's
/// `evaluation.robust` is this type (its JSON is part of a cell's id: keep the field order;
/// the fields added later are left out at their defaults, so older ids stay), and `normlab
/// attack` builds it from its flags; every value in it is valid by construction.
///
/// In a plan, `suite: standard` (or `paper`) stands for its attack list, and `suite: custom`
/// takes `attacks`; the configuration keeps only the list (its suite is [`Suite::of`] the
/// list), so a suite and the list it names cannot disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Written")]
pub struct AttackConfig {
    /// Attacks, run in order on the survivors of the previous ones (paper: AutoAttack's
    /// apgd_ce then apgd_t).
    pub attacks: NonEmpty<AttackKind>,
    /// Radii in input units under `norm`, one robust accuracy each (paper: ℓ∞ 1/255).
    pub eps: NonEmpty<Radius>,
    /// Test images drawn at random (paper: 1,024).
    pub n: NonZeroUsize,
    /// Seed of the image draw and of the attacks' random starts.
    pub seed: u64,
    /// Iterations per APGD and FAB run (AutoAttack's standard version: 100).
    pub iters: NonZeroU32,
    /// The norm of the threat model (default ℓ∞, the paper's).
    #[serde(skip_serializing_if = "Norm::is_linf")]
    pub norm: Norm,
    /// Square's queries per point (AutoAttack's standard version: 5,000).
    #[serde(skip_serializing_if = "is_standard_queries")]
    pub queries: NonZeroU32,
}

fn standard_queries() -> NonZeroU32 {
    NonZeroU32::new(5000).expect("5000 > 0")
}

fn is_standard_queries(q: &NonZeroU32) -> bool {
    *q == standard_queries()
}

/// An `AttackConfig` as written in a plan or JSON: every key optional, `suite` allowed. Only
/// the deserializer sees it; [`AttackConfig`]'s `TryFrom` fills the defaults and checks what
/// needs several keys at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    #[serde(default)]
    attacks: Option<NonEmpty<AttackKind>>,
    #[serde(default)]
    eps: Option<NonEmpty<Radius>>,
    #[serde(default)]
    n: Option<NonZeroUsize>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    iters: Option<NonZeroU32>,
    #[serde(default)]
    norm: Option<Norm>,
    #[serde(default)]
    queries: Option<NonZeroU32>,
    #[serde(default)]
    suite: Option<Suite>,
}

impl TryFrom<Written> for AttackConfig {
    type Error = String;

    fn try_from(w: Written) -> Result<Self, String> {
        let d = AttackConfig::default();
        let attacks = Suite::resolve(w.suite, w.attacks.map(|l| l.0))?;
        let cfg = AttackConfig {
            attacks: NonEmpty(attacks),
            eps: w.eps.unwrap_or(d.eps),
            n: w.n.unwrap_or(d.n),
            seed: w.seed.unwrap_or(d.seed),
            iters: w.iters.unwrap_or(d.iters),
            norm: w.norm.unwrap_or(d.norm),
            queries: w.queries.unwrap_or(d.queries),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl Default for AttackConfig {
    /// The paper's protocol: ℓ∞ ε = 1/255, 1,024 images, APGD-CE then APGD-T, 100 iterations.
    fn default() -> Self {
        Self {
            attacks: NonEmpty(Suite::PAPER.to_vec()),
            eps: NonEmpty(vec![Radius(1.0 / 255.0)]),
            n: NonZeroUsize::new(1024).expect("1024 > 0"),
            seed: 0,
            iters: NonZeroU32::new(100).expect("100 > 0"),
            norm: Norm::Linf,
            queries: standard_queries(),
        }
    }
}

impl AttackConfig {
    /// The suite the attack list is.
    pub fn suite(&self) -> Suite {
        Suite::of(&self.attacks.0)
    }

    /// Errors naming the problem when the settings do not make a protocol: a radius beyond
    /// the norm's diameter of the CIFAR-10 image cube (1 in ℓ∞, √3072 in ℓ2: a larger ball
    /// holds no more images), an attack that does not run under the norm, or an attack twice.
    pub fn validate(&self) -> Result<(), String> {
        let diameter = self.norm.diameter(IMAGE_BYTES);
        for e in self.eps.iter() {
            if e.get() > diameter {
                return Err(match self.norm {
                    Norm::Linf => format!(
                        "ε = {} is outside [0, 1]: inputs are images in [0, 1], so an ℓ∞ radius above 1 adds nothing (expected e.g. 8/255)",
                        e.get()
                    ),
                    Norm::L2 => format!(
                        "ℓ2 ε = {} exceeds √{IMAGE_BYTES} ≈ {diameter:.2}, the largest ℓ2 distance between CIFAR-10 images in [0, 1] (expected e.g. 0.5)",
                        e.get()
                    ),
                });
            }
        }
        if let Some(a) = self.attacks.iter().find(|a| !a.supports(self.norm)) {
            return Err(format!("{a} is an ℓ∞ attack (sign steps): under norm {} use apgd-ce, apgd-t, apgd-dlr, fab-t or square", self.norm));
        }
        NonEmpty::new(self.attacks.0.clone()).map(|_| ()).map_err(|e| format!("attacks: {e}"))
    }

    /// Errors naming the field when the configuration cannot be run on a test split of
    /// `available` images.
    pub fn check_available(&self, available: usize) -> Result<()> {
        if self.n.get() > available {
            bail!("attack n = {} but the test split holds {available} images: lower n", self.n);
        }
        Ok(())
    }

    fn iters(&self) -> usize {
        self.iters.get() as usize
    }

    fn queries(&self) -> usize {
        self.queries.get() as usize
    }
}

/// The result of one evaluation. Accuracies are fractions of the n drawn images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustReport {
    /// Images drawn.
    pub n: usize,
    /// The norm of the ball.
    pub norm: Norm,
    /// Radius under `norm`.
    pub eps: f64,
    /// The suite the attack list is.
    pub suite: Suite,
    /// Seed of the draw and the attacks.
    pub seed: u64,
    /// Iterations per attack run.
    pub iters: usize,
    /// Attack names, in the order run.
    pub attacks: Vec<String>,
    /// Share of the drawn images classified correctly.
    pub clean_acc: f64,
    /// Share that no attack flips.
    pub robust_acc: f64,
    /// Robust accuracy after each attack, in order (the last equals `robust_acc`).
    pub robust_acc_after: Vec<f64>,
    /// Wall-clock seconds of each attack.
    pub attack_seconds: Vec<f64>,
    /// Images passed through the classifier (forward, and backward during attacks), all
    /// passes together: the unit of attack throughput.
    pub forward_images: u64,
    /// Wall-clock seconds of the whole evaluation.
    pub seconds: f64,
    /// The drawn test-set indices, in draw order.
    #[serde(skip)]
    pub indices: Vec<usize>,
    /// Clean logit margin z_y − max_{j≠y} z_j of each drawn image (≤ 0 where misclassified),
    /// what certified accuracy is computed from.
    #[serde(skip)]
    pub margins: Vec<f64>,
    /// Per drawn image (in `indices` order): whether it is classified correctly.
    #[serde(skip)]
    pub correct: Vec<bool>,
    /// Per drawn image: the position in `attacks` of the attack that flipped it; `None` where
    /// it was misclassified already or no attack flipped it (robust).
    #[serde(skip)]
    pub flipped_by: Vec<Option<usize>>,
}

impl RobustReport {
    /// Per drawn image: robust (correct, and no attack flipped it).
    pub fn robust(&self) -> Vec<bool> {
        self.correct.iter().zip(&self.flipped_by).map(|(&c, f)| c && f.is_none()).collect()
    }
}

/// Evaluates `f` on `split` (the test set) as configured, one report per radius in `cfg.eps`
/// order, without progress output. `batch`: images per forward/backward pass.
pub fn evaluate(f: &Logits, split: &Split, cfg: &AttackConfig, batch: usize, device: &Device) -> Result<Vec<RobustReport>> {
    evaluate_with_progress(f, split, cfg, batch, device, false)
}

/// As [`evaluate`], drawing a progress bar per attack on stderr when `progress` (indicatif
/// hides it when stderr is not a terminal). The draw and the clean pass are shared by the
/// radii; each report's `seconds` and `forward_images` include the clean pass.
pub fn evaluate_with_progress(f: &Logits, split: &Split, cfg: &AttackConfig, batch: usize, device: &Device, progress: bool) -> Result<Vec<RobustReport>> {
    cfg.check_available(split.len())?;
    cfg.validate().map_err(anyhow::Error::msg)?;
    if batch == 0 {
        bail!("attack batch = 0: give at least 1 image per batch");
    }
    let start = Instant::now();
    let passes = Cell::new(0u64);
    let counted = |x: &Tensor| {
        passes.set(passes.get() + x.dim(0)? as u64);
        f(x)
    };
    let n = cfg.n.get();
    let indices = draw(split.len(), n, cfg.seed);
    let labels: Vec<u32> = indices.iter().map(|&i| split.labels[i] as u32).collect();
    let mut margins = Vec::with_capacity(n);
    let mut correct = Vec::with_capacity(n);
    let mut classes = 0;
    for chunk in indices.chunks(batch) {
        let (x, _) = split.batch(chunk, device)?;
        let rows = logits_in_chunks(&counted, &x, batch)?;
        classes = rows.first().map_or(classes, |r| r.len());
        for ((row, pred), &i) in rows.iter().zip(argmax_rows(&rows)).zip(chunk) {
            let y = split.labels[i] as usize;
            margins.push(margin(row, y));
            correct.push(pred as usize == y);
        }
    }
    let (clean_seconds, clean_passes) = (start.elapsed().as_secs_f64(), passes.get());
    // Positions (into `indices`) correctly classified: the points every radius starts from.
    let clean: Vec<usize> = (0..n).filter(|&p| correct[p]).collect();
    let mut reports = Vec::with_capacity(cfg.eps.0.len());
    for &eps in cfg.eps.iter() {
        let t_eps = Instant::now();
        passes.set(clean_passes);
        let outcome = run_suite(n, &clean, cfg.attacks.0.len(), |a, survivors| {
            let kind = cfg.attacks.0[a];
            let idx: Vec<usize> = survivors.iter().map(|&p| indices[p]).collect();
            let (x, _) = split.batch(&idx, device)?;
            let y: Vec<u32> = survivors.iter().map(|&p| labels[p]).collect();
            let bar = bar(progress, kind, bar_length(kind, cfg, batch, survivors.len()));
            let tick = || bar.inc(1);
            let adv = run_attack(kind, &counted, &x, &y, classes, eps.get(), cfg, batch, &tick)?;
            bar.finish_and_clear();
            // Checked and re-classified before it counts, as AutoAttack re-evaluates.
            check_in_ball(&x, &adv.x_adv, cfg.norm, eps.get())?;
            let preds = argmax_rows(&logits_in_chunks(&counted, &adv.x_adv, batch)?);
            Ok(preds.iter().zip(&y).map(|(p, y)| p != y).collect())
        })?;
        let SuiteOutcome { survivors, flipped_by, robust_after, seconds: attack_seconds } = outcome;
        let robust_acc_after = robust_after.iter().map(|&r| r as f64 / n as f64).collect();
        reports.push(RobustReport {
            n,
            norm: cfg.norm,
            eps: eps.get(),
            suite: cfg.suite(),
            seed: cfg.seed,
            iters: cfg.iters(),
            attacks: cfg.attacks.iter().map(|a| a.name().to_string()).collect(),
            clean_acc: clean.len() as f64 / n as f64,
            robust_acc: survivors.len() as f64 / n as f64,
            robust_acc_after,
            attack_seconds,
            forward_images: passes.get(),
            seconds: clean_seconds + t_eps.elapsed().as_secs_f64(),
            indices: indices.clone(),
            margins: margins.clone(),
            correct: correct.clone(),
            flipped_by,
        });
    }
    Ok(reports)
}

/// The bookkeeping of a suite on one radius: who was flipped by which attack.
#[derive(Debug, Clone, PartialEq)]
struct SuiteOutcome {
    /// Positions no attack flipped.
    survivors: Vec<usize>,
    /// Per position: the attack that flipped it.
    flipped_by: Vec<Option<usize>>,
    /// Robust points after each attack.
    robust_after: Vec<usize>,
    /// Wall-clock seconds of each attack.
    seconds: Vec<f64>,
}

/// Runs `attacks` attacks in order on `points` positions, starting from the correctly
/// classified ones (`start`): attack `a` gets only the positions no earlier attack flipped
/// and returns, per position it got, whether it flipped it. An attack with nobody left is
/// not called (as AutoAttack breaks when no robust point is left).
fn run_suite(points: usize, start: &[usize], attacks: usize, mut attack: impl FnMut(usize, &[usize]) -> Result<Vec<bool>>) -> Result<SuiteOutcome> {
    let mut survivors = start.to_vec();
    let mut flipped_by = vec![None; points];
    let (mut robust_after, mut seconds) = (Vec::with_capacity(attacks), Vec::with_capacity(attacks));
    for a in 0..attacks {
        let t0 = Instant::now();
        if !survivors.is_empty() {
            let flipped = attack(a, &survivors)?;
            if flipped.len() != survivors.len() {
                bail!("attack {a} answered for {} of {} points", flipped.len(), survivors.len());
            }
            let before = std::mem::take(&mut survivors);
            for (p, fl) in before.into_iter().zip(flipped) {
                if fl {
                    flipped_by[p] = Some(a);
                } else {
                    survivors.push(p);
                }
            }
        }
        seconds.push(t0.elapsed().as_secs_f64());
        robust_after.push(survivors.len());
    }
    Ok(SuiteOutcome { survivors, flipped_by, robust_after, seconds })
}

/// `n` distinct indices out of `len`, drawn from `seed` (a seeded shuffle, first n).
fn draw(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(n);
    idx
}

/// The logit margin z_y − max_{j≠y} z_j (negative where misclassified).
pub fn margin(row: &[f32], y: usize) -> f64 {
    let other = row.iter().enumerate().filter(|&(j, _)| j != y).map(|(_, &v)| v as f64).fold(f64::NEG_INFINITY, f64::max);
    row[y] as f64 - other
}

/// Runs one attack of the protocol at radius `eps` on the survivors `x` with labels `y` (of
/// `classes` classes).
#[allow(clippy::too_many_arguments)]
fn run_attack(kind: AttackKind, f: &Logits, x: &Tensor, y: &[u32], classes: usize, eps: f64, cfg: &AttackConfig, batch: usize, tick: &dyn Fn()) -> Result<Adversarial> {
    let norm = cfg.norm;
    let apgd_cfg = |loss| ApgdConfig { iters: cfg.iters(), seed: cfg.seed, batch, ..ApgdConfig::standard(loss, norm, eps) };
    // AutoAttack's 9 targets; fewer on classifiers with fewer than 10 classes.
    let targets = 9.min(classes.saturating_sub(1));
    match kind {
        AttackKind::Fgsm => fgsm(f, x, y, eps, batch),
        AttackKind::Pgd => pgd(f, x, y, &PgdConfig { seed: cfg.seed, batch, ..PgdConfig::madry(eps, cfg.iters()) }, tick),
        AttackKind::ApgdCe => apgd(f, x, y, &apgd_cfg(ApgdLoss::Ce), tick),
        AttackKind::ApgdDlr => apgd(f, x, y, &apgd_cfg(ApgdLoss::Dlr), tick),
        AttackKind::ApgdT => apgd(f, x, y, &ApgdConfig { targets, ..apgd_cfg(ApgdLoss::TargetedDlr) }, tick),
        AttackKind::FabT => Ok(fab_t(f, x, y, &FabConfig { iters: cfg.iters(), targets, batch, ..FabConfig::standard(norm, eps) }, tick)?.adversarial),
        AttackKind::Square => square(f, x, y, &SquareConfig { queries: cfg.queries(), seed: cfg.seed, batch, ..SquareConfig::standard(norm, eps) }, tick),
    }
}

/// Ticks (batches × runs × steps) an attack makes at most.
fn bar_length(kind: AttackKind, cfg: &AttackConfig, batch: usize, points: usize) -> u64 {
    let batches = points.div_ceil(batch) as u64;
    let (runs, steps) = match kind {
        AttackKind::Fgsm => return batches,
        AttackKind::ApgdT | AttackKind::FabT => (9, cfg.iters()),
        AttackKind::Square => (1, cfg.queries()),
        _ => (1, cfg.iters()),
    };
    batches * runs * steps as u64
}

fn bar(progress: bool, kind: AttackKind, len: u64) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} batch-steps {elapsed_precise} (≤ {eta} left)")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(kind.name());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IMAGE_BYTES;
    use rand::Rng;

    /// A small CIFAR-shaped ReLU network (3072 → 12 → 10) with seeded weights.
    fn tiny_net() -> impl Fn(&Tensor) -> candle_core::Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut w = |r, c, s: f32| Tensor::from_vec((0..r * c).map(|_| rng.gen_range(-s..s)).collect::<Vec<f32>>(), (r, c), &Device::Cpu).unwrap();
        let (w1, w2) = (w(IMAGE_BYTES, 12, 0.05), w(12, 10, 1.0));
        move |x: &Tensor| x.flatten_from(1)?.matmul(&w1)?.relu()?.matmul(&w2)
    }

    /// `n` seeded images; 3 of 4 labelled with the network's prediction, the rest shifted.
    fn split(f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>, n: usize) -> Split {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let images: Vec<u8> = (0..n * IMAGE_BYTES).map(|_| rng.gen()).collect();
        let s = Split::new(images.clone(), vec![0; n]).unwrap();
        let (x, _) = s.batch(&(0..n).collect::<Vec<_>>(), &Device::Cpu).unwrap();
        let preds = argmax_rows(&f(&x).unwrap().to_vec2::<f32>().unwrap());
        let labels = preds.iter().enumerate().map(|(i, &p)| if i % 4 == 3 { (p as u8 + 1) % 10 } else { p as u8 }).collect();
        Split::new(images, labels).unwrap()
    }

    fn cfg(eps: f64) -> AttackConfig {
        AttackConfig {
            attacks: NonEmpty(AttackKind::ALL.to_vec()),
            eps: NonEmpty(vec![Radius(eps)]),
            n: NonZeroUsize::new(20).unwrap(),
            seed: 1,
            iters: NonZeroU32::new(8).unwrap(),
            norm: Norm::Linf,
            queries: NonZeroU32::new(30).unwrap(),
        }
    }

    /// The one report of a one-radius configuration, in batches of 7.
    fn evaluate_one(f: &Logits, s: &Split, c: &AttackConfig) -> Result<RobustReport> {
        Ok(evaluate(f, s, c, 7, &Device::Cpu)?.remove(0))
    }

    #[test]
    fn zero_radius_gives_robust_equal_to_clean() {
        let f = tiny_net();
        let s = split(&f, 24);
        let r = evaluate_one(&f, &s, &cfg(0.0)).unwrap();
        assert!(r.clean_acc > 0.5 && r.clean_acc < 1.0, "{}", r.clean_acc);
        assert_eq!(r.robust_acc, r.clean_acc);
        assert_eq!(r.robust_acc_after, vec![r.clean_acc; 7]);
        assert_eq!(r.margins.len(), 20);
        assert_eq!(r.margins.iter().filter(|&&m| m > 0.0).count() as f64 / 20.0, r.clean_acc);
    }

    #[test]
    fn robust_accuracy_never_grows_with_the_radius() {
        let f = tiny_net();
        let s = split(&f, 24);
        let radii = [0.0, 0.5 / 255.0, 1.0 / 255.0, 4.0 / 255.0, 16.0 / 255.0, 64.0 / 255.0];
        let c = AttackConfig { attacks: NonEmpty(vec![AttackKind::ApgdCe, AttackKind::ApgdT]), eps: NonEmpty(radii.iter().map(|&e| Radius(e)).collect()), ..cfg(0.0) };
        let reports = evaluate(&f, &s, &c, 7, &Device::Cpu).unwrap();
        assert_eq!(reports.len(), radii.len());
        let mut last = 1.0;
        for (r, eps) in reports.iter().zip(radii) {
            assert_eq!(r.eps, eps);
            assert!(r.robust_acc <= last, "ε = {eps}: {} after {last}", r.robust_acc);
            assert!(r.robust_acc_after.windows(2).all(|w| w[1] <= w[0]));
            assert!(r.robust_acc <= r.clean_acc);
            last = r.robust_acc;
        }
        assert_eq!(last, 0.0, "at ε = 64/255 the tiny net should fall everywhere");
        // Per image: a flip is booked to one attack, only on correctly classified points, and
        // the robust images are exactly what the accuracy counts.
        for r in &reports {
            assert_eq!(r.robust().iter().filter(|&&b| b).count() as f64 / 20.0, r.robust_acc);
            for (i, f) in r.flipped_by.iter().enumerate() {
                assert!(f.is_none() || r.correct[i], "image {i} flipped without being correct");
                assert!(f.is_none_or(|a| a < 2));
            }
            let (correct, after_first) = (r.correct.iter().filter(|&&c| c).count(), r.flipped_by.iter().filter(|f| **f == Some(0)).count());
            assert_eq!((correct - after_first) as f64 / 20.0, r.robust_acc_after[0]);
        }
        // Several radii in one call give what each radius gives alone.
        let alone = evaluate_one(&f, &s, &AttackConfig { eps: NonEmpty(vec![Radius(radii[3])]), ..c.clone() }).unwrap();
        assert_eq!(alone.robust_acc_after, reports[3].robust_acc_after);
    }

    #[test]
    fn the_suite_attacks_only_what_no_earlier_attack_flipped() {
        // A fake suite of three attacks on 10 positions (8 correctly classified): attack a
        // flips the positions p with p % 3 == a. Each attack must get exactly the survivors.
        let start = vec![0, 1, 2, 3, 5, 6, 8, 9];
        let mut seen: Vec<Vec<usize>> = Vec::new();
        let out = run_suite(10, &start, 3, |a, survivors| {
            seen.push(survivors.to_vec());
            Ok(survivors.iter().map(|p| p % 3 == a).collect())
        })
        .unwrap();
        assert_eq!(seen, vec![vec![0, 1, 2, 3, 5, 6, 8, 9], vec![1, 2, 5, 8], vec![2, 5, 8]]);
        assert_eq!(out.robust_after, vec![4, 3, 0]);
        assert!(out.survivors.is_empty());
        assert_eq!(out.flipped_by, vec![Some(0), Some(1), Some(2), Some(0), None, Some(2), Some(0), None, Some(2), Some(0)]);
        // Nobody left: later attacks are not called; a wrong answer is an error.
        let mut calls = 0;
        let out = run_suite(4, &[0, 1], 3, |_, s| {
            calls += 1;
            Ok(vec![true; s.len()])
        })
        .unwrap();
        assert_eq!((calls, out.robust_after), (1, vec![0, 0, 0]));
        assert!(run_suite(4, &[0, 1], 1, |_, _| Ok(vec![true])).is_err());
    }

    #[test]
    fn the_standard_suite_extends_the_paper_suite_under_both_norms() {
        // The standard suite starts with the paper's two attacks (same seed: same flips), so
        // after them it agrees with the paper suite, and its robust accuracy never grows.
        let f = tiny_net();
        let s = split(&f, 24);
        for (norm, eps) in [(Norm::Linf, 1.0 / 255.0), (Norm::L2, 0.15)] {
            let paper = AttackConfig { attacks: NonEmpty(Suite::Paper.attacks().unwrap().to_vec()), norm, ..cfg(eps) };
            let standard = AttackConfig { attacks: NonEmpty(Suite::Standard.attacks().unwrap().to_vec()), ..paper.clone() };
            let (p, st) = (evaluate_one(&f, &s, &paper).unwrap(), evaluate_one(&f, &s, &standard).unwrap());
            assert_eq!((p.suite, st.suite, st.norm), (Suite::Paper, Suite::Standard, norm));
            assert_eq!(st.attacks, vec!["apgd-ce", "apgd-t", "fab-t", "square"]);
            assert_eq!(&st.robust_acc_after[..2], &p.robust_acc_after[..]);
            assert!(st.robust_acc_after.windows(2).all(|w| w[1] <= w[0]), "{norm}: {:?}", st.robust_acc_after);
            assert!(st.robust_acc <= p.robust_acc && st.robust_acc > 0.0 && p.robust_acc < p.clean_acc, "{norm}: {} vs {}", st.robust_acc, p.robust_acc);
            assert!(st.flipped_by.iter().all(|f| f.is_none_or(|a| a < 4)));
        }
    }

    #[test]
    fn same_seed_same_report_and_the_draw_follows_the_seed() {
        let f = tiny_net();
        let s = split(&f, 24);
        let c = AttackConfig { attacks: NonEmpty(vec![AttackKind::Pgd, AttackKind::ApgdDlr]), ..cfg(2.0 / 255.0) };
        let (a, b) = (evaluate_one(&f, &s, &c).unwrap(), evaluate_one(&f, &s, &c).unwrap());
        assert_eq!((a.robust_acc_after, a.indices), (b.robust_acc_after, b.indices.clone()));
        assert_ne!(draw(24, 20, 1), draw(24, 20, 2));
        let mut sorted = b.indices;
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 20, "distinct images");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let f = tiny_net();
        let s = split(&f, 8);
        let err = format!("{:#}", evaluate_one(&f, &s, &AttackConfig { n: NonZeroUsize::new(9).unwrap(), ..cfg(0.0) }).unwrap_err());
        assert!(err.contains("test split holds 8"), "{err}");
        let err = format!("{:#}", evaluate(&f, &s, &AttackConfig { n: NonZeroUsize::new(4).unwrap(), ..cfg(0.0) }, 0, &Device::Cpu).unwrap_err());
        assert!(err.contains("batch = 0"), "{err}");
        assert_eq!(AttackKind::parse_list("apgd-ce, APGD-T").unwrap(), vec![AttackKind::ApgdCe, AttackKind::ApgdT]);
        assert!(AttackKind::parse_list("apgd-ce,cw").unwrap_err().to_string().contains("'cw'"));
        let json = serde_json::to_string(&AttackConfig::default()).unwrap();
        assert_eq!(json, r#"{"attacks":["apgd_ce","apgd_t"],"eps":[0.00392156862745098],"n":1024,"seed":0,"iters":100}"#);
        assert_eq!(serde_json::from_str::<AttackConfig>(&json).unwrap(), AttackConfig::default());
        // The command line's names are read too; invalid values cannot be.
        let kebab = json.replace("apgd_ce", "apgd-ce");
        assert_eq!(serde_json::from_str::<AttackConfig>(&kebab).unwrap(), AttackConfig::default());
        for bad in [json.replace("1024", "0"), json.replace("\"iters\":100", "\"iters\":0"), json.replace("[\"apgd_ce\",\"apgd_t\"]", "[]")] {
            assert!(serde_json::from_str::<AttackConfig>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suites_and_norms_read_into_the_attack_list_and_keep_old_ids() {
        let read = |text: &str| serde_json::from_str::<AttackConfig>(text).map_err(|e| e.to_string());
        // A named suite stands for its list; only the list and a non-default norm are written.
        let c = read(r#"{"norm":"l2","eps":[0.5],"suite":"standard"}"#).unwrap();
        assert_eq!(c.attacks.0, vec![AttackKind::ApgdCe, AttackKind::ApgdT, AttackKind::FabT, AttackKind::Square]);
        assert_eq!((c.suite(), c.norm, c.eps.0[0].get()), (Suite::Standard, Norm::L2, 0.5));
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"attacks":["apgd_ce","apgd_t","fab_t","square"],"eps":[0.5],"n":1024,"seed":0,"iters":100,"norm":"l2"}"#);
        assert_eq!(read(&serde_json::to_string(&c).unwrap()).unwrap(), c);
        // The default suite and norm add nothing: the paper's JSON (and so its cell ids) stays.
        let p = read(r#"{"suite":"paper","norm":"linf","queries":5000}"#).unwrap();
        assert_eq!(p, AttackConfig::default());
        assert_eq!(p.suite(), Suite::Paper);
        let q = read(r#"{"queries":40}"#).unwrap();
        assert!(serde_json::to_string(&q).unwrap().ends_with(r#""iters":100,"queries":40}"#));
        assert_eq!(read(r#"{"suite":"custom","attacks":["square"]}"#).unwrap().suite(), Suite::Custom);
        // An ℓ2 radius may exceed 1, up to the cube's diameter; an ℓ∞ one may not.
        assert!(read(r#"{"norm":"l2","eps":["3/2"]}"#).is_ok());
        for (bad, want) in [
            (r#"{"eps":[1.5]}"#, "outside [0, 1]"),
            (r#"{"norm":"l2","eps":[60]}"#, "exceeds √3072"),
            (r#"{"suite":"standard","attacks":["apgd_ce"]}"#, "contradict suite standard"),
            (r#"{"suite":"custom"}"#, "needs an attacks list"),
            (r#"{"norm":"l2","attacks":["pgd"]}"#, "pgd is an ℓ∞ attack"),
            (r#"{"norm":"l1"}"#, "l1"),
            (r#"{"suite":"plus"}"#, "plus"),
            (r#"{"attacks":["square","square"]}"#, "twice"),
            (r#"{"queries":0}"#, "nonzero"),
        ] {
            let err = read(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
