//! `normlab train` end to end on a tiny synthetic dataset in the binary layout: the files a run
//! writes, resumption of an ended run, and the errors bad flags give.

use normlab::data::binary::write_dir;
use normlab::data::dataset::{Cifar10, Split, IMAGE_BYTES};
use std::path::{Path, PathBuf};
use std::process::Command;

fn split(n: usize, salt: usize) -> Split {
    let images = (0..n * IMAGE_BYTES).map(|i| ((i * 31 + salt) % 256) as u8).collect();
    Split::new(images, (0..n).map(|i| ((i + salt) % 10) as u8).collect()).unwrap()
}

/// Runs the normlab binary cargo built for these tests (or the one env NORMLAB_BIN names,
/// for target directories shared between checkouts).
fn normlab(args: &[&str]) -> std::process::Output {
    let bin = std::env::var_os("NORMLAB_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_normlab")));
    Command::new(bin).args(args).output().expect("run normlab")
}

fn tiny_args<'a>(data: &'a str, out: &'a str, reg: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--model", "vgg11", "--epochs", "1", "--batch", "16", "--train-subset", "32", "--test-subset", "16", "--data", data, "--out", out];
    a.extend_from_slice(reg);
    a
}

#[test]
fn train_writes_metrics_model_checkpoint_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dir(&Cifar10 { train: split(32, 0), test: split(16, 5) }, &data).unwrap();
    let out = dir.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let r = normlab(&tiny_args(d, o, &["--reg", "nd-linf", "--beta", "1e-3"]));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for f in ["metrics.csv", "norms.csv", "model.safetensors", "status.json", "config.json", "checkpoint/latest.json", "checkpoint/epoch-1.safetensors"] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    for col in ["epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds", "images_per_s", "l1_sum", "l1_max", "linf_sum", "linf_max"] {
        assert!(header.split(',').any(|c| c == col), "metrics.csv lacks {col}: {header}");
    }
    assert_eq!(metrics.lines().count(), 2);
    // The model file loads as a vgg11 state_dict.
    normlab::models::Model::load(normlab::models::Arch::Vgg11, &out.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    // `normlab norms` reads it, and train's norms.csv is what `normlab norms --format csv` prints.
    let model = out.join("model.safetensors");
    let norms = normlab(&["norms", "--model", "vgg11", "--checkpoint", model.to_str().unwrap(), "--format", "csv"]);
    assert!(norms.status.success(), "{}", String::from_utf8_lossy(&norms.stderr));
    assert_eq!(String::from_utf8_lossy(&norms.stdout), std::fs::read_to_string(out.join("norms.csv")).unwrap());
    // Without --resume the same OUT is refused; with it, the ended run is reported again.
    let again = normlab(&tiny_args(d, o, &["--reg", "nd-linf", "--beta", "1e-3"]));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let mut resume = tiny_args(d, o, &["--reg", "nd-linf", "--beta", "1e-3"]);
    resume.push("--resume");
    let r = normlab(&resume);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

fn error_of(reg: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = normlab(&tiny_args("/nonexistent", out.to_str().unwrap(), reg));
    assert!(!r.status.success(), "{reg:?} should fail");
    assert!(!Path::new(&out).join("metrics.csv").exists());
    String::from_utf8_lossy(&r.stderr).into_owned()
}

#[test]
fn bad_flags_are_named() {
    assert!(error_of(&["--reg", "wd"]).contains("--beta"));
    assert!(error_of(&["--reg", "svc"]).contains("--clip"));
    assert!(error_of(&["--reg", "nd-l1", "--beta", "0"]).contains("--beta"));
    assert!(error_of(&["--reg", "nd-l1", "--beta", "1e-3", "--gamma", "1.5"]).contains("--gamma"));
    assert!(error_of(&["--reg", "plain", "--beta", "1e-3"]).contains("does not apply"));
    assert!(error_of(&["--reg", "wd", "--beta", "1e-3", "--nd-bn"]).contains("--nd-bn"));
    assert!(error_of(&["--reg", "svc", "--clip=-1"]).contains("--clip"));
    assert!(error_of(&["--reg", "plain", "--device", "tpu"]).contains("tpu"));
    assert!(error_of(&["--reg", "plain"]).contains("/nonexistent"));
}

/// `--init` with the seeded init's own weights (as `norms --save-init` writes them) gives the
/// same run, bit for bit, as starting from the seed; a file with a NaN weight is refused.
#[test]
fn init_from_a_checkpoint_continues_like_the_seeded_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dir(&Cifar10 { train: split(32, 0), test: split(16, 5) }, &data).unwrap();
    let init = dir.path().join("init.safetensors");
    let r = normlab(&["norms", "--model", "vgg11", "--seed", "1", "--no-spectral", "--save-init", init.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let d = data.to_str().unwrap();
    let reg = ["--reg", "nd-l1", "--beta", "1e-3"];
    let (a, b) = (dir.path().join("seeded"), dir.path().join("init"));
    let r = normlab(&tiny_args(d, a.to_str().unwrap(), &reg));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mut with_init = tiny_args(d, b.to_str().unwrap(), &reg);
    with_init.extend(["--init", init.to_str().unwrap()]);
    let r = normlab(&with_init);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--init: read"), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(a.join("model.safetensors")).unwrap(), std::fs::read(b.join("model.safetensors")).unwrap());
    // The same OUT again with --init: refused, pointing at --resume.
    let r = normlab(&with_init);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--resume"));
    // A NaN in the init weights: refused before training, naming the tensor.
    let m = normlab::models::Model::load(normlab::models::Arch::Vgg11, &init, &candle_core::Device::Cpu).unwrap();
    let v = m.params.var("features.8.weight").unwrap();
    v.set(&(v.as_tensor() * f64::NAN).unwrap()).unwrap();
    let bad = dir.path().join("bad.safetensors");
    m.save(&bad).unwrap();
    let c = dir.path().join("bad-run");
    let mut args = tiny_args(d, c.to_str().unwrap(), &reg);
    args.extend(["--init", bad.to_str().unwrap()]);
    let r = normlab(&args);
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && e.contains("features.8.weight: 294912 NaN of 294912 values"), "{e}");
    assert!(!c.join("checkpoint").exists(), "nothing written for a refused init");
}

/// `--resume` from an epoch checkpoint whose weights hold a NaN: refused, naming the tensor.
#[test]
fn resume_refuses_a_checkpoint_with_invalid_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dir(&Cifar10 { train: split(32, 0), test: split(16, 5) }, &data).unwrap();
    let out = dir.path().join("run");
    let args = tiny_args(data.to_str().unwrap(), out.to_str().unwrap(), &["--reg", "plain"]);
    let r = normlab(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Make the finished run look interrupted after its epoch, with a damaged weight.
    std::fs::remove_file(out.join("status.json")).unwrap();
    let ckpt = out.join("checkpoint/epoch-1.safetensors");
    let mut tensors = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    let w = tensors["model/features.4.weight"].clone();
    tensors.insert("model/features.4.weight".into(), (w * f64::NAN).unwrap());
    candle_core::safetensors::save(&tensors, &ckpt).unwrap();
    // With its records' size and checksum updated to the new file: the checkpoint is intact
    // as written, its weights are not (a damaged file would be set aside instead).
    let bytes = std::fs::read(&ckpt).unwrap();
    let sha: String = <sha2::Sha256 as sha2::Digest>::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    for record in ["checkpoint/epoch-1.json", "checkpoint/latest.json"] {
        let path = out.join(record);
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["bytes"] = bytes.len().into();
        v["sha256"] = sha.clone().into();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    let mut resume = args.clone();
    resume.push("--resume");
    let r = normlab(&resume);
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && e.contains("epoch-1.safetensors") && e.contains("features.4.weight: 73728 NaN of 73728 values"), "{e}");
}
