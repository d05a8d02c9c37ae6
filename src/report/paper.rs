//! The paper's published numbers (Liang & Huang 2021, Table 1; paper.md §6), typed in as
//! data: clean / robust accuracy in %, robust at ℓ∞ ε = 1/255 with APGD-CE + APGD-T on 1,024
//! test images, one seed.

/// The radius of the published robust accuracies.
pub const PAPER_EPS_COLUMN: &str = "1_255";

/// The models of the table, in its row order (normlab's names).
pub const MODELS: [&str; 4] = ["vgg11", "resnet18", "senet18", "regnet200mf"];

/// The table's columns, in order: regularizer label and strength (β, or C for SVC).
pub const COLUMNS: [(&str, Option<f64>); 17] = [
    ("plain", None),
    ("wd", Some(1e-2)),
    ("wd", Some(1e-3)),
    ("wd", Some(1e-4)),
    ("wd", Some(1e-5)),
    ("svc", Some(0.5)),
    ("svc", Some(1.0)),
    ("svc", Some(1.5)),
    ("svc", Some(2.0)),
    ("nd-l1", Some(1e-2)),
    ("nd-l1", Some(1e-3)),
    ("nd-l1", Some(1e-4)),
    ("nd-l1", Some(1e-5)),
    ("nd-linf", Some(1e-2)),
    ("nd-linf", Some(1e-3)),
    ("nd-linf", Some(1e-4)),
    ("nd-linf", Some(1e-5)),
];

/// (clean, robust) in % per model (rows in [`MODELS`] order) and column ([`COLUMNS`] order).
pub const VALUES: [[(f64, f64); 17]; 4] = [
    [
        (90.4, 60.2), (91.6, 56.3), (91.7, 60.5), (90.1, 60.6), (90.2, 60.3), (87.6, 48.8), (89.1, 52.2), (90.0, 54.1), (89.9, 56.7),
        (88.1, 56.5), (91.1, 62.5), (90.6, 61.1), (90.8, 60.1), (91.8, 56.9), (91.1, 60.0), (90.8, 60.8), (90.6, 60.1),
    ],
    [
        (93.2, 37.0), (94.3, 28.2), (94.1, 33.7), (93.1, 33.9), (92.7, 40.9), (93.6, 35.2), (94.0, 41.7), (94.2, 43.2), (93.8, 39.8),
        (92.5, 24.5), (93.4, 37.7), (93.5, 38.3), (93.4, 37.5), (93.0, 20.0), (93.8, 34.7), (93.1, 38.9), (93.0, 37.6),
    ],
    [
        (93.1, 35.7), (94.2, 23.5), (93.9, 32.8), (93.0, 37.0), (92.4, 34.8), (93.8, 30.5), (94.2, 35.6), (93.8, 35.2), (94.2, 37.4),
        (92.3, 33.6), (93.8, 36.0), (93.3, 38.2), (93.3, 36.7), (93.0, 28.6), (93.6, 31.0), (92.8, 37.6), (93.2, 37.4),
    ],
    [
        (91.8, 34.8), (93.6, 23.7), (94.4, 30.3), (92.3, 30.0), (91.3, 31.0), (93.9, 27.7), (93.4, 28.8), (93.0, 29.0), (92.4, 28.8),
        (93.7, 29.2), (92.3, 31.1), (91.6, 28.1), (91.9, 34.3), (93.4, 23.2), (92.0, 27.7), (91.8, 27.9), (91.9, 30.6),
    ],
];

/// The published (clean, robust) % of a model trained with a regularizer at a strength, if
/// the paper has that cell.
pub fn published(model: &str, regularizer: &str, strength: Option<f64>) -> Option<(f64, f64)> {
    let m = MODELS.iter().position(|&x| x == model)?;
    let c = COLUMNS.iter().position(|&(r, s)| r == regularizer && same_strength(s, strength))?;
    Some(VALUES[m][c])
}

/// Strengths compare equal up to float noise from text round trips.
pub fn same_strength(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_the_published_cells() {
        assert_eq!(published("vgg11", "plain", None), Some((90.4, 60.2)));
        assert_eq!(published("resnet18", "nd-linf", Some(1e-2)), Some((93.0, 20.0)));
        assert_eq!(published("regnet200mf", "svc", Some(2.0)), Some((92.4, 28.8)));
        assert_eq!(published("senet18", "wd", Some(0.1)), None);
        assert_eq!(published("vgg16", "plain", None), None);
    }
}
