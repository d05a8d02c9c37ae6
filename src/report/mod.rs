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
