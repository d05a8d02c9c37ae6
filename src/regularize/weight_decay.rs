//! Coupled weight decay, as `torch.optim.SGD(weight_decay=β)` applies it: g ← g + β·θ for
//! every trainable parameter that has a gradient (weights, biases, BatchNorm γ and β), never
//! for BatchNorm's running statistics (buffers).

use crate::models::ParamStore;
use crate::optim::GradTerms;
use anyhow::Result;
use candle_core::{backprop::GradStore, Tensor};

/// Adds β·θ to the gradient of every trainable parameter of `params` present in `grads`.
pub fn apply(params: &ParamStore, grads: &mut GradStore, beta: f64) -> Result<()> {
    for e in params.trainable() {
        let theta = e.var.as_tensor();
        let Some(g) = grads.get(theta) else { continue };
        let decayed = decayed(g, theta, beta)?;
        grads.insert(theta, decayed);
    }
    Ok(())
}

/// `g + β·θ`: one parameter's decayed gradient (also a slice of a stacked model's).
pub fn decayed(g: &Tensor, theta: &Tensor, beta: f64) -> Result<Tensor> {
    Ok((g.detach() + (theta.detach() * beta)?)?)
}

/// [`apply`]'s β·θ as terms for the optimizer's fused update (the gradients untouched).
pub fn terms(params: &ParamStore, grads: &GradStore, beta: f64) -> GradTerms {
    let mut terms = GradTerms::default();
    for e in params.trainable() {
        if grads.get(e.var.as_tensor()).is_some() {
            terms.insert(&e.name, beta, e.var.as_tensor().detach());
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Role;
    use candle_core::Device;

    #[test]
    fn adds_beta_theta_to_trainable_gradients_only() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new();
        let w = store.insert("w", Tensor::new(&[1f32, -2.0, 3.0], &dev).unwrap(), Role::Trainable).unwrap();
        let rv = store.insert("bn.running_var", Tensor::new(&[4f32], &dev).unwrap(), Role::Buffer).unwrap();
        // L = Σ w² + 5·rv: ∂L/∂w = 2w, ∂L/∂rv = 5.
        let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() + (rv.as_tensor() * 5.0).unwrap().sum_all().unwrap()).unwrap();
        let mut grads = loss.backward().unwrap();
        apply(&store, &mut grads, 0.1).unwrap();
        let gw = grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        // Analytic: 2w + 0.1·w = 2.1·w.
        for (g, x) in gw.iter().zip([1f32, -2.0, 3.0]) {
            assert!((g - 2.1 * x).abs() < 1e-6, "{g} vs {}", 2.1 * x);
        }
        assert_eq!(grads.get(rv.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![5.0]);
    }
}
