//! The four CIFAR-10 models of the paper (VGG11-BN, ResNet18, SENet18, RegNetX-200MF) and
//! RobustBench's WideResNet-28-10, WideResNet-34-10 and PreActResNet-18, with PyTorch
//! state_dict names, their reference init, train/eval BatchNorm, optional input
//! normalization, and the [`LayerSpec`] list that norms, regularizers and SVC read; and
//! loading their weights from safetensors or PyTorch checkpoints ([`checkpoint`]).
//!
//! Models know nothing of training or attacks: they map images to logits.

pub mod checkpoint;
pub mod layers;
pub mod normalize;
pub mod params;
pub mod preact;
pub mod pth;
pub mod regnet;
pub mod resnet;
pub mod senet;
pub mod spec;
pub mod stacked;
pub mod validate;
pub mod vgg;
pub mod wide_resnet;

pub use normalize::{Normalization, NormalizeArg};
pub use params::{ParamStore, Role};
pub use spec::{LayerKind, LayerSpec};
pub use stacked::StackedModel;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

/// The model architectures normlab knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// VGG11 with BatchNorm, classifier Linear(512, 10).
    Vgg11,
    /// ResNet18 (CIFAR variant: 3×3 stem, no max-pool).
    Resnet18,
    /// SENet18 (pre-activation blocks with squeeze-and-excitation).
    Senet18,
    /// RegNetX-200MF (grouped 3×3 convs).
    Regnet200mf,
    /// RobustBench's WideResNet-28-10.
    #[serde(rename = "wrn-28-10")]
    #[value(name = "wrn-28-10")]
    Wrn28_10,
    /// RobustBench's WideResNet-34-10.
    #[serde(rename = "wrn-34-10")]
    #[value(name = "wrn-34-10")]
    Wrn34_10,
    /// RobustBench's PreActResNet-18 with the BatchNorm before its classifier.
    #[serde(rename = "preact-resnet18")]
    #[value(name = "preact-resnet18")]
    PreactResnet18,
}

impl Arch {
    /// The paper's four architectures, in its table order.
    pub const PAPER: [Arch; 4] = [Arch::Vgg11, Arch::Resnet18, Arch::Senet18, Arch::Regnet200mf];

    /// Every architecture: the paper's, then RobustBench's.
    pub const ALL: [Arch; 7] = [Arch::Vgg11, Arch::Resnet18, Arch::Senet18, Arch::Regnet200mf, Arch::Wrn28_10, Arch::Wrn34_10, Arch::PreactResnet18];

    /// The name used on the command line, in plans and in results.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vgg11 => "vgg11",
            Arch::Resnet18 => "resnet18",
            Arch::Senet18 => "senet18",
            Arch::Regnet200mf => "regnet200mf",
            Arch::Wrn28_10 => "wrn-28-10",
            Arch::Wrn34_10 => "wrn-34-10",
            Arch::PreactResnet18 => "preact-resnet18",
        }
    }

    /// The model's layers at the CIFAR-10 input size (built once per process, without
    /// weights worth keeping: [`Model::zeros`]).
    pub fn layers(self) -> &'static [LayerSpec] {
        static LAYERS: [std::sync::OnceLock<Vec<LayerSpec>>; Arch::ALL.len()] = [const { std::sync::OnceLock::new() }; Arch::ALL.len()];
        let i = Self::ALL.iter().position(|&a| a == self).expect("every Arch is in ALL");
        LAYERS[i].get_or_init(|| Model::zeros(self).expect("the built-in models build").layers)
    }

    /// Parses a model name; the error lists the known ones.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase().replace('_', "-");
        for a in Self::ALL {
            if a.name() == t {
                return Ok(a);
            }
        }
        match t.as_str() {
            "vgg" => Ok(Arch::Vgg11),
            "resnet" => Ok(Arch::Resnet18),
            "senet" => Ok(Arch::Senet18),
            "regnet" | "regnetx-200mf" | "regnetx200mf" => Ok(Arch::Regnet200mf),
            "wrn28-10" | "wideresnet-28-10" => Ok(Arch::Wrn28_10),
            "wrn34-10" | "wideresnet-34-10" => Ok(Arch::Wrn34_10),
            "preactresnet18" | "preactresnet-18" | "preact-resnet-18" => Ok(Arch::PreactResnet18),
            _ => bail!("unknown model '{text}': expected one of {}", Self::ALL.map(Arch::name).join(", ")),
        }
    }

    /// Checkpoint tensors this architecture leaves unused, so loading ignores them (and says
    /// so): RobustBench's WideResNet built with `sub_block1=True` carries a `sub_block1`
    /// its forward pass never runs.
    pub fn ignores(self, name: &str) -> bool {
        matches!(self, Arch::Wrn28_10 | Arch::Wrn34_10) && name.starts_with("sub_block1.")
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
enum Net {
    Vgg(vgg::Vgg),
    Resnet(resnet::ResNet),
    Senet(senet::SeNet),
    Regnet(regnet::RegNet),
    PreAct(preact::PreActNet),
}

/// A model: its architecture, its named tensors and its layer list.
#[derive(Debug)]
pub struct Model {
    /// Which architecture.
    pub arch: Arch,
    /// Every tensor under its PyTorch name (parameters and BatchNorm buffers).
    pub params: ParamStore,
    /// Every conv, linear and BatchNorm layer in forward order, at the CIFAR-10 input size.
    pub layers: Vec<LayerSpec>,
    /// Input normalization applied before the first layer, when the model has one.
    pub normalization: Option<Normalization>,
    net: Net,
    batches_tracked: AtomicI64,
}

/// The input the models take: 3 channels of 32×32 pixels in [0, 1].
pub const INPUT_SHAPE: (usize, usize, usize) = (3, 32, 32);
/// CIFAR-10's class count.
pub const NUM_CLASSES: usize = 10;

impl Model {
    /// Builds `arch` with PyTorch's default init drawn from `seed`, on `device`. The same seed
    /// gives the same weights on every device.
    pub fn new(arch: Arch, seed: u64, device: &Device) -> Result<Self> {
        Self::build(arch, layers::Builder::new(ChaCha8Rng::seed_from_u64(seed), device))
    }

    /// `arch` with every conv and linear weight and bias 0 (BatchNorm as initialised), on the
    /// CPU: its layers and parameter names without drawing an initialisation (a plan's dry run
    /// and the report ask what a regularizer acts on).
    pub fn zeros(arch: Arch) -> Result<Self> {
        Self::build(arch, layers::Builder::zeros(&Device::Cpu))
    }

    /// Builds `arch`'s layers through `b` (which decides the initial weights and the stack).
    fn build(arch: Arch, mut b: layers::Builder) -> Result<Self> {
        let net = match arch {
            Arch::Vgg11 => Net::Vgg(vgg::Vgg::build(&mut b)?),
            Arch::Resnet18 => Net::Resnet(resnet::ResNet::build(&mut b)?),
            Arch::Senet18 => Net::Senet(senet::SeNet::build(&mut b)?),
            Arch::Regnet200mf => Net::Regnet(regnet::RegNet::build(&mut b)?),
            Arch::Wrn28_10 => Net::PreAct(wide_resnet::build(&mut b, wide_resnet::WrnShape { depth: 28, widen: 10, base: 16 })?),
            Arch::Wrn34_10 => Net::PreAct(wide_resnet::build(&mut b, wide_resnet::WrnShape { depth: 34, widen: 10, base: 16 })?),
            Arch::PreactResnet18 => Net::PreAct(preact::PreActNet::preact_resnet18(&mut b, [64, 128, 256, 512])?),
        };
        Ok(Self::from_parts(arch, b, net))
    }

    fn from_parts(arch: Arch, b: layers::Builder, net: Net) -> Self {
        Self { arch, params: b.store, layers: b.layers, normalization: None, net, batches_tracked: AtomicI64::new(0) }
    }

    /// A narrow variant of one of RobustBench's architectures (WRN-16-2 with 2 stem
    /// channels; PreActResNet-18 with widths 2, 4, 8, 16), as `bench/pytorch_fixtures.py`
    /// builds it for the committed fixtures, under `arch`'s name.
    #[cfg(test)]
    pub(crate) fn narrow(arch: Arch, device: &Device) -> Result<Self> {
        let mut b = layers::Builder::new(ChaCha8Rng::seed_from_u64(0), device);
        let net = match arch {
            Arch::Wrn28_10 | Arch::Wrn34_10 => Net::PreAct(wide_resnet::build(&mut b, wide_resnet::WrnShape { depth: 16, widen: 2, base: 2 })?),
            Arch::PreactResnet18 => Net::PreAct(preact::PreActNet::preact_resnet18(&mut b, [2, 4, 8, 16])?),
            _ => bail!("{arch} has no narrow variant"),
        };
        Ok(Self::from_parts(arch, b, net))
    }

    /// Builds `arch` and loads its weights from a checkpoint (safetensors, `.pt` or `.pth`;
    /// see [`Model::load_checkpoint`]), with the checkpoint's own normalization if it has one.
    pub fn load(arch: Arch, path: &Path, device: &Device) -> Result<Self> {
        Ok(Self::load_checkpoint(arch, path, device, None)?.0)
    }

    /// Builds `arch` and loads its weights from `path` ([`Model::load_weights`]). Returns the
    /// model and one line saying what was read, for the command to print.
    pub fn load_checkpoint(arch: Arch, path: &Path, device: &Device, normalize: Option<NormalizeArg>) -> Result<(Self, String)> {
        let mut model = Self::new(arch, 0, device)?;
        let summary = model.load_weights(path, normalize)?;
        Ok((model, summary))
    }

    /// Sets every weight and buffer from `path` ([`checkpoint::read`]: safetensors or a
    /// PyTorch checkpoint, unwrapped). Every tensor of the model must be there with its shape
    /// and no other ([`ParamStore::load_state_dict`]: all mismatches named in one error), and
    /// every value valid ([`validate::check_weights`]). Input normalization: the
    /// checkpoint's `mu`/`sigma` when present, else `normalize` ([`normalize::resolve`]).
    /// Returns one line saying what was read.
    pub fn load_weights(&mut self, path: &Path, normalize: Option<NormalizeArg>) -> Result<String> {
        let arch = self.arch;
        let device = self.params.entries().first().map_or(Device::Cpu, |e| e.var.device().clone());
        let mut state = checkpoint::read(path)?;
        let from_file = match (state.take(normalize::MU), state.take(normalize::SIGMA)) {
            (Some(mu), Some(sigma)) => {
                validate::check_weights(path, [(normalize::MU, &mu), (normalize::SIGMA, &sigma)])?;
                Some(Normalization::from_tensors(&mu, &sigma, &format!("mu/sigma in {}", path.display()), &device)?)
            }
            (None, None) => None,
            _ => bail!("{} holds only one of 'mu' and 'sigma': input normalization needs both", path.display()),
        };
        let loaded = self.params.load_state_dict(path, &format!("a {arch}"), &state.tensors, &|name| arch.ignores(name))?;
        self.batches_tracked.store(loaded.batches_tracked, Ordering::Relaxed);
        self.normalization = normalize::resolve(normalize, from_file, &device)?;
        let mut summary = state.summary();
        if !loaded.ignored.is_empty() {
            summary += &format!("; {} tensors the {arch} does not use ignored ({}, ...)", loaded.ignored.len(), loaded.ignored[0]);
        }
        Ok(summary)
    }

    /// Writes the weights and buffers as a PyTorch-loadable safetensors state_dict, with
    /// `mu` and `sigma` when the model normalizes its input.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = self.params.state_dict(self.batches_tracked.load(Ordering::Relaxed))?;
        if let Some(n) = &self.normalization {
            tensors.extend(n.state_dict()?);
        }
        checkpoint::write_safetensors(path, tensors)
    }

    /// Logits (N × 10) for images (N × 3 × 32 × 32, values in [0, 1]). `train` selects
    /// BatchNorm's batch statistics (and updates the running ones) and tracks the weights for
    /// their gradients; eval mode (`false`) uses the running statistics and enters the weights
    /// as constants, so a backward pass from an eval forward yields input gradients only.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train {
            self.batches_tracked.fetch_add(1, Ordering::Relaxed);
        }
        let normalized;
        let x = match &self.normalization {
            Some(n) => {
                normalized = n.forward(x)?;
                &normalized
            }
            None => x,
        };
        match &self.net {
            Net::Vgg(m) => m.forward(x, train),
            Net::Resnet(m) => m.forward(x, train),
            Net::Senet(m) => m.forward(x, train),
            Net::Regnet(m) => m.forward(x, train),
            Net::PreAct(m) => m.forward(x, train),
        }
    }

    /// The layer described by `name` (a weight's state_dict name).
    pub fn layer(&self, name: &str) -> Option<&LayerSpec> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The weight tensor of a layer.
    pub fn weight(&self, spec: &LayerSpec) -> Result<&Tensor> {
        self.params.get(&spec.name)
    }

    /// Number of learned scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.num_parameters()
    }

    /// Forward multiply-accumulates per image over all layers.
    pub fn forward_macs(&self) -> usize {
        self.layers.iter().map(|l| l.forward_macs()).sum()
    }

    /// BatchNorm forward passes in train mode so far (PyTorch's `num_batches_tracked`).
    pub fn batches_tracked(&self) -> i64 {
        self.batches_tracked.load(Ordering::Relaxed)
    }

    /// Sets the train-mode batch counter (when resuming from a checkpoint).
    pub fn set_batches_tracked(&self, n: i64) {
        self.batches_tracked.store(n, Ordering::Relaxed)
    }

    /// An upper bound of the model's Lipschitz constant from per-layer operator norms
    /// (`norm(name)` for each layer's weight name, BatchNorm as its eval-mode diagonal),
    /// composing products along paths and sums over residual branches; ReLU and pooling are
    /// 1-Lipschitz; input normalization multiplies by its factor max 1/σ
    /// ([`Normalization::lipschitz_factor`], the same in ℓ1, ℓ∞ and ℓ2), so the bound is for
    /// inputs in pixel units. `None` where no such bound exists: SENet's
    /// squeeze-and-excitation gate multiplies two functions of the input, which no product
    /// of layer norms bounds.
    pub fn lipschitz_bound(&self, norm: &dyn Fn(&str) -> f64) -> Option<f64> {
        let net = match &self.net {
            Net::Vgg(m) => m.lipschitz(norm),
            Net::Resnet(m) => m.lipschitz(norm),
            Net::Regnet(m) => m.lipschitz(norm),
            Net::PreAct(m) => m.lipschitz(norm),
            Net::Senet(_) => return None,
        };
        Some(net * self.normalization.as_ref().map_or(1.0, Normalization::lipschitz_factor))
    }
}

#[cfg(test)]
mod checkpoint_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_pytorch() {
        // RobustBench's classes give 36,479,194 / 46,160,474 / 11,172,170 in PyTorch 2.15
        // (bench/pytorch_fixtures.py full, 2026-12-07).
        let want = [
            (Arch::Vgg11, 9_231_114),
            (Arch::Resnet18, 11_173_962),
            (Arch::Senet18, 11_260_354),
            (Arch::Regnet200mf, 2_321_946),
            (Arch::Wrn28_10, 36_479_194),
            (Arch::Wrn34_10, 46_160_474),
            (Arch::PreactResnet18, 11_172_170),
        ];
        for (arch, n) in want {
            let m = Model::new(arch, 0, &Device::Cpu).unwrap();
            assert_eq!(m.num_parameters(), n, "{arch}");
        }
    }

    #[test]
    fn names_follow_pytorch() {
        let m = Model::new(Arch::Senet18, 0, &Device::Cpu).unwrap();
        for name in ["layer2.0.shortcut.0.weight", "layer3.1.fc1.bias", "bn1.running_var", "linear.weight"] {
            assert!(m.params.get(name).is_ok(), "{name}");
        }
        let v = Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap();
        for name in ["features.0.weight", "features.1.running_mean", "features.4.weight", "features.26.bias", "classifier.weight"] {
            assert!(v.params.get(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn zeros_has_the_layout_of_an_initialised_model() {
        for arch in Arch::ALL {
            let (z, m) = (Model::zeros(arch).unwrap(), Model::new(arch, 1, &Device::Cpu).unwrap());
            assert_eq!(z.layers, m.layers, "{arch}");
            assert_eq!(arch.layers(), &m.layers[..], "{arch}");
            let names = |s: &ParamStore| s.entries().iter().map(|e| (e.name.clone(), e.role, e.var.dims().to_vec())).collect::<Vec<_>>();
            assert_eq!(names(&z.params), names(&m.params), "{arch}");
        }
    }

    #[test]
    fn names_and_layers_follow_robustbench() {
        let w = Model::new(Arch::Wrn28_10, 0, &Device::Cpu).unwrap();
        for name in ["conv1.weight", "block1.layer.0.bn1.running_var", "block1.layer.0.convShortcut.weight", "block3.layer.3.conv2.weight", "bn1.weight", "fc.bias"] {
            assert!(w.params.get(name).is_ok(), "{name}");
        }
        assert!(w.params.get("block1.layer.1.convShortcut.weight").is_err(), "a shortcut conv only where the width changes");
        // 1 stem + 12 blocks × 4 + 3 shortcuts + bn1 + fc, the last map 8×8.
        assert_eq!(w.layers.len(), 1 + 12 * 4 + 3 + 2);
        let last_bn = w.layer("bn1.weight").unwrap();
        assert_eq!((last_bn.in_c, last_bn.in_h), (640, 8));
        assert!(Arch::Wrn34_10.ignores("sub_block1.layer.0.conv1.weight") && !Arch::Wrn34_10.ignores("block1.layer.0.conv1.weight"));
        let p = Model::new(Arch::PreactResnet18, 0, &Device::Cpu).unwrap();
        for name in ["conv1.weight", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight", "layer4.1.conv2.weight", "bn.running_mean", "linear.weight"] {
            assert!(p.params.get(name).is_ok(), "{name}");
        }
        assert!(p.params.get("bn1.weight").is_err() && !Arch::PreactResnet18.ignores("sub_block1.x"));
        let last_bn = p.layer("bn.weight").unwrap();
        assert_eq!((last_bn.in_c, last_bn.in_h), (512, 4));
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.name()).unwrap(), arch);
            assert_eq!(serde_json::to_string(&arch).unwrap(), format!("\"{}\"", arch.name()));
        }
        assert_eq!(Arch::parse("WRN_28_10").unwrap(), Arch::Wrn28_10);
        assert!(Arch::parse("wrn-70-16").unwrap_err().to_string().contains("preact-resnet18"));
    }

    #[test]
    fn wide_resnet_init_is_robustbenchs() {
        // Conv weights N(0, 2/(k²·out_c)), fc bias 0, BN γ = 1: the sample std of the widest
        // conv is within 1% of √(2/(9·640)).
        let w = Model::new(Arch::Wrn28_10, 3, &Device::Cpu).unwrap();
        let conv = w.params.get("block3.layer.2.conv1.weight").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let n = conv.len() as f64;
        let mean = conv.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (conv.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (2.0f64 / (9.0 * 640.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.01 && mean.abs() < 0.01 * want, "std {std}, want {want}, mean {mean}");
        assert_eq!(w.params.get("fc.bias").unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn forward_gives_logits() {
        for arch in Arch::PAPER {
            let m = Model::new(arch, 1, &Device::Cpu).unwrap();
            let x = Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu).unwrap();
            let y = m.forward(&x, true).unwrap();
            assert_eq!(y.dims(), &[2, 10], "{arch}");
            let y = m.forward(&x, false).unwrap();
            assert_eq!(y.dims(), &[2, 10], "{arch}");
        }
    }

    #[test]
    fn safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let m = Model::new(Arch::Regnet200mf, 3, &Device::Cpu).unwrap();
        m.save(&path).unwrap();
        let back = Model::load(Arch::Regnet200mf, &path, &Device::Cpu).unwrap();
        for (a, b) in m.params.entries().iter().zip(back.params.entries()) {
            let d = (a.var.as_tensor() - b.var.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{}", a.name);
        }
        assert!(Model::load(Arch::Vgg11, &path, &Device::Cpu).is_err());
    }
}
