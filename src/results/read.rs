//! Reading a results CSV (what `normlab run` appends) into typed rows, by the column names the
//! writer uses ([`super::record::col`]), so the report renders any results file, from any
//! plan, partial or complete.

use super::record::col as c;
use anyhow::{Context, Result};
use std::path::Path;

/// One results row as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// The plan's name.
    pub plan: String,
    /// The cell id.
    pub cell_id: String,
    /// Model name.
    pub model: String,
    /// Training mode: none, pgd, trades.
    pub adv: String,
    /// Regularizer label: plain, wd, svc, nd-l1, nd-linf.
    pub regularizer: String,
    /// β or C (None for plain).
    pub strength: Option<f64>,
    /// Seed.
    pub seed: String,
    /// Clean accuracy (fraction).
    pub clean_acc: Option<f64>,
    /// Robust accuracy per radius column suffix (e.g. `1_255`), fractions.
    pub robust: Vec<(String, Option<f64>)>,
    /// Certified accuracy (fraction).
    pub certified_acc: Option<f64>,
    /// Σ ℓ1 over layers.
    pub l1_sum: Option<f64>,
    /// Σ ℓ∞ over layers.
    pub linf_sum: Option<f64>,
    /// ok, diverged, nan, failed.
    pub status: String,
    /// normlab version and commit, for the report's provenance line.
    pub build: String,
    /// The cell's configuration as JSON (the `config` column; empty when absent).
    pub config: String,
}

impl ResultRow {
    /// Robust accuracy at a radius column suffix.
    pub fn robust_at(&self, eps: &str) -> Option<f64> {
        self.robust.iter().find(|(e, _)| e == eps).and_then(|(_, v)| *v)
    }
}

/// The radius column suffixes of a results file, in column order.
pub fn eps_columns(rows: &[ResultRow]) -> Vec<String> {
    rows.first().map(|r| r.robust.iter().map(|(e, _)| e.clone()).collect()).unwrap_or_default()
}

/// `1_255` → `1/255`, `0_004` → `0.004`.
pub fn eps_label(suffix: &str) -> String {
    match suffix.strip_suffix("_255") {
        Some(k) => format!("{k}/255"),
        None => suffix.replacen('_', ".", 1),
    }
}

/// Reads every row of a results CSV.
pub fn read(path: &Path) -> Result<Vec<ResultRow>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("cannot read results {}", path.display()))?;
    let headers = r.headers().with_context(|| format!("{}: no header line", path.display()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).with_context(|| format!("{}: no '{name}' column: is this a normlab results file?", path.display()))
    };
    let (plan, id, model, reg, strength, status) =
        (need(c::PLAN)?, need(c::CELL_ID)?, need(c::MODEL)?, need(c::REGULARIZER)?, need(c::STRENGTH)?, need(c::STATUS)?);
    let (adv, seed, clean, cert) = (col(c::ADV), col(c::SEED), col(c::CLEAN_ACC), col(c::CERTIFIED_ACC));
    let (l1, linf, version, commit) = (col(c::NORMS[0]), col(c::NORMS[2]), col(c::VERSION), col(c::GIT_COMMIT));
    let config = col(c::CONFIG);
    let robust_cols: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix(c::ROBUST_PREFIX).map(|s| (i, s.to_string())))
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: line {} is not a valid row", path.display(), i + 2))?;
        let text = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").to_string();
        let num = |c: Option<usize>| c.and_then(|c| rec.get(c)).and_then(|s| s.parse::<f64>().ok());
        rows.push(ResultRow {
            plan: text(Some(plan)),
            cell_id: text(Some(id)),
            model: text(Some(model)),
            adv: Some(text(adv)).filter(|s| !s.is_empty()).unwrap_or_else(|| "none".to_string()),
            regularizer: text(Some(reg)),
            strength: num(Some(strength)),
            seed: text(seed),
            clean_acc: num(clean),
            robust: robust_cols.iter().map(|(c, e)| (e.clone(), num(Some(*c)))).collect(),
            certified_acc: num(cert),
            l1_sum: num(l1),
            linf_sum: num(linf),
            status: text(Some(status)),
            build: format!("{} {}", text(version), text(commit)).trim().to_string(),
            config: text(config),
        });
    }
    Ok(rows)
}
