//! End-to-end tests of `normlab report`: a partial results file (from the fake executor)
//! renders with missing cells marked, the published numbers and differences appear beside
//! the paper's cells, and the SVG plots are written.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    // NORMLAB_BIN: run a copied binary instead (a target dir shared by several
    // checkouts may replace the built one while the tests run).
    let exe = std::env::var("NORMLAB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_normlab").to_string());
    let mut c = Command::new(exe);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{t}");
    t
}

fn plan(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("rep.ron");
    std::fs::write(
        &p,
        format!(
            r#"(
    name: "rep",
    data: (dir: "{d}/none", sources: ["{d}/rep.ron"]),
    models: [vgg11, resnet18],
    regularizers: [
        weight_decay(betas: [1e-2, 1e-4]),
        svc(clips: [0.5, 2.0]),
        norm_decay(norm: l1, betas: [1e-2, 1e-3]),
        norm_decay(norm: linf, betas: [1e-2]),
    ],
    training: (epochs: 3, train_subset: 100),
    evaluation: (robust: (n: 10)),
)"#,
            d = dir.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_partial_results_file_renders_with_missing_cells_marked() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path());
    let results = dir.path().join("results");
    // Shard 0 of 3 only: a third of the grid, as a running grid would be.
    ok(bin().args(["run", p.to_str().unwrap(), "--results", results.to_str().unwrap(), "--executor", "fake", "--shard", "0/3"]));
    let out = dir.path().join("report");
    let csv = results.join("rep.csv");
    let t = ok(bin().args(["report", csv.to_str().unwrap(), "--out", out.to_str().unwrap(), "--format", "both", "--plan", p.to_str().unwrap()]));
    assert!(t.contains("report.md") && t.contains("report.tex"), "{t}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| model | plain | WD 1e-2 | WD 1e-4 | SVC 0.5 | SVC 2 | ℓ1 1e-2 | ℓ1 1e-3 | ℓ∞ 1e-2 |"), "{md}");
    assert!(md.contains("—"), "missing cells must be marked:\n{md}");
    assert!(md.contains("| ↳ paper | 90.4/60.2 | 91.6/56.3 | 90.1/60.6 | 87.6/48.8 | 89.9/56.7 | 88.1/56.5 | 91.1/62.5 | 91.8/56.9 |"), "{md}");
    assert!(md.contains("↳ Δ"), "{md}");
    for svg in ["robust_vs_strength.svg", "norms_vs_strength.svg", "clean_vs_robust.svg", "training_curves.svg"] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}\n{md}"));
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"), "{svg} is not a whole SVG");
        assert!(md.contains(&format!("]({svg})")), "{svg} not linked:\n{md}");
    }
    let tex = std::fs::read_to_string(out.join("report.tex")).unwrap();
    assert!(tex.contains("\\begin{tabular}") && tex.contains("\\quad paper"), "{tex}");
    // Without the plan, the columns are those with rows; missing cells are still marked.
    let out2 = dir.path().join("report2");
    ok(bin().args(["report", csv.to_str().unwrap(), "--out", out2.to_str().unwrap()]));
    let md2 = std::fs::read_to_string(out2.join("report.md")).unwrap();
    assert!(md2.contains("| model | plain | WD 1e-2 | SVC 0.5 | SVC 2 | ℓ1 1e-3 | ℓ∞ 1e-2 |") && md2.contains("—"), "{md2}");
}

#[test]
fn a_full_grid_checks_the_finding_and_plots_layer_norms() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path());
    let results = dir.path().join("results");
    ok(bin().args(["run", p.to_str().unwrap(), "--results", results.to_str().unwrap(), "--executor", "fake", "--jobs-per-device", "2"]));
    let out = dir.path().join("report");
    ok(bin().args(["report", results.join("rep.csv").to_str().unwrap(), "--out", out.to_str().unwrap()]));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!md.contains("| — |"), "{md}");
    // The fake executor lowers robust accuracy with strength, so the finding holds for both.
    assert!(md.contains("holds by point estimates for 2 of 2 model(s)"), "{md}");
    assert!(md.contains("**vgg11**: the strongest setting lowers robust accuracy by its point estimate for 4 of 4 regularizers (paper: 4 of 4)"), "{md}");
    // The fake executor keeps no per-image outcomes: intervals from counts, no paired test.
    assert!(md.contains("]*") && md.contains("no paired test (no per-image outcomes)"), "{md}");
    let layers = std::fs::read_to_string(out.join("layer_norms.svg")).unwrap();
    assert!(layers.contains("vgg11 plain") && layers.contains("nd-linf"), "the default pair is plain vs the strongest ℓ∞ cell");
}

#[test]
fn an_empty_or_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.csv");
    std::fs::write(&f, "a,b\n1,2\n").unwrap();
    let o = bin().args(["report", f.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no 'plan'"));
}
