//! Singular value clipping (SVC, Sedghi et al. 2019): each clipped conv's singular values on
//! its n×n input are clipped at C by [`crate::norms::fft_svd::clip_grouped_conv_kernel`] (FFT
//! of the kernel zero-padded to n×n, SVD per frequency, clip, inverse FFT, real part, crop to
//! k×k) and the clipped kernel replaces the weight. Linear layers and BatchNorm are left
//! alone, as in the reference code; the optimizer's momentum is kept.
//!
//! Which convs, how a grouped one is clipped and when follow the configuration's
//! [`Coverage`] ([`super::coverage`]): `reference` clips before the optimizer step of every
//! epoch's batches 1, 1 + every, …, skips convs on inputs smaller than the kernel and clips a
//! grouped conv's stacked blocks; `all` clips every conv exactly per group after every
//! `every`-th step of the run. A final clip after the last step is the training loop's to
//! ask for ([`Svc::clip_all`]), since BatchNorm's statistics must be re-estimated after it.

use super::coverage::{self, Coverage, SvcGrouping};
use crate::models::{LayerSpec, ParamStore};
use crate::norms::fft_svd::clip_grouped_conv_kernel;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// SVC's schedule and the convs it clips.
pub struct Svc {
    clip: f64,
    every: usize,
    coverage: Coverage,
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
    /// SVC at `clip` with period `every` for the convs among `layers` that `coverage` clips.
    pub fn new(layers: &[LayerSpec], clip: f64, every: usize, coverage: Coverage) -> Result<Self> {
        let convs: Vec<LayerSpec> = layers.iter().filter(|l| coverage::svc_skip(l, coverage).is_none()).cloned().collect();
        if let Some(l) = convs.iter().find(|l| l.in_h != l.in_w) {
            bail!("svc clips convs on square inputs; {} has a {}×{} input", l.name, l.in_h, l.in_w);
        }
        if coverage == Coverage::Reference && every < 2 {
            bail!("svc every {every} with coverage reference never clips (the reference clips when the batch index % every == 1): use every ≥ 2, or coverage all");
        }
        Ok(Self { clip, every, coverage, convs, measure_crop_error: false, last_crop_error: 0.0 })
    }

    /// The weights of the convs it clips, in layer order.
    pub fn acted_on(&self) -> impl Iterator<Item = &str> {
        self.convs.iter().map(|l| l.name.as_str())
    }

    /// Clips before the optimizer step of batch `batch` (from 0 within its epoch) when the
    /// coverage's schedule says so ([`Svc::due_before`]).
    pub fn before_step(&mut self, params: &ParamStore, batch: usize) -> Result<()> {
        if self.due_before(batch) {
            self.clip_all(params)?;
        }
        Ok(())
    }

    /// Clips after optimizer step `step` (from 1 over the run) when the coverage's schedule
    /// says so ([`Svc::due`]).
    pub fn after_step(&mut self, params: &ParamStore, step: usize) -> Result<()> {
        if self.due(step) {
            self.clip_all(params)?;
        }
        Ok(())
    }

    /// Whether optimizer step `step` (from 1 over the run) ends with a clipping
    /// ([`coverage::svc_clips_after_step`]: every `every`-th under `all`, never under
    /// `reference`).
    pub fn due(&self, step: usize) -> bool {
        coverage::svc_clips_after_step(self.coverage, self.every, step)
    }

    /// Whether the optimizer step of batch `batch` (from 0 within its epoch) is preceded by a
    /// clipping ([`coverage::svc_clips_before_step`]: batches ≡ 1 mod `every` under
    /// `reference`, never under `all`).
    pub fn due_before(&self, batch: usize) -> bool {
        coverage::svc_clips_before_step(self.coverage, self.every, batch)
    }

    /// Clips every covered conv's singular values at C now (on the host, then back to the
    /// device); a grouped conv per group or stacked, by the coverage
    /// ([`coverage::svc_grouping`]: stacked is the clip of the ungrouped conv whose kernel is
    /// the stored out_c × in_c/groups × k × k tensor).
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
            let (in_c, groups) = match coverage::svc_grouping(self.coverage) {
                SvcGrouping::PerGroup => (spec.in_c, spec.groups),
                SvcGrouping::Stacked => (spec.in_c / spec.groups, 1),
            };
            let (clipped, crop_error) = clip_grouped_conv_kernel(&values, spec.out_c, in_c, spec.kh, spec.kw, spec.in_h, groups, self.clip, self.measure_crop_error);
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
    use crate::models::{LayerKind, Role};
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
        let mut svc = Svc::new(std::slice::from_ref(&spec), clip, 100, Coverage::All).unwrap();
        svc.measure_crop_error = true;
        svc.after_step(&store, 99).unwrap();
        assert_eq!(var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), w, "step 99 must not clip");
        svc.after_step(&store, 100).unwrap();
        let after = sigma(var.as_tensor());
        assert!(after <= clip + svc.last_crop_error + 1e-6 && after < before, "σ {before} → {after}, C {clip}, crop error {}", svc.last_crop_error);
        // Far above every singular value: unchanged.
        let kept = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut loose = Svc::new(std::slice::from_ref(&spec), 10.0 * before, 1, Coverage::All).unwrap();
        loose.clip_all(&store).unwrap();
        assert_eq!(var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), kept);
    }

    /// A store holding `w` as the weight `c.weight` of shape `shape`.
    fn store_of(w: &[f32], shape: &[usize]) -> (ParamStore, candle_core::Var) {
        let mut store = ParamStore::new();
        let var = store.insert("c.weight", Tensor::from_vec(w.to_vec(), shape, &Device::Cpu).unwrap(), Role::Trainable).unwrap();
        (store, var)
    }

    fn values(v: &candle_core::Var) -> Vec<f32> {
        v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn grouped_conv_is_clipped_per_group_or_stacked_as_the_reference() {
        // A 1×1 conv with 2 groups of one channel each: weight (2, 1, 1, 1) = (3, 4). Its
        // operator is diag(3, 4) at every frequency: per group (all) each singular value is
        // clipped to 1 → (1, 1). The reference transforms the stored 2×1 kernel, whose one
        // singular value is ‖(3, 4)‖ = 5 → scaled to 1: (0.6, 0.8).
        let spec = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 2, in_h: 4, in_w: 4, out_c: 2, kh: 1, kw: 1, stride: 1, padding: 0, groups: 2, bias: false };
        for (coverage, want) in [(Coverage::All, [1.0f32, 1.0]), (Coverage::Reference, [0.6, 0.8])] {
            let (store, var) = store_of(&[3.0, 4.0], &[2, 1, 1, 1]);
            Svc::new(std::slice::from_ref(&spec), 1.0, 100, coverage).unwrap().clip_all(&store).unwrap();
            let got = values(&var);
            assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6), "{coverage:?}: {got:?}, expected {want:?}");
        }
    }

    #[test]
    fn reference_skips_convs_on_inputs_smaller_than_the_kernel() {
        // vgg11's features.22: 3×3 on a 2×2 map.
        let spec = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 2, in_h: 2, in_w: 2, out_c: 2, kh: 3, kw: 3, stride: 1, padding: 1, groups: 1, bias: false };
        let w: Vec<f32> = (0..36).map(|i| (i as f32 - 17.0) / 4.0).collect();
        let (store, var) = store_of(&w, &[2, 2, 3, 3]);
        let mut reference = Svc::new(std::slice::from_ref(&spec), 0.1, 100, Coverage::Reference).unwrap();
        assert_eq!(reference.acted_on().count(), 0);
        reference.clip_all(&store).unwrap();
        assert_eq!(values(&var), w, "reference leaves the conv alone");
        let mut all = Svc::new(std::slice::from_ref(&spec), 0.1, 100, Coverage::All).unwrap();
        assert_eq!(all.acted_on().collect::<Vec<_>>(), ["c.weight"]);
        all.clip_all(&store).unwrap();
        assert_ne!(values(&var), w, "all clips it");
    }

    #[test]
    fn reference_clips_before_the_step_of_batches_one_mod_every() {
        let spec = LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 1, in_h: 4, in_w: 4, out_c: 1, kh: 1, kw: 1, stride: 1, padding: 0, groups: 1, bias: false };
        let (store, var) = store_of(&[3.0], &[1, 1, 1, 1]);
        let mut svc = Svc::new(std::slice::from_ref(&spec), 1.0, 4, Coverage::Reference).unwrap();
        for step in 1..=12 {
            svc.after_step(&store, step).unwrap();
        }
        assert_eq!(values(&var), [3.0], "reference never clips after a step");
        for batch in [0, 2, 3, 4, 8] {
            svc.before_step(&store, batch).unwrap();
            assert_eq!(values(&var), [3.0], "batch {batch}");
        }
        svc.before_step(&store, 5).unwrap();
        assert_eq!(values(&var), [1.0], "batch 5 ≡ 1 mod 4");
        var.set(&Tensor::new(&[[[[3.0f32]]]], &Device::Cpu).unwrap()).unwrap();
        let mut all = Svc::new(std::slice::from_ref(&spec), 1.0, 4, Coverage::All).unwrap();
        for batch in 0..8 {
            all.before_step(&store, batch).unwrap();
        }
        all.after_step(&store, 3).unwrap();
        assert_eq!(values(&var), [3.0], "all clips after steps 4, 8, …, never before one");
        all.after_step(&store, 4).unwrap();
        assert_eq!(values(&var), [1.0]);
        assert!(Svc::new(std::slice::from_ref(&spec), 1.0, 1, Coverage::Reference).is_err(), "every 1 never clips under the reference rule");
    }
}
