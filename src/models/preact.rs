//! Pre-activation residual networks as RobustBench defines them
//! (`robustbench/model_zoo/architectures/resnet.py`): the pre-activation block and network
//! both its PreActResNet and its WideResNet ([`super::wide_resnet`]) are made of, and
//! PreActResNet-18 with the BatchNorm before the classifier (`PreActResNet(PreActBlockV2, [2, 2, 2, 2],
//! bn_before_fc=True)`, the zoo's Rice2020OverfittingNetL2 and Kireev2021Effectiveness).
//! BatchNorm is PyTorch's default (eps 1e-5, momentum 0.1), convs have no bias, the
//! classifier has one; initialisation is PyTorch's default.

use super::layers::{BatchNorm2d, Builder, Conv2d, Linear};
use anyhow::Result;
use candle_core::Tensor;

/// BN → ReLU → conv (stride) → BN → ReLU → conv, plus a shortcut: the input itself, or a
/// 1×1 conv (stride) of the activated input `relu(bn1(x))` when the block changes shape.
/// This is RobustBench's `PreActBlockV2` and, with the shortcut named `convShortcut`, its
/// WideResNet `BasicBlock` (dropout 0): the same computation under other names.
#[derive(Debug, Clone)]
pub(super) struct PreActBlock {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl PreActBlock {
    /// Block `prefix` from `in_c` to `out_c` channels with `stride` on `hw`×`hw` inputs; the
    /// 1×1 shortcut conv, when `with_shortcut`, is named `prefix.shortcut_name`.
    #[allow(clippy::too_many_arguments)]
    pub fn build(b: &mut Builder, prefix: &str, in_c: usize, out_c: usize, stride: usize, hw: usize, with_shortcut: bool, shortcut_name: &str) -> Result<Self> {
        let out_hw = hw / stride;
        let bn1 = b.batch_norm(&format!("{prefix}.bn1"), in_c, (hw, hw))?;
        let conv1 = b.conv2d(&format!("{prefix}.conv1"), in_c, out_c, 3, stride, 1, 1, false, (hw, hw))?;
        let bn2 = b.batch_norm(&format!("{prefix}.bn2"), out_c, (out_hw, out_hw))?;
        let conv2 = b.conv2d(&format!("{prefix}.conv2"), out_c, out_c, 3, 1, 1, 1, false, (out_hw, out_hw))?;
        let shortcut = if with_shortcut { Some(b.conv2d(&format!("{prefix}.{shortcut_name}"), in_c, out_c, 1, stride, 0, 1, false, (hw, hw))?) } else { None };
        Ok(Self { bn1, conv1, bn2, conv2, shortcut })
    }

    /// The block's output for `x`.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let act = self.bn1.forward_relu(x, train)?;
        let out = self.conv1.forward(&act, train)?;
        let out = self.conv2.forward(&self.bn2.forward_relu(&out, train)?, train)?;
        match &self.shortcut {
            Some(conv) => out + conv.forward(&act, train)?,
            None => out + x,
        }
    }

    /// Upper bound of the block's Lipschitz constant: bn1 · (shortcut + conv1 · bn2 · conv2)
    /// with a shortcut conv, else 1 + bn1 · conv1 · bn2 · conv2.
    pub fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let branch = norm(&self.conv1.name) * norm(&self.bn2.name) * norm(&self.conv2.name);
        match &self.shortcut {
            Some(conv) => norm(&self.bn1.name) * (norm(&conv.name) + branch),
            None => 1.0 + norm(&self.bn1.name) * branch,
        }
    }
}

/// A pre-activation residual network: a 3×3 stem conv, pre-activation blocks, BN + ReLU,
/// an average pool over the whole last map and a linear classifier. RobustBench's
/// PreActResNet-18 ([`PreActNet::preact_resnet18`]) and its WideResNets
/// ([`super::wide_resnet::build`]) are both this, under their own names.
#[derive(Debug, Clone)]
pub struct PreActNet {
    conv1: Conv2d,
    blocks: Vec<PreActBlock>,
    bn: BatchNorm2d,
    classifier: Linear,
}

impl PreActNet {
    /// The network made of these layers, in forward order.
    pub(super) fn new(conv1: Conv2d, blocks: Vec<PreActBlock>, bn: BatchNorm2d, classifier: Linear) -> Self {
        Self { conv1, blocks, bn, classifier }
    }

    /// RobustBench's PreActResNet-18: `conv1`, four stages of two blocks (`layerN.M`,
    /// shortcut `shortcut.0`) of `widths` channels (64, 128, 256, 512; narrow ones make small
    /// test fixtures), `bn`, a 4×4 average pool and `linear`.
    pub fn preact_resnet18(b: &mut Builder, widths: [usize; 4]) -> Result<Self> {
        let conv1 = b.conv2d("conv1", 3, widths[0], 3, 1, 1, 1, false, (32, 32))?;
        let mut blocks = Vec::new();
        let (mut in_c, mut hw) = (widths[0], 32);
        for (stage, (planes, stride)) in widths.into_iter().zip([1, 2, 2, 2]).enumerate() {
            for i in 0..2 {
                let s = if i == 0 { stride } else { 1 };
                let shortcut = s != 1 || in_c != planes;
                blocks.push(PreActBlock::build(b, &format!("layer{}.{i}", stage + 1), in_c, planes, s, hw, shortcut, "shortcut.0")?);
                in_c = planes;
                hw /= s;
            }
        }
        let bn = b.batch_norm("bn", in_c, (hw, hw))?;
        let linear = b.linear("linear", in_c, super::NUM_CLASSES)?;
        Ok(Self::new(conv1, blocks, bn, linear))
    }

    /// Logits for a batch of 3×32×32 images.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.conv1.forward(x, train)?;
        for block in &self.blocks {
            h = block.forward(&h, train)?;
        }
        let h = self.bn.forward_relu(&h, train)?;
        let side = h.dim(2)?;
        self.classifier.forward(&h.avg_pool2d(side)?.flatten_from(1)?, train)
    }

    /// Upper bound of the Lipschitz constant: stem × Π blocks × bn × classifier (ReLU and
    /// the average pool are 1-Lipschitz).
    pub fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let blocks: f64 = self.blocks.iter().map(|b| b.lipschitz(norm)).product();
        norm(&self.conv1.name) * blocks * norm(&self.bn.name) * norm(&self.classifier.name)
    }
}
