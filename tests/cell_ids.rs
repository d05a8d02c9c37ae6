//! Cell ids are the identity of finished results: a refactor of the types a plan holds must
//! not change them. Loading the committed plans must reproduce, for every committed results
//! row, the id and the `config` column it was written with.

use normlab::plan;
use std::collections::HashMap;
use std::path::Path;

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
        let cell = cells.get(id.as_str()).unwrap_or_else(|| panic!("{results}: row {id} is no cell of {plan_file} any more ({config})"));
        assert_eq!(&serde_json::to_string(&cell.config).unwrap(), config, "{results}: cell {id}'s config column changed");
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
