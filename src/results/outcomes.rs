//! Per-image outcomes of a cell's evaluation, kept in its folder (`outcomes.csv`), so that two
//! cells can be compared on the same images (a paired test) instead of by their accuracies
//! alone: every cell of a plan evaluates the same test images and attacks the same drawn
//! images (the draw depends only on the evaluation's seed), so a difference between two cells
//! on these images is the difference between their models.
//!
//! One row per image and measurement, long format (pandas reads it as is):
//! `set,index,label,correct,flipped_by` where `set` is `clean` (the clean-accuracy test images)
//! or `robust_eps_<key>` (the images drawn for robust accuracy at that radius, norm and suite,
//! keyed as the results column, e.g. `robust_eps_1_255`, `robust_eps_0_5_l2_standard`; `correct` is
//! 1 where the image is still classified correctly after every attack, and `flipped_by` names
//! the attack that flipped a correctly classified image, empty otherwise).

use super::record::RobustColumn;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// One image's outcome in one measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOutcome {
    /// Index into the test split.
    pub index: u32,
    /// Its label.
    pub label: u8,
    /// Classified correctly (clean set) or still correct after every attack (robust sets).
    pub correct: bool,
    /// The attack that flipped it (robust sets only; `None` for robust or clean-misclassified
    /// images).
    pub flipped_by: Option<String>,
}

/// The outcomes of one measurement: the clean test images, or the attacked images at one ε.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeSet {
    /// `clean` or `robust_eps_<key>` ([`robust_set`]).
    pub name: String,
    /// The images, in evaluation order.
    pub images: Vec<ImageOutcome>,
}

impl OutcomeSet {
    /// The share of images with `correct`: the set's accuracy.
    pub fn accuracy(&self) -> f64 {
        self.images.iter().filter(|i| i.correct).count() as f64 / self.images.len().max(1) as f64
    }
}

/// The set name of the robust outcomes of a column: `robust_eps_1_255`,
/// `robust_eps_0_5_l2_standard`.
pub fn robust_set(column: &RobustColumn) -> String {
    robust_set_of(&column.key())
}

/// The set name of the robust outcomes of a column by its key ([`RobustColumn::key`]: `1_255`,
/// as a results file's `robust_acc_eps_1_255` column names it).
pub fn robust_set_of(key: &str) -> String {
    format!("robust_eps_{key}")
}

/// The name of the clean set.
pub const CLEAN_SET: &str = "clean";

const HEADER: [&str; 5] = ["set", "index", "label", "correct", "flipped_by"];

/// Writes `sets` to `path` atomically.
pub fn write(path: &Path, sets: &[OutcomeSet]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for set in sets {
        for i in &set.images {
            let correct = if i.correct { "1" } else { "0" };
            w.write_record([set.name.as_str(), &i.index.to_string(), &i.label.to_string(), correct, i.flipped_by.as_deref().unwrap_or("")])?;
        }
    }
    let bytes = w.into_inner().context("cannot buffer the outcomes")?;
    crate::util::atomic_write(path, &bytes)
}

/// Reads what [`write`] wrote, sets in file order; errors name the file and line.
pub fn read(path: &Path) -> Result<Vec<OutcomeSet>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("cannot read outcomes {}", path.display()))?;
    let header = r.headers().with_context(|| format!("{}: no header line", path.display()))?.clone();
    if header.iter().ne(HEADER) {
        bail!("{}: the header is {:?}, expected {:?}: not a normlab outcomes file", path.display(), header.iter().collect::<Vec<_>>(), HEADER);
    }
    let mut sets: Vec<OutcomeSet> = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{}:{line}: not a valid row", path.display()))?;
        let field = |k: usize| rec.get(k).with_context(|| format!("{}:{line}: the row has {} fields, expected 5", path.display(), rec.len()));
        let parse_err = |what: &str, v: &str| format!("{}:{line}: {what} '{v}' is not valid", path.display());
        let name = field(0)?;
        let index = field(1)?.parse().with_context(|| parse_err("index", &rec[1]))?;
        let label = field(2)?.parse().with_context(|| parse_err("label", &rec[2]))?;
        let correct = match field(3)? {
            "1" => true,
            "0" => false,
            v => bail!(parse_err("correct (0 or 1)", v)),
        };
        let flipped_by = Some(field(4)?.to_string()).filter(|s| !s.is_empty());
        let image = ImageOutcome { index, label, correct, flipped_by };
        match sets.last_mut() {
            Some(s) if s.name == name => s.images.push(image),
            _ => sets.push(OutcomeSet { name: name.to_string(), images: vec![image] }),
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_bad_rows_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("outcomes.csv");
        let img = |index, correct, flipped_by: Option<&str>| ImageOutcome { index, label: 3, correct, flipped_by: flipped_by.map(String::from) };
        let sets = vec![
            OutcomeSet { name: "clean".into(), images: vec![img(0, true, None), img(1, false, None)] },
            OutcomeSet { name: robust_set(&RobustColumn { eps: crate::values::Radius(1.0 / 255.0), norm: crate::attack::Norm::Linf, suite: crate::attack::Suite::Paper }), images: vec![img(7, false, Some("apgd-ce")), img(2, true, None)] },
        ];
        write(&p, &sets).unwrap();
        assert_eq!(read(&p).unwrap(), sets);
        assert_eq!(sets[0].accuracy(), 0.5);
        assert_eq!(sets[1].name, "robust_eps_1_255");
        let text = std::fs::read_to_string(&p).unwrap().replace("7,3,0", "7,3,x");
        std::fs::write(&p, text).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(err.contains("outcomes.csv:4") && err.contains("'x'"), "{err}");
    }
}
