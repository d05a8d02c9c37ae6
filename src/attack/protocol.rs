//! Robust accuracy as AutoAttack measures it: n test images drawn at random (seeded), the
//! classifier in eval mode; only correctly classified points are attacked; the attacks run
//! in order, each on the points every earlier attack failed to flip; a point is robust only
//! if no attack flips it. Each attack's result is checked against the ε-ball ∩ [0, 1] and
//! re-classified before it counts (as AutoAttack re-evaluates its adversarial inputs).

use super::apgd::{apgd, ApgdConfig, ApgdLoss};
use super::pgd::{fgsm, pgd, PgdConfig};
use super::{argmax_rows, check_in_ball, logits_in_chunks, Adversarial, Logits};
use crate::data::Split;
use crate::values::{Eps, NonEmpty};
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
    /// One signed-gradient step of size ε on CE.
    Fgsm,
    /// PGD on CE: `iters` steps of 2.5·ε/iters from a random start (Madry et al.).
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
}

impl AttackKind {
    /// Every attack, cheapest first.
    pub const ALL: [AttackKind; 5] = [AttackKind::Fgsm, AttackKind::Pgd, AttackKind::ApgdCe, AttackKind::ApgdT, AttackKind::ApgdDlr];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "fgsm",
            AttackKind::Pgd => "pgd",
            AttackKind::ApgdCe => "apgd-ce",
            AttackKind::ApgdT => "apgd-t",
            AttackKind::ApgdDlr => "apgd-dlr",
        }
    }

    /// Parses one attack name; the error lists the known ones.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        match Self::ALL.into_iter().find(|a| a.name() == t) {
            Some(a) => Ok(a),
            None => bail!("unknown attack '{text}': expected one of fgsm, pgd, apgd-ce, apgd-t, apgd-dlr"),
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
}

impl std::fmt::Display for AttackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to measure: the attacks, the radii, the sample. A plan's `evaluation.robust` is this
/// type (its JSON is part of a cell's id: keep the field order), and `normlab attack` builds
/// it from its flags; every value in it is valid by construction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackConfig {
    /// Attacks, run in order on the survivors of the previous ones (paper: AutoAttack's
    /// apgd_ce then apgd_t).
    pub attacks: NonEmpty<AttackKind>,
    /// ℓ∞ radii in input units, one robust accuracy each (paper: 1/255).
    pub eps: NonEmpty<Eps>,
    /// Test images drawn at random (paper: 1,024).
    pub n: NonZeroUsize,
    /// Seed of the image draw and of the attacks' random starts.
    pub seed: u64,
    /// Iterations per attack run (AutoAttack's standard version: 100).
    pub iters: NonZeroU32,
}

impl Default for AttackConfig {
    /// The paper's protocol: ε = 1/255, 1,024 images, APGD-CE then APGD-T, 100 iterations.
    fn default() -> Self {
        Self {
            attacks: NonEmpty(vec![AttackKind::ApgdCe, AttackKind::ApgdT]),
            eps: NonEmpty(vec![Eps(1.0 / 255.0)]),
            n: NonZeroUsize::new(1024).expect("1024 > 0"),
            seed: 0,
            iters: NonZeroU32::new(100).expect("100 > 0"),
        }
    }
}

impl AttackConfig {
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
}

/// The result of one evaluation. Accuracies are fractions of the n drawn images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustReport {
    /// Images drawn.
    pub n: usize,
    /// ℓ∞ radius.
    pub eps: f64,
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
        let mut survivors = clean.clone();
        let mut flipped_by = vec![None; n];
        let mut robust_acc_after = Vec::new();
        let mut attack_seconds = Vec::new();
        for (a, &kind) in cfg.attacks.iter().enumerate() {
            let t0 = Instant::now();
            if !survivors.is_empty() {
                let idx: Vec<usize> = survivors.iter().map(|&p| indices[p]).collect();
                let (x, _) = split.batch(&idx, device)?;
                let y: Vec<u32> = survivors.iter().map(|&p| labels[p]).collect();
                let bar = bar(progress, kind, bar_length(kind, cfg, batch, survivors.len()));
                let tick = || bar.inc(1);
                let adv = run_attack(kind, &counted, &x, &y, classes, eps.get(), cfg, batch, &tick)?;
                bar.finish_and_clear();
                check_in_ball(&x, &adv.x_adv, eps.get())?;
                let preds = argmax_rows(&logits_in_chunks(&counted, &adv.x_adv, batch)?);
                let before = std::mem::take(&mut survivors);
                for ((s, p), y) in before.into_iter().zip(&preds).zip(&y) {
                    if p == y {
                        survivors.push(s);
                    } else {
                        flipped_by[s] = Some(a);
                    }
                }
            }
            attack_seconds.push(t0.elapsed().as_secs_f64());
            robust_acc_after.push(survivors.len() as f64 / n as f64);
        }
        reports.push(RobustReport {
            n,
            eps: eps.get(),
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
    let apgd_cfg = |loss| ApgdConfig { iters: cfg.iters(), seed: cfg.seed, batch, ..ApgdConfig::standard(loss, eps) };
    match kind {
        AttackKind::Fgsm => fgsm(f, x, y, eps, batch),
        AttackKind::Pgd => pgd(f, x, y, &PgdConfig { seed: cfg.seed, batch, ..PgdConfig::madry(eps, cfg.iters()) }, tick),
        AttackKind::ApgdCe => apgd(f, x, y, &apgd_cfg(ApgdLoss::Ce), tick),
        AttackKind::ApgdDlr => apgd(f, x, y, &apgd_cfg(ApgdLoss::Dlr), tick),
        AttackKind::ApgdT => {
            // AutoAttack's 9 targets; fewer on classifiers with fewer than 10 classes.
            let targets = 9.min(classes.saturating_sub(1));
            apgd(f, x, y, &ApgdConfig { targets, ..apgd_cfg(ApgdLoss::TargetedDlr) }, tick)
        }
    }
}

/// Iterations (batches × runs × steps) an attack ticks through at most.
fn bar_length(kind: AttackKind, cfg: &AttackConfig, batch: usize, points: usize) -> u64 {
    let batches = points.div_ceil(batch) as u64;
    let runs = match kind {
        AttackKind::Fgsm => return batches,
        AttackKind::ApgdT => 9,
        _ => 1,
    };
    batches * runs * cfg.iters() as u64
}

fn bar(progress: bool, kind: AttackKind, len: u64) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} batch-iterations {elapsed_precise} (≤ {eta} left)")
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
            eps: NonEmpty(vec![Eps(eps)]),
            n: NonZeroUsize::new(20).unwrap(),
            seed: 1,
            iters: NonZeroU32::new(8).unwrap(),
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
        assert_eq!(r.robust_acc_after, vec![r.clean_acc; 5]);
        assert_eq!(r.margins.len(), 20);
        assert_eq!(r.margins.iter().filter(|&&m| m > 0.0).count() as f64 / 20.0, r.clean_acc);
    }

    #[test]
    fn robust_accuracy_never_grows_with_the_radius() {
        let f = tiny_net();
        let s = split(&f, 24);
        let radii = [0.0, 0.5 / 255.0, 1.0 / 255.0, 4.0 / 255.0, 16.0 / 255.0, 64.0 / 255.0];
        let c = AttackConfig { attacks: NonEmpty(vec![AttackKind::ApgdCe, AttackKind::ApgdT]), eps: NonEmpty(radii.iter().map(|&e| Eps(e)).collect()), ..cfg(0.0) };
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
        let alone = evaluate_one(&f, &s, &AttackConfig { eps: NonEmpty(vec![Eps(radii[3])]), ..c.clone() }).unwrap();
        assert_eq!(alone.robust_acc_after, reports[3].robust_acc_after);
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
}
