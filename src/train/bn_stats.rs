//! Re-estimating BatchNorm's running statistics for fixed weights, after something changed the
//! weights outside training (SVC's final clip): the statistics gathered during training
//! describe the weights before the change, and eval mode normalises with them. The demo's SVC
//! cell, clipped after its last step without this, fell from about 30% to 17% clean accuracy.
//!
//! As PyTorch's `torch.optim.swa_utils.update_bn` does: forward passes in train mode over the
//! given batches, each layer's running mean and (unbiased) variance set to the plain average of
//! the batches' statistics (BatchNorm with `momentum=None`). normlab's BatchNorm updates its
//! running statistics with the fixed momentum m = 0.1 (r ← (1−m)·r + m·x), so after each batch
//! k the cumulative average is recovered exactly from what the forward pass wrote:
//! A_k = A_{k−1} + (r − A_{k−1}) / (m·k), since r − A_{k−1} = m·(x_k − A_{k−1}).

use crate::models::{layers::BN_MOMENTUM, LayerKind, Model};
use anyhow::{Context, Result};
use candle_core::{Tensor, Var};

/// Replaces every BatchNorm layer's running statistics of `model` by their average over the
/// train-mode statistics of `batches` (images N × 3 × 32 × 32). The weights and BatchNorm's
/// batch counter are left as they were. Returns the number of batches used.
pub fn reestimate(model: &Model, batches: impl Iterator<Item = Result<Tensor>>) -> Result<usize> {
    let mut stats: Vec<&Var> = Vec::new();
    for l in model.layers.iter().filter(|l| l.kind == LayerKind::Bn) {
        for t in ["running_mean", "running_var"] {
            let name = l.tensor_name(t);
            stats.push(model.params.var(&name).with_context(|| format!("no BatchNorm buffer {name}"))?);
        }
    }
    let tracked = model.batches_tracked();
    let mut k = 0usize;
    for x in batches {
        let x = x?;
        k += 1;
        let before: Vec<Tensor> = stats.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        model.forward(&x, true)?;
        for (v, a) in stats.iter().zip(&before) {
            let r = v.as_tensor();
            let average = (a + ((r - a)? * (1.0 / (BN_MOMENTUM * k as f64)))?)?;
            v.set(&average)?;
        }
    }
    model.set_batches_tracked(tracked);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use candle_core::Device;

    #[test]
    fn running_statistics_become_the_average_of_the_batches() {
        let model = Model::new(Arch::Vgg11, 3, &Device::Cpu).unwrap();
        let batches: Vec<Tensor> = (0..3).map(|i| (Tensor::rand(0f32, 1f32, (4, 3, 32, 32), &Device::Cpu).unwrap() * (1.0 + i as f64)).unwrap()).collect();
        // The first BatchNorm normalises conv 0's output: its statistics per batch, by hand.
        let conv = model.layer("features.0.weight").unwrap().clone();
        let (w, b) = (model.params.get("features.0.weight").unwrap(), model.params.get("features.0.bias").unwrap());
        let (mut means, mut vars) = (Vec::new(), Vec::new());
        for x in &batches {
            let y = crate::ops::conv2d(x, w, Some(b), conv.stride, conv.padding, conv.groups).unwrap();
            let y = y.transpose(0, 1).unwrap().flatten_from(1).unwrap().to_dtype(candle_core::DType::F64).unwrap();
            let n = y.dim(1).unwrap() as f64;
            let mean = y.mean_keepdim(1).unwrap();
            let var = (y.broadcast_sub(&mean).unwrap().sqr().unwrap().sum_keepdim(1).unwrap() / (n - 1.0)).unwrap();
            means.push(mean.flatten_all().unwrap().to_vec1::<f64>().unwrap());
            vars.push(var.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        }
        model.set_batches_tracked(7);
        let used = reestimate(&model, batches.iter().map(|x| Ok(x.clone()))).unwrap();
        assert_eq!((used, model.batches_tracked()), (3, 7));
        for (name, want) in [("features.1.running_mean", &means), ("features.1.running_var", &vars)] {
            let got = model.params.get(name).unwrap().to_vec1::<f32>().unwrap();
            for (c, g) in got.iter().enumerate() {
                let avg = want.iter().map(|v| v[c]).sum::<f64>() / 3.0;
                assert!((*g as f64 - avg).abs() < 1e-4 * avg.abs().max(1.0), "{name}[{c}]: {g} vs {avg}");
            }
        }
    }
}
