//! Reports: a results CSV rendered into the paper's table (Markdown, LaTeX) beside the
//! published numbers ([`paper`]), with the finding checked per model, and SVG plots.
//!
//! The report reads only CSV files (the results and the cells' metrics.csv / norms.csv),
//! never training internals, so it renders any results file, partial ones included.

pub mod cli;
pub mod paper;
pub mod plots;
pub mod table;
