//! RegNetX-200MF for CIFAR-10 (depths 1,1,4,7; widths 24,56,152,368; strides 1,1,2,2; group
//! width 8; bottleneck 1; no SE; 3×3 stem with 64 channels), as in the reference code.

use super::layers::{BatchNorm2d, Builder, Conv2d, Linear};
use crate::ops;
use anyhow::Result;
use candle_core::Tensor;

const DEPTHS: [usize; 4] = [1, 1, 4, 7];
const WIDTHS: [usize; 4] = [24, 56, 152, 368];
const STRIDES: [usize; 4] = [1, 1, 2, 2];
const GROUP_WIDTH: usize = 8;

/// 1×1 conv-BN-ReLU, grouped 3×3 conv-BN-ReLU, 1×1 conv-BN, plus shortcut, then ReLU.
#[derive(Debug, Clone)]
struct XBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    shortcut: Option<(Conv2d, BatchNorm2d)>,
}

impl XBlock {
    fn build(b: &mut Builder, prefix: &str, w_in: usize, w_out: usize, stride: usize, hw: usize) -> Result<Self> {
        let w_b = w_out; // bottleneck ratio 1
        let groups = w_b / GROUP_WIDTH;
        let out_hw = hw / stride;
        let conv1 = b.conv2d(&format!("{prefix}.conv1"), w_in, w_b, 1, 1, 0, 1, false, (hw, hw))?;
        let bn1 = b.batch_norm(&format!("{prefix}.bn1"), w_b, (hw, hw))?;
        let conv2 = b.conv2d(&format!("{prefix}.conv2"), w_b, w_b, 3, stride, 1, groups, false, (hw, hw))?;
        let bn2 = b.batch_norm(&format!("{prefix}.bn2"), w_b, (out_hw, out_hw))?;
        let conv3 = b.conv2d(&format!("{prefix}.conv3"), w_b, w_out, 1, 1, 0, 1, false, (out_hw, out_hw))?;
        let bn3 = b.batch_norm(&format!("{prefix}.bn3"), w_out, (out_hw, out_hw))?;
        let shortcut = if stride != 1 || w_in != w_out {
            let conv = b.conv2d(&format!("{prefix}.shortcut.0"), w_in, w_out, 1, stride, 0, 1, false, (hw, hw))?;
            let bn = b.batch_norm(&format!("{prefix}.shortcut.1"), w_out, (out_hw, out_hw))?;
            Some((conv, bn))
        } else {
            None
        };
        Ok(Self { conv1, bn1, conv2, bn2, conv3, bn3, shortcut })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.bn1.forward_relu(&self.conv1.forward(x, train)?, train)?;
        let out = self.bn2.forward_relu(&self.conv2.forward(&out, train)?, train)?;
        let out = self.bn3.forward(&self.conv3.forward(&out, train)?, train)?;
        let short = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x, train)?, train)?,
            None => x.clone(),
        };
        ops::add_relu(&out, &short)
    }

    fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let branch = [&self.conv1.name, &self.bn1.name, &self.conv2.name, &self.bn2.name, &self.conv3.name, &self.bn3.name]
            .iter()
            .map(|n| norm(n))
            .product::<f64>();
        let short = match &self.shortcut {
            Some((conv, bn)) => norm(&conv.name) * norm(&bn.name),
            None => 1.0,
        };
        branch + short
    }
}

/// RegNetX-200MF.
#[derive(Debug, Clone)]
pub struct RegNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<XBlock>,
    linear: Linear,
}

impl RegNet {
    /// Builds RegNetX-200MF with the reference code's names.
    pub fn build(b: &mut Builder) -> Result<Self> {
        let conv1 = b.conv2d("conv1", 3, 64, 3, 1, 1, 1, false, (32, 32))?;
        let bn1 = b.batch_norm("bn1", 64, (32, 32))?;
        let mut blocks = Vec::new();
        let (mut in_c, mut hw) = (64, 32);
        for stage in 0..4 {
            for i in 0..DEPTHS[stage] {
                let s = if i == 0 { STRIDES[stage] } else { 1 };
                blocks.push(XBlock::build(b, &format!("layer{}.{i}", stage + 1), in_c, WIDTHS[stage], s, hw)?);
                in_c = WIDTHS[stage];
                hw /= s;
            }
        }
        let linear = b.linear("linear", WIDTHS[3], 10)?;
        Ok(Self { conv1, bn1, blocks, linear })
    }

    /// Logits for a batch of 3×32×32 images.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.bn1.forward_relu(&self.conv1.forward(x, train)?, train)?;
        for block in &self.blocks {
            h = block.forward(&h, train)?;
        }
        let hw = h.dim(2)?;
        self.linear.forward(&h.avg_pool2d(hw)?.flatten_from(1)?, train)
    }

    /// Upper bound of the Lipschitz constant: stem × Π(branch + shortcut) × linear.
    pub fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let stem = norm(&self.conv1.name) * norm(&self.bn1.name);
        let blocks: f64 = self.blocks.iter().map(|b| b.lipschitz(norm)).product();
        stem * blocks * norm(&self.linear.name)
    }
}
