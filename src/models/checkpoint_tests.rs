//! Checkpoints written by PyTorch itself (`tests/fixtures/pytorch/`, made by
//! `bench/pytorch_fixtures.py small` with PyTorch 2.15 and RobustBench's classes): a plain
//! `.pt` state_dict with `mu`/`sigma` and an unused `sub_block1`, a wrapped `.pth` with
//! DataParallel's `module.` prefix, the same weights as safetensors, and PyTorch's logits.
//! Also every way a file can fail to be a checkpoint, each an error naming the file.

use super::{checkpoint, pth, Arch, Model, NormalizeArg};
use crate::norms::model_norms;
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch").join(name)
}

/// A tensor of the top-level dict of `io.pt`.
fn io(name: &str) -> Tensor {
    let mut f = pth::PthFile::open(&fixture("io.pt")).unwrap();
    let pth::Value::Dict(items) = f.root.clone() else { panic!("io.pt is not a dict") };
    let record = items.iter().find_map(|(k, v)| match v {
        pth::Value::Tensor(r) if k == name => Some(r.clone()),
        _ => None,
    });
    f.tensor(&record.unwrap_or_else(|| panic!("io.pt has no tensor {name}"))).unwrap()
}

fn narrow(arch: Arch, file: &str) -> (Model, String) {
    let mut m = Model::narrow(arch, &Device::Cpu).unwrap();
    let summary = m.load_weights(&fixture(file), None).unwrap();
    (m, summary)
}

/// max |ours − PyTorch| ≤ 1e-4 · max(1, max |PyTorch|).
fn assert_close(ours: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(ours.dims(), want.dims(), "{what}");
    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
    let diff = (ours - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff <= 1e-4 * scale, "{what}: max difference {diff:e} at scale {scale}");
}

#[test]
fn plain_pt_of_a_wide_resnet_gives_pytorchs_logits() {
    let (m, summary) = narrow(Arch::Wrn28_10, "wrn.pt");
    assert!(summary.contains("PyTorch zip") && summary.contains("sub_block1."), "{summary}");
    let n = m.normalization.as_ref().expect("mu/sigma read from the checkpoint");
    assert!(n.origin.contains("wrn.pt") && (n.std[1] - 0.2435).abs() < 1e-6, "{n:?}");
    assert_eq!(m.batches_tracked(), 37);
    let x = io("input");
    assert_close(&m.forward(&x, false).unwrap(), &io("wrn_eval"), "eval logits");
    assert_close(&m.forward(&x, true).unwrap(), &io("wrn_train"), "train logits");
}

#[test]
fn wrapped_pth_with_module_prefix_gives_pytorchs_logits() {
    let (m, summary) = narrow(Arch::PreactResnet18, "preact.pth");
    assert!(summary.contains("'state_dict'") && summary.contains("'module.'"), "{summary}");
    assert!(summary.contains("epoch") && summary.contains("best_acc"), "non-tensor entries named: {summary}");
    assert!(m.normalization.is_none());
    let x = io("input");
    assert_close(&m.forward(&x, false).unwrap(), &io("preact_eval"), "eval logits");
    assert_close(&m.forward(&x, true).unwrap(), &io("preact_train"), "train logits");
}

#[test]
fn pt_and_safetensors_of_the_same_weights_give_the_same_norms_and_bounds() {
    let (a, _) = narrow(Arch::Wrn28_10, "wrn.pt");
    let (b, _) = narrow(Arch::Wrn28_10, "wrn.safetensors");
    for (x, y) in a.params.entries().iter().zip(b.params.entries()) {
        let d = (x.var.as_tensor() - y.var.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{}", x.name);
    }
    let (na, nb) = (model_norms(&a, true).unwrap(), model_norms(&b, true).unwrap());
    assert_eq!(na, nb);
    let (la, lb) = (crate::norms::lipschitz_bounds(&a, &na), crate::norms::lipschitz_bounds(&b, &nb));
    assert_eq!(la, lb);
    // The normalization's factor max 1/σ is in the bound: without it the bound is smaller by
    // exactly that factor.
    let mut plain = Model::narrow(Arch::Wrn28_10, &Device::Cpu).unwrap();
    plain.load_weights(&fixture("wrn.pt"), None).unwrap();
    let factor = plain.normalization.take().unwrap().lipschitz_factor();
    let (lp, _) = crate::norms::lipschitz_bounds(&plain, &na);
    assert!((la.0.unwrap() / lp.unwrap() / factor - 1.0).abs() < 1e-12);
}

#[test]
fn normalize_flag_is_checked_against_the_checkpoint() {
    let mut m = Model::narrow(Arch::Wrn28_10, &Device::Cpu).unwrap();
    // The fixture's mu/sigma are CIFAR-10's: the flag agrees.
    m.load_weights(&fixture("wrn.pt"), Some(NormalizeArg::Cifar10)).unwrap();
    let e = m.load_weights(&fixture("wrn.pt"), Some(NormalizeArg::None)).unwrap_err().to_string();
    assert!(e.contains("--normalize none") && e.contains("wrn.pt"), "{e}");
    let mut p = Model::narrow(Arch::PreactResnet18, &Device::Cpu).unwrap();
    p.load_weights(&fixture("preact.pth"), Some(NormalizeArg::Cifar10)).unwrap();
    assert!(p.normalization.as_ref().unwrap().origin.contains("--normalize cifar10"));
}

#[test]
fn another_architectures_checkpoint_lists_every_mismatch() {
    let mut m = Model::narrow(Arch::PreactResnet18, &Device::Cpu).unwrap();
    let e = format!("{:#}", m.load_weights(&fixture("wrn.pt"), None).unwrap_err());
    assert!(e.contains("wrn.pt") && e.contains("another model"), "{e}");
    assert!(e.contains("missing (") && e.contains("layer4.1.conv2.weight") && e.contains("linear.bias"), "{e}");
    assert!(e.contains("unexpected (") && e.contains("block3.layer.1.conv2.weight") && e.contains("fc.weight"), "{e}");
    // A full-size model: every shared name has the wrong shape, and each is listed.
    let mut full = Model::new(Arch::PreactResnet18, 0, &Device::Cpu).unwrap();
    let e = format!("{:#}", full.load_weights(&fixture("preact.pth"), None).unwrap_err());
    assert!(e.contains("wrong shape (") && e.contains("conv1.weight: file [2, 3, 3, 3], model [64, 3, 3, 3]") && e.contains("linear.weight: file [10, 16], model [10, 512]"), "{e}");
    assert!(!e.contains("missing (") && !e.contains("unexpected ("), "{e}");
}

/// Writes `bytes` to a file in `dir` and tries to load it as a narrow WRN.
fn load_bytes(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut m = Model::narrow(Arch::Wrn28_10, &Device::Cpu).unwrap();
    let e = format!("{:#}", m.load_weights(&path, None).expect_err(name));
    assert!(e.contains(&path.display().to_string()), "the error names the file: {e}");
    e
}

#[test]
fn truncated_and_damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let pt = std::fs::read(fixture("wrn.pt")).unwrap();
    for cut in [1, 3, 10, 100, 1000, pt.len() / 3, pt.len() / 2, pt.len() - 100, pt.len() - 1] {
        let e = load_bytes(dir.path(), &format!("cut{cut}.pt"), &pt[..cut]);
        assert!(e.contains("truncated") || e.contains("damaged"), "cut at {cut}: {e}");
    }
    // A flipped byte in every 997th position: the zip checksums or the pickle catch it.
    let mut failures = 0;
    for at in (40..pt.len()).step_by(997) {
        let mut bad = pt.clone();
        bad[at] ^= 0x5a;
        let path = dir.path().join("flipped.pt");
        std::fs::write(&path, &bad).unwrap();
        let mut m = Model::narrow(Arch::Wrn28_10, &Device::Cpu).unwrap();
        if let Err(e) = m.load_weights(&path, None) {
            assert!(format!("{e:#}").contains("flipped.pt"), "{e:#}");
            failures += 1;
        }
    }
    assert!(failures > 0);
    let st = std::fs::read(fixture("wrn.safetensors")).unwrap();
    let e = load_bytes(dir.path(), "cut.safetensors", &st[..st.len() / 2]);
    assert!(e.contains("safetensors") && e.contains("truncated"), "{e}");
}

#[test]
fn files_that_are_not_checkpoints_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(load_bytes(d, "empty.pt", b"").contains("empty (0 bytes)"));
    assert!(load_bytes(d, "text.pt", b"hello, this is not a checkpoint\n").contains("neither a safetensors file nor a PyTorch checkpoint"));
    let legacy = load_bytes(d, "legacy.pt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.");
    assert!(legacy.contains("legacy format") && legacy.contains("torch.save(torch.load("), "{legacy}");
    let mut m = Model::narrow(Arch::Wrn28_10, &Device::Cpu).unwrap();
    let e = m.load_weights(&d.join("nope.pt"), None).unwrap_err().to_string();
    assert!(e.contains("nope.pt") && e.contains("does not exist"), "{e}");
    // Zip archives that are not torch.save files.
    let zip_with = |entries: &[(&str, &[u8])]| -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            w.start_file(*name, opts).unwrap();
            std::io::Write::write_all(&mut w, bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let e = load_bytes(d, "other.zip", &zip_with(&[("readme.txt", b"hi")]));
    assert!(e.contains("without data.pkl") && e.contains("readme.txt"), "{e}");
    let e = load_bytes(d, "script.pt", &zip_with(&[("m/data.pkl", b"\x80\x02}q\x00."), ("m/code/__torch__.py", b"")]));
    assert!(e.contains("TorchScript"), "{e}");
    let e = load_bytes(d, "garbage.pt", &zip_with(&[("m/data.pkl", b"\x80\x02\xff\xff")]));
    assert!(e.contains("cannot parse m/data.pkl"), "{e}");
    // A pickled dict with no tensors anywhere, and a pickled integer.
    let e = load_bytes(d, "dict.pt", &zip_with(&[("m/data.pkl", b"\x80\x02}q\x00X\x05\x00\x00\x00epochq\x01K\x07s.")]));
    assert!(e.contains("no state_dict found") && e.contains("epoch"), "{e}");
    let e = load_bytes(d, "int.pt", &zip_with(&[("m/data.pkl", b"\x80\x02K\x07.")]));
    assert!(e.contains("holds the number 7, not a state_dict"), "{e}");
}

#[test]
fn invalid_values_are_refused_at_load_naming_each_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = narrow(Arch::Wrn28_10, "wrn.pt");
    let nan_at = |name: &str, index: usize, value: f32| {
        let v = m.params.var(name).unwrap();
        let mut data = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        data[index] = value;
        v.set(&Tensor::from_vec(data, v.dims(), &Device::Cpu).unwrap()).unwrap();
    };
    nan_at("block2.layer.0.conv1.weight", 3, f32::NAN);
    nan_at("block2.layer.0.conv1.weight", 5, f32::NAN);
    nan_at("fc.weight", 0, f32::INFINITY);
    nan_at("bn1.running_var", 1, -0.5);
    nan_at("block1.layer.1.bn2.running_mean", 0, f32::NAN);
    let path = dir.path().join("bad.safetensors");
    m.save(&path).unwrap();
    let mut fresh = Model::narrow(Arch::Wrn28_10, &Device::Cpu).unwrap();
    let e = format!("{:#}", fresh.load_weights(&path, None).unwrap_err());
    assert!(e.contains("bad.safetensors") && e.contains("4 tensor(s)"), "{e}");
    assert!(e.contains("block2.layer.0.conv1.weight: 2 NaN of 288 values"), "{e}");
    assert!(e.contains("fc.weight: 1 infinite of 160 values"), "{e}");
    assert!(e.contains("bn1.running_var: 1 ≤ 0"), "{e}");
    assert!(e.contains("block1.layer.1.bn2.running_mean: 1 NaN"), "{e}");
    // The model keeps its own weights: nothing was set.
    assert_eq!(fresh.params.get("fc.weight").unwrap().dtype(), DType::F32);
    let ok = fresh.params.get("fc.weight").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(ok.iter().all(|v| v.is_finite()));
}

#[test]
fn the_normalization_round_trips_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = narrow(Arch::Wrn28_10, "wrn.pt");
    let path = dir.path().join("back.safetensors");
    m.save(&path).unwrap();
    let names: Vec<String> = checkpoint::read(&path).unwrap().tensors.into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n == "mu") && names.iter().any(|n| n == "sigma"));
    let (back, _) = narrow(Arch::Wrn28_10, "wrn.pt");
    let x = io("input");
    assert_close(&back.forward(&x, false).unwrap(), &m.forward(&x, false).unwrap(), "round trip");
}

/// Norm decay and SVC run on RobustBench's architectures through the same `LayerSpec`
/// paths as on the paper's models: one step each changes the weights and keeps them finite.
#[test]
fn regularizers_run_on_the_new_architectures() {
    use crate::regularize::{Coverage, NdVariant, NormKind, RegConfig, Regularizer};
    use crate::values::{Fraction, Positive};
    let pos = |v: f64| Positive::new(v).unwrap();
    let half = Fraction::new(0.5).unwrap();
    for arch in [Arch::Wrn28_10, Arch::PreactResnet18] {
        for reg in [
            RegConfig::NormDecay { norm: NormKind::L1, beta: pos(1e-2), gamma: half, variant: NdVariant::Reference, include_bn: true, coverage: Coverage::Reference, project_bn: None },
            RegConfig::NormDecay { norm: NormKind::Linf, beta: pos(1e-2), gamma: half, variant: NdVariant::Reference, include_bn: false, coverage: Coverage::All, project_bn: None },
            RegConfig::Svc { clip: pos(0.5), every: std::num::NonZeroU32::MIN, coverage: Coverage::All, final_clip: false },
            RegConfig::WeightDecay { beta: pos(1e-2) },
        ] {
            let m = Model::narrow(arch, &Device::Cpu).unwrap();
            let before = model_norms(&m, false).unwrap();
            let mut r = Regularizer::new(reg, &m).unwrap();
            let x = io("input");
            let loss = m.forward(&x, true).unwrap().sqr().unwrap().mean_all().unwrap();
            let mut grads = loss.backward().unwrap();
            let terms = r.apply(&m, &mut grads).unwrap();
            let mut sgd = crate::optim::Sgd::new(0.1, 0.9);
            sgd.step(&m.params, &grads, &terms).unwrap();
            r.after_step(&m, 1).unwrap();
            let after = model_norms(&m, false).unwrap();
            assert_eq!(before.len(), after.len());
            assert!(after.iter().all(|n| n.l1.is_finite() && n.linf.is_finite()), "{arch} {reg:?}");
            assert!(before.iter().zip(&after).any(|(a, b)| a.l1 != b.l1), "{arch} {reg:?}: the step changed the weights");
        }
    }
}
