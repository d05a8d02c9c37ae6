//! Checkpoints through the commands: `normlab models` lists RobustBench's architectures,
//! a truncated `.pt` and invalid weights are refused by every command that loads weights
//! (naming the file and the tensors, never a panic), and input normalization is stated and
//! enters the Lipschitz bound. With NORMLAB_PT_FULL naming the folder that
//! `bench/pytorch_fixtures.py full DIR` wrote, also the full-size checks against PyTorch:
//! resnet18 saved by PyTorch as `.pt`, as a wrapped `.pth` and as safetensors gives the same
//! norms, and wrn-28-10 and preact-resnet18 give PyTorch's logits.

use candle_core::{Device, Tensor};
use normlab::models::{pth, Arch, Model};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn normlab(args: &[&str]) -> Output {
    let bin = std::env::var_os("NORMLAB_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_normlab").into());
    Command::new(bin).args(args).output().expect("run normlab")
}

fn ok(args: &[&str]) -> String {
    let out = normlab(args);
    assert!(out.status.success(), "normlab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The command fails with a message (no panic); returns stderr.
fn refused(args: &[&str]) -> String {
    let out = normlab(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "normlab {args:?} should fail");
    assert!(!err.contains("panicked"), "normlab {args:?} panicked: {err}");
    err
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch").join(name)
}

#[test]
fn models_lists_every_architecture_with_its_parameter_count() {
    let text = ok(&["models"]);
    for (name, params) in [
        ("vgg11", 9_231_114),
        ("resnet18", 11_173_962),
        ("senet18", 11_260_354),
        ("regnet200mf", 2_321_946),
        ("wrn-28-10", 36_479_194),
        ("wrn-34-10", 46_160_474),
        ("preact-resnet18", 11_172_170),
    ] {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name} not listed:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1].parse::<usize>().unwrap(), params, "{line}");
        assert!(cols[3].parse::<f64>().unwrap() > 0.0, "FLOPs: {line}");
    }
}

#[test]
fn a_truncated_pt_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let pt = std::fs::read(fixture("wrn.pt")).unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &pt[..pt.len() / 2]).unwrap();
    let c = cut.to_str().unwrap();
    let good = dir.path().join("good.safetensors");
    Model::new(Arch::PreactResnet18, 0, &Device::Cpu).unwrap().save(&good).unwrap();
    for args in [
        vec!["norms", "--model", "wrn-28-10", "--checkpoint", c, "--no-spectral"],
        vec!["norms", "--model", "preact-resnet18", "--compare", good.to_str().unwrap(), c, "--no-spectral"],
        vec!["attack", "--model", "wrn-28-10", "--checkpoint", c, "--data", "/nonexistent", "--eps", "0"],
    ] {
        let e = refused(&args);
        assert!(e.contains(c) && e.contains("truncated"), "{args:?}: {e}");
    }
}

#[test]
fn invalid_weights_are_refused_by_norms_and_attack_naming_each_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap();
    let poke = |name: &str, value: f32| {
        let v = m.params.var(name).unwrap();
        let mut data = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        data[0] = value;
        v.set(&Tensor::from_vec(data, v.dims(), &Device::Cpu).unwrap()).unwrap();
    };
    poke("features.0.weight", f32::NAN);
    poke("classifier.weight", f32::INFINITY);
    poke("features.5.running_var", -1.0);
    let f = dir.path().join("nan.safetensors");
    m.save(&f).unwrap();
    let f = f.to_str().unwrap();
    for args in [
        vec!["norms", "--model", "vgg11", "--checkpoint", f, "--no-spectral"],
        vec!["attack", "--model", "vgg11", "--checkpoint", f, "--data", "/nonexistent", "--eps", "1/255"],
    ] {
        let e = refused(&args);
        assert!(e.contains(f) && e.contains("3 tensor(s)"), "{args:?}: {e}");
        assert!(e.contains("features.0.weight: 1 NaN of 1728 values"), "{e}");
        assert!(e.contains("classifier.weight: 1 infinite of 5120 values"), "{e}");
        assert!(e.contains("features.5.running_var: 1 ≤ 0 of 128 values"), "{e}");
    }
}

#[test]
fn normalization_is_stated_and_scales_the_lipschitz_bound() {
    let base = ["norms", "--model", "preact-resnet18", "--seed", "0", "--format", "json", "--no-spectral"];
    let plain: serde_json::Value = serde_json::from_str(&ok(&base)).unwrap();
    let normed: serde_json::Value = serde_json::from_str(&ok(&[&base[..], &["--normalize", "cifar10"]].concat())).unwrap();
    assert!(plain["normalization"].is_null());
    assert_eq!(normed["normalization"]["origin"], "--normalize cifar10");
    let factor = normed["normalization"]["lipschitz_factor"].as_f64().unwrap();
    assert!((factor - 1.0 / 0.2435).abs() < 1e-9, "{factor}");
    let ratio = normed["lipschitz_linf"].as_f64().unwrap() / plain["lipschitz_linf"].as_f64().unwrap();
    assert!((ratio / factor - 1.0).abs() < 1e-9, "{ratio}");
    // The per-layer norms are those of the layers: unchanged.
    assert_eq!(plain["layers"], normed["layers"]);
    let table = ok(&["norms", "--model", "preact-resnet18", "--seed", "0", "--no-spectral", "--normalize", "cifar10"]);
    assert!(table.starts_with("input normalization (--normalize cifar10): mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616)"), "{table}");
}

/// The folder `bench/pytorch_fixtures.py full` wrote, or `None` (and a SKIPPED line).
fn full_fixtures() -> Option<PathBuf> {
    match std::env::var_os("NORMLAB_PT_FULL").map(PathBuf::from) {
        Some(dir) if dir.join("io.pt").is_file() => Some(dir),
        _ => {
            eprintln!("SKIPPED: set NORMLAB_PT_FULL to the folder `bench/pytorch_fixtures.py full DIR` wrote");
            None
        }
    }
}

#[test]
fn full_size_checkpoints_saved_by_pytorch() {
    let Some(dir) = full_fixtures() else { return };
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let csv = |file: &str| ok(&["norms", "--model", "resnet18", "--checkpoint", &p(file), "--format", "csv", "--no-spectral"]);
    let reference = csv("resnet18.safetensors");
    assert_eq!(csv("resnet18.pt"), reference, "plain .pt");
    assert_eq!(csv("resnet18.pth"), reference, "wrapped .pth with module. prefixes");
    let e = refused(&["norms", "--model", "resnet18", "--checkpoint", &p("resnet18-truncated.pt")]);
    assert!(e.contains("truncated"), "{e}");
    let mut io = pth::PthFile::open(&dir.join("io.pt")).unwrap();
    let pth::Value::Dict(items) = io.root.clone() else { panic!("io.pt is not a dict") };
    let get = |io: &mut pth::PthFile, key: &str| {
        let r = items.iter().find_map(|(k, v)| if let (true, pth::Value::Tensor(r)) = (k == key, v) { Some(r.clone()) } else { None }).unwrap();
        io.tensor(&r).unwrap()
    };
    let x = get(&mut io, "input");
    for arch in [Arch::Wrn28_10, Arch::PreactResnet18] {
        let (m, _) = Model::load_checkpoint(arch, &dir.join(format!("{}.pt", arch.name())), &Device::Cpu, None).unwrap();
        let (ours, want) = (m.forward(&x, false).unwrap(), get(&mut io, arch.name()));
        let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
        let diff = (ours - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{arch}: max |normlab − PyTorch| = {diff:e} (logits up to {scale})");
        assert!(diff <= 1e-4 * scale, "{arch}: {diff:e}");
    }
}
