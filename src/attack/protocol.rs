//! Robust accuracy as AutoAttack measures it: n test images drawn at random (seeded), the
//! classifier in eval mode; only correctly classified points are attacked; the attacks run
//! in order, each on the points every earlier attack failed to flip; a point is robust only
//! if no attack flips it. Each attack's result is checked against the ε-ball ∩ [0, 1] and
//! re-classified before it counts (as AutoAttack re-evaluates its adversarial inputs).

use super::apgd::{apgd, ApgdConfig, ApgdLoss};
use super::pgd::{fgsm, pgd, PgdConfig};
use super::{argmax_rows, check_in_ball, logits_in_chunks, Adversarial, Logits};
use crate::data::Split;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::time::Instant;

/// The attacks the protocol can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// One signed-gradient step of size ε on CE.
    Fgsm,
    /// PGD on CE: `iters` steps of 2.5·ε/iters from a random start (Madry et al.).
    Pgd,
    /// APGD on CE (AutoAttack's first attack).
    ApgdCe,
    /// APGD on the targeted DLR loss, the 9 runner-up classes as targets (AutoAttack's second).
    ApgdT,
    /// APGD on the untargeted DLR loss.
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

/// What to measure: radius, sample, attacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackConfig {
    /// ℓ∞ radius in input units (1/255 in the paper).
    pub eps: f64,
    /// Test images drawn at random.
    pub n: usize,
    /// Seed of the image draw and of the attacks' random starts.
    pub seed: u64,
    /// Attacks, run in order on the survivors of the previous ones.
    pub attacks: Vec<AttackKind>,
    /// Iterations per attack run (100 in AutoAttack's standard version).
    pub iters: usize,
    /// Images per forward/backward batch.
    pub batch: usize,
}

impl Default for AttackConfig {
    /// The paper's protocol: ε = 1/255, 1,024 images, APGD-CE then APGD-T, 100 iterations.
    fn default() -> Self {
        Self { eps: 1.0 / 255.0, n: 1024, seed: 0, attacks: vec![AttackKind::ApgdCe, AttackKind::ApgdT], iters: 100, batch: 256 }
    }
}

impl AttackConfig {
    /// Errors naming the field when a setting cannot be run on a test split of `available` images.
    pub fn validate(&self, available: usize) -> Result<()> {
        if !self.eps.is_finite() || !(0.0..=1.0).contains(&self.eps) {
            bail!("attack eps = {} is outside [0, 1] (inputs are images in [0, 1]; e.g. 1/255 = 0.0039)", self.eps);
        }
        if self.n == 0 {
            bail!("attack n = 0: draw at least one test image");
        }
        if self.n > available {
            bail!("attack n = {} but the test split holds {available} images: lower n", self.n);
        }
        if self.attacks.is_empty() {
            bail!("attack list is empty: give e.g. apgd-ce,apgd-t");
        }
        if self.iters == 0 {
            bail!("attack iters = 0: give at least 1 iteration");
        }
        if self.batch == 0 {
            bail!("attack batch = 0: give at least 1 image per batch");
        }
        Ok(())
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
}

/// Evaluates `f` on `split` (the test set) as configured, without progress output.
pub fn evaluate(f: &Logits, split: &Split, cfg: &AttackConfig, device: &Device) -> Result<RobustReport> {
    evaluate_with_progress(f, split, cfg, device, false)
}

/// As [`evaluate`], drawing a progress bar per attack on stderr when `progress` (indicatif
/// hides it when stderr is not a terminal).
pub fn evaluate_with_progress(f: &Logits, split: &Split, cfg: &AttackConfig, device: &Device, progress: bool) -> Result<RobustReport> {
    cfg.validate(split.len())?;
    let start = Instant::now();
    let passes = Cell::new(0u64);
    let counted = |x: &Tensor| {
        passes.set(passes.get() + x.dim(0)? as u64);
        f(x)
    };

    let indices = draw(split.len(), cfg.n, cfg.seed);
    let labels: Vec<u32> = indices.iter().map(|&i| split.labels[i] as u32).collect();
    let mut margins = Vec::with_capacity(cfg.n);
    let mut correct = Vec::with_capacity(cfg.n);
    let mut classes = 0;
    for chunk in indices.chunks(cfg.batch) {
        let (x, _) = split.batch(chunk, device)?;
        let rows = logits_in_chunks(&counted, &x, cfg.batch)?;
        classes = rows.first().map_or(classes, |r| r.len());
        for ((row, pred), &i) in rows.iter().zip(argmax_rows(&rows)).zip(chunk) {
            let y = split.labels[i] as usize;
            margins.push(margin(row, y));
            correct.push(pred as usize == y);
        }
    }
    // Positions (into `indices`) still robust: at first, the correctly classified ones.
    let mut survivors: Vec<usize> = (0..cfg.n).filter(|&p| correct[p]).collect();
    let clean = survivors.len();
    let mut robust_acc_after = Vec::new();
    let mut attack_seconds = Vec::new();
    for &kind in &cfg.attacks {
        let t0 = Instant::now();
        if !survivors.is_empty() {
            let idx: Vec<usize> = survivors.iter().map(|&p| indices[p]).collect();
            let (x, _) = split.batch(&idx, device)?;
            let y: Vec<u32> = survivors.iter().map(|&p| labels[p]).collect();
            let bar = bar(progress, kind, bar_length(kind, cfg, survivors.len()));
            let tick = || bar.inc(1);
            let adv = run_attack(kind, &counted, &x, &y, classes, cfg, &tick)?;
            bar.finish_and_clear();
            check_in_ball(&x, &adv.x_adv, cfg.eps)?;
            let preds = argmax_rows(&logits_in_chunks(&counted, &adv.x_adv, cfg.batch)?);
            survivors = survivors.iter().zip(&preds).zip(&y).filter(|((_, p), y)| p == y).map(|((&s, _), _)| s).collect();
        }
        attack_seconds.push(t0.elapsed().as_secs_f64());
        robust_acc_after.push(survivors.len() as f64 / cfg.n as f64);
    }
    Ok(RobustReport {
        n: cfg.n,
        eps: cfg.eps,
        seed: cfg.seed,
        iters: cfg.iters,
        attacks: cfg.attacks.iter().map(|a| a.name().to_string()).collect(),
        clean_acc: clean as f64 / cfg.n as f64,
        robust_acc: survivors.len() as f64 / cfg.n as f64,
        robust_acc_after,
        attack_seconds,
        forward_images: passes.get(),
        seconds: start.elapsed().as_secs_f64(),
        indices,
        margins,
    })
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

/// Runs one attack of the protocol on the survivors `x` with labels `y` (of `classes` classes).
#[allow(clippy::too_many_arguments)]
fn run_attack(kind: AttackKind, f: &Logits, x: &Tensor, y: &[u32], classes: usize, cfg: &AttackConfig, tick: &dyn Fn()) -> Result<Adversarial> {
    let apgd_cfg = |loss| ApgdConfig { iters: cfg.iters, seed: cfg.seed, batch: cfg.batch, ..ApgdConfig::standard(loss, cfg.eps) };
    match kind {
        AttackKind::Fgsm => fgsm(f, x, y, cfg.eps, cfg.batch),
        AttackKind::Pgd => pgd(f, x, y, &PgdConfig { seed: cfg.seed, batch: cfg.batch, ..PgdConfig::madry(cfg.eps, cfg.iters) }, tick),
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
fn bar_length(kind: AttackKind, cfg: &AttackConfig, points: usize) -> u64 {
    let batches = points.div_ceil(cfg.batch) as u64;
    let runs = match kind {
        AttackKind::Fgsm => return batches,
        AttackKind::ApgdT => 9,
        _ => 1,
    };
    batches * runs * cfg.iters as u64
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
        AttackConfig { eps, n: 20, seed: 1, attacks: AttackKind::ALL.to_vec(), iters: 8, batch: 7 }
    }

    #[test]
    fn zero_radius_gives_robust_equal_to_clean() {
        let f = tiny_net();
        let s = split(&f, 24);
        let r = evaluate(&f, &s, &cfg(0.0), &Device::Cpu).unwrap();
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
        let mut last = 1.0;
        for eps in [0.0, 0.5 / 255.0, 1.0 / 255.0, 4.0 / 255.0, 16.0 / 255.0, 64.0 / 255.0] {
            let r = evaluate(&f, &s, &AttackConfig { attacks: vec![AttackKind::ApgdCe, AttackKind::ApgdT], ..cfg(eps) }, &Device::Cpu).unwrap();
            assert!(r.robust_acc <= last, "ε = {eps}: {} after {last}", r.robust_acc);
            assert!(r.robust_acc_after.windows(2).all(|w| w[1] <= w[0]));
            assert!(r.robust_acc <= r.clean_acc);
            last = r.robust_acc;
        }
        assert_eq!(last, 0.0, "at ε = 64/255 the tiny net should fall everywhere");
    }

    #[test]
    fn same_seed_same_report_and_the_draw_follows_the_seed() {
        let f = tiny_net();
        let s = split(&f, 24);
        let c = AttackConfig { attacks: vec![AttackKind::Pgd, AttackKind::ApgdDlr], ..cfg(2.0 / 255.0) };
        let (a, b) = (evaluate(&f, &s, &c, &Device::Cpu).unwrap(), evaluate(&f, &s, &c, &Device::Cpu).unwrap());
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
        let cases = [
            (AttackConfig { n: 9, ..cfg(0.0) }, "test split holds 8"),
            (AttackConfig { n: 0, ..cfg(0.0) }, "n = 0"),
            (AttackConfig { eps: 1.5, n: 4, ..cfg(0.0) }, "eps = 1.5"),
            (AttackConfig { attacks: vec![], n: 4, ..cfg(0.0) }, "attack list is empty"),
            (AttackConfig { iters: 0, n: 4, ..cfg(0.0) }, "iters = 0"),
            (AttackConfig { batch: 0, n: 4, ..cfg(0.0) }, "batch = 0"),
        ];
        for (c, want) in cases {
            let err = format!("{:#}", evaluate(&f, &s, &c, &Device::Cpu).unwrap_err());
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(AttackKind::parse_list("apgd-ce, APGD-T").unwrap(), vec![AttackKind::ApgdCe, AttackKind::ApgdT]);
        assert!(AttackKind::parse_list("apgd-ce,cw").unwrap_err().to_string().contains("'cw'"));
        let json = serde_json::to_string(&AttackConfig::default()).unwrap();
        assert!(json.contains("\"apgd-ce\"") && json.contains("\"apgd-t\""), "{json}");
        assert_eq!(serde_json::from_str::<AttackConfig>(&json).unwrap(), AttackConfig::default());
    }
}
