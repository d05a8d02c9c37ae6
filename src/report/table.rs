//! The paper's table layout built from results rows: models (rows) × regularizer settings
//! (columns), "clean/robust" in %, the published numbers and the difference under each
//! model, 95% Wilson intervals of every accuracy (mean ± sd over seeds where a setting has
//! several), and the paper's finding checked per model with an exact paired test against
//! plain on the same attacked images. Renders as Markdown or LaTeX.

use super::evidence::{Evidence, Source};
use super::paper::{self, same_strength};
use super::setting;
use crate::results::read::{eps_label, ResultRow};
use crate::stats::{self, Interval, MeanSd, Paired};
use std::collections::BTreeMap;

/// A table column: one regularizer at one strength.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// plain, wd, svc, nd-l1, nd-linf (or another label).
    pub regularizer: String,
    /// β or C.
    pub strength: Option<f64>,
}

impl Column {
    fn base(&self) -> &str {
        setting::split(&self.regularizer).0
    }

    fn notes(&self) -> Option<&str> {
        setting::split(&self.regularizer).1
    }

    fn rank(&self) -> (usize, bool, f64) {
        let kind = ["plain", "wd", "svc", "nd-l1", "nd-linf"].iter().position(|&r| r == self.base()).unwrap_or(5);
        // Strongest first: larger β, smaller C; the published protocol before variants.
        let s = self.strength.unwrap_or(0.0);
        (kind, self.notes().is_some(), if self.base() == "svc" { s } else { -s })
    }

    fn strength_text(&self) -> String {
        match self.strength {
            None => String::new(),
            Some(s) if self.base() == "svc" => format!("{s}"),
            Some(s) => format!("{s:e}"),
        }
    }

    fn with_notes(&self, name: &str) -> String {
        let base = format!("{name} {}", self.strength_text()).trim().to_string();
        match self.notes() {
            Some(n) => format!("{base} ({n})"),
            None => base,
        }
    }

    /// `WD 1e-2`, `SVC 0.5`, `ℓ1 1e-3`, `ℓ1 1e-2 (coverage all)`, `plain`.
    pub fn label(&self) -> String {
        let name = match self.base() {
            "wd" => "WD",
            "svc" => "SVC",
            "nd-l1" => "ℓ1",
            "nd-linf" => "ℓ∞",
            other => other,
        };
        self.with_notes(name)
    }

    fn label_tex(&self) -> String {
        let name = match self.base() {
            "wd" => "WD".to_string(),
            "svc" => "SVC".to_string(),
            "nd-l1" => "$\\ell_1$".to_string(),
            "nd-linf" => "$\\ell_\\infty$".to_string(),
            other => tex_escape(other),
        };
        let base = format!("{name} {}", self.strength_text()).trim().to_string();
        match self.notes() {
            Some(n) => format!("{base} ({})", tex_escape(n)),
            None => base,
        }
    }

    /// The published (clean, robust) % of this column on `model`: only a setting run with the
    /// published protocol (no notes) is the paper's cell.
    fn published(&self, model: &str) -> Option<(f64, f64)> {
        self.notes().is_none().then(|| paper::published(model, self.base(), self.strength)).flatten()
    }
}

/// A table row: one model under one training mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    /// Position of the model in the paper's order (others after).
    pub order: usize,
    /// Model name.
    pub model: String,
    /// Training mode.
    pub adv: String,
}

impl RowKey {
    fn label(&self) -> String {
        if self.adv == "none" {
            self.model.clone()
        } else {
            format!("{} ({})", self.model, self.adv)
        }
    }
}

/// One accuracy of a table cell, in %: one seed's value with its 95% Wilson interval, or the
/// mean ± sd over several seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    /// The value (one seed) or the mean over seeds, %.
    pub mean: f64,
    /// Sample sd over seeds, %; `None` for one seed.
    pub sd: Option<f64>,
    /// One seed's 95% Wilson interval, %; `None` for several seeds, or without an image count.
    pub interval: Option<Interval>,
    /// Whether the interval's counts come from the accuracy and the protocol's n, the cell
    /// having kept no per-image outcomes.
    pub from_counts: bool,
}

impl Accuracy {
    fn of(rows: &[&ResultRow], value: &dyn Fn(&ResultRow) -> Option<f64>, count: &dyn Fn(&ResultRow) -> Option<super::evidence::Measured>) -> Option<Self> {
        let values: Vec<f64> = rows.iter().filter_map(|r| value(r)).map(|x| 100.0 * x).collect();
        let MeanSd { mean, sd, n } = stats::mean_sd(values)?;
        if n > 1 {
            return Some(Self { mean, sd: Some(sd), interval: None, from_counts: false });
        }
        let m = rows.iter().find(|r| value(r).is_some_and(f64::is_finite)).and_then(|r| count(r));
        Some(Self { mean, sd: None, interval: m.and_then(|m| m.interval()).map(|i| i.scaled(100.0)), from_counts: m.is_some_and(|m| m.source == Source::Counts) })
    }

    /// `60.9` or `60.9±1.2`.
    fn text(&self) -> String {
        match self.sd {
            Some(sd) => format!("{:.1}±{sd:.1}", self.mean),
            None => format!("{:.1}", self.mean),
        }
    }

    /// `[56.6, 65.0]`, `±1.2 (sd)`, or `–`; `*` marks counts from the protocol's n.
    fn interval_text(&self) -> String {
        match (self.interval, self.sd) {
            (Some(i), _) => format!("[{:.1}, {:.1}]{}", i.lo, i.hi, if self.from_counts { "*" } else { "" }),
            (None, Some(sd)) => format!("±{sd:.1} sd"),
            (None, None) => "–".to_string(),
        }
    }
}

/// One table cell: the ok rows of a setting (over seeds), or the status of a cell without one.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// Clean and robust accuracy per radius over `seeds` ok rows.
    Measured {
        /// Clean accuracy.
        clean: Option<Accuracy>,
        /// Robust accuracy per radius column.
        robust: Vec<Option<Accuracy>>,
        /// Σ ℓ1 and Σ ℓ∞ over layers (means).
        norms: (Option<f64>, Option<f64>),
        /// Ok rows averaged.
        seeds: usize,
        /// (seed, cell id) of the ok rows, for the paired tests.
        cells: Vec<(String, String)>,
    },
    /// Rows exist but none is ok: their status (failed, diverged, nan).
    NotOk(String),
}

/// Results arranged in the paper's layout.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Radius column suffixes (`1_255`).
    pub eps: Vec<String>,
    /// Row keys in order.
    pub rows: Vec<RowKey>,
    /// Columns in order (plain, WD, SVC, ℓ1, ℓ∞; strongest first within each).
    pub columns: Vec<Column>,
    /// Entries by (row, column) index; absent: no row yet.
    pub entries: BTreeMap<(usize, usize), Entry>,
}

/// The mean of the finite values, if any.
fn mean(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = xs.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A cell the grid should show even without a row: (model, adv, regularizer, strength).
pub type Expected = (String, String, String, Option<f64>);

/// Arranges rows into the grid; `expected` (from the plan, if known) adds the rows and
/// columns of cells that have no result yet, so a partial file shows what is missing;
/// `evidence` sizes each accuracy's interval.
pub fn build(rows: &[ResultRow], expected: &[Expected], evidence: &Evidence) -> Grid {
    let eps = crate::results::read::eps_columns(rows);
    let mut keys: Vec<RowKey> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    let seen = rows.iter().map(|r| (r.model.clone(), r.adv.clone(), r.regularizer.clone(), r.strength));
    for (model, adv, regularizer, strength) in seen.chain(expected.iter().cloned()) {
        let order = paper::MODELS.iter().position(|&m| m == model).unwrap_or(paper::MODELS.len());
        let k = RowKey { order, model, adv };
        if !keys.contains(&k) {
            keys.push(k);
        }
        let c = Column { regularizer, strength };
        if !columns.iter().any(|x| x.regularizer == c.regularizer && same_strength(x.strength, c.strength)) {
            columns.push(c);
        }
    }
    keys.sort_by(|a, b| (a.order, &a.model, a.adv != "none", &a.adv).cmp(&(b.order, &b.model, b.adv != "none", &b.adv)));
    columns.sort_by(|a, b| a.rank().partial_cmp(&b.rank()).unwrap_or(std::cmp::Ordering::Equal));
    let mut entries = BTreeMap::new();
    for (ri, k) in keys.iter().enumerate() {
        for (ci, c) in columns.iter().enumerate() {
            let cell: Vec<&ResultRow> = rows
                .iter()
                .filter(|r| r.model == k.model && r.adv == k.adv && r.regularizer == c.regularizer && same_strength(r.strength, c.strength))
                .collect();
            if cell.is_empty() {
                continue;
            }
            let ok: Vec<&&ResultRow> = cell.iter().filter(|r| r.status == "ok").collect();
            let entry = if ok.is_empty() {
                let mut statuses: Vec<&str> = cell.iter().map(|r| r.status.as_str()).collect();
                statuses.dedup();
                Entry::NotOk(statuses.join("+"))
            } else {
                let ok: Vec<&ResultRow> = ok.into_iter().copied().collect();
                Entry::Measured {
                    clean: Accuracy::of(&ok, &|r| r.clean_acc, &|r| evidence.clean(&r.cell_id)),
                    robust: eps.iter().map(|e| Accuracy::of(&ok, &|r| r.robust_at(e), &|r| evidence.robust(&r.cell_id, e))).collect(),
                    norms: (mean(ok.iter().map(|r| r.l1_sum)), mean(ok.iter().map(|r| r.linf_sum))),
                    seeds: ok.len(),
                    cells: ok.iter().map(|r| (r.seed.clone(), r.cell_id.clone())).collect(),
                }
            };
            entries.insert((ri, ci), entry);
        }
    }
    Grid { eps, rows: keys, columns, entries }
}

impl Grid {
    /// Clean and robust % (at radius index `e`) of a cell, if measured.
    pub fn value(&self, row: usize, col: usize, e: usize) -> Option<(Option<f64>, Option<f64>)> {
        match self.entries.get(&(row, col))? {
            Entry::Measured { clean, robust, .. } => Some((clean.map(|a| a.mean), robust.get(e).copied().flatten().map(|a| a.mean))),
            Entry::NotOk(_) => None,
        }
    }

    fn plain_col(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.regularizer == "plain")
    }

    /// (seed, cell id) of a measured entry's ok rows.
    fn cells(&self, row: usize, col: usize) -> &[(String, String)] {
        match self.entries.get(&(row, col)) {
            Some(Entry::Measured { cells, .. }) => cells,
            _ => &[],
        }
    }
}

fn text(v: Option<Accuracy>) -> String {
    v.map(|a| a.text()).unwrap_or_else(|| "–".to_string())
}

fn interval_text(v: Option<Accuracy>) -> String {
    v.map(|a| a.interval_text()).unwrap_or_else(|| "–".to_string())
}

/// One row per model of the grid, one text per column: `measured(entry)` for a measured
/// entry, the status of one that ended otherwise, `—` where there is none.
fn grid_rows(g: &Grid, measured: &dyn Fn(&Entry) -> String) -> Vec<(String, Vec<String>)> {
    g.rows
        .iter()
        .enumerate()
        .map(|(ri, k)| {
            let cells = (0..g.columns.len())
                .map(|ci| match g.entries.get(&(ri, ci)) {
                    None => "—".to_string(),
                    Some(Entry::NotOk(s)) => s.clone(),
                    Some(e) => measured(e),
                })
                .collect();
            (k.label(), cells)
        })
        .collect()
}

/// The intervals table's rows for radius index `e`: "[clean] / [robust]" per cell.
fn interval_rows(g: &Grid, e: usize) -> Vec<(String, Vec<String>)> {
    grid_rows(g, &|entry| match entry {
        Entry::Measured { clean, robust, .. } => format!("{} / {}", interval_text(*clean), interval_text(robust.get(e).copied().flatten())),
        Entry::NotOk(s) => s.clone(),
    })
}

fn signed(v: f64) -> String {
    format!("{v:+.1}").replace('-', "−")
}

/// The table's text rows for radius index `e`: (label, cells). Each model gets its row and,
/// at 1/255 where the paper has numbers, a "paper" and a "Δ" row.
fn accuracy_rows(g: &Grid, e: usize) -> Vec<(String, Vec<String>)> {
    let compare = g.eps.get(e).is_some_and(|s| s == paper::PAPER_EPS_COLUMN);
    let mut out = Vec::new();
    for (ri, k) in g.rows.iter().enumerate() {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut delta = Vec::new();
        let mut any_paper = false;
        for (ci, c) in g.columns.iter().enumerate() {
            ours.push(match g.entries.get(&(ri, ci)) {
                None => "—".to_string(),
                Some(Entry::NotOk(s)) => s.clone(),
                Some(Entry::Measured { clean, robust, seeds, .. }) => {
                    let n = if *seeds > 1 { format!(" ({seeds} seeds)") } else { String::new() };
                    format!("{}/{}{n}", text(*clean), text(robust.get(e).copied().flatten()))
                }
            });
            let p = (compare && k.adv == "none").then(|| c.published(&k.model)).flatten();
            any_paper |= p.is_some();
            theirs.push(p.map(|(a, b)| format!("{a:.1}/{b:.1}")).unwrap_or_default());
            delta.push(match (p, g.value(ri, ci, e)) {
                (Some((pc, pr)), Some((Some(oc), Some(or)))) => format!("{}/{}", signed(oc - pc), signed(or - pr)),
                _ => String::new(),
            });
        }
        out.push((k.label(), ours));
        if any_paper {
            out.push(("↳ paper".to_string(), theirs));
            out.push(("↳ Δ".to_string(), delta));
        }
    }
    out
}

fn norm_rows(g: &Grid) -> Vec<(String, Vec<String>)> {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".to_string());
    grid_rows(g, &|entry| match entry {
        Entry::Measured { norms, .. } => format!("{} / {}", f(norms.0), f(norms.1)),
        Entry::NotOk(s) => s.clone(),
    })
}

/// One paired test of a strongest setting against plain: the seed, and the exact McNemar
/// test of plain (first) against the setting (second) on the images both attacked, or why it
/// could not be run.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedTest {
    /// The training seed of both cells.
    pub seed: String,
    /// The test, or why there is none.
    pub test: Result<Paired, String>,
}

/// "Does it lower robust accuracy?", answered with the paired tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lower {
    /// Lower, and the difference is significant (p < 0.05) for every seed.
    Yes,
    /// Not lower (equal or higher), significant for every seed.
    No,
    /// No seed's difference is significant.
    NotSignificant,
    /// Seeds disagree: how many say yes, no, not significant.
    Mixed(usize, usize, usize),
    /// No paired test (no per-image outcomes): the reason.
    Untested(String),
}

impl Lower {
    /// `yes`, `no`, `not significant`, `mixed (yes 2, no 0, n.s. 1)`, `untested`.
    pub fn text(&self) -> String {
        match self {
            Self::Yes => "yes".into(),
            Self::No => "no".into(),
            Self::NotSignificant => "not significant".into(),
            Self::Mixed(y, n, ns) => format!("mixed (yes {y}, no {n}, n.s. {ns})"),
            Self::Untested(_) => "untested".into(),
        }
    }
}

/// The strongest setting of one regularizer against plain.
#[derive(Debug, Clone, PartialEq)]
pub struct Strongest {
    /// Its column.
    pub column: Column,
    /// Our robust Δ vs plain (means over seeds), points.
    pub ours: Option<f64>,
    /// The paper's Δ for the same setting, points.
    pub paper: Option<f64>,
    /// The paired test per seed.
    pub tests: Vec<SeedTest>,
}

impl Strongest {
    /// The answer of the paired tests (every seed's).
    pub fn lower(&self) -> Lower {
        if self.tests.is_empty() {
            return Lower::Untested("no seed of plain to pair with".into());
        }
        let (mut yes, mut no, mut ns) = (0, 0, 0);
        for t in &self.tests {
            match &t.test {
                Err(why) => return Lower::Untested(why.clone()),
                Ok(p) if p.p >= stats::ALPHA => ns += 1,
                Ok(p) if p.difference() < 0.0 => yes += 1,
                Ok(_) => no += 1,
            }
        }
        match (yes, no, ns) {
            (y, 0, 0) if y > 0 => Lower::Yes,
            (0, n, 0) if n > 0 => Lower::No,
            (0, 0, _) => Lower::NotSignificant,
            (y, n, s) => Lower::Mixed(y, n, s),
        }
    }

    /// The tests as text: `p = 0.021 (9 vs 1 of 512)`, per seed when several, or why none.
    fn tests_text(&self) -> String {
        let one = |t: &SeedTest| match &t.test {
            Ok(p) => format!("p = {} ({} vs {} of {})", p_text(p.p), p.b, p.c, p.n),
            Err(why) => format!("unavailable: {why}"),
        };
        match self.tests.as_slice() {
            [] => "unavailable: plain has no ok row".into(),
            [t] => one(t),
            ts => ts.iter().map(|t| format!("seed {}: {}", t.seed, one(t))).collect::<Vec<_>>().join("; "),
        }
    }
}

/// A p-value with three significant digits (`0.0215`, `1`, `3.2e-7`).
fn p_text(p: f64) -> String {
    if p >= 0.001 {
        let t = format!("{p:.3}");
        if p >= 0.995 { "1".into() } else { t }
    } else {
        format!("{p:.1e}")
    }
}

/// The finding checked for one model: per regularizer, its strongest setting's robust
/// accuracy against plain, ours (with the paired test) and the paper's.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The model.
    pub model: String,
    /// Per regularizer (and variant), its strongest setting.
    pub strongest: Vec<Strongest>,
    /// The largest robust gain over plain of any setting: ours, and the paper's over the
    /// same settings.
    pub max_gain: (Option<f64>, Option<f64>),
}

/// What a model's strongest settings say, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lowered {
    /// Regularizers whose strongest setting's point estimate is lower than plain's.
    pub point: usize,
    /// Regularizers with a point estimate.
    pub compared: usize,
    /// Regularizers significantly lower for every seed (paired test, p < 0.05).
    pub significant: usize,
    /// Regularizers with paired tests.
    pub tested: usize,
    /// The paper's lower ones.
    pub paper: usize,
    /// The paper's compared ones.
    pub paper_compared: usize,
}

impl Finding {
    /// How many regularizers' strongest setting lowers robust accuracy, ours (by point
    /// estimate and by test) and the paper's, out of how many could be compared.
    pub fn lowered(&self) -> Lowered {
        let ours: Vec<f64> = self.strongest.iter().filter_map(|s| s.ours).collect();
        let paper: Vec<f64> = self.strongest.iter().filter_map(|s| s.paper).collect();
        let verdicts: Vec<Lower> = self.strongest.iter().filter(|s| s.ours.is_some()).map(Strongest::lower).collect();
        Lowered {
            point: ours.iter().filter(|d| **d < 0.0).count(),
            compared: ours.len(),
            significant: verdicts.iter().filter(|v| **v == Lower::Yes).count(),
            tested: verdicts.iter().filter(|v| !matches!(v, Lower::Untested(_))).count(),
            paper: paper.iter().filter(|d| **d < 0.0).count(),
            paper_compared: paper.len(),
        }
    }
}

/// Checks the paper's finding per standard-trained model at radius index `e` (the first
/// column holds the strongest setting of each regularizer, as the columns are sorted), with
/// the paired test of each strongest setting against plain, seed by seed, from `evidence`.
pub fn findings(g: &Grid, e: usize, evidence: &Evidence) -> Vec<Finding> {
    let Some(pc) = g.plain_col() else { return Vec::new() };
    let Some(eps) = g.eps.get(e) else { return Vec::new() };
    let mut out = Vec::new();
    for (ri, k) in g.rows.iter().enumerate().filter(|(_, k)| k.adv == "none") {
        let plain = g.value(ri, pc, e).and_then(|v| v.1);
        let paper_plain = paper::published(&k.model, "plain", None).map(|v| v.1);
        let compare = eps == paper::PAPER_EPS_COLUMN;
        let mut strongest: Vec<Strongest> = Vec::new();
        let (mut gain, mut paper_gain): (Option<f64>, Option<f64>) = (None, None);
        for (ci, c) in g.columns.iter().enumerate().filter(|(_, c)| c.regularizer != "plain") {
            let ours = g.value(ri, ci, e).and_then(|v| v.1);
            let Some(ours) = ours else { continue };
            let d = plain.map(|p| ours - p);
            let pd = if compare { c.published(&k.model).zip(paper_plain).map(|(v, p)| v.1 - p) } else { None };
            if let Some(d) = d {
                gain = Some(gain.map_or(d, |x: f64| x.max(d)));
            }
            if let Some(pd) = pd {
                paper_gain = Some(paper_gain.map_or(pd, |x: f64| x.max(pd)));
            }
            if !strongest.iter().any(|s| s.column.regularizer == c.regularizer) {
                let plain_cells = g.cells(ri, pc);
                let tests = if plain_cells.is_empty() {
                    Vec::new()
                } else {
                    g.cells(ri, ci)
                        .iter()
                        .map(|(seed, id)| SeedTest {
                            seed: seed.clone(),
                            test: match plain_cells.iter().find(|(s, _)| s == seed) {
                                Some((_, plain_id)) => evidence.paired_robust(plain_id, id, eps),
                                None => Err(format!("plain has no seed {seed}")),
                            },
                        })
                        .collect()
                };
                strongest.push(Strongest { column: c.clone(), ours: d, paper: pd, tests });
            }
        }
        if !strongest.is_empty() {
            out.push(Finding { model: k.model.clone(), strongest, max_gain: (gain, paper_gain) });
        }
    }
    out
}

/// A table in Markdown.
fn md_table(first: &str, headers: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut s = format!("| {first} | {} |\n", headers.join(" | "));
    s.push_str(&format!("|---|{}\n", "---|".repeat(headers.len())));
    for (label, cells) in rows {
        s.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    s
}

/// The whole Markdown report text (tables, intervals and findings; the plots are linked by
/// the caller), with the paired tests from `evidence`.
pub fn markdown(g: &Grid, evidence: &Evidence) -> String {
    let headers: Vec<String> = g.columns.iter().map(Column::label).collect();
    let mut s = String::new();
    for (e, eps) in g.eps.iter().enumerate() {
        s.push_str(&format!("## Clean / robust accuracy (%), robust at ε = {}\n\n", eps_label(eps)));
        if eps == paper::PAPER_EPS_COLUMN {
            s.push_str("Under each model: the paper's published numbers (Table 1) and the difference ours − paper (only for settings run with the published protocol: a label's notes say how a setting differs).\n");
        }
        s.push_str("Mean ± sd where a setting has several seeds. — : no result yet; failed / diverged / nan: the cell ran and ended so. The cells of a model's row share their initial weights, training batches and attacked images (common random numbers), so a difference between two of them is their regularizers'.\n\n");
        s.push_str(&md_table("model", &headers, &accuracy_rows(g, e)));
        s.push('\n');
        s.push_str(&format!("### 95% intervals (Wilson) of clean / robust accuracy (%), robust at ε = {}\n\n", eps_label(eps)));
        s.push_str(
            "From each cell's per-image outcomes (outcomes.csv); `*`: the cell kept none, so its counts are its accuracy times \
             the images its evaluation protocol measured (the config column). A setting with several seeds shows its sd instead.\n\n",
        );
        s.push_str(&md_table("model", &headers, &interval_rows(g, e)));
        s.push('\n');
        let fs = findings(g, e, evidence);
        if !fs.is_empty() {
            s.push_str(&format!("### The finding at ε = {}: does the strongest regularization lower robust accuracy against plain?\n\n", eps_label(eps)));
            s.push_str(
                "Paired test: exact McNemar on the attacked images plain and the setting share (same seed), counting the images only \
                 plain kept robust against those only the setting kept; \"lower?\" is yes or no where p < 0.05, else not significant.\n\n",
            );
            s.push_str("| model | regularizer (strongest) | robust Δ vs plain, ours | paired test | lower? ours | paper Δ | lower? paper |\n|---|---|---|---|---|---|---|\n");
            for f in &fs {
                for st in &f.strongest {
                    let yn = |v: &Option<f64>| v.map(|x| if x < 0.0 { "yes" } else { "no" }).unwrap_or("–");
                    s.push_str(&format!(
                        "| {} | {} | {} | {} | {} | {} | {} |\n",
                        f.model,
                        st.column.label(),
                        st.ours.map(signed).unwrap_or_else(|| "–".into()),
                        st.tests_text(),
                        if st.ours.is_some() { st.lower().text() } else { "–".into() },
                        st.paper.map(signed).unwrap_or_else(|| "–".into()),
                        yn(&st.paper)
                    ));
                }
            }
            s.push('\n');
            for f in &fs {
                let l = f.lowered();
                let paper_part = if l.paper_compared > 0 { format!(" (paper: {} of {})", l.paper, l.paper_compared) } else { String::new() };
                let tested = if l.tested > 0 {
                    format!("significantly (p < 0.05, every seed) for {} of {} tested", l.significant, l.tested)
                } else {
                    "no paired test (no per-image outcomes)".to_string()
                };
                let gain = |v: Option<f64>| v.map(signed).unwrap_or_else(|| "–".into());
                s.push_str(&format!(
                    "- **{}**: the strongest setting lowers robust accuracy by its point estimate for {} of {} regularizers{paper_part}; \
                     {tested}; largest robust gain of any setting over plain: {} points (paper: {}).\n",
                    f.model,
                    l.point,
                    l.compared,
                    gain(f.max_gain.0),
                    gain(f.max_gain.1)
                ));
            }
            let held = fs.iter().filter(|f| f.lowered().compared > 0 && 2 * f.lowered().point > f.lowered().compared).count();
            let tested: Vec<&Finding> = fs.iter().filter(|f| f.lowered().tested > 0).collect();
            let held_sig = tested.iter().filter(|f| 2 * f.lowered().significant > f.lowered().tested).count();
            let significance = if tested.is_empty() {
                "no model has paired tests (no cell kept per-image outcomes), so none is tested for significance".to_string()
            } else {
                format!("with significance, for {held_sig} of the {} model(s) with paired tests", tested.len())
            };
            s.push_str(&format!(
                "\nThe finding (the strongest regularization lowers robust accuracy for most regularizers) holds by point estimates for \
                 {held} of {} model(s) here; {significance}.\n\n",
                fs.len()
            ));
        }
    }
    if g.entries.values().any(|e| matches!(e, Entry::Measured { norms: (Some(_), _), .. })) {
        s.push_str("## Layer norms of the final weights: Σ ℓ1 / Σ ℓ∞ over conv and linear layers\n\n");
        s.push_str(&md_table("model", &headers, &norm_rows(g)));
        s.push('\n');
    }
    s
}

fn tex_escape(s: &str) -> String {
    s.replace('\\', "\\textbackslash{}").replace('%', "\\%").replace('_', "\\_").replace('&', "\\&").replace('#', "\\#")
}

fn tex_cell(s: &str) -> String {
    tex_escape(s).replace(['—', '–'], "--").replace('−', "$-$").replace('±', "$\\pm$").replace("↳ Δ", "\\quad $\\Delta$").replace("↳ paper", "\\quad paper")
}

/// The accuracy tables as LaTeX (booktabs), one per radius.
pub fn latex(g: &Grid) -> String {
    let mut s = String::from("% normlab report; needs \\usepackage{booktabs}\n");
    for (e, eps) in g.eps.iter().enumerate() {
        let cols = format!("l{}", "c".repeat(g.columns.len()));
        s.push_str("\\begin{table*}[t]\n\\centering\\scriptsize\n");
        let cmp = if eps == paper::PAPER_EPS_COLUMN { ", with the paper's published numbers and the difference under each model" } else { "" };
        s.push_str(&format!(
            "\\caption{{Clean / robust accuracy (\\%) on CIFAR-10, robust at $\\epsilon = {}${cmp}.}}\n",
            eps_label(eps)
        ));
        s.push_str(&format!("\\begin{{tabular}}{{{cols}}}\n\\toprule\nmodel & {} \\\\\n\\midrule\n", g.columns.iter().map(Column::label_tex).collect::<Vec<_>>().join(" & ")));
        for (label, cells) in accuracy_rows(g, e) {
            s.push_str(&format!("{} & {} \\\\\n", tex_cell(&label), cells.iter().map(|c| tex_cell(c)).collect::<Vec<_>>().join(" & ")));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n\\end{table*}\n\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::outcomes::{self, ImageOutcome, OutcomeSet};
    use crate::results::Layout;

    fn row(model: &str, reg: &str, s: Option<f64>, clean: f64, robust: f64, status: &str) -> ResultRow {
        ResultRow {
            cell_id: format!("{model}{reg}{s:?}"),
            model: model.into(),
            regularizer: reg.into(),
            strength: s,
            clean_acc: Some(clean),
            robust: vec![("1_255".into(), Some(robust))],
            l1_sum: Some(10.0),
            linf_sum: Some(5.0),
            status: status.into(),
            ..crate::report::test_row(r#"{"evaluation":{"clean_subset":null,"robust":{"n":1000},"certified":true}}"#)
        }
    }

    #[test]
    fn grid_orders_columns_and_checks_the_finding() {
        let rows = vec![
            row("vgg11", "wd", Some(1e-4), 0.90, 0.61, "ok"),
            row("vgg11", "plain", None, 0.90, 0.60, "ok"),
            row("vgg11", "wd", Some(1e-2), 0.91, 0.55, "ok"),
            row("vgg11", "svc", Some(1.0), 0.91, 0.55, "failed"),
            row("vgg11", "nd-l1 (coverage all)", Some(1e-2), 0.88, 0.50, "ok"),
        ];
        let ev = Evidence::gather(&rows, &Layout::new("/nonexistent"));
        let g = build(&rows, &[], &ev);
        let labels: Vec<String> = g.columns.iter().map(Column::label).collect();
        assert_eq!(labels, ["plain", "WD 1e-2", "WD 1e-4", "SVC 1", "ℓ1 1e-2 (coverage all)"]);
        let md = markdown(&g, &ev);
        assert!(md.contains("| vgg11 | 90.0/60.0 | 91.0/55.0 | 90.0/61.0 | failed | 88.0/50.0 |"), "{md}");
        // The variant ran another protocol: no published number beside it.
        assert!(md.contains("| ↳ paper | 90.4/60.2 | 91.6/56.3 | 90.1/60.6 | 89.1/52.2 |  |"), "{md}");
        assert!(md.contains("| ↳ Δ | −0.4/−0.2 | −0.6/−1.3 | −0.1/+0.4 |  |  |"), "{md}");
        // Intervals from counts (no outcomes.csv): 9000 of 10,000 and 600 of 1000.
        let (c, r) = (stats::wilson(9000, 10000, 0.95).unwrap(), stats::wilson(600, 1000, 0.95).unwrap());
        let want = format!("| vgg11 | [{:.1}, {:.1}]* / [{:.1}, {:.1}]* |", 100.0 * c.lo, 100.0 * c.hi, 100.0 * r.lo, 100.0 * r.hi);
        assert!(md.contains(&want), "{want} in {md}");
        let f = findings(&g, 0, &ev);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].strongest.len(), 2, "the failed SVC cell cannot be compared");
        let st = &f[0].strongest[0];
        assert_eq!(st.column.strength, Some(1e-2));
        assert!((st.ours.unwrap() + 5.0).abs() < 1e-9 && (st.paper.unwrap() + 3.9).abs() < 1e-9);
        assert!(matches!(st.lower(), Lower::Untested(ref why) if why.contains("outcomes.csv")), "{:?}", st.lower());
        assert_eq!(f[0].strongest[1].paper, None);
        assert!(md.contains("| vgg11 | WD 1e-2 | −5.0 | unavailable: no per-image outcomes (/nonexistent/p/cells/vgg11plainNone/outcomes.csv does not exist: the cell finished before normlab kept them) | untested | −3.9 | yes |"), "{md}");
        assert!(latex(&g).contains("\\quad paper & 90.4/60.2"));
    }

    /// Writes a cell's outcomes: 100 attacked images, the first `robust` of them robust.
    fn outcomes_of(layout: &Layout, id: &str, robust: &[bool]) {
        let d = layout.cell("p", id);
        std::fs::create_dir_all(d.path()).unwrap();
        let images = robust.iter().enumerate().map(|(i, &c)| ImageOutcome { index: i as u32, label: 1, correct: c, flipped_by: None }).collect();
        let clean = OutcomeSet { name: outcomes::CLEAN_SET.into(), images: vec![ImageOutcome { index: 0, label: 1, correct: true, flipped_by: None }] };
        outcomes::write(&d.outcomes(), &[clean, OutcomeSet { name: outcomes::robust_set_of("1_255"), images }]).unwrap();
    }

    #[test]
    fn paired_tests_decide_lower_per_seed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let mut rows = Vec::new();
        // Plain keeps images 0..60 robust. WD (seed 1) loses 20 of them: 20 vs 0 discordant,
        // p = 2/2²⁰ → yes. ℓ1 loses 3 and wins 2: not significant. Seed 2 of WD: loses 20 too.
        let plain: Vec<bool> = (0..100).map(|i| i < 60).collect();
        let wd: Vec<bool> = (0..100).map(|i| i < 40).collect();
        let l1: Vec<bool> = (0..100).map(|i| (3..62).contains(&i)).collect();
        for (reg, s, seed, robust) in [("plain", None, "1", &plain), ("plain", None, "2", &plain), ("wd", Some(1e-2), "1", &wd), ("wd", Some(1e-2), "2", &wd), ("nd-l1", Some(1e-2), "1", &l1)] {
            let mut r = row("vgg11", reg, s, 0.9, robust.iter().filter(|c| **c).count() as f64 / 100.0, "ok");
            r.seed = seed.into();
            r.cell_id = format!("{reg}-{seed}");
            outcomes_of(&layout, &r.cell_id, robust);
            rows.push(r);
        }
        let ev = Evidence::gather(&rows, &layout);
        let g = build(&rows, &[], &ev);
        let f = &findings(&g, 0, &ev)[0];
        let by = |reg: &str| f.strongest.iter().find(|s| s.column.regularizer == reg).unwrap();
        assert_eq!(by("wd").lower(), Lower::Yes);
        assert_eq!(by("wd").tests.len(), 2);
        let p = by("wd").tests[0].test.as_ref().unwrap();
        assert_eq!((p.b, p.c), (20, 0));
        assert_eq!(by("nd-l1").lower(), Lower::NotSignificant);
        assert_eq!(f.lowered(), Lowered { point: 2, compared: 2, significant: 1, tested: 2, paper: 2, paper_compared: 2 });
        let md = markdown(&g, &ev);
        assert!(md.contains("seed 1: p = 1.9e-6 (20 vs 0 of 100); seed 2: p = 1.9e-6 (20 vs 0 of 100) | yes |"), "{md}");
        assert!(md.contains("p = 1 (3 vs 2 of 100) | not significant |"), "{md}");
        // Two seeds: mean ± sd, and no interval but the sd.
        assert!(md.contains("| vgg11 | 90.0±0.0/60.0±0.0 (2 seeds) |"), "{md}");
        assert!(md.contains("±0.0 sd / ±0.0 sd"), "{md}");
    }
}
