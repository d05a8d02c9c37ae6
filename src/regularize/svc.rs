//! Singular value clipping (SVC, Sedghi et al. 2019) as the paper runs it: every `every`
//! optimizer steps and once at the end of training, each conv's singular values on its n×n
//! input are clipped at C by [`crate::norms::fft_svd::clip_grouped_conv_kernel`] (FFT of the
//! kernel zero-padded to n×n, SVD per frequency, clip, inverse FFT, real part, crop to k×k)
//! and the clipped kernel replaces the weight. Linear layers and BatchNorm are left alone, as
//! in the reference code; the optimizer's momentum is kept.

use crate::models::{LayerKind, LayerSpec, ParamStore};
use crate::norms::fft_svd::clip_grouped_conv_kernel;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// SVC's schedule and the convs it clips.
pub struct Svc {
    clip: f64,
    every: usize,
    convs: Vec<LayerSpec>,
    /// Whether clipping also measures the crop error (a second SVD per frequency; off in
    /// training, on in tests and diagnostics).
    pub measure_crop_error: bool,
    /// The largest crop error of the last clipping (a bound on how far above C a clipped
    /// conv's largest singular value can be, from the taps the crop dropped); 0 unless
    /// `measure_crop_error`.
    pub last_crop_error: f64,
}

impl Svc {
    /// SVC at `clip` every `every` steps for the convs among `layers`.
    pub fn new(layers: &[LayerSpec], clip: f64, every: usize) -> Result<Self> {
        let convs: Vec<LayerSpec> = layers.iter().filter(|l| l.kind == LayerKind::Conv).cloned().collect();
        if let Some(l) = convs.iter().find(|l| l.in_h != l.in_w) {
            bail!("svc clips convs on square inputs; {} has a {}×{} input", l.name, l.in_h, l.in_w);
        }
        Ok(Self { clip, every, convs, measure_crop_error: false, last_crop_error: 0.0 })
    }

    /// Clips every conv when optimizer step `step` (from 1) is a multiple of the period.
    pub fn after_step(&mut self, params: &ParamStore, step: usize) -> Result<()> {
        if self.due(step) {
            self.clip_all(params)?;
        }
        Ok(())
    }

    /// Whether optimizer step `step` (from 1) ends with a clipping.
    pub fn due(&self, step: usize) -> bool {
        step.is_multiple_of(self.every)
    }

    /// Clips every conv's singular values at C now (on the host, then back to the device).
    pub fn clip_all(&mut self, params: &ParamStore) -> Result<()> {
        let var = |name: &str| params.var(name).with_context(|| format!("svc: no parameter {name}"));
        self.clip_with(&|name| Ok(var(name)?.as_tensor().detach()), &mut |name, t| Ok(var(name)?.set(&t)?))
    }

    /// [`Svc::clip_all`] on weights read by `weight(name)` and written back by `store(name,
    /// clipped)` (a model's variables, or one slice of a stacked model's).
    pub fn clip_with(&mut self, weight: &dyn Fn(&str) -> Result<Tensor>, store: &mut dyn FnMut(&str, Tensor) -> Result<()>) -> Result<()> {
        let mut worst = 0f64;
        for spec in &self.convs {
            let w = weight(&spec.name)?;
            let values: Vec<f32> = w.flatten_all()?.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec1()?;
            let (clipped, crop_error) =
                clip_grouped_conv_kernel(&values, spec.out_c, spec.in_c, spec.kh, spec.kw, spec.in_h, spec.groups, self.clip, self.measure_crop_error);
            worst = worst.max(crop_error.unwrap_or(0.0));
            let t = Tensor::from_vec(clipped, w.shape(), &Device::Cpu)?.to_dtype(w.dtype())?.to_device(w.device())?;
            store(&spec.name, t)?;
        }
        self.last_crop_error = worst;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Role;
    use crate::norms::fft_svd::max_singular_value;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn clips_on_schedule_to_the_bound() {
        let spec = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 4, in_h: 6, in_w: 6, out_c: 4, kh: 3, kw: 3, stride: 1, padding: 1, groups: 1, bias: false };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let w: Vec<f32> = (0..4 * 4 * 9).map(|_| rng.gen_range(-1f32..1f32)).collect();
        let mut store = ParamStore::new();
        let var = store.insert("c.weight", Tensor::from_vec(w.clone(), (4, 4, 3, 3), &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        let sigma = |t: &Tensor| max_singular_value(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), 4, 4, 3, 3, 6, 1);
        let before = sigma(var.as_tensor());
        let clip = before / 2.0;
        let mut svc = Svc::new(std::slice::from_ref(&spec), clip, 100).unwrap();
        svc.measure_crop_error = true;
        svc.after_step(&store, 99).unwrap();
        assert_eq!(var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), w, "step 99 must not clip");
        svc.after_step(&store, 100).unwrap();
        let after = sigma(var.as_tensor());
        assert!(after <= clip + svc.last_crop_error + 1e-6 && after < before, "σ {before} → {after}, C {clip}, crop error {}", svc.last_crop_error);
        // Far above every singular value: unchanged.
        let kept = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut loose = Svc::new(std::slice::from_ref(&spec), 10.0 * before, 1).unwrap();
        loose.clip_all(&store).unwrap();
        assert_eq!(var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), kept);
    }
}
