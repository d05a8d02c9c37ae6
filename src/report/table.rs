//! The paper's table layout built from results rows: models (rows) × regularizer settings
//! (columns), "clean/robust" in %, the published numbers and the difference under each
//! model, and the paper's finding checked per model. Renders as Markdown or LaTeX.

use super::paper::{self, same_strength};
use crate::results::read::{eps_label, ResultRow};
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
    fn rank(&self) -> (usize, f64) {
        let kind = ["plain", "wd", "svc", "nd-l1", "nd-linf"].iter().position(|&r| r == self.regularizer).unwrap_or(5);
        // Strongest first: larger β, smaller C.
        let s = self.strength.unwrap_or(0.0);
        (kind, if self.regularizer == "svc" { s } else { -s })
    }

    fn strength_text(&self) -> String {
        match self.strength {
            None => String::new(),
            Some(s) if self.regularizer == "svc" => format!("{s}"),
            Some(s) => format!("{s:e}"),
        }
    }

    /// `WD 1e-2`, `SVC 0.5`, `ℓ1 1e-3`, `plain`.
    pub fn label(&self) -> String {
        let name = match self.regularizer.as_str() {
            "wd" => "WD",
            "svc" => "SVC",
            "nd-l1" => "ℓ1",
            "nd-linf" => "ℓ∞",
            other => other,
        };
        format!("{name} {}", self.strength_text()).trim().to_string()
    }

    fn label_tex(&self) -> String {
        let name = match self.regularizer.as_str() {
            "wd" => "WD".to_string(),
            "svc" => "SVC".to_string(),
            "nd-l1" => "$\\ell_1$".to_string(),
            "nd-linf" => "$\\ell_\\infty$".to_string(),
            other => tex_escape(other),
        };
        format!("{name} {}", self.strength_text()).trim().to_string()
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

/// One table cell: the mean over seeds of the ok rows, or the status of a cell without one.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// Mean clean % and robust % per radius, over `seeds` ok rows.
    Measured {
        /// Clean accuracy, %.
        clean: Option<f64>,
        /// Robust accuracy per radius column, %.
        robust: Vec<Option<f64>>,
        /// Σ ℓ1 and Σ ℓ∞ over layers (means).
        norms: (Option<f64>, Option<f64>),
        /// Ok rows averaged.
        seeds: usize,
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

fn mean(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = xs.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A cell the grid should show even without a row: (model, adv, regularizer, strength).
pub type Expected = (String, String, String, Option<f64>);

/// Arranges rows into the grid; `expected` (from the plan, if known) adds the rows and
/// columns of cells that have no result yet, so a partial file shows what is missing.
pub fn build(rows: &[ResultRow], expected: &[Expected]) -> Grid {
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
                Entry::Measured {
                    clean: mean(ok.iter().map(|r| r.clean_acc.map(|x| 100.0 * x))),
                    robust: eps.iter().map(|e| mean(ok.iter().map(|r| r.robust_at(e).map(|x| 100.0 * x)))).collect(),
                    norms: (mean(ok.iter().map(|r| r.l1_sum)), mean(ok.iter().map(|r| r.linf_sum))),
                    seeds: ok.len(),
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
            Entry::Measured { clean, robust, .. } => Some((*clean, robust.get(e).copied().flatten())),
            Entry::NotOk(_) => None,
        }
    }

    fn plain_col(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.regularizer == "plain")
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".to_string())
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
                    let n = if *seeds > 1 { format!(" (n={seeds})") } else { String::new() };
                    format!("{}/{}{n}", pct(*clean), pct(robust.get(e).copied().flatten()))
                }
            });
            let p = (compare && k.adv == "none").then(|| paper::published(&k.model, &c.regularizer, c.strength)).flatten();
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
    g.rows
        .iter()
        .enumerate()
        .map(|(ri, k)| {
            let cells = (0..g.columns.len())
                .map(|ci| match g.entries.get(&(ri, ci)) {
                    None => "—".to_string(),
                    Some(Entry::NotOk(s)) => s.clone(),
                    Some(Entry::Measured { norms, .. }) => format!("{} / {}", f(norms.0), f(norms.1)),
                })
                .collect();
            (k.label(), cells)
        })
        .collect()
}

/// The finding checked for one model: per regularizer, its strongest setting's robust
/// accuracy against plain, ours and the paper's.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The model.
    pub model: String,
    /// (column of the strongest setting, our robust Δ vs plain, the paper's Δ for it).
    pub strongest: Vec<(Column, Option<f64>, Option<f64>)>,
    /// The largest robust gain over plain of any setting: ours, and the paper's over the
    /// same settings.
    pub max_gain: (Option<f64>, Option<f64>),
}

impl Finding {
    /// How many regularizers' strongest setting lowers robust accuracy (ours, paper) out of
    /// how many could be compared.
    pub fn lowered(&self) -> (usize, usize, usize, usize) {
        let ours: Vec<f64> = self.strongest.iter().filter_map(|s| s.1).collect();
        let paper: Vec<f64> = self.strongest.iter().filter_map(|s| s.2).collect();
        (ours.iter().filter(|d| **d < 0.0).count(), ours.len(), paper.iter().filter(|d| **d < 0.0).count(), paper.len())
    }
}

/// Checks the paper's finding per standard-trained model at radius index `e` (the first
/// column holds the strongest setting of each regularizer, as the columns are sorted).
pub fn findings(g: &Grid, e: usize) -> Vec<Finding> {
    let Some(pc) = g.plain_col() else { return Vec::new() };
    let mut out = Vec::new();
    for (ri, k) in g.rows.iter().enumerate().filter(|(_, k)| k.adv == "none") {
        let plain = g.value(ri, pc, e).and_then(|v| v.1);
        let paper_plain = paper::published(&k.model, "plain", None).map(|v| v.1);
        let compare = g.eps.get(e).is_some_and(|s| s == paper::PAPER_EPS_COLUMN);
        let mut strongest: Vec<(Column, Option<f64>, Option<f64>)> = Vec::new();
        let (mut gain, mut paper_gain): (Option<f64>, Option<f64>) = (None, None);
        for (ci, c) in g.columns.iter().enumerate().filter(|(_, c)| c.regularizer != "plain") {
            let ours = g.value(ri, ci, e).and_then(|v| v.1);
            let Some(ours) = ours else { continue };
            let d = plain.map(|p| ours - p);
            let pd = if compare {
                paper::published(&k.model, &c.regularizer, c.strength).zip(paper_plain).map(|(v, p)| v.1 - p)
            } else {
                None
            };
            if let Some(d) = d {
                gain = Some(gain.map_or(d, |x: f64| x.max(d)));
            }
            if let Some(pd) = pd {
                paper_gain = Some(paper_gain.map_or(pd, |x: f64| x.max(pd)));
            }
            if !strongest.iter().any(|s| s.0.regularizer == c.regularizer) {
                strongest.push((c.clone(), d, pd));
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

/// The whole Markdown report text (tables and findings; the plots are linked by the caller).
pub fn markdown(g: &Grid) -> String {
    let headers: Vec<String> = g.columns.iter().map(Column::label).collect();
    let mut s = String::new();
    for (e, eps) in g.eps.iter().enumerate() {
        s.push_str(&format!("## Clean / robust accuracy (%), robust at ε = {}\n\n", eps_label(eps)));
        if eps == paper::PAPER_EPS_COLUMN {
            s.push_str("Under each model: the paper's published numbers (Table 1) and the difference ours − paper.\n");
        }
        s.push_str("— : no result yet; failed / diverged / nan: the cell ran and ended so.\n\n");
        s.push_str(&md_table("model", &headers, &accuracy_rows(g, e)));
        s.push('\n');
        let fs = findings(g, e);
        if !fs.is_empty() {
            s.push_str(&format!("### The finding at ε = {}: does the strongest regularization lower robust accuracy against plain?\n\n", eps_label(eps)));
            s.push_str("| model | regularizer (strongest) | robust Δ vs plain, ours | paper | lower? ours / paper |\n|---|---|---|---|---|\n");
            for f in &fs {
                for (c, d, pd) in &f.strongest {
                    let yn = |v: &Option<f64>| v.map(|x| if x < 0.0 { "yes" } else { "no" }).unwrap_or("–");
                    s.push_str(&format!(
                        "| {} | {} | {} | {} | {} / {} |\n",
                        f.model,
                        c.label(),
                        d.map(signed).unwrap_or_else(|| "–".into()),
                        pd.map(signed).unwrap_or_else(|| "–".into()),
                        yn(d),
                        yn(pd)
                    ));
                }
            }
            s.push('\n');
            for f in &fs {
                let (lo, n, plo, pn) = f.lowered();
                let paper_part = if pn > 0 { format!(" (paper: {plo} of {pn})") } else { String::new() };
                let gain = |v: Option<f64>| v.map(signed).unwrap_or_else(|| "–".into());
                s.push_str(&format!(
                    "- **{}**: the strongest setting lowers robust accuracy for {lo} of {n} regularizers{paper_part}; \
                     largest robust gain of any setting over plain: {} points (paper: {}).\n",
                    f.model,
                    gain(f.max_gain.0),
                    gain(f.max_gain.1)
                ));
            }
            let held = fs.iter().filter(|f| f.lowered().1 > 0 && 2 * f.lowered().0 > f.lowered().1).count();
            s.push_str(&format!(
                "\nThe finding (the strongest regularization lowers robust accuracy for most regularizers) holds for {held} of {} model(s) here.\n\n",
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
    tex_escape(s).replace(['—', '–'], "--").replace('−', "$-$").replace("↳ Δ", "\\quad $\\Delta$").replace("↳ paper", "\\quad paper")
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

    fn row(model: &str, reg: &str, s: Option<f64>, clean: f64, robust: f64, status: &str) -> ResultRow {
        ResultRow {
            plan: "p".into(),
            cell_id: format!("{model}{reg}{s:?}"),
            model: model.into(),
            adv: "none".into(),
            regularizer: reg.into(),
            strength: s,
            seed: "1".into(),
            clean_acc: Some(clean),
            robust: vec![("1_255".into(), Some(robust))],
            certified_acc: None,
            l1_sum: Some(10.0),
            linf_sum: Some(5.0),
            status: status.into(),
            build: String::new(),
        }
    }

    #[test]
    fn grid_orders_columns_and_checks_the_finding() {
        let rows = vec![
            row("vgg11", "wd", Some(1e-4), 0.90, 0.61, "ok"),
            row("vgg11", "plain", None, 0.90, 0.60, "ok"),
            row("vgg11", "wd", Some(1e-2), 0.91, 0.55, "ok"),
            row("vgg11", "svc", Some(1.0), 0.91, 0.55, "failed"),
        ];
        let g = build(&rows, &[]);
        let labels: Vec<String> = g.columns.iter().map(Column::label).collect();
        assert_eq!(labels, ["plain", "WD 1e-2", "WD 1e-4", "SVC 1"]);
        let md = markdown(&g);
        assert!(md.contains("| vgg11 | 90.0/60.0 | 91.0/55.0 | 90.0/61.0 | failed |"), "{md}");
        assert!(md.contains("| ↳ paper | 90.4/60.2 | 91.6/56.3 | 90.1/60.6 | 89.1/52.2 |"), "{md}");
        assert!(md.contains("| ↳ Δ | −0.4/−0.2 | −0.6/−1.3 | −0.1/+0.4 |  |"), "{md}");
        let f = findings(&g, 0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].strongest.len(), 1, "the failed SVC cell cannot be compared");
        let (c, d, pd) = &f[0].strongest[0];
        assert_eq!(c.strength, Some(1e-2));
        assert!((d.unwrap() + 5.0).abs() < 1e-9 && (pd.unwrap() + 3.9).abs() < 1e-9);
        assert!(latex(&g).contains("\\quad paper & 90.4/60.2"));
    }
}
