//! Adversarial examples for training (paper §7): PGD-AT (Madry et al. 2018) and TRADES
//! (Zhang et al. 2019), and TRADES' training loss. The training loop passes an eval-mode
//! logits function (`|x| model.forward(x, false)`) to generate the examples, so their
//! search touches neither BatchNorm's running statistics nor the weights' gradients, and
//! then trains on them in train mode.

use super::losses::{loss_and_input_grad, loss_fn_and_input_grad, Loss};
use super::pgd::signed_step;
use super::{check_in_ball, per_sample, Ball, Logits, Norm};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use rand::Rng;

/// PGD-AT's training inputs: from a uniform random point of the ε-ball, `steps` steps
/// x ← P(x + step·sign ∇ CE(f(x), y)), P the projection onto the ε-ball ∩ [0, 1]; the final
/// iterate, detached. `y` holds u32 labels. Paper §7: ε = 8/255, step 2/255, 10 steps.
pub fn pgd_examples<R: Rng + ?Sized>(f: &Logits, x: &Tensor, y: &Tensor, eps: f64, step: f64, steps: usize, rng: &mut R) -> Result<Tensor> {
    check_settings(eps, step, steps)?;
    let labels = y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let ball = Ball::new(x, Norm::Linf, eps)?;
    let noise: Vec<f32> = (0..x.elem_count()).map(|_| rng.gen_range(-1.0f32..=1.0)).collect();
    let noise = Tensor::from_vec(noise, x.shape(), x.device())?.to_dtype(x.dtype())?;
    let mut x_adv = ball.project(&(x + (noise * eps)?)?)?;
    let eta = per_sample(&vec![step as f32; x.dim(0)?], x)?;
    for _ in 0..steps {
        let e = loss_and_input_grad(f, &x_adv, Loss::Ce, &labels)?;
        x_adv = signed_step(&ball, &x_adv, &e.grad, &eta)?;
    }
    check_in_ball(x, &x_adv, Norm::Linf, eps)?;
    Ok(x_adv.detach())
}

/// TRADES' training inputs: from x + 0.001·N(0, I), `steps` steps
/// x' ← P(x' + step·sign ∇ KL(softmax f(x) ‖ softmax f(x'))), P the projection onto the
/// ε-ball ∩ [0, 1] (the start is projected too); the final iterate, detached.
pub fn trades_examples<R: Rng + ?Sized>(f: &Logits, x: &Tensor, eps: f64, step: f64, steps: usize, rng: &mut R) -> Result<Tensor> {
    check_settings(eps, step, steps)?;
    let ball = Ball::new(x, Norm::Linf, eps)?;
    let p_clean = candle_nn::ops::softmax(&f(&x.detach())?, 1)?.detach();
    let log_p_clean = p_clean.clamp(1e-30f64, 1f64)?.log()?;
    let noise: Vec<f32> = (0..x.elem_count()).map(|_| 0.001 * standard_normal(rng)).collect();
    let noise = Tensor::from_vec(noise, x.shape(), x.device())?.to_dtype(x.dtype())?;
    let mut x_adv = ball.project(&(x + noise)?)?;
    let eta = per_sample(&vec![step as f32; x.dim(0)?], x)?;
    let kl = |logits: &Tensor, _: &[Vec<f32>]| -> Result<Tensor> {
        let log_q = candle_nn::ops::log_softmax(logits, 1)?;
        Ok((&p_clean * (&log_p_clean - log_q)?)?.sum(1)?)
    };
    for _ in 0..steps {
        let e = loss_fn_and_input_grad(f, &x_adv, &kl)?;
        x_adv = signed_step(&ball, &x_adv, &e.grad, &eta)?;
    }
    check_in_ball(x, &x_adv, Norm::Linf, eps)?;
    Ok(x_adv.detach())
}

/// TRADES' loss: CE(clean logits, y) averaged over the batch + β · (1/B) Σ_i
/// KL(softmax(clean_i) ‖ softmax(adv_i)), gradients flowing through both logits as in the
/// reference code (`KLDivLoss(size_average=False)` on log_softmax(adv) and softmax(clean),
/// divided by the batch size). Paper §7 / TRADES: β = 6.
pub fn trades_loss(logits_clean: &Tensor, logits_adv: &Tensor, y: &Tensor, beta: f64) -> Result<Tensor> {
    if logits_clean.dims() != logits_adv.dims() {
        bail!("TRADES loss: clean logits {:?} and adversarial logits {:?} differ in shape", logits_clean.dims(), logits_adv.dims());
    }
    let batch = logits_clean.dim(0)? as f64;
    let natural = candle_nn::loss::cross_entropy(logits_clean, y)?;
    let log_p = candle_nn::ops::log_softmax(logits_clean, 1)?;
    let log_q = candle_nn::ops::log_softmax(logits_adv, 1)?;
    let kl = (log_p.exp()? * (&log_p - log_q)?)?.sum_all()?;
    Ok((natural + (kl * (beta / batch))?)?)
}

fn check_settings(eps: f64, step: f64, steps: usize) -> Result<()> {
    if !eps.is_finite() || !(0.0..=1.0).contains(&eps) {
        bail!("adversarial training ε = {eps} must lie in [0, 1] (e.g. 8/255)");
    }
    if !step.is_finite() || step < 0.0 {
        bail!("adversarial training step = {step} must be finite and ≥ 0 (e.g. 2/255)");
    }
    if steps == 0 {
        bail!("adversarial training needs at least 1 attack step (e.g. 10)");
    }
    Ok(())
}

/// One N(0, 1) sample (Box–Muller), so no extra crate is needed.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::losses::cross_entropy;
    use crate::attack::testing::{distance_and_range, grid, Affine2d};
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn pgd_examples_stay_in_the_ball_and_raise_the_loss() {
        let model = Affine2d::four_classes();
        let f = model.function();
        let (x, pts) = grid(6);
        let y: Vec<u32> = pts.iter().map(|&p| model.predict(p)).collect();
        let yt = Tensor::new(y.as_slice(), &Device::Cpu).unwrap();
        let eps = 8.0 / 255.0;
        let x_adv = pgd_examples(&f, &x, &yt, eps, 2.0 / 255.0, 10, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        let (d, lo, hi) = distance_and_range(&x, &x_adv);
        assert!(d as f64 <= eps + 1e-6 && lo >= 0.0 && hi <= 1.0);
        let mean = |t: &Tensor| cross_entropy(&f(t).unwrap(), &y).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(mean(&x_adv) > mean(&x) + 0.01, "{} vs {}", mean(&x_adv), mean(&x));
        assert!(pgd_examples(&f, &x, &yt, eps, 2.0 / 255.0, 0, &mut ChaCha8Rng::seed_from_u64(0)).is_err());
    }

    #[test]
    fn trades_examples_stay_in_the_ball_and_move_the_prediction() {
        let model = Affine2d::four_classes();
        let f = model.function();
        let (x, _) = grid(6);
        let eps = 8.0 / 255.0;
        let x_adv = trades_examples(&f, &x, eps, 2.0 / 255.0, 10, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        let (d, lo, hi) = distance_and_range(&x, &x_adv);
        assert!(d as f64 <= eps + 1e-6 && lo >= 0.0 && hi <= 1.0);
        let y = vec![0u32; 36];
        let kl = trades_loss(&f(&x).unwrap(), &f(&x_adv).unwrap(), &Tensor::new(y.as_slice(), &Device::Cpu).unwrap(), 1.0).unwrap().to_scalar::<f32>().unwrap()
            - candle_nn::loss::cross_entropy(&f(&x).unwrap(), &Tensor::new(y.as_slice(), &Device::Cpu).unwrap()).unwrap().to_scalar::<f32>().unwrap();
        assert!(kl > 1e-4, "the KL term should grow away from x: {kl}");
    }

    #[test]
    fn trades_loss_matches_hand_values() {
        let d = Device::Cpu;
        let clean = Tensor::new(&[[0.0f32, 0.0], [1.0, 0.0]], &d).unwrap();
        let adv = Tensor::new(&[[0.0f32, 0.0], [0.0, 1.0]], &d).unwrap();
        let y = Tensor::new(&[0u32, 0], &d).unwrap();
        // CE: (ln 2 + ln(1 + e⁻¹)) / 2. KL row 1: p = σ(1), 1 − σ(1) against their swap:
        // (2σ(1) − 1)·ln(σ(1)/(1 − σ(1))) = (2σ(1) − 1)·1; row 0: 0. Divided by B = 2.
        let s = 1.0 / (1.0 + (-1.0f64).exp());
        let ce = (2f64.ln() + (1.0 + (-1.0f64).exp()).ln()) / 2.0;
        let want = ce + 6.0 * (2.0 * s - 1.0) / 2.0;
        let got = trades_loss(&clean, &adv, &y, 6.0).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let got0 = trades_loss(&clean, &adv, &y, 0.0).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got0 - ce).abs() < 1e-6);
        assert!(trades_loss(&clean, &adv.narrow(0, 0, 1).unwrap(), &y, 6.0).is_err());
    }
}
