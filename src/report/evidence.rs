//! What each accuracy of a results file rests on, for the report's intervals and paired
//! tests: per cell, how many images were right out of how many, for the clean test images
//! and for the attacked images at each radius, and the per-image outcomes themselves where
//! the cell kept them (`outcomes.csv`, [`crate::results::outcomes`]).
//!
//! A cell without outcomes.csv (one finished before normlab kept them) still gets intervals:
//! its counts are its accuracy times the images its evaluation protocol measured (the
//! `config` column's `evaluation`: `clean_subset`, else the 10,000 test images; `robust.n`).
//! Only the paired test needs the outcomes, and says so when they are missing.

use super::setting::RowSetting;
use crate::results::outcomes::{self, OutcomeSet};
use crate::results::{Layout, ResultRow};
use crate::stats::{self, Interval, Paired};
use std::collections::HashMap;

/// Where a count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cell's outcomes.csv, image by image.
    Outcomes,
    /// The row's accuracy times the protocol's image count.
    Counts,
}

/// `k` of `n` images right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Images right (classified correctly, or robust).
    pub k: u64,
    /// Images measured.
    pub n: u64,
    /// Where the numbers come from.
    pub source: Source,
}

impl Measured {
    /// The 95% Wilson interval, as fractions.
    pub fn interval(&self) -> Option<Interval> {
        stats::wilson(self.k, self.n, 1.0 - stats::ALPHA)
    }

    fn from_accuracy(acc: Option<f64>, n: Option<u64>) -> Option<Self> {
        let (acc, n) = (acc?, n?);
        (acc.is_finite() && (0.0..=1.0).contains(&acc) && n > 0).then(|| Self { k: (acc * n as f64).round() as u64, n, source: Source::Counts })
    }

    fn from_set(set: &OutcomeSet) -> Self {
        Self { k: set.images.iter().filter(|i| i.correct).count() as u64, n: set.images.len() as u64, source: Source::Outcomes }
    }
}

/// One cell's evidence.
#[derive(Debug, Clone, Default)]
pub struct CellEvidence {
    /// The clean accuracy's count.
    pub clean: Option<Measured>,
    /// The robust accuracies' counts, by radius column suffix (`1_255`).
    pub robust: HashMap<String, Measured>,
    /// The per-image outcomes, when outcomes.csv was read.
    sets: Option<Vec<OutcomeSet>>,
    /// Why there are no per-image outcomes (no file, or an unreadable one).
    pub missing: Option<String>,
}

/// The evidence of every row of a results file, by cell id.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    cells: HashMap<String, CellEvidence>,
}

/// The CIFAR-10 test split's size: what a clean accuracy without `clean_subset` was measured on.
const TEST_IMAGES: u64 = crate::data::binary::FULL_RECORDS_PER_FILE as u64;

impl Evidence {
    /// Reads each row's outcomes.csv (in the cell folder `layout` names) or, without one,
    /// sizes its counts by its evaluation protocol.
    pub fn gather(rows: &[ResultRow], layout: &Layout) -> Self {
        let mut cells = HashMap::new();
        for r in rows {
            let path = layout.cell(&r.plan, &r.cell_id).outcomes();
            let mut e = CellEvidence::default();
            let sets = if path.exists() {
                match outcomes::read(&path) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        e.missing = Some(format!("{} is unreadable ({err:#})", path.display()));
                        None
                    }
                }
            } else {
                e.missing = Some(format!("no per-image outcomes ({} does not exist: the cell finished before normlab kept them)", path.display()));
                None
            };
            let eval = RowSetting::of(r).evaluation;
            let find = |name: &str| sets.as_ref().and_then(|s| s.iter().find(|x| x.name == name));
            e.clean = match find(outcomes::CLEAN_SET) {
                Some(set) => Some(Measured::from_set(set)),
                None => {
                    let n = eval.as_ref().map(|ev| ev.clean_subset.map(|n| n.get() as u64).unwrap_or(TEST_IMAGES));
                    Measured::from_accuracy(r.clean_acc, n)
                }
            };
            for (suffix, acc) in &r.robust {
                let m = match find(&outcomes::robust_set_of(suffix)) {
                    Some(set) => Some(Measured::from_set(set)),
                    None => Measured::from_accuracy(*acc, eval.as_ref().and_then(|ev| ev.robust.as_ref()).map(|a| a.n.get() as u64)),
                };
                if let Some(m) = m {
                    e.robust.insert(suffix.clone(), m);
                }
            }
            e.sets = sets;
            cells.insert(r.cell_id.clone(), e);
        }
        Self { cells }
    }

    /// A cell's evidence.
    pub fn cell(&self, id: &str) -> Option<&CellEvidence> {
        self.cells.get(id)
    }

    /// A cell's clean count.
    pub fn clean(&self, id: &str) -> Option<Measured> {
        self.cells.get(id)?.clean
    }

    /// A cell's robust count at a radius column suffix.
    pub fn robust(&self, id: &str, eps: &str) -> Option<Measured> {
        self.cells.get(id)?.robust.get(eps).copied()
    }

    /// The exact McNemar test of cell `a` against cell `b` on the images both attacked at
    /// `eps` (b − a is the difference), or why it cannot be run.
    pub fn paired_robust(&self, a: &str, b: &str, eps: &str) -> Result<Paired, String> {
        let name = outcomes::robust_set_of(eps);
        let set = |id: &str| -> Result<&OutcomeSet, String> {
            let c = self.cells.get(id).ok_or_else(|| format!("no row for cell {id}"))?;
            let sets = c.sets.as_ref().ok_or_else(|| c.missing.clone().unwrap_or_else(|| format!("no outcomes for cell {id}")))?;
            sets.iter().find(|s| s.name == name).ok_or_else(|| format!("cell {id}'s outcomes.csv has no {name} set"))
        };
        let (sa, sb) = (set(a)?, set(b)?);
        if sa.images.iter().map(|i| i.index).ne(sb.images.iter().map(|i| i.index)) {
            return Err(format!("cells {a} and {b} attacked different images (another robust n or seed)"));
        }
        let correct = |s: &OutcomeSet| s.images.iter().map(|i| i.correct).collect::<Vec<_>>();
        stats::mcnemar(&correct(sa), &correct(sb)).ok_or_else(|| format!("cells {a} and {b} have no attacked images to compare"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::outcomes::ImageOutcome;

    fn row(id: &str, clean: f64, robust: f64, config: &str) -> ResultRow {
        ResultRow { cell_id: id.into(), clean_acc: Some(clean), robust: vec![("1_255".into(), Some(robust))], ..crate::report::test_row(config) }
    }

    fn set(name: String, correct: &[bool]) -> OutcomeSet {
        OutcomeSet { name, images: correct.iter().enumerate().map(|(i, &c)| ImageOutcome { index: 10 + i as u32, label: 0, correct: c, flipped_by: None }).collect() }
    }

    #[test]
    fn outcomes_give_exact_counts_and_paired_tests_and_counts_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let config = r#"{"evaluation":{"clean_subset":1000,"robust":{"attacks":["apgd_ce"],"eps":[0.00392156862745098],"n":128,"seed":0,"iters":10},"certified":true}}"#;
        // a and b kept outcomes: 10 attacked images, b loses 9 that a kept and wins 1.
        let ra: Vec<bool> = (0..10).map(|i| i != 0).collect();
        let rb: Vec<bool> = (0..10).map(|i| i == 0).collect();
        for (id, robust) in [("a", &ra), ("b", &rb)] {
            let d = layout.cell("p", id);
            std::fs::create_dir_all(d.path()).unwrap();
            outcomes::write(&d.outcomes(), &[set(outcomes::CLEAN_SET.into(), &[true, true, false, true]), set(outcomes::robust_set_of("1_255"), robust)]).unwrap();
        }
        let rows = vec![row("a", 0.75, 0.9, config), row("b", 0.75, 0.1, config), row("old", 0.3, 0.25, config), row("bare", 0.3, 0.25, "")];
        let ev = Evidence::gather(&rows, &layout);
        assert_eq!(ev.clean("a"), Some(Measured { k: 3, n: 4, source: Source::Outcomes }));
        assert_eq!(ev.robust("b", "1_255"), Some(Measured { k: 1, n: 10, source: Source::Outcomes }));
        // Without outcomes: the protocol's n (clean_subset 1000, robust n 128).
        assert_eq!(ev.clean("old"), Some(Measured { k: 300, n: 1000, source: Source::Counts }));
        assert_eq!(ev.robust("old", "1_255"), Some(Measured { k: 32, n: 128, source: Source::Counts }));
        assert_eq!(ev.clean("bare"), None, "no config: no n, no interval");
        // b − a: b = 9 images only a kept, c = 1 only b kept: p = 22/1024.
        let t = ev.paired_robust("a", "b", "1_255").unwrap();
        assert_eq!((t.b, t.c, t.n), (9, 1, 10));
        assert!((t.p - 22.0 / 1024.0).abs() < 1e-12);
        let why = ev.paired_robust("a", "old", "1_255").unwrap_err();
        assert!(why.contains("no ") && why.contains("outcomes.csv"), "{why}");
    }
}
