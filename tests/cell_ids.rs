//! Cell ids are the identity of finished results: a refactor of the types a plan holds must
//! not change them. Loading the committed plans must reproduce, for every committed results
//! row, the id and the `config` column it was written with — except the rows listed in
//! [`RETIRED`], whose plan now asks for a different run (so a different id), each with the
//! reason; for those the test checks that the plan holds the replacement, the same cell but
//! for its regularizer.

use normlab::plan;
use std::collections::HashMap;
use std::path::Path;

/// (results file, cell id, why the plan no longer holds it).
const RETIRED: [(&str, &str, &str); 8] = [
    // results/short.csv's vgg11 norm-decay rows (H200, 2026-11-26) ran with coverage `all`:
    // they also decayed features.22 and features.25 (3×3 convs on 2×2 maps), which the
    // reference code skips. plans/short.ron now uses the reference's coverage, a different
    // run on vgg11, so these rows are kept as measured but are no cell of the plan.
    ("results/short.csv", "dc4b543ce92d", "vgg11 ℓ1 β=1e-4, coverage all"),
    ("results/short.csv", "001fcba463bc", "vgg11 ℓ1 β=1e-3, coverage all"),
    ("results/short.csv", "1e0015fe81e5", "vgg11 ℓ1 β=1e-5, coverage all"),
    ("results/short.csv", "d9413eab1740", "vgg11 ℓ1 β=1e-2, coverage all"),
    ("results/short.csv", "1dc3900d0a45", "vgg11 ℓ∞ β=1e-4, coverage all"),
    ("results/short.csv", "96a4f783441e", "vgg11 ℓ∞ β=1e-3, coverage all"),
    ("results/short.csv", "858cebb1f59a", "vgg11 ℓ∞ β=1e-5, coverage all"),
    ("results/short.csv", "eda3a3d1e7cb", "vgg11 ℓ∞ β=1e-2, coverage all"),
];

/// A directory that looks complete to the plan loader (the six batch files exist), so the
/// test does not depend on where CIFAR-10 lives.
fn fake_data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        std::fs::write(d.path().join(f), b"").unwrap();
    }
    d
}

/// (cell id → config column) of a committed results CSV.
fn committed(csv_path: &Path) -> HashMap<String, String> {
    let mut r = csv::Reader::from_path(csv_path).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let (id, config) = (col("cell_id"), col("config"));
    r.records().map(|rec| rec.unwrap()).map(|rec| (rec[id].to_string(), rec[config].to_string())).collect()
}

fn check(plan_file: &str, results: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = fake_data_dir();
    let plan = plan::load_with_data(&root.join(plan_file), Some(data.path())).unwrap();
    let rows = committed(&root.join(results));
    assert!(!rows.is_empty(), "{results} has no rows");
    let cells: HashMap<&str, &plan::Cell> = plan.cells.iter().map(|c| (c.id.as_str(), c)).collect();
    for (id, config) in &rows {
        if let Some((_, _, why)) = RETIRED.iter().find(|r| r.0 == results && r.1 == id) {
            assert!(!cells.contains_key(id.as_str()), "{results}: row {id} ({why}) is listed as retired but is a cell of {plan_file}");
            // The plan holds the same cell with another regularizer setting: the replacement.
            let mut old: serde_json::Value = serde_json::from_str(config).unwrap();
            let old_reg = old.as_object_mut().unwrap().remove("regularizer").unwrap();
            let replacement = plan.cells.iter().find(|c| {
                let mut v = serde_json::to_value(&c.config).unwrap();
                let reg = v.as_object_mut().unwrap().remove("regularizer").unwrap();
                v == old && reg["kind"] == old_reg["kind"] && reg.get("norm") == old_reg.get("norm") && reg.get("beta") == old_reg.get("beta")
            });
            let replacement = replacement.unwrap_or_else(|| panic!("{results}: {plan_file} has no replacement for retired row {id} ({why})"));
            assert_eq!(replacement.config.train.regularizer.coverage(), Some(normlab::regularize::Coverage::Reference), "{why}");
            continue;
        }
        let cell = cells.get(id.as_str()).unwrap_or_else(|| panic!("{results}: row {id} is no cell of {plan_file} any more ({config})"));
        assert_eq!(&serde_json::to_string(&cell.config).unwrap(), config, "{results}: cell {id}'s config column changed");
    }
    for (file, id, why) in RETIRED.iter().filter(|r| r.0 == results) {
        assert!(rows.contains_key(*id), "{file} has no row {id} ({why}): update RETIRED");
    }
}

#[test]
fn demo_plan_reproduces_the_committed_demo_ids() {
    check("plans/demo.ron", "results/demo.csv");
}

#[test]
fn short_plan_reproduces_the_committed_short_ids() {
    check("plans/short.ron", "results/short.csv");
}

/// The plans that name the reference protocol regularize what the reference code does:
/// vgg11 without features.22/.25, regnet200mf's norm decay without its grouped convs.
#[test]
fn paper_plan_cells_have_the_reference_coverage() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = fake_data_dir();
    for plan_file in ["plans/paper.ron", "plans/short.ron"] {
        let plan = plan::load_with_data(&root.join(plan_file), Some(data.path())).unwrap();
        assert_eq!(plan.cells.len(), 68, "{plan_file}");
        for c in &plan.cells {
            let t = &c.config.train;
            let reg = t.regularizer;
            let model = normlab::models::Model::zeros(t.model).unwrap();
            let acted = normlab::regularize::Regularizer::new(reg, &model).unwrap().acted_on(&model);
            let small = acted.iter().any(|n| n == "features.22.weight" || n == "features.25.weight");
            let grouped = acted.iter().any(|n| n.ends_with(".conv2.weight") && t.model == normlab::models::Arch::Regnet200mf);
            match reg.name() {
                "svc" => {
                    assert!(!small, "{plan_file} {}", c.describe());
                    assert_eq!(reg.coverage(), Some(normlab::regularize::Coverage::Reference));
                }
                "nd-l1" | "nd-linf" => assert!(!small && !grouped, "{plan_file} {}", c.describe()),
                _ => {}
            }
        }
    }
}
