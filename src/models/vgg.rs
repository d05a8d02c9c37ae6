//! VGG11 with BatchNorm for CIFAR-10, as in the reference code (`features.N`, `classifier`).

use super::layers::{BatchNorm2d, Builder, Conv2d, Linear};
use crate::ops;
use anyhow::Result;
use candle_core::Tensor;

/// VGG11's feature configuration: channel counts, `None` for a 2×2 max-pool.
const VGG11: [Option<usize>; 13] =
    [Some(64), None, Some(128), None, Some(256), Some(256), None, Some(512), Some(512), None, Some(512), Some(512), None];

/// One conv → BN → ReLU stage, optionally followed by a 2×2 max-pool.
#[derive(Debug, Clone)]
struct Stage {
    conv: Conv2d,
    bn: BatchNorm2d,
    pool_after: bool,
}

/// VGG11-BN: 8 conv stages, 5 max-pools, Linear(512, 10).
#[derive(Debug, Clone)]
pub struct Vgg {
    stages: Vec<Stage>,
    classifier: Linear,
}

impl Vgg {
    /// Builds VGG11-BN with PyTorch's `nn.Sequential` numbering (conv, bn, relu take three
    /// indices, a pool one).
    pub fn build(b: &mut Builder) -> Result<Self> {
        let mut stages: Vec<Stage> = Vec::new();
        let (mut in_c, mut hw, mut idx) = (3usize, 32usize, 0usize);
        for item in VGG11 {
            match item {
                Some(out_c) => {
                    let conv = b.conv2d(&format!("features.{idx}"), in_c, out_c, 3, 1, 1, 1, true, (hw, hw))?;
                    let bn = b.batch_norm(&format!("features.{}", idx + 1), out_c, (hw, hw))?;
                    stages.push(Stage { conv, bn, pool_after: false });
                    in_c = out_c;
                    idx += 3;
                }
                None => {
                    if let Some(last) = stages.last_mut() {
                        last.pool_after = true;
                    }
                    hw /= 2;
                    idx += 1;
                }
            }
        }
        let classifier = b.linear("classifier", 512, 10)?;
        Ok(Self { stages, classifier })
    }

    /// Logits for a batch of 3×32×32 images.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for s in &self.stages {
            h = s.bn.forward_relu(&s.conv.forward(&h, train)?, train)?;
            if s.pool_after {
                h = ops::max_pool2d(&h, 2)?;
            }
        }
        self.classifier.forward(&h.flatten_from(1)?, train)
    }

    /// Upper bound of the Lipschitz constant: the product of every layer's norm (ReLU and
    /// max-pool are 1-Lipschitz in ℓ∞ and ℓ2).
    pub fn lipschitz(&self, norm: &dyn Fn(&str) -> f64) -> f64 {
        let convs: f64 = self.stages.iter().map(|s| norm(&s.conv.name) * norm(&s.bn.name)).product();
        convs * norm(&self.classifier.name)
    }
}
