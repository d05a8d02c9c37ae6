//! Plans: the RON file that declares an experiment grid (models × regularizers × strengths ×
//! seeds, with the training and evaluation protocol), its validation with file:line:col
//! errors, and its expansion into cells with stable ids.
//!
//! A plan states only what differs from the paper's protocol (paper.md §5): see
//! [`schema`] for every key and its default, and plans/*.ron for commented examples.

pub mod cell;
pub mod error;
pub mod schema;

pub use crate::values::{Eps, Radius};
use crate::results::RobustColumn;
pub use cell::{cell_id, expand, Cell, CellConfig};
pub use error::PlanError;
pub use schema::{DataSpec, EvaluationSpec, NdVariant, PlanFile, RegularizerSpec, TrainingSpec};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A validated plan, expanded into its cells.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan's name (names the results file).
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Where the data is.
    pub data: DataSpec,
    /// The robust-accuracy columns (radius, norm, suite), in order (empty: robust accuracy
    /// off).
    pub robust: Vec<RobustColumn>,
    /// Every cell of the grid, in grid order.
    pub cells: Vec<Cell>,
    /// The plan as written (with defaults filled in).
    pub file: PlanFile,
    /// The plan's text, for errors found after loading (against the data) that point into it.
    pub source: String,
}

impl Plan {
    /// Checks the plan's subsets against the data it runs on (`train` training and `test` test
    /// images), before any cell: a subset larger than its split is an error at its line that
    /// gives the split's size (never clamped: the cell id and the row would keep the number
    /// asked for).
    pub fn check_against_data(&self, train: usize, test: usize) -> Result<(), PlanError> {
        let at = |e: crate::train::SubsetTooLarge| PlanError::at_key(&self.path, &self.source, e.field, format!("{e} ({})", self.data.dir.display()));
        self.file.training.protocol().check_subsets(train, test).map_err(at)?;
        let eval = &self.file.evaluation;
        let too_large = |field, asked: usize| crate::train::SubsetTooLarge { field, split: "test", asked, available: test };
        if let Some(n) = eval.clean_subset.filter(|n| n.get() > test) {
            return Err(at(too_large("clean_subset", n.get())));
        }
        if let Some(r) = eval.robust.as_ref().filter(|r| r.n.get() > test) {
            return Err(at(too_large("n", r.n.get())));
        }
        Ok(())
    }
}

/// Reads, parses, validates and expands a plan file. Every refusal names the file, the line
/// and column, and what was expected; nothing is run or written.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    load_with_data(path, None)
}

/// [`load`], with the data directory given on the command line (`--data DIR`) in place of
/// the plan's.
pub fn load_with_data(path: &Path, data_dir: Option<&Path>) -> Result<Plan, PlanError> {
    let bytes = std::fs::read(path).map_err(|e| PlanError::at(path, 0, 0, format!("cannot read the plan file: {e}")))?;
    let source = String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        PlanError::at(path, line, 1, "the plan is not UTF-8 text (saved in another encoding?): save it as UTF-8")
    })?;
    parse_with_data(path, &source, data_dir)
}

/// Parses and validates plan text (`path` only names it in errors and in the plan).
pub fn parse(path: &Path, source: &str) -> Result<Plan, PlanError> {
    parse_with_data(path, source, None)
}

/// [`parse`] with an optional data directory overriding the plan's.
pub fn parse_with_data(path: &Path, source: &str, data_dir: Option<&Path>) -> Result<Plan, PlanError> {
    // Editors on Windows may start a UTF-8 file with a byte-order mark, which RON refuses.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let options = ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    let mut file: PlanFile = options.from_str(source).map_err(|e| {
        PlanError::at(path, e.position.line, e.position.col, explain_ron_error(&e.code.to_string()))
    })?;
    if let Some(d) = data_dir {
        file.data.dir = d.to_path_buf();
    }
    validate(path, source, &file)?;
    let cells = expand(&file);
    check_distinct(path, source, &cells)?;
    let robust = RobustColumn::of(file.evaluation.robust.as_ref());
    Ok(Plan { name: file.name.0.clone(), path: path.to_path_buf(), data: file.data.clone(), robust, cells, file, source: source.to_string() })
}

/// Adds the hint a RON error lacks: how to fix the most common slips.
fn explain_ron_error(message: &str) -> String {
    let message = &message.replace("`in ", "` in ");
    if message.contains("Unexpected missing field") || message.contains("missing field") {
        format!("{message} (every plan needs at least `name` and `models`)")
    } else {
        message.to_string()
    }
}

/// The checks that need the whole plan: milestones inside the run, a non-empty grid, data.
fn validate(path: &Path, source: &str, file: &PlanFile) -> Result<(), PlanError> {
    if file.training.milestones.is_some() {
        if let Err(e) = file.training.protocol().validate() {
            return Err(PlanError::at_key(path, source, "milestones", e));
        }
    }
    for r in &file.regularizers {
        if let RegularizerSpec::Svc { every, coverage: crate::regularize::Coverage::Reference, .. } = r {
            if every.get() < 2 {
                return Err(PlanError::at_key(
                    path,
                    source,
                    "every",
                    "svc every: 1 with coverage: reference never clips (the reference clips when the batch index % every == 1): \
                     use every ≥ 2, or coverage: all",
                ));
            }
        }
    }
    if !file.plain && file.regularizers.is_empty() {
        return Err(PlanError::at_key(
            path,
            source,
            "plain",
            "empty grid: `plain: false` and no regularizers leave no cell to run; add a regularizer or set plain: true",
        ));
    }
    check_data(path, source, &file.data)
}

/// Missing data is refused up front: the directory must be complete or some import source
/// must exist (a URL counts as existing; it is checked when downloaded).
fn check_data(path: &Path, source: &str, data: &DataSpec) -> Result<(), PlanError> {
    if data_dir_complete(&data.dir) || data.sources.iter().any(|s| source_available(s)) {
        return Ok(());
    }
    let tried: Vec<String> = data.sources.iter().map(|s| format!("'{s}'")).collect();
    Err(PlanError::at_key(
        path,
        source,
        "data",
        format!(
            "missing data: {} does not hold CIFAR-10 in binary layout (data_batch_1..5.bin, test_batch.bin) \
             and no import source exists (tried: {}); run `normlab data --source SRC --out {}` or set data.sources",
            data.dir.display(),
            if tried.is_empty() { "none given".to_string() } else { tried.join(", ") },
            data.dir.display()
        ),
    ))
}

/// Whether `dir` holds the six CIFAR-10 binary batch files (`normlab data` writes them).
pub fn data_dir_complete(dir: &Path) -> bool {
    crate::data::binary::has_batch_files(dir)
}

/// Whether an import source exists: a path or file:// URL that exists, or an http(s) URL
/// (checked when downloaded).
fn source_available(source: &str) -> bool {
    use crate::data::download::{file_url_path, is_url};
    match file_url_path(source) {
        Ok(Some(path)) => path.exists(),
        Ok(None) => is_url(source) || Path::new(source).exists(),
        Err(_) => false,
    }
}

/// Two entries of the plan that resolve to the same configuration would run one cell twice.
fn check_distinct(path: &Path, source: &str, cells: &[Cell]) -> Result<(), PlanError> {
    let mut seen: HashMap<&str, &Cell> = HashMap::new();
    for c in cells {
        if let Some(first) = seen.insert(&c.id, c) {
            return Err(PlanError::at_key(
                path,
                source,
                "regularizers",
                format!("the grid holds the cell '{}' twice: remove the repeated strength or regularizer", first.describe()),
            ));
        }
    }
    Ok(())
}
