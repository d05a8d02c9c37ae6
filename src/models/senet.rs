//! SENet18 for CIFAR-10: pre-activation basic blocks (BN, ReLU, conv) with
//! squeeze-and-excitation through two 1×1 convs with bias (`fc1`, `fc2`, reduction 16), and a
//! 1×1 shortcut conv without BN, as in the reference code.

use super::layers::{BatchNorm2d, Builder, Conv2d};
use super::resnet::{Block, ResidualNet};
use crate::ops;
use anyhow::Result;
use candle_core::Tensor;

/// Pre-activation block with squeeze-and-excitation.
#[derive(Debug, Clone)]
pub(super) struct PreActSeBlock {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    fc1: Conv2d,
    fc2: Conv2d,
}

impl Block for PreActSeBlock {
    fn build(b: &mut Builder, prefix: &str, in_c: usize, planes: usize, stride: usize, hw: usize) -> Result<Self> {
        let out_hw = hw / stride;
        let bn1 = b.batch_norm(&format!("{prefix}.bn1"), in_c, (hw, hw))?;
        let conv1 = b.conv2d(&format!("{prefix}.conv1"), in_c, planes, 3, stride, 1, 1, false, (hw, hw))?;
        let bn2 = b.batch_norm(&format!("{prefix}.bn2"), planes, (out_hw, out_hw))?;
        let conv2 = b.conv2d(&format!("{prefix}.conv2"), planes, planes, 3, 1, 1, 1, false, (out_hw, out_hw))?;
        let shortcut = if stride != 1 || in_c != planes {
            Some(b.conv2d(&format!("{prefix}.shortcut.0"), in_c, planes, 1, stride, 0, 1, false, (hw, hw))?)
        } else {
            None
        };
        let fc1 = b.conv2d(&format!("{prefix}.fc1"), planes, planes / 16, 1, 1, 0, 1, true, (1, 1))?;
        let fc2 = b.conv2d(&format!("{prefix}.fc2"), planes / 16, planes, 1, 1, 0, 1, true, (1, 1))?;
        Ok(Self { bn1, conv1, bn2, conv2, shortcut, fc1, fc2 })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.bn1.forward_relu(x, train)?;
        let short = match &self.shortcut {
            Some(conv) => conv.forward(&out, train)?,
            None => x.clone(),
        };
        let out = self.conv1.forward(&out, train)?;
        let out = self.conv2.forward(&self.bn2.forward_relu(&out, train)?, train)?;
        let hw = out.dim(2)?;
        let w = out.avg_pool2d(hw)?;
        let w = candle_nn::ops::sigmoid(&self.fc2.forward(&ops::relu(&self.fc1.forward(&w, train)?)?, train)?)?;
        out.broadcast_mul(&w)? + short
    }
}

/// SENet18: the ResNet skeleton with pre-activation SE blocks.
pub(super) type SeNet = ResidualNet<PreActSeBlock>;
