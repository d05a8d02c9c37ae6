//! WideResNet as RobustBench defines it (`robustbench/model_zoo/architectures/wide_resnet.py`,
//! from TRADES), the architecture of most of its CIFAR-10 models: a 3×3 stem conv
//! (`conv1`), three stages of (depth − 4)/6 pre-activation blocks (`blockN.layer.M`, the
//! 1×1 shortcut `convShortcut` where the width changes) of 16k, 32k and 64k channels, the
//! last two starting with stride 2, then BN + ReLU (`bn1`), an 8×8 average pool and `fc`.
//! BatchNorm is PyTorch's default (eps 1e-5, momentum 0.1), convs have no bias, `fc` has
//! one; initialisation is RobustBench's: conv weights N(0, 2/(k²·out_channels)), BN γ = 1 and
//! β = 0, `fc`'s bias 0. RobustBench's optional `sub_block1` (built by some zoo entries,
//! never used by the forward pass) is not part of the model; its tensors in a checkpoint are
//! ignored ([`super::Arch::ignores`]).

use super::layers::{Builder, Init};
use super::preact::{PreActBlock, PreActNet};
use anyhow::{bail, Result};

/// A WideResNet's shape: WRN-`depth`-`widen`, with `base` stem channels (RobustBench: 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrnShape {
    /// Depth (28, 34, ...): (depth − 4)/6 blocks per stage.
    pub depth: usize,
    /// Widening factor k.
    pub widen: usize,
    /// Stem channels; stage widths are base·k, 2·base·k, 4·base·k.
    pub base: usize,
}

/// Builds WRN-depth-widen with RobustBench's names and initialisation.
pub fn build(b: &mut Builder, shape: WrnShape) -> Result<PreActNet> {
    if shape.depth < 10 || !(shape.depth - 4).is_multiple_of(6) || shape.widen == 0 || shape.base == 0 {
        bail!("a WideResNet needs depth 6n + 4 ≥ 10 and widen, base ≥ 1, got {shape:?}");
    }
    let per_stage = (shape.depth - 4) / 6;
    let widths = [shape.base * shape.widen, 2 * shape.base * shape.widen, 4 * shape.base * shape.widen];
    let previous = b.init;
    b.init = Init::WideResNet;
    let conv1 = b.conv2d("conv1", 3, shape.base, 3, 1, 1, 1, false, (32, 32))?;
    let mut blocks = Vec::new();
    let (mut in_c, mut hw) = (shape.base, 32);
    for (stage, (width, stride)) in widths.into_iter().zip([1, 2, 2]).enumerate() {
        for i in 0..per_stage {
            let s = if i == 0 { stride } else { 1 };
            let prefix = format!("block{}.layer.{i}", stage + 1);
            blocks.push(PreActBlock::build(b, &prefix, in_c, width, s, hw, in_c != width, "convShortcut")?);
            in_c = width;
            hw /= s;
        }
    }
    let bn1 = b.batch_norm("bn1", in_c, (hw, hw))?;
    let fc = b.linear("fc", in_c, super::NUM_CLASSES)?;
    b.init = previous;
    Ok(PreActNet::new(conv1, blocks, bn1, fc))
}
