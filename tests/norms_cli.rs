//! End-to-end tests of `normlab norms`: the CSV header, every model with `--save-init`,
//! spectral norms on a real model, `--compare`, and the errors for bad input.

use candle_core::Device;
use normlab::models::{Arch, Model};
use std::process::{Command, Output};

const HEADER: &str = "layer,kind,in_c,in_h,in_w,out_c,kh,kw,stride,padding,groups,l1,linf,l2_bound,spectral";

fn normlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_normlab")).args(args).output().expect("run normlab")
}

fn ok(args: &[&str]) -> String {
    let out = normlab(args);
    assert!(out.status.success(), "normlab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn err(args: &[&str]) -> String {
    let out = normlab(args);
    assert!(!out.status.success(), "normlab {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn rows(csv_text: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>().join(","), HEADER);
    r.records().map(|x| x.unwrap().iter().map(str::to_string).collect()).collect()
}

#[test]
fn every_model_prints_exact_csv_and_saves_its_init() {
    let dir = tempfile::tempdir().unwrap();
    for arch in Arch::PAPER {
        let init = dir.path().join(format!("{}.safetensors", arch.name()));
        let text = ok(&["norms", "--model", arch.name(), "--seed", "0", "--format", "csv", "--save-init", init.to_str().unwrap(), "--no-spectral"]);
        assert!(text.starts_with(&format!("{HEADER}\n")), "{arch}: header");
        let model = Model::new(arch, 0, &Device::Cpu).unwrap();
        let rows = rows(&text);
        assert_eq!(rows.len(), model.layers.len(), "{arch}: one row per layer");
        for (row, spec) in rows.iter().zip(&model.layers) {
            assert_eq!(row[0], spec.name);
            assert_eq!(row[1], spec.kind.as_str());
            let (l1, linf, l2b): (f64, f64, f64) = (row[11].parse().unwrap(), row[12].parse().unwrap(), row[13].parse().unwrap());
            assert!(l1 > 0.0 && linf > 0.0 && l1.is_finite() && linf.is_finite(), "{arch} {}: {row:?}", spec.name);
            assert!(((l1 * linf).sqrt() - l2b).abs() <= 1e-12 * l2b, "{arch} {}: l2_bound", spec.name);
            assert_eq!(row[14], "", "--no-spectral leaves the field empty");
        }
        // The saved init is the seeded model, bit for bit.
        let back = Model::load(arch, &init, &Device::Cpu).unwrap();
        for (a, b) in model.params.entries().iter().zip(back.params.entries()) {
            let d = (a.var.as_tensor() - b.var.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{arch} {}", a.name);
        }
    }
}

#[test]
fn spectral_norms_of_a_real_model_are_consistent() {
    // regnet200mf: grouped convs, small late maps, linear and BatchNorm rows.
    let text = ok(&["norms", "--model", "regnet200mf", "--seed", "1", "--format", "csv"]);
    for row in rows(&text) {
        let (l1, linf, l2b, spec): (f64, f64, f64, f64) = (row[11].parse().unwrap(), row[12].parse().unwrap(), row[13].parse().unwrap(), row[14].parse().unwrap());
        if row[1] == "bn" {
            assert!((spec - l1).abs() <= 1e-12 * l1 && l1 == linf, "{row:?}");
        } else {
            // ‖A‖₂ ≤ √(‖A‖₁‖A‖∞), and ‖A‖₂ ≥ max column 2-norm ≥ max column 1-norm / √rows.
            assert!(spec > 0.0 && spec <= l2b * (1.0 + 1e-9), "{row:?}");
        }
    }
}

#[test]
fn json_has_layers_summary_and_bounds() {
    let text = ok(&["norms", "--model", "vgg11", "--seed", "0", "--format", "json", "--no-spectral"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "vgg11");
    assert_eq!(v["layers"].as_array().unwrap().len(), Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap().layers.len());
    assert!(v["summary"]["sum_l1"].as_f64().unwrap() > 0.0);
    assert!(v["lipschitz_linf"].as_f64().unwrap() > 0.0);
    assert!(v["lipschitz_l2"].is_null(), "no spectral norms, no l2 bound");
}

#[test]
fn compare_prints_both_checkpoints_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    Model::new(Arch::Resnet18, 0, &Device::Cpu).unwrap().save(&a).unwrap();
    // B: A with every weight doubled, so every conv/linear ratio is exactly 2.
    let m = Model::new(Arch::Resnet18, 0, &Device::Cpu).unwrap();
    for spec in m.layers.iter().filter(|s| s.is_matrix()) {
        let v = m.params.var(&spec.name).unwrap();
        v.set(&(v.as_tensor() * 2.0).unwrap()).unwrap();
    }
    m.save(&b).unwrap();
    let text = ok(&["norms", "--model", "resnet18", "--compare", a.to_str().unwrap(), b.to_str().unwrap(), "--format", "csv", "--no-spectral"]);
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(&h[..5], &["layer", "kind", "l1_a", "l1_b", "l1_ratio"]);
    let mut n = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        let ratio: f64 = rec[4].parse().unwrap();
        let want = if &rec[1] == "bn" { 1.0 } else { 2.0 };
        assert!((ratio - want).abs() < 1e-6, "{rec:?}");
        n += 1;
    }
    assert_eq!(n, m.layers.len());
    let table = ok(&["norms", "--model", "resnet18", "--compare", a.to_str().unwrap(), b.to_str().unwrap(), "--no-spectral"]);
    assert!(table.contains("B/A") && table.contains("conv1.weight"), "{table}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let e = err(&["norms", "--model", "resnet18"]);
    assert!(e.contains("--checkpoint") && e.contains("--seed"), "{e}");
    let e = err(&["norms", "--model", "resnet99", "--seed", "0"]);
    assert!(e.contains("unknown model"), "{e}");
    let e = err(&["norms", "--model", "vgg11", "--checkpoint", "/nonexistent/x.safetensors"]);
    assert!(e.contains("/nonexistent/x.safetensors") && e.contains("does not exist"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.safetensors");
    Model::new(Arch::Regnet200mf, 0, &Device::Cpu).unwrap().save(&f).unwrap();
    let e = err(&["norms", "--model", "vgg11", "--checkpoint", f.to_str().unwrap(), "--no-spectral"]);
    assert!(e.contains("another model"), "{e}");
}
