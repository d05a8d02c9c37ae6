//! Reading a results CSV (what `normlab run` appends) into typed rows, by the column names the
//! writer uses ([`super::record::col`]), so the report renders any results file, from any
//! plan, partial or complete — and only a valid one: numbers in a report must come from rows
//! that `normlab run` could have written.
//!
//! [`read_file`] refuses, naming the line of each problem (all of them, in one error): a
//! missing required column; a row with fewer or more fields than the header (cut short, also
//! inside its quoted `config` field, which then is no JSON); a row whose id is not the hash of
//! its `config` (edited or damaged); an unknown status; on an `ok` row an accuracy that is no
//! number or lies outside [0, 1], or a norm that is no finite number; a strength that is no
//! number; two rows of one cell id. A last line without its newline that does not parse is
//! what a writer killed mid-row leaves (the next `normlab run` cuts it off): it is skipped
//! with a note instead.

use super::record::{col as c, CellStatus};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
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
    /// The cell's configuration as JSON (the `config` column, a JSON object: the reader
    /// checks that the cell id is its hash).
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

/// `1_255` → `1/255`, `0_004` → `0.004`, `0_5_l2_standard` → `0.5 (ℓ2, standard)`: a robust
/// column's radius, with its norm and suite where they are not the paper's.
pub fn eps_label(suffix: &str) -> String {
    super::record::robust_label(suffix)
}

/// The columns a results file must have: the row's identity, its configuration (whose hash
/// is the id), its status and the clean accuracy.
pub const REQUIRED: [&str; 8] = [c::PLAN, c::CELL_ID, c::MODEL, c::REGULARIZER, c::STRENGTH, c::CLEAN_ACC, c::STATUS, c::CONFIG];

/// A validated results file: its rows, the line each came from, and notes on what was
/// skipped.
#[derive(Debug, Clone, Default)]
pub struct ResultsFile {
    /// The rows, in file order.
    pub rows: Vec<ResultRow>,
    /// The 1-based line of each row in the file.
    pub lines: Vec<usize>,
    /// What was skipped and why (a torn last line; rows of other plans after
    /// [`Self::keep_plan_cells`]).
    pub notes: Vec<String>,
}

impl ResultsFile {
    /// Keeps only the rows whose cell id is one of `plan_ids` (the cells of plan `plan`), and
    /// adds a note naming each other row by line, id and configuration; an error when no row
    /// is one of the plan's cells (the file is another plan's).
    pub fn keep_plan_cells(&mut self, path: &Path, plan: &str, plan_ids: &HashSet<String>) -> Result<()> {
        let (mut rows, mut lines, mut foreign) = (Vec::new(), Vec::new(), Vec::new());
        for (row, line) in self.rows.drain(..).zip(self.lines.drain(..)) {
            if plan_ids.contains(&row.cell_id) {
                rows.push(row);
                lines.push(line);
            } else {
                foreign.push(format!("line {line}: cell {} ({} {} {})", row.cell_id, row.model, row.regularizer, row.strength.map(|s| s.to_string()).unwrap_or_default()));
            }
        }
        if rows.is_empty() && !foreign.is_empty() {
            bail!(
                "--plan {plan}: none of the {} row(s) of {} is a cell of this plan (first: {}): \
                 the results come from another plan or an earlier version of it; give its plan, or leave out --plan",
                foreign.len(),
                path.display(),
                foreign[0]
            );
        }
        if !foreign.is_empty() {
            self.notes.push(format!(
                "{}: {} row(s) are not cells of plan {plan} (an earlier version of the plan, or another plan's rows) and are left out: {}",
                path.display(),
                foreign.len(),
                foreign.join("; ")
            ));
        }
        (self.rows, self.lines) = (rows, lines);
        Ok(())
    }
}

/// Reads and validates every row of a results CSV (see the module doc); notes go to stderr.
pub fn read(path: &Path) -> Result<Vec<ResultRow>> {
    let file = read_file(path)?;
    for n in &file.notes {
        eprintln!("note: {n}");
    }
    Ok(file.rows)
}

/// The most problems one error lists.
const MAX_LISTED: usize = 20;

/// Reads and validates a results CSV (see the module doc).
pub fn read_file(path: &Path) -> Result<ResultsFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read results {}", path.display()))?;
    let torn_tail = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(bytes.as_slice());
    let headers = r.headers().with_context(|| format!("{}: line 1 is not a CSV header", path.display()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let missing: Vec<&str> = REQUIRED.iter().copied().filter(|n| col(n).is_none()).collect();
    if !missing.is_empty() {
        bail!(
            "{}: line 1 (the header) has no {} column{}: is this a normlab results file? \
             (`normlab run` writes {})",
            path.display(),
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
            if missing.len() > 1 { "s" } else { "" },
            REQUIRED.join(",")
        );
    }
    let need = |name: &str| col(name).expect("checked above");
    let (plan, id, model, reg, strength, status, clean, config) =
        (need(c::PLAN), need(c::CELL_ID), need(c::MODEL), need(c::REGULARIZER), need(c::STRENGTH), need(c::STATUS), need(c::CLEAN_ACC), need(c::CONFIG));
    let (adv, seed, cert) = (col(c::ADV), col(c::SEED), col(c::CERTIFIED_ACC));
    let (l1, linf, version, commit) = (col(c::NORMS[0]), col(c::NORMS[2]), col(c::VERSION), col(c::GIT_COMMIT));
    let norm_cols: Vec<(usize, &str)> = c::NORMS.iter().filter_map(|n| col(n).map(|i| (i, *n))).collect();
    let robust_cols: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix(c::ROBUST_PREFIX).map(|s| (i, s.to_string())))
        .collect();
    let mut accuracy_cols: Vec<(usize, String)> = vec![(clean, c::CLEAN_ACC.to_string())];
    accuracy_cols.extend(robust_cols.iter().map(|(i, e)| (*i, format!("{}{e}", c::ROBUST_PREFIX))));

    let records: Vec<(usize, csv::Result<csv::StringRecord>)> = r
        .records()
        .map(|rec| {
            let line = match &rec {
                Ok(rec) => rec.position().map(|p| p.line() as usize),
                Err(e) => e.position().map(|p| p.line() as usize),
            };
            (line.unwrap_or(0), rec)
        })
        .collect();
    let mut out = ResultsFile::default();
    let mut problems: Vec<String> = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let last = records.len().saturating_sub(1);
    for (k, (line, rec)) in records.into_iter().enumerate() {
        let mut here: Vec<String> = Vec::new();
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                here.push(format!("it is not a valid CSV row ({e})"));
                csv::StringRecord::new()
            }
        };
        if !here.is_empty() {
            // Reported below.
        } else if rec.len() != headers.len() {
            here.push(if rec.len() < headers.len() {
                format!("has {} of the header's {} fields: the row was cut short", rec.len(), headers.len())
            } else {
                format!("has {} fields, the header {}: a field holds an unquoted comma, or two rows ran together", rec.len(), headers.len())
            });
        } else {
            let get = |i: usize| rec.get(i).unwrap_or("");
            let cfg = get(config);
            match serde_json::from_str::<serde_json::Value>(cfg) {
                Ok(serde_json::Value::Object(_)) => {
                    let want = crate::plan::cell::id_of_config_json(cfg);
                    if want != get(id) {
                        here.push(format!(
                            "cell id '{}' is not the id of its config column (which hashes to {want}): the row was edited or damaged",
                            get(id)
                        ));
                    }
                }
                _ => here.push("the config field is not a JSON object: the row was cut short inside it, or edited".to_string()),
            }
            let st = get(status);
            if ![CellStatus::Ok, CellStatus::Diverged, CellStatus::Nan, CellStatus::Failed].iter().any(|s| s.as_str() == st) {
                here.push(format!("status '{st}' is not one of ok, diverged, nan, failed"));
            }
            let s = get(strength);
            if !s.is_empty() && !s.parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0) {
                here.push(format!("strength '{s}' is not a positive number"));
            }
            if st == CellStatus::Ok.as_str() {
                for (i, name) in &accuracy_cols {
                    let v = get(*i);
                    match v.parse::<f64>() {
                        Ok(x) if (0.0..=1.0).contains(&x) => {}
                        Ok(x) => here.push(format!(
                            "{name} = {x} on an ok row lies outside [0, 1] (accuracies are fractions{})",
                            if x > 1.0 && x <= 100.0 { ": a percentage?" } else { "" }
                        )),
                        Err(_) => here.push(format!("{name} '{v}' on an ok row is not a number")),
                    }
                }
                if let Some(i) = cert {
                    let v = get(i);
                    if !v.is_empty() && !v.parse::<f64>().is_ok_and(|x| (0.0..=1.0).contains(&x)) {
                        here.push(format!("{} '{v}' on an ok row is not a fraction in [0, 1]", c::CERTIFIED_ACC));
                    }
                }
                for (i, name) in &norm_cols {
                    let v = get(*i);
                    if !v.parse::<f64>().is_ok_and(|x| x.is_finite() && x >= 0.0) {
                        here.push(format!("{name} '{v}' on an ok row is not a finite norm"));
                    }
                }
            }
            if here.is_empty() {
                if let Some(first) = first_line.insert(get(id).to_string(), line) {
                    here.push(format!("a second row of cell {} (the first is line {first}): a results file holds one row per cell; remove one", get(id)));
                }
            }
        }
        if here.is_empty() {
            let text = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").to_string();
            let num = |c: Option<usize>| c.and_then(|c| rec.get(c)).and_then(|s| s.parse::<f64>().ok());
            out.rows.push(ResultRow {
                plan: text(Some(plan)),
                cell_id: text(Some(id)),
                model: text(Some(model)),
                adv: Some(text(adv)).filter(|s| !s.is_empty()).unwrap_or_else(|| "none".to_string()),
                regularizer: text(Some(reg)),
                strength: num(Some(strength)),
                seed: text(seed),
                clean_acc: num(Some(clean)),
                robust: robust_cols.iter().map(|(c, e)| (e.clone(), num(Some(*c)))).collect(),
                certified_acc: num(cert),
                l1_sum: num(l1),
                linf_sum: num(linf),
                status: text(Some(status)),
                build: format!("{} {}", text(version), text(commit)).trim().to_string(),
                config: text(Some(config)),
            });
            out.lines.push(line);
        } else if k == last && torn_tail {
            out.notes.push(format!(
                "{}: line {line} ends without a newline and {}: a writer was killed mid-row (the next `normlab run` of this plan removes it); skipped",
                path.display(),
                here.join("; ")
            ));
        } else {
            problems.extend(here.into_iter().map(|p| format!("line {line}: {p}")));
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(MAX_LISTED);
        bail!(
            "{} is not a valid results file ({n} problem{}{}):\n  {}\nFix or remove those lines (a cell without a row runs again with `normlab run`), or regenerate the file.",
            path.display(),
            if n > 1 { "s" } else { "" },
            if n > MAX_LISTED { format!(", the first {MAX_LISTED} listed") } else { String::new() },
            problems.join("\n  ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::{self, CellRecord, NormSummary, Provenance};

    /// A results file of `n` ok rows of a small plan, as `normlab run` writes it.
    fn file(n: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<String>) {
        let src = r#"(name: "t", data: (sources: ["Cargo.toml"]), models: [vgg11], regularizers: [weight_decay(betas: [1e-2, 1e-3, 1e-4])])"#;
        let plan = crate::plan::parse(Path::new("t.ron"), src).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_path(&path).unwrap();
        w.write_record(record::header(&plan.robust)).unwrap();
        let prov = Provenance { device: "cpu".into(), version: "0".into(), git_commit: "x".into() };
        for cell in plan.cells.iter().take(n) {
            let rec = CellRecord {
                status: CellStatus::Ok,
                clean_acc: Some(0.8),
                robust_acc: vec![0.4],
                certified_acc: Some(0.0),
                norms: Some(NormSummary::from_layers(&[(2.0, 3.0)])),
                train_seconds: 1.0,
                eval_seconds: 1.0,
                message: String::new(),
            };
            w.write_record(record::row("t", &plan.robust, cell, &rec, &prov, "2026-12-07T00:00:00Z").unwrap()).unwrap();
        }
        w.flush().unwrap();
        let ids = plan.cells.iter().map(|c| c.id.clone()).collect();
        (dir, path, ids)
    }

    #[test]
    fn a_valid_file_reads_and_each_problem_is_named_by_line() {
        let (_d, path, ids) = file(3);
        let f = read_file(&path).unwrap();
        assert_eq!((f.rows.len(), f.lines.clone()), (3, vec![2, 3, 4]));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let write = |t: String| std::fs::write(&path, t).unwrap();
        // An accuracy of 1.7 on line 3, and a copy of line 2 as line 5.
        write(format!("{}\n{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[2].replacen(",0.8,", ",1.7,", 1), lines[3], lines[1]));
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 3: clean_acc = 1.7 on an ok row lies outside [0, 1]"), "{err}");
        assert!(err.contains(&format!("line 5: a second row of cell {} (the first is line 2)", ids[0])), "{err}");
        // A last line cut short by a killed writer is skipped with a note.
        write(format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..lines[2].len() - 20]));
        let f = read_file(&path).unwrap();
        assert_eq!(f.rows.len(), 1);
        assert!(f.notes[0].contains("line 3 ends without a newline"), "{:?}", f.notes);
        // The same cut in the middle of the file is refused.
        write(format!("{}\n{}\n{}\n", lines[0], &lines[2][..lines[2].len() - 20], lines[1]));
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 2:"), "{err}");
    }

    #[test]
    fn keeping_a_plan_s_cells_names_the_others_and_refuses_a_foreign_file() {
        let (_d, path, ids) = file(3);
        let mut f = read_file(&path).unwrap();
        let plan: HashSet<String> = ids[..2].iter().cloned().collect();
        f.keep_plan_cells(&path, "t", &plan).unwrap();
        assert_eq!(f.rows.len(), 2);
        assert!(f.notes[0].contains("1 row(s) are not cells of plan t") && f.notes[0].contains("line 4"), "{:?}", f.notes);
        let mut f = read_file(&path).unwrap();
        let err = f.keep_plan_cells(&path, "other", &HashSet::new()).unwrap_err().to_string();
        assert!(err.contains("--plan other: none of the 3 row(s)"), "{err}");
    }
}
