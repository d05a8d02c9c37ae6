//! ResNet18 for CIFAR-10 (3×3 stem, four stages of two basic blocks, Linear(512, 10)), as in
//! the reference code (`conv1`, `layerN.M.conv1`, `layerN.M.shortcut.0`, `linear`), and the
//! skeleton it shares with SENet18 ([`ResidualNet`]), which differs only in its block.

use super::layers::{BatchNorm2d, Builder, Conv2d, Linear};
use crate::ops;
use anyhow::Result;
use candle_core::Tensor;

/// A residual block of a [`ResidualNet`]: how it is built and run.
pub(super) trait Block: Sized {
    /// Builds block `prefix` from `in_c` to `planes` channels, `stride` on `hw`×`hw` inputs.
    fn build(b: &mut Builder, prefix: &str, in_c: usize, planes: usize, stride: usize, hw: usize) -> Result<Self>;
    /// The block's output for `x`.
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

/// conv-BN-ReLU-conv-BN plus an identity or 1×1 conv-BN shortcut, then ReLU.
#[derive(Debug, Clone)]
pub(super) struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    shortcut: Option<(Conv2d, BatchNorm2d)>,
}

impl Block for BasicBlock {
    fn build(b: &mut Builder, prefix: &str, in_c: usize, planes: usize, stride: usize, hw: usize) -> Result<Self> {
        let out_hw = hw / stride;
        let conv1 = b.conv2d(&format!("{prefix}.conv1"), in_c, planes, 3, stride, 1, 1, false, (hw, hw))?;
        let bn1 = b.batch_norm(&format!("{prefix}.bn1"), planes, (out_hw, out_hw))?;
        let conv2 = b.conv2d(&format!("{prefix}.conv2"), planes, planes, 3, 1, 1, 1, false, (out_hw, out_hw))?;
        let bn2 = b.batch_norm(&format!("{prefix}.bn2"), planes, (out_hw, out_hw))?;
        let shortcut = if stride != 1 || in_c != planes {
            let conv = b.conv2d(&format!("{prefix}.shortcut.0"), in_c, planes, 1, stride, 0, 1, false, (hw, hw))?;
            let bn = b.batch_norm(&format!("{prefix}.shortcut.1"), planes, (out_hw, out_hw))?;
            Some((conv, bn))
        } else {
            None
        };
        Ok(Self { conv1, bn1, conv2, bn2, shortcut })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.bn1.forward_relu(&self.conv1.forward(x, train)?, train)?;
        let out = self.bn2.forward(&self.conv2.forward(&out, train)?, train)?;
        let short = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x, train)?, train)?,
            None => x.clone(),
        };
        ops::add_relu(&out, &short)
    }
}

impl BasicBlock {
    /// Upper bound of the block's Lipschitz constant: branch product plus shortcut.
    fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let branch = norm(&self.conv1.name) * norm(&self.bn1.name) * norm(&self.conv2.name) * norm(&self.bn2.name);
        let short = match &self.shortcut {
            Some((conv, bn)) => norm(&conv.name) * norm(&bn.name),
            None => 1.0,
        };
        branch + short
    }
}

/// The CIFAR ResNet skeleton of the reference code, with blocks `B`: a 3×3 stem conv, BN and
/// ReLU (`conv1`, `bn1`), four stages of two blocks (`layerN.M`) of 64, 128, 256 and 512
/// channels, the first block of stages 2–4 with stride 2, a 4×4 average pool and `linear`.
#[derive(Debug, Clone)]
pub(super) struct ResidualNet<B> {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<B>,
    linear: Linear,
}

/// ResNet18: the skeleton with basic blocks.
pub(super) type ResNet = ResidualNet<BasicBlock>;

impl<B: Block> ResidualNet<B> {
    /// Builds the network with the reference code's names.
    pub fn build(b: &mut Builder) -> Result<Self> {
        let conv1 = b.conv2d("conv1", 3, 64, 3, 1, 1, 1, false, (32, 32))?;
        let bn1 = b.batch_norm("bn1", 64, (32, 32))?;
        let mut blocks = Vec::new();
        let (mut in_c, mut hw) = (64, 32);
        for (stage, (planes, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
            for i in 0..2 {
                let s = if i == 0 { stride } else { 1 };
                blocks.push(B::build(b, &format!("layer{}.{i}", stage + 1), in_c, planes, s, hw)?);
                in_c = planes;
                hw /= s;
            }
        }
        let linear = b.linear("linear", 512, 10)?;
        Ok(Self { conv1, bn1, blocks, linear })
    }

    /// Logits for a batch of 3×32×32 images.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.bn1.forward_relu(&self.conv1.forward(x, train)?, train)?;
        for block in &self.blocks {
            h = block.forward(&h, train)?;
        }
        self.linear.forward(&h.avg_pool2d(4)?.flatten_from(1)?, train)
    }
}

impl ResNet {
    /// Upper bound of the Lipschitz constant: stem × Π(branch + shortcut) × linear.
    pub fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let stem = norm(&self.conv1.name) * norm(&self.bn1.name);
        let blocks: f64 = self.blocks.iter().map(|b| b.lipschitz(norm)).product();
        stem * blocks * norm(&self.linear.name)
    }
}
