//! The reference code's BatchNorm projection (`project_bn`), which its norm-decay runs
//! `train_nd_proj_bn.py` and `train_nd_inf_proj_bn.py` apply before every optimizer step
//! (train_nd_proj_bn.py:70-71: `add_lip_grad(...)`, then `project_bn(proj_to=5)`, then the
//! step at :76).
//!
//! Per BatchNorm layer (lip/add_lip.py:81-91): its eval-mode norm is the largest
//! |γ_c|/√(v_c+ε) over channels (`lip_bn`, add_lip.py:440-444: the diagonal map's ℓ1 = ℓ∞
//! norm, with the running variance v); if it exceeds the bound, that one channel's γ is set to
//! bound·√(v_c+ε)·sign(γ_c), so its entry of the diagonal becomes ±bound (`proj_bn`,
//! add_lip.py:447-451). Only the maximising channel moves, once per step. Everything stays
//! on the model's device: no value travels to the host.

use crate::models::{layers::BN_EPS, LayerKind, LayerSpec, ParamStore};
use anyhow::{Context, Result};
use candle_core::Tensor;

/// The projection of every BatchNorm layer's norm to at most `bound`.
pub struct BnProjection {
    bound: f64,
    /// (γ's name, running variance's name) per BatchNorm layer.
    layers: Vec<(String, String)>,
}

impl BnProjection {
    /// Projects the BatchNorm layers among `specs` to `bound` (the reference: 5).
    pub fn new(specs: &[LayerSpec], bound: f64) -> Self {
        let layers = specs.iter().filter(|s| s.kind == LayerKind::Bn).map(|s| (s.name.clone(), s.tensor_name("running_var"))).collect();
        Self { bound, layers }
    }

    /// The γ parameters it acts on, in layer order.
    pub fn acted_on(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|(w, _)| w.as_str())
    }

    /// Projects each layer's largest entry once (before the optimizer step).
    pub fn apply(&self, params: &ParamStore) -> Result<()> {
        for (weight, running_var) in &self.layers {
            let var = params.var(weight).with_context(|| format!("BatchNorm projection: no parameter {weight}"))?;
            let gamma = var.as_tensor().detach();
            let std = (params.get(running_var)?.detach() + BN_EPS)?.sqrt()?;
            let norms = (gamma.abs()? / &std)?;
            let c = norms.argmax_keepdim(0)?;
            let channels = Tensor::arange(0u32, gamma.dim(0)? as u32, gamma.device())?;
            // 1 at c* when its norm exceeds the bound, 0 elsewhere.
            let over = norms.max_keepdim(0)?.gt(self.bound)?.to_dtype(gamma.dtype())?;
            let mask = channels.broadcast_eq(&c)?.to_dtype(gamma.dtype())?.broadcast_mul(&over)?;
            let projected = ((std * self.bound)? * gamma.sign()?)?;
            let new = ((&gamma * mask.affine(-1.0, 1.0)?)? + (projected * &mask)?)?;
            var.set(&new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Role;
    use candle_core::Device;

    fn store(gamma: &[f32], running_var: &[f32]) -> (ParamStore, candle_core::Var) {
        let mut s = ParamStore::new();
        let g = s.insert("bn.weight", Tensor::new(gamma, &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        s.insert("bn.running_var", Tensor::new(running_var, &Device::Cpu).unwrap(), Role::Buffer).unwrap();
        (s, g)
    }

    #[test]
    fn projects_only_the_largest_channel_above_the_bound() {
        // |γ|/√(v+ε) ≈ (2, 9, 8.5, 1): channel 1 exceeds 5 and is the largest; channel 2 also
        // exceeds 5 but waits for a later step (one channel per step, as the reference).
        let (s, g) = store(&[2.0, -9.0, 17.0, 1.0], &[1.0, 1.0, 4.0, 1.0]);
        let p = BnProjection::new(&[LayerSpec::batch_norm("bn", 4, (4, 4))], 5.0);
        p.apply(&s).unwrap();
        let got = g.as_tensor().to_vec1::<f32>().unwrap();
        let want1 = -5.0 * (1.0f64 + BN_EPS).sqrt();
        assert_eq!(got[0], 2.0);
        assert!((got[1] as f64 - want1).abs() < 1e-6, "{got:?}");
        assert_eq!((got[2], got[3]), (17.0, 1.0));
        // Next step: channel 2 (17/√4 = 8.5) is now the largest: 5·√(4+ε).
        p.apply(&s).unwrap();
        let got = g.as_tensor().to_vec1::<f32>().unwrap();
        assert!((got[2] as f64 - 5.0 * (4.0f64 + BN_EPS).sqrt()).abs() < 1e-5, "{got:?}");
    }

    #[test]
    fn leaves_a_layer_within_the_bound_alone() {
        let (s, g) = store(&[2.0, -4.9, 1.0], &[1.0, 1.0, 1.0]);
        BnProjection::new(&[LayerSpec::batch_norm("bn", 3, (4, 4)), LayerSpec::linear("fc", 3, 2)], 5.0).apply(&s).unwrap();
        assert_eq!(g.as_tensor().to_vec1::<f32>().unwrap(), vec![2.0, -4.9, 1.0]);
    }
}
