//! The four CIFAR-10 models of the paper (VGG11-BN, ResNet18, SENet18, RegNetX-200MF) with
//! PyTorch state_dict names, PyTorch's default init, train/eval BatchNorm, and the
//! [`LayerSpec`] list that norms, regularizers and SVC read.
//!
//! Models know nothing of training or attacks: they map images to logits.

pub mod layers;
pub mod params;
pub mod regnet;
pub mod resnet;
pub mod senet;
pub mod spec;
pub mod vgg;

pub use params::{ParamStore, Role};
pub use spec::{LayerKind, LayerSpec};

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
}

impl Arch {
    /// Every architecture, in the paper's table order.
    pub const ALL: [Arch; 4] = [Arch::Vgg11, Arch::Resnet18, Arch::Senet18, Arch::Regnet200mf];

    /// The name used on the command line, in plans and in results.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vgg11 => "vgg11",
            Arch::Resnet18 => "resnet18",
            Arch::Senet18 => "senet18",
            Arch::Regnet200mf => "regnet200mf",
        }
    }

    /// The model's layers at the CIFAR-10 input size (built once per process, without
    /// weights worth keeping: [`Model::zeros`]).
    pub fn layers(self) -> &'static [LayerSpec] {
        static LAYERS: [std::sync::OnceLock<Vec<LayerSpec>>; 4] = [const { std::sync::OnceLock::new() }; 4];
        let i = Self::ALL.iter().position(|&a| a == self).expect("every Arch is in ALL");
        LAYERS[i].get_or_init(|| Model::zeros(self).expect("the built-in models build").layers)
    }

    /// Parses a model name; the error lists the known ones.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        for a in Self::ALL {
            if a.name() == t {
                return Ok(a);
            }
        }
        match t.as_str() {
            "vgg" => Ok(Arch::Vgg11),
            "resnet" => Ok(Arch::Resnet18),
            "senet" => Ok(Arch::Senet18),
            "regnet" | "regnetx_200mf" | "regnetx200mf" => Ok(Arch::Regnet200mf),
            _ => bail!("unknown model '{text}': expected one of vgg11, resnet18, senet18, regnet200mf"),
        }
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
        let mut b = layers::Builder::new(ChaCha8Rng::seed_from_u64(seed), device);
        let net = Self::build(arch, &mut b)?;
        Ok(Self { arch, params: b.store, layers: b.layers, net, batches_tracked: AtomicI64::new(0) })
    }

    /// `arch` with every conv and linear weight and bias 0 (BatchNorm as initialised), on the
    /// CPU: its layers and parameter names without drawing an initialisation (a plan's dry run
    /// and the report ask what a regularizer acts on).
    pub fn zeros(arch: Arch) -> Result<Self> {
        let mut b = layers::Builder::zeros(&Device::Cpu);
        let net = Self::build(arch, &mut b)?;
        Ok(Self { arch, params: b.store, layers: b.layers, net, batches_tracked: AtomicI64::new(0) })
    }

    fn build(arch: Arch, b: &mut layers::Builder) -> Result<Net> {
        Ok(match arch {
            Arch::Vgg11 => Net::Vgg(vgg::Vgg::build(b)?),
            Arch::Resnet18 => Net::Resnet(resnet::ResNet::build(b)?),
            Arch::Senet18 => Net::Senet(senet::SeNet::build(b)?),
            Arch::Regnet200mf => Net::Regnet(regnet::RegNet::build(b)?),
        })
    }

    /// Builds `arch` and loads its weights from a safetensors state_dict (PyTorch names).
    pub fn load(arch: Arch, path: &Path, device: &Device) -> Result<Self> {
        let model = Self::new(arch, 0, device)?;
        let tracked = model.params.load_safetensors(path)?;
        model.batches_tracked.store(tracked, Ordering::Relaxed);
        Ok(model)
    }

    /// Writes the weights and buffers as a PyTorch-loadable safetensors state_dict.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.params.save_safetensors(path, self.batches_tracked.load(Ordering::Relaxed))
    }

    /// Logits (N × 10) for images (N × 3 × 32 × 32, values in [0, 1]). `train` selects
    /// BatchNorm's batch statistics (and updates the running ones) and tracks the weights for
    /// their gradients; eval mode (`false`) uses the running statistics and enters the weights
    /// as constants, so a backward pass from an eval forward yields input gradients only.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train {
            self.batches_tracked.fetch_add(1, Ordering::Relaxed);
        }
        match &self.net {
            Net::Vgg(m) => m.forward(x, train),
            Net::Resnet(m) => m.forward(x, train),
            Net::Senet(m) => m.forward(x, train),
            Net::Regnet(m) => m.forward(x, train),
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
    /// 1-Lipschitz. `None` where no such bound exists: SENet's squeeze-and-excitation gate
    /// multiplies two functions of the input, which no product of layer norms bounds.
    pub fn lipschitz_bound(&self, norm: &dyn Fn(&str) -> f64) -> Option<f64> {
        match &self.net {
            Net::Vgg(m) => Some(m.lipschitz(norm)),
            Net::Resnet(m) => Some(m.lipschitz(norm)),
            Net::Regnet(m) => Some(m.lipschitz(norm)),
            Net::Senet(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_pytorch() {
        let want = [(Arch::Vgg11, 9_231_114), (Arch::Resnet18, 11_173_962), (Arch::Senet18, 11_260_354), (Arch::Regnet200mf, 2_321_946)];
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
    fn forward_gives_logits() {
        for arch in Arch::ALL {
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
