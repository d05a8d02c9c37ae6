//! Reports: a results CSV rendered into the paper's table (Markdown, LaTeX) beside the
//! published numbers ([`paper`]), with 95% intervals and the finding checked per model by
//! paired tests ([`evidence`], [`crate::stats`]), and SVG plots.
//!
//! The report reads only CSV files (the results and the cells' metrics.csv / norms.csv),
//! never training internals, so it renders any results file, partial ones included.

pub mod cli;
pub mod evidence;
pub mod paper;
pub mod plots;
pub mod setting;
pub mod table;

/// A results row for the report's tests: vgg11, plain, seed 1, ok, one robust column `1_255`,
/// no accuracies or norms; tests set the fields they need.
#[cfg(test)]
pub(crate) fn test_row(config: &str) -> crate::results::ResultRow {
    crate::results::ResultRow {
        plan: "p".into(),
        cell_id: "x".into(),
        model: "vgg11".into(),
        adv: "none".into(),
        regularizer: "plain".into(),
        strength: None,
        seed: "1".into(),
        clean_acc: None,
        robust: vec![("1_255".into(), None)],
        certified_acc: None,
        l1_sum: None,
        linf_sum: None,
        status: "ok".into(),
        build: String::new(),
        config: config.into(),
    }
}
