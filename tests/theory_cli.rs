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
        assert_eq!(r["facts"]["checked"]["pgd"]["attacked"], 60);
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
    // PGD may or may not find the overlap (ReLU's plateaus give it no gradient); the others must.
    assert_eq!(&failed[..3], ["assumption2_separation", "certified_robust_accuracy", "probed_ball_points"]);
}

#[test]
fn bad_arguments_name_the_fix() {
    let (ok, _, stderr) = normlab(&["theory", "thm2", "--eps", "2"]);
    assert!(!ok && stderr.contains("--eps") && stderr.contains("outside [0, 1]"), "{stderr}");
    let (ok, _, stderr) = normlab(&["theory", "thm2", "--data", "cifar"]);
    assert!(!ok && stderr.contains("--cifar-dir"), "{stderr}");
    let (ok, _, stderr) = normlab(&["theory", "prop1", "--depth", "2"]);
    assert!(!ok && stderr.contains("at least 3 layers"), "{stderr}");
}

/// A tiny CIFAR-10 directory: 10 training and 5 test images of random pixels with labels
/// cycling over 3 classes, where test image 2 (class 2) is training image 4 (class 1) plus 7
/// levels on every pixel: the closest pair of different classes, 7 levels apart in ℓ∞.
fn tiny_cifar(dir: &std::path::Path) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let split = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| {
        let images: Vec<u8> = (0..n * 3072).map(|_| rng.gen_range(0..=200)).collect();
        normlab::data::Split::new(images, (0..n).map(|i| (i % 3) as u8).collect()).unwrap()
    };
    let train = split(10, &mut rng);
    let mut test = split(5, &mut rng);
    let near: Vec<u8> = train.image(4).iter().map(|&v| v + 7).collect();
    test.images[2 * 3072..3 * 3072].copy_from_slice(&near);
    normlab::data::binary::write_dir(&normlab::data::Cifar10 { train, test }, dir).unwrap();
}

#[test]
fn separation_finds_the_planted_pair() {
    let dir = tempfile::tempdir().unwrap();
    tiny_cifar(dir.path());
    let path = dir.path().to_str().unwrap();
    for norm in ["linf", "l2"] {
        let r = assert_all_pass(&["theory", "separation", "--data", path, "--norm", norm, "--format", "json"]);
        assert_eq!(r["facts"]["attained"], "test-train", "{norm}");
        let pair = &r["facts"]["pair"];
        assert_eq!((pair["first"].as_u64(), pair["second"].as_u64()), (Some(2), Some(4)), "{norm}");
        let want = if norm == "linf" { 7.0 / 255.0 } else { (3072.0f64 * 49.0).sqrt() / 255.0 };
        assert!((pair["distance"].as_f64().unwrap() - want).abs() < 1e-12, "{norm}: {pair}");
    }
    // ε above half the separation: Assumption 2 fails and the command says so.
    let (ok, r, _) = normlab(&["theory", "separation", "--data", path, "--eps", "4/255", "--format", "json"]);
    assert!(!ok && checks(&r) == [("assumption2_at_eps".to_string(), false)]);
    let (ok, _, stderr) = normlab(&["theory", "separation", "--data", "/nonexistent/cifar"]);
    assert!(!ok && stderr.contains("normlab data"), "{stderr}");
}
