//! What a finished cell leaves behind: the executor's measurements ([`CellRecord`]) and the
//! results row built from them with the cell's identity and provenance ([`row`]), under the
//! column names of [`col`], which the reader ([`super::read`]) uses too.

use crate::attack::{AttackConfig, Norm, Suite};
use crate::plan::Cell;
use crate::values::Radius;
use anyhow::{bail, Result};

/// How a cell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellStatus {
    /// Trained and evaluated; every measured number is finite.
    Ok,
    /// Training stopped on a NaN or infinite loss (the executor says so).
    Diverged,
    /// The executor returned a NaN or infinite measurement.
    Nan,
    /// The executor returned an error or panicked (see the row's message).
    Failed,
}

impl CellStatus {
    /// The results column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Diverged => "diverged",
            Self::Nan => "nan",
            Self::Failed => "failed",
        }
    }
}

/// Summaries of the final model's layer norms over its conv and linear layers (paper.md §2):
/// the same summary the norms table and the training metrics use.
pub use crate::norms::NormSummary;

/// What an executor returns for one cell: every measured result column. Accuracies are
/// fractions in [0, 1]; `None` leaves the column empty (not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct CellRecord {
    /// Ok, or Diverged when training hit a NaN/infinite loss (the scheduler sets Nan and
    /// Failed itself).
    pub status: CellStatus,
    /// Clean accuracy on the evaluation's test images.
    pub clean_acc: Option<f64>,
    /// Robust accuracy at each of the cell's ε, in the plan's order (empty when robust
    /// accuracy is off or training diverged).
    pub robust_acc: Vec<f64>,
    /// Certified accuracy at the first ε (None: off, or no bound for this model).
    pub certified_acc: Option<f64>,
    /// Norm summaries of the final weights.
    pub norms: Option<NormSummary>,
    /// Seconds spent training (this process's share when resumed is fine; it is a speed
    /// measure for estimates).
    pub train_seconds: f64,
    /// Seconds spent evaluating.
    pub eval_seconds: f64,
    /// A note: the error for failed cells, the epoch for diverged ones; may be empty.
    pub message: String,
}

impl CellRecord {
    /// A failed cell's record.
    pub fn failed(message: impl Into<String>, train_seconds: f64) -> Self {
        Self {
            status: CellStatus::Failed,
            clean_acc: None,
            robust_acc: Vec::new(),
            certified_acc: None,
            norms: None,
            train_seconds,
            eval_seconds: 0.0,
            message: message.into(),
        }
    }

    /// Whether any measured number is NaN or infinite.
    pub fn has_non_finite(&self) -> bool {
        let nums = self.clean_acc.iter().chain(&self.robust_acc).chain(&self.certified_acc).copied();
        let norms = self.norms.map(|n| n.values().to_vec()).unwrap_or_default();
        nums.chain(norms).any(|v| !v.is_finite())
    }
}

/// Where and with what a row was produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The device the cell ran on.
    pub device: String,
    /// normlab's version.
    pub version: String,
    /// The git commit normlab was built from, or "unknown".
    pub git_commit: String,
}

/// The results CSV's column names: one list for the writer and the reader.
pub mod col {
    /// The plan's name.
    pub const PLAN: &str = "plan";
    /// The cell's id (the store checks it for duplicates).
    pub const CELL_ID: &str = "cell_id";
    /// The model.
    pub const MODEL: &str = "model";
    /// Training mode: none, pgd, trades.
    pub const ADV: &str = "adv";
    /// plain, wd, svc, nd-l1, nd-linf.
    pub const REGULARIZER: &str = "regularizer";
    /// β or C; empty for plain.
    pub const STRENGTH: &str = "strength";
    /// The training seed.
    pub const SEED: &str = "seed";
    /// Epochs trained.
    pub const EPOCHS: &str = "epochs";
    /// Clean accuracy, a fraction.
    pub const CLEAN_ACC: &str = "clean_acc";
    /// Prefix of a robust-accuracy column: `robust_acc_eps_1_255` is ℓ∞ ε = 1/255 under the
    /// paper's suite, `robust_acc_eps_0_5_l2_standard` ℓ2 ε = 0.5 under AutoAttack's standard
    /// suite ([`super::RobustColumn`]).
    pub const ROBUST_PREFIX: &str = "robust_acc_eps_";
    /// Certified accuracy at the first ε.
    pub const CERTIFIED_ACC: &str = "certified_acc";
    /// The seven norm summaries, in [`super::NormSummary::values`]' order.
    pub const NORMS: [&str; 7] = ["l1_sum", "l1_max", "linf_sum", "linf_max", "l2_bound_sum", "l2_bound_max", "linf_product"];
    /// ok, diverged, nan, failed.
    pub const STATUS: &str = "status";
    /// Seconds of training.
    pub const TRAIN_SECONDS: &str = "train_seconds";
    /// Seconds of evaluation.
    pub const EVAL_SECONDS: &str = "eval_seconds";
    /// The device the cell ran on.
    pub const DEVICE: &str = "device";
    /// normlab's version.
    pub const VERSION: &str = "normlab_version";
    /// The commit normlab was built from.
    pub const GIT_COMMIT: &str = "git_commit";
    /// When the row was written (UTC).
    pub const FINISHED_AT: &str = "finished_at";
    /// A failed cell's error, a diverged cell's epoch.
    pub const MESSAGE: &str = "message";
    /// The cell's configuration as JSON (what its id hashes).
    pub const CONFIG: &str = "config";
}

/// The columns before the per-ε robust accuracies.
const HEAD: [&str; 9] = [col::PLAN, col::CELL_ID, col::MODEL, col::ADV, col::REGULARIZER, col::STRENGTH, col::SEED, col::EPOCHS, col::CLEAN_ACC];
/// The columns after them, up to the norms.
const AFTER_ROBUST: [&str; 1] = [col::CERTIFIED_ACC];
/// The columns after the norms.
const TAIL: [&str; 9] =
    [col::STATUS, col::TRAIN_SECONDS, col::EVAL_SECONDS, col::DEVICE, col::VERSION, col::GIT_COMMIT, col::FINISHED_AT, col::MESSAGE, col::CONFIG];

/// One robust-accuracy measurement of a plan: a radius under the plan's norm and suite. It
/// names the results column and the per-image outcome set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustColumn {
    /// The radius.
    pub eps: Radius,
    /// The norm it is measured in.
    pub norm: Norm,
    /// The suite of attacks.
    pub suite: Suite,
}

impl RobustColumn {
    /// The columns of a plan's robust accuracy, in radius order (none when it is off).
    pub fn of(robust: Option<&AttackConfig>) -> Vec<Self> {
        robust.map(|r| r.eps.iter().map(|&eps| Self { eps, norm: r.norm, suite: r.suite() }).collect()).unwrap_or_default()
    }

    /// The key after [`col::ROBUST_PREFIX`]: the radius (`1_255`) for ℓ∞ under the paper's
    /// suite, as columns were named before norms and suites were settings (so existing files
    /// read as they did), else the radius, the norm and the suite (`0_5_l2_standard`,
    /// `8_255_linf_standard`).
    pub fn key(&self) -> String {
        let eps = self.eps.column_suffix();
        if (self.norm, self.suite) == (Norm::Linf, Suite::Paper) {
            eps
        } else {
            format!("{eps}_{}_{}", self.norm, self.suite)
        }
    }

    /// The results column: `robust_acc_eps_<key>`.
    pub fn name(&self) -> String {
        format!("{}{}", col::ROBUST_PREFIX, self.key())
    }

    /// For people: `1/255`, or `0.5 (ℓ2, standard)`.
    pub fn label(&self) -> String {
        robust_label(&self.key())
    }
}

/// The label of a robust column's key ([`RobustColumn::key`]): `1_255` → `1/255`, `0_004` →
/// `0.004`, `0_5_l2_standard` → `0.5 (ℓ2, standard)`.
pub fn robust_label(key: &str) -> String {
    let (eps, threat) = Norm::ALL
        .iter()
        .flat_map(|n| Suite::ALL.iter().map(move |s| (*n, *s)))
        .find_map(|(n, s)| key.strip_suffix(&format!("_{n}_{s}")).map(|e| (e, Some((n, s)))))
        .unwrap_or((key, None));
    let eps = match eps.strip_suffix("_255") {
        Some(k) => format!("{k}/255"),
        None => eps.replacen('_', ".", 1),
    };
    match threat {
        Some((n, s)) => format!("{eps} ({}, {s})", n.symbol()),
        None => eps,
    }
}

/// The results file's header for a plan with these robust-accuracy columns.
pub fn header(robust: &[RobustColumn]) -> Vec<String> {
    let mut h: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    h.extend(robust.iter().map(RobustColumn::name));
    h.extend(AFTER_ROBUST.iter().chain(&col::NORMS).chain(&TAIL).map(|s| s.to_string()));
    h
}

/// The name of the cell-id column (the store checks it for duplicates).
pub const CELL_ID_COLUMN: &str = col::CELL_ID;

/// Builds the row of a finished cell, in [`header`]'s order.
pub fn row(plan: &str, robust: &[RobustColumn], cell: &Cell, rec: &CellRecord, prov: &Provenance, finished_at: &str) -> Result<Vec<String>> {
    let eps = robust;
    let (c, t) = (&cell.config, &cell.config.train);
    if !rec.robust_acc.is_empty() && rec.robust_acc.len() != eps.len() {
        bail!("the executor returned {} robust accuracies for {} radii", rec.robust_acc.len(), eps.len());
    }
    let num = |v: f64| format!("{v}");
    let opt = |v: Option<f64>| v.map(num).unwrap_or_default();
    let mut r = vec![
        plan.to_string(),
        cell.id.clone(),
        t.model.name().to_string(),
        t.adv.label().to_string(),
        t.regularizer.name().to_string(),
        opt(t.regularizer.strength()),
        t.seed.to_string(),
        t.training.epochs.to_string(),
        opt(rec.clean_acc),
    ];
    for i in 0..eps.len() {
        r.push(rec.robust_acc.get(i).map(|&v| num(v)).unwrap_or_default());
    }
    r.push(opt(rec.certified_acc));
    match rec.norms {
        Some(n) => r.extend(n.values().iter().map(|&v| num(v))),
        None => r.extend(std::iter::repeat_n(String::new(), 7)),
    }
    r.extend([
        rec.status.as_str().to_string(),
        format!("{:.3}", rec.train_seconds),
        format!("{:.3}", rec.eval_seconds),
        prov.device.clone(),
        prov.version.clone(),
        prov.git_commit.clone(),
        finished_at.to_string(),
        rec.message.clone(),
        serde_json::to_string(c)?,
    ]);
    // One row is one line: no field may break it.
    Ok(r.into_iter().map(|f| f.replace(['\n', '\r'], " ")).collect())
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The git commit of the source this binary was built from (`-dirty` when its sources differed
/// from that commit, "unknown" without git), recorded by `build.rs` at build time: a row must
/// name the binary's source, not the tree it happens to run in.
pub fn git_commit() -> String {
    env!("NORMLAB_GIT_COMMIT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded commit is the one the test binary was built from: in a git checkout, HEAD
    /// (build.rs reruns when HEAD moves), with `-dirty` only for uncommitted source edits.
    #[test]
    fn git_commit_is_the_built_head() {
        let head = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let Some(head) = head else {
            eprintln!("skipped: no git checkout here");
            return;
        };
        let recorded = git_commit();
        assert!(
            recorded == head || recorded == format!("{head}-dirty"),
            "recorded {recorded}, HEAD {head}"
        );
    }

    #[test]
    fn norm_summary_sums_and_maxes() {
        let s = NormSummary::from_layers(&[(1.0, 4.0), (9.0, 1.0)]);
        assert_eq!(s.values(), [10.0, 9.0, 5.0, 4.0, 5.0, 3.0, 4.0]);
    }

    #[test]
    fn robust_columns_name_norm_and_suite_except_for_the_papers() {
        let col = |eps: f64, norm, suite| RobustColumn { eps: Radius(eps), norm, suite };
        let paper = col(1.0 / 255.0, Norm::Linf, Suite::Paper);
        assert_eq!(paper.name(), "robust_acc_eps_1_255", "existing results files keep their columns");
        assert_eq!(paper.label(), "1/255");
        let l2 = col(0.5, Norm::L2, Suite::Standard);
        assert_eq!(l2.name(), "robust_acc_eps_0_5_l2_standard");
        assert_eq!(l2.label(), "0.5 (ℓ2, standard)");
        assert_eq!(col(8.0 / 255.0, Norm::Linf, Suite::Standard).label(), "8/255 (ℓ∞, standard)");
        assert_eq!(col(0.004, Norm::Linf, Suite::Custom).key(), "0_004_linf_custom");
        assert_eq!(robust_label("0_004"), "0.004");
        let cfg = AttackConfig { norm: Norm::L2, eps: crate::values::NonEmpty(vec![Radius(0.25), Radius(1.5)]), ..AttackConfig::default() };
        let names: Vec<String> = RobustColumn::of(Some(&cfg)).iter().map(RobustColumn::name).collect();
        assert_eq!(names, vec!["robust_acc_eps_0_25_l2_paper", "robust_acc_eps_1_5_l2_paper"]);
        assert!(RobustColumn::of(None).is_empty());
    }

    #[test]
    fn timestamp_has_the_iso_shape() {
        let t = utc_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
