//! `normlab theory` end to end: the acceptance commands print JSON whose checks all pass and
//! exit 0; a statement whose hypothesis fails prints failing checks and exits non-zero; bad
//! arguments give errors that name the fix.

use std::process::Command;

/// Runs the normlab binary cargo built for these tests, or the one env NORMLAB_BIN names (a
/// target directory shared between checkouts can hold another checkout's binary).
fn normlab(args: &[&str]) -> (bool, serde_json::Value, String) {
    let bin = std::env::var_os("NORMLAB_BIN").map(std::path::PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_normlab").into());
    let out = Command::new(bin).args(args).output().expect("the normlab binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, stderr)
}

fn checks(report: &serde_json::Value) -> Vec<(String, bool)> {
    report["checks"]
        .as_array()
        .expect("a report has checks")
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["pass"].as_bool().unwrap()))
        .collect()
}

fn assert_all_pass(args: &[&str]) -> serde_json::Value {
    let (ok, report, stderr) = normlab(args);
    assert!(ok, "{args:?} failed: {stderr}\n{report}");
    let cs = checks(&report);
    assert!(!cs.is_empty() && cs.iter().all(|c| c.1), "{args:?}: {cs:?}");
    assert_eq!(report["pass"], true);
    report
}

#[test]
fn prop1_large_norms_lipschitz_zero() {
    let r = assert_all_pass(&["theory", "prop1", "--scale", "1e6", "--format", "json"]);
    for layer in r["facts"]["layers"].as_array().unwrap() {
        for norm in ["l1", "linf", "spectral"] {
            assert!(layer[norm].as_f64().unwrap() >= 1e6, "{layer}");
        }
    }
}

#[test]
fn thm2_relu_and_tanh_are_certified_at_eps() {
    for act in ["relu", "tanh"] {
        let r = assert_all_pass(&["theory", "thm2", "--data", "synthetic", "--eps", "0.1", "--activation", act, "--format", "json"]);
        assert_eq!(r["facts"]["checked"]["certified_robust_accuracy"], 1.0);
    }
    assert_all_pass(&["theory", "thm2", "--eps", "1/20", "--activation", "softplus", "--norm", "l2", "--points", "20", "--format", "json"]);
}

#[test]
fn prop2_lipschitz_witness_above_xi() {
    let r = assert_all_pass(&["theory", "prop2", "--xi", "1e6", "--format", "json"]);
    assert!(r["facts"]["witness"]["ratio"].as_f64().unwrap() >= 1e6);
}

#[test]
fn overlapping_balls_fail_and_exit_nonzero() {
    let (ok, report, stderr) = normlab(&["theory", "thm2", "--eps", "0.1", "--separation", "0.15", "--points", "20", "--format", "json"]);
    assert!(!ok, "must exit non-zero");
    assert!(stderr.contains("checks failed"), "{stderr}");
    let failed: Vec<String> = checks(&report).into_iter().filter(|c| !c.1).map(|c| c.0).collect();
    assert_eq!(failed, ["assumption2_separation", "certified_robust_accuracy", "probed_ball_points"]);
}

#[test]
fn bad_arguments_name_the_fix() {
    let (ok, _, stderr) = normlab(&["theory", "thm2", "--eps", "2"]);
    assert!(!ok && stderr.contains("--eps") && stderr.contains("[0, 1]"), "{stderr}");
    let (ok, _, stderr) = normlab(&["theory", "thm2", "--data", "cifar"]);
    assert!(!ok && stderr.contains("--cifar-dir"), "{stderr}");
    let (ok, _, stderr) = normlab(&["theory", "prop1", "--depth", "2"]);
    assert!(!ok && stderr.contains("at least 3 layers"), "{stderr}");
}
