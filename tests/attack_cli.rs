//! `normlab attack` end to end: a tiny CIFAR-10 directory in the binary layout, a randomly
//! initialised checkpoint whose own predictions serve as labels (so every drawn image starts
//! correctly classified), and the JSON the plan scheduler and the report read.

use candle_core::Device;
use normlab::data::{binary, Cifar10, Split, IMAGE_BYTES};
use normlab::models::{Arch, Model};
use std::path::Path;
use std::process::Command;

/// Writes `n` pseudo-random test images labelled by `arch`'s predictions (seed 0), plus a
/// training split of copies of the first image, and the checkpoint; returns its path.
fn fixture(dir: &Path, arch: Arch, n: usize) -> std::path::PathBuf {
    let mut state = 12345u64;
    let mut byte = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 56) as u8
    };
    let images: Vec<u8> = (0..n * IMAGE_BYTES).map(|_| byte()).collect();
    let model = Model::new(arch, 0, &Device::Cpu).unwrap();
    let unlabelled = Split::new(images.clone(), vec![0; n]).unwrap();
    let (x, _) = unlabelled.batch(&(0..n).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let labels: Vec<u8> = model.forward(&x, false).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap().iter().map(|&l| l as u8).collect();
    let test = Split::new(images, labels).unwrap();
    let first = test.prefix(1);
    let train = Split::new(first.images.repeat(5), first.labels.repeat(5)).unwrap();
    binary::write_dir(&Cifar10 { train, test }, &dir.join("data")).unwrap();
    let ckpt = dir.join(format!("{}.safetensors", arch.name()));
    model.save(&ckpt).unwrap();
    ckpt
}

/// Runs `normlab attack` (the binary cargo built for these tests, or the one env NORMLAB_BIN
/// names: other worktrees sharing the target directory may rebuild cargo's copy meanwhile).
fn attack(dir: &Path, ckpt: &Path, model: &str, extra: &[&str]) -> std::process::Output {
    let bin = std::env::var_os("NORMLAB_BIN").map(std::path::PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_normlab").into());
    Command::new(bin)
        .args(["attack", "--model", model, "--checkpoint"])
        .arg(ckpt)
        .arg("--data")
        .arg(dir.join("data"))
        .args(extra)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn zero_radius_keeps_every_point_and_reports_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixture(dir.path(), Arch::Vgg11, 5);
    let v = json(&attack(dir.path(), &ckpt, "vgg11", &["--eps", "0", "--n", "3", "--iters", "2", "--batch", "2", "--format", "json"]));
    for key in ["clean_acc", "robust_acc", "certified_acc", "lipschitz_bound", "certified_acc_l2", "lipschitz_bound_l2", "n", "eps", "attacks", "robust_acc_after", "seconds"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["clean_acc"], 1.0, "labels are the model's own predictions");
    assert_eq!(v["robust_acc"], v["clean_acc"]);
    assert_eq!(v["robust_acc_after"], serde_json::json!([1.0, 1.0]));
    assert_eq!(v["attacks"], serde_json::json!(["apgd-ce", "apgd-t"]));
    assert_eq!(v["n"], 3);
    assert_eq!(v["eps"], 0.0);
    assert!(v["lipschitz_bound"].as_f64().unwrap() > 0.0);
    // At ε = 0 the threshold 2·ε·L is 0: every correctly classified point is certified.
    assert_eq!(v["certified_acc"], 1.0);
    assert_eq!(v["certified_acc_l2"], 1.0);
    assert!(v["lipschitz_bound_l2"].as_f64().unwrap() > 0.0);
}

#[test]
fn attacks_report_in_order_and_text_output_reads() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixture(dir.path(), Arch::Vgg11, 4);
    let v = json(&attack(dir.path(), &ckpt, "vgg", &["--eps", "32/255", "--n", "4", "--iters", "3", "--attacks", "fgsm,apgd-ce", "--format", "json"]));
    let after: Vec<f64> = v["robust_acc_after"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap()).collect();
    assert_eq!(after.len(), 2);
    assert!(after[1] <= after[0] && after[0] <= 1.0);
    assert_eq!(v["robust_acc"].as_f64().unwrap(), after[1]);
    // (A freshly initialised VGG predicts one class almost everywhere, so it may well
    // withstand even ε = 32/255; the acceptance numbers use a trained checkpoint.)
    assert!((v["eps"].as_f64().unwrap() - 32.0 / 255.0).abs() < 1e-12);
    let out = attack(dir.path(), &ckpt, "vgg11", &["--eps", "1/255", "--n", "2", "--iters", "2", "--attacks", "pgd", "--no-spectral"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["clean accuracy", "after pgd", "robust accuracy", "certified (linf)"] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    assert!(!text.contains("certified (l2)"), "--no-spectral skips the ℓ2 certificate:\n{text}");
}

#[test]
fn the_standard_suite_runs_its_four_attacks_under_both_norms() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixture(dir.path(), Arch::Vgg11, 4);
    for (norm, eps) in [("linf", "8/255"), ("l2", "0.5")] {
        let args = ["--suite", "standard", "--norm", norm, "--eps", eps, "--n", "3", "--iters", "2", "--queries", "3", "--batch", "2", "--no-spectral"];
        let v = json(&attack(dir.path(), &ckpt, "vgg11", &[&args[..], &["--format", "json"]].concat()));
        assert_eq!(v["attacks"], serde_json::json!(["apgd-ce", "apgd-t", "fab-t", "square"]), "{norm}");
        assert_eq!((v["suite"].as_str(), v["norm"].as_str()), (Some("standard"), Some(norm)));
        let after: Vec<f64> = v["robust_acc_after"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap()).collect();
        assert_eq!(after.len(), 4);
        assert!(after.windows(2).all(|w| w[1] <= w[0]) && after[0] <= 1.0, "{norm}: {after:?}");
        assert_eq!(v["robust_acc"].as_f64().unwrap(), after[3]);
        // Per image: the drawn index, and the attack that flipped it (null: robust).
        assert_eq!(v["indices"].as_array().unwrap().len(), 3);
        for f in v["flipped_by"].as_array().unwrap() {
            assert!(f.is_null() || ["apgd-ce", "apgd-t", "fab-t", "square"].contains(&f.as_str().unwrap()), "{f}");
        }
        // The certificate follows the norm: ℓ∞ norms for ℓ∞; the ℓ2 one needs the spectral
        // norms, skipped here.
        match norm {
            "linf" => assert!(v["lipschitz_bound"].as_f64().unwrap() > 0.0),
            _ => assert!(v["certified_acc"].is_null() && v["certified_note"].as_str().unwrap().contains("--no-spectral")),
        }
        let out = attack(dir.path(), &ckpt, "vgg11", &args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for want in ["after apgd-ce", "after apgd-t", "after fab-t", "after square", "standard suite", &format!("ε = {}", if norm == "l2" { "0.5" } else { "0.031373" })] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}

#[test]
fn senet_has_no_certificate_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixture(dir.path(), Arch::Senet18, 4);
    let v = json(&attack(dir.path(), &ckpt, "senet18", &["--eps", "1/255", "--n", "2", "--attacks", "fgsm", "--format", "json", "--no-spectral"]));
    assert!(v["certified_acc"].is_null() && v["lipschitz_bound"].is_null());
    assert!(v["certified_note"].as_str().unwrap().contains("squeeze-and-excitation"));
    assert!(v["certified_acc_l2"].is_null() && v["certified_note_l2"].as_str().unwrap().contains("--no-spectral"));
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixture(dir.path(), Arch::Vgg11, 4);
    let cases: [(&[&str], &str); 11] = [
        (&["--eps", "eight"], "ε 'eight'"),
        (&["--eps", "2"], "outside [0, 1]"),
        (&["--eps", "1/255", "--n", "100"], "test split holds 4"),
        (&["--eps", "1/255", "--attacks", "apgd-ce,cw"], "unknown attack 'cw'"),
        (&["--eps", "1/255", "--n", "2", "--iters", "0"], "iters = 0"),
        (&["--eps", "1/255", "--n", "2", "--queries", "0"], "queries = 0"),
        (&["--eps", "1/255", "--suite", "standard", "--attacks", "fgsm"], "contradict suite standard"),
        (&["--eps", "1/255", "--suite", "custom"], "needs an attacks list"),
        (&["--eps", "0.5", "--norm", "l2", "--attacks", "pgd"], "pgd is an ℓ∞ attack"),
        (&["--eps", "60", "--norm", "l2"], "√3072"),
        (&["--eps", "0.5", "--norm", "l1"], "unknown norm 'l1'"),
    ];
    for (args, want) in cases {
        let out = attack(dir.path(), &ckpt, "vgg11", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: expected '{want}' in {err}");
    }
    let out = attack(dir.path(), &ckpt, "resnet18", &["--eps", "0"]);
    assert!(!out.status.success(), "a VGG checkpoint is not a ResNet");
    let out = attack(dir.path(), &dir.path().join("none.safetensors"), "vgg11", &["--eps", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.safetensors"));
}
