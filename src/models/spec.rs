//! `LayerSpec`: the one description of a weight layer that the model, the norms, the
//! regularizers and singular value clipping all read.

use serde::{Deserialize, Serialize};

/// What kind of linear map a weight layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A 2-D convolution with zero padding (weight: out_c × in_c/groups × kh × kw).
    Conv,
    /// A fully connected layer (weight: out_c × in_c).
    Linear,
    /// A BatchNorm2d layer, a diagonal map in eval mode (weight: γ of length out_c).
    Bn,
}

impl LayerKind {
    /// The name used in CSV and tables: `conv`, `linear`, `bn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conv => "conv",
            Self::Linear => "linear",
            Self::Bn => "bn",
        }
    }
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One weight layer as the model uses it at the CIFAR-10 input size (3×32×32).
///
/// `in_h`/`in_w` are the spatial size of the layer's real input, which the exact norms need
/// (small maps cut the set of kernel positions that reach a pixel). A linear layer is
/// described as a 1×1 "conv" on a 1×1 input; a BatchNorm as a per-channel diagonal map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerSpec {
    /// The weight tensor's PyTorch state_dict name, e.g. `layer2.0.shortcut.0.weight`.
    pub name: String,
    /// Conv, linear or BatchNorm.
    pub kind: LayerKind,
    /// Input channels (features for linear).
    pub in_c: usize,
    /// Input height in pixels (1 for linear).
    pub in_h: usize,
    /// Input width in pixels (1 for linear).
    pub in_w: usize,
    /// Output channels (features for linear).
    pub out_c: usize,
    /// Kernel height (1 for linear and BatchNorm).
    pub kh: usize,
    /// Kernel width (1 for linear and BatchNorm).
    pub kw: usize,
    /// Stride (1 for linear and BatchNorm).
    pub stride: usize,
    /// Zero padding on each side (0 for linear and BatchNorm).
    pub padding: usize,
    /// Channel groups (1 unless a grouped conv).
    pub groups: usize,
    /// Whether the layer has a bias (`<prefix>.bias`).
    pub bias: bool,
}

impl LayerSpec {
    /// A fully connected layer `prefix` (weight `prefix.weight`, with bias) from `in_f` to
    /// `out_f` features: a 1×1 "conv" on a 1×1 input.
    pub fn linear(prefix: &str, in_f: usize, out_f: usize) -> Self {
        Self {
            name: format!("{prefix}.weight"),
            kind: LayerKind::Linear,
            in_c: in_f,
            in_h: 1,
            in_w: 1,
            out_c: out_f,
            kh: 1,
            kw: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            bias: true,
        }
    }

    /// A BatchNorm2d layer `prefix` over `c` channels of an `in_hw` map: a diagonal map, seen
    /// as a 1×1 depth-preserving "conv" with bias (β).
    pub fn batch_norm(prefix: &str, c: usize, in_hw: (usize, usize)) -> Self {
        Self { kind: LayerKind::Bn, in_c: c, in_h: in_hw.0, in_w: in_hw.1, ..Self::linear(prefix, c, c) }
    }

    /// The module path without the trailing `.weight`, e.g. `layer2.0.shortcut.0`.
    pub fn prefix(&self) -> &str {
        self.name.strip_suffix(".weight").unwrap_or(&self.name)
    }

    /// The state_dict name of another tensor of this layer (`bias`, `running_var`, ...).
    pub fn tensor_name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix())
    }

    /// Output height of the layer's map on its input.
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kh) / self.stride + 1
    }

    /// Output width of the layer's map on its input.
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kw) / self.stride + 1
    }

    /// The shape of the weight tensor.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            LayerKind::Conv => vec![self.out_c, self.in_c / self.groups, self.kh, self.kw],
            LayerKind::Linear => vec![self.out_c, self.in_c],
            LayerKind::Bn => vec![self.out_c],
        }
    }

    /// Inputs feeding one output unit (PyTorch's fan_in, which sets its default init).
    pub fn fan_in(&self) -> usize {
        (self.in_c / self.groups) * self.kh * self.kw
    }

    /// Multiply-accumulates of the forward pass for one image.
    pub fn forward_macs(&self) -> usize {
        match self.kind {
            LayerKind::Conv | LayerKind::Linear => self.out_c * self.out_h() * self.out_w() * self.fan_in(),
            LayerKind::Bn => self.out_c * self.in_h * self.in_w,
        }
    }

    /// A conv or linear layer: what norm decay and the norm tables treat as a weight matrix.
    pub fn is_matrix(&self) -> bool {
        matches!(self.kind, LayerKind::Conv | LayerKind::Linear)
    }
}
