//! `normlab selftest --device D`: checks that a device computes what the CPU computes, on
//! the same weights and batch, for every model — the check a GPU machine (which has no
//! cargo to run the test suite) can run from the binary alone.
//!
//! Compared, per model: eval-mode logits, train-mode logits (batch-statistic BatchNorm) and
//! the running statistics they update, input gradients, weight gradients; the exact layer
//! norms computed from weights read back from the device; and, where given, one step of
//! each regularizer and an attack on a fixed batch (see the checks list).
//!
//! Tolerance: relative ℓ2 error ‖a − b‖ / max(‖b‖, tiny) ≤ 1e-3 for forward values and
//! ≤ 1e-2 for gradients. f32 sums taken in another order (GPU reductions, cuDNN algorithm
//! choice, im2col vs direct convolution) differ by ~1e-6 relative per op; a 20-layer
//! network with BatchNorm amplifies that, and gradients through BatchNorm's batch
//! statistics more so. A wrong kernel (wrong stride, padding, group, or a transposed
//! weight) gives errors of order 1.

use crate::attack::protocol::{self, AttackConfig, AttackKind};
use crate::data::Split;
use crate::models::{Arch, Model};
use crate::norms::NormKind;
use crate::optim::Sgd;
use crate::regularize::{NdVariant, RegConfig, Regularizer};
use crate::values::{Fraction, NonEmpty, Positive, Radius};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

/// Relative tolerance for forward values.
pub const FORWARD_TOL: f64 = 1e-3;
/// Relative tolerance for gradients.
pub const GRAD_TOL: f64 = 1e-2;

/// The outcome of one comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was compared, e.g. `resnet18 input gradient`.
    pub name: String,
    /// Relative ℓ2 error between the device and the CPU.
    pub rel_error: f64,
    /// The tolerance it was held to.
    pub tolerance: f64,
    /// Whether it passed.
    pub pass: bool,
}

/// Relative ℓ2 error of `a` against the reference `b` (computed in f64 on the CPU).
pub fn rel_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let norm = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(diff / norm.max(1e-30))
}

fn check(name: String, a: &Tensor, b: &Tensor, tolerance: f64) -> Result<Check> {
    let rel_error = rel_error(a, b).with_context(|| format!("comparing {name}"))?;
    Ok(Check { name, rel_error, tolerance, pass: rel_error <= tolerance })
}

/// Forward, backward and BatchNorm of one model on `device` against the CPU, same weights
/// (seed) and batch. `batch` images are random in [0, 1] from a fixed seed.
pub fn compare_model(arch: Arch, device: &Device, batch: usize) -> Result<Vec<Check>> {
    let cpu = Device::Cpu;
    let reference = Model::new(arch, 7, &cpu)?;
    let target = Model::new(arch, 7, device)?;
    let x_cpu = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let data: Vec<f32> = (0..batch * 3 * 32 * 32).map(|_| rng.gen::<f32>()).collect();
        Tensor::from_vec(data, (batch, 3, 32, 32), &cpu)?
    };
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let y_cpu = Tensor::new(labels.as_slice(), &cpu)?;
    let x_dev = x_cpu.to_device(device)?;
    let y_dev = y_cpu.to_device(device)?;
    let name = arch.name();
    let mut out = Vec::new();

    // Eval-mode logits and input gradients (what attacks use).
    let (logits_ref, gx_ref) = eval_logits_and_input_grad(&reference, &x_cpu, &y_cpu)?;
    let (logits_dev, gx_dev) = eval_logits_and_input_grad(&target, &x_dev, &y_dev)?;
    out.push(check(format!("{name} eval logits"), &logits_dev, &logits_ref, FORWARD_TOL)?);
    out.push(check(format!("{name} input gradient"), &gx_dev, &gx_ref, GRAD_TOL)?);

    // Train-mode logits, weight gradients and the running statistics BatchNorm updated.
    let (train_ref, grads_ref) = train_logits_and_weight_grads(&reference, &x_cpu, &y_cpu)?;
    let (train_dev, grads_dev) = train_logits_and_weight_grads(&target, &x_dev, &y_dev)?;
    out.push(check(format!("{name} train logits"), &train_dev, &train_ref, FORWARD_TOL)?);
    let flat = |g: &[Tensor]| -> Result<Tensor> {
        let parts = g.iter().map(|t| t.to_device(&Device::Cpu)?.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    };
    out.push(check(format!("{name} weight gradients"), &flat(&grads_dev)?, &flat(&grads_ref)?, GRAD_TOL)?);
    let stats = |m: &Model| -> Result<Tensor> {
        let parts = m
            .params
            .entries()
            .iter()
            .filter(|e| e.name.ends_with("running_mean") || e.name.ends_with("running_var"))
            .map(|e| e.var.as_tensor().to_device(&Device::Cpu)?.flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    };
    out.push(check(format!("{name} BatchNorm running statistics"), &stats(&target)?, &stats(&reference)?, FORWARD_TOL)?);
    Ok(out)
}

fn eval_logits_and_input_grad(model: &Model, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let xv = Var::from_tensor(x)?;
    let logits = model.forward(xv.as_tensor(), false)?;
    let loss = crate::ops::cross_entropy(&logits, y)?;
    let grads = loss.backward()?;
    let gx = grads.get(xv.as_tensor()).context("no input gradient")?.clone();
    Ok((logits, gx))
}

fn train_logits_and_weight_grads(model: &Model, x: &Tensor, y: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
    let logits = model.forward(x, true)?;
    let loss = crate::ops::cross_entropy(&logits, y)?;
    let grads = loss.backward()?;
    let mut out = Vec::new();
    for e in model.params.trainable() {
        let g = grads.get(e.var.as_tensor()).with_context(|| format!("no gradient for {}", e.name))?;
        out.push(g.clone());
    }
    Ok((logits, out))
}

/// The regularizers checked ([`REG_STEPS`] optimizer steps of each, from the same batch).
fn regularizers() -> Vec<RegConfig> {
    vec![
        RegConfig::WeightDecay { beta: Positive(1e-2) },
        RegConfig::norm_decay(NormKind::L1, Positive(1e-2)),
        RegConfig::NormDecay {
            norm: NormKind::Linf,
            beta: Positive(1e-2),
            gamma: Fraction(0.5),
            variant: NdVariant::Paper,
            include_bn: true,
            coverage: crate::regularize::Coverage::All,
            project_bn: Some(crate::regularize::REFERENCE_BN_BOUND),
        },
        RegConfig::Svc { clip: Positive(1.0), every: std::num::NonZeroU32::MIN, coverage: crate::regularize::Coverage::All, final_clip: false },
        // The reference's moments: clipped before the step of batch 1, stacked groups.
        RegConfig::Svc { clip: Positive(1.0), every: std::num::NonZeroU32::new(2).expect("2 > 0"), coverage: crate::regularize::Coverage::Reference, final_clip: false },
    ]
}

/// Training steps of each regularizer checked against the CPU (three: the optimizer's momentum
/// buffers and norm decay's running buffers are carried from step to step; SVC one).
const REG_STEPS: usize = 3;

/// [`REG_STEPS`] training steps with each regularizer on `device` against the CPU: the weights
/// after backward, the regularizer's gradient transform, its pre-step work (the reference's
/// SVC clip, BatchNorm projection), SGD and (SVC with coverage all) the post-step clipping.
pub fn compare_regularizers(arch: Arch, device: &Device, batch: usize) -> Result<Vec<Check>> {
    let (x, y) = fixed_batch(batch)?;
    let mut out = Vec::new();
    for reg in regularizers() {
        let mut weights = Vec::new();
        for dev in [&Device::Cpu, device] {
            let model = Model::new(arch, 7, dev)?;
            let mut r = Regularizer::new(reg, &model)?;
            let mut sgd = Sgd::new(0.1, 0.9);
            // SVC's clipping (an FFT and SVD per conv on the CPU side) once; the others carry
            // state from step to step.
            let steps = if matches!(reg, RegConfig::Svc { .. }) { 1 } else { REG_STEPS };
            for step in 1..=steps {
                let logits = model.forward(&x.to_device(dev)?, true)?;
                let mut grads = crate::ops::cross_entropy(&logits, &y.to_device(dev)?)?.backward()?;
                let terms = r.apply(&model, &mut grads)?;
                // Batch index `step` of the epoch: the reference's SVC (every 2) clips before step 1.
                r.before_step(&model, step)?;
                sgd.step(&model.params, &grads, &terms)?;
                r.after_step(&model, step)?;
            }
            let parts = model.params.trainable().map(|e| e.var.as_tensor().to_device(&Device::Cpu)?.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?;
            weights.push(Tensor::cat(&parts, 0)?);
        }
        let steps = if matches!(reg, RegConfig::Svc { .. }) { 1 } else { REG_STEPS };
        out.push(check(format!("{} {steps} step(s) of {}", arch.name(), reg.describe(arch.layers())), &weights[1], &weights[0], FORWARD_TOL)?);
    }
    Ok(out)
}

/// Random values in [-1, 1) from `seed` as a tensor of `shape` on the CPU.
fn random_tensor(shape: &[usize], seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.gen_range(-1f32..1f32)).collect::<Vec<_>>(), shape, &Device::Cpu)?)
}

/// The fused training-step kernels one by one on `device` against the CPU path, on the same
/// random inputs: train-mode BatchNorm + ReLU (output, running statistics, input, γ and β
/// gradients), add + ReLU (output and both input gradients), cross-entropy (loss and logit
/// gradients) and three multi-tensor SGD steps over more tensors than one launch takes, with
/// a regularizer term on some (parameters and momentum buffers).
pub fn compare_fused(device: &Device) -> Result<Vec<Check>> {
    use crate::models::{ParamStore, Role};
    use crate::ops::{self, BatchNormState};
    let mut out = Vec::new();
    let to = |t: &Tensor, d: &Device| -> Result<Tensor> { Ok(t.to_device(d)?) };
    // BatchNorm + ReLU, train mode, through a loss Σ y·r.
    let (x, r) = (random_tensor(&[8, 16, 6, 6], 1)?, random_tensor(&[8, 16, 6, 6], 2)?);
    let (g0, b0) = (random_tensor(&[16], 3)?.affine(0.5, 1.0)?, random_tensor(&[16], 4)?);
    let mut results = Vec::new();
    for dev in [&Device::Cpu, device] {
        let xv = Var::from_tensor(&to(&x, dev)?)?;
        let (gv, bv) = (Var::from_tensor(&to(&g0, dev)?)?, Var::from_tensor(&to(&b0, dev)?)?);
        let (rm, rv) = (Var::from_tensor(&Tensor::zeros(16, DType::F32, dev)?)?, Var::from_tensor(&Tensor::ones(16, DType::F32, dev)?)?);
        let state = BatchNormState { running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
        let y = ops::batch_norm_relu(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), &state, true)?;
        let grads = (&y * to(&r, dev)?)?.sum_all()?.backward()?;
        let g = |v: &Var| grads.get(v.as_tensor()).cloned().context("no gradient");
        results.push([y.clone(), Tensor::cat(&[rm.as_tensor(), rv.as_tensor()], 0)?, g(&xv)?, Tensor::cat(&[g(&gv)?, g(&bv)?], 0)?]);
    }
    for (i, what) in ["output", "running statistics", "input gradient", "γ, β gradients"].iter().enumerate() {
        let tol = if i < 2 { FORWARD_TOL } else { GRAD_TOL };
        out.push(check(format!("fused BatchNorm + ReLU {what}"), &results[1][i], &results[0][i], tol)?);
    }
    // add + ReLU.
    let (a, b) = (random_tensor(&[4, 8, 5, 5], 5)?, random_tensor(&[4, 8, 5, 5], 6)?);
    let mut results = Vec::new();
    for dev in [&Device::Cpu, device] {
        let (av, bv) = (Var::from_tensor(&to(&a, dev)?)?, Var::from_tensor(&to(&b, dev)?)?);
        let y = ops::add_relu(av.as_tensor(), bv.as_tensor())?;
        let grads = (&y * to(&r.narrow(0, 0, 4)?.narrow(1, 0, 8)?.narrow(2, 0, 5)?.narrow(3, 0, 5)?, dev)?)?.sum_all()?.backward()?;
        let g = |v: &Var| grads.get(v.as_tensor()).cloned().context("no gradient");
        results.push([y.clone(), Tensor::cat(&[g(&av)?.flatten_all()?, g(&bv)?.flatten_all()?], 0)?]);
    }
    out.push(check("fused add + ReLU output".into(), &results[1][0], &results[0][0], FORWARD_TOL)?);
    out.push(check("fused add + ReLU input gradients".into(), &results[1][1], &results[0][1], GRAD_TOL)?);
    // Cross-entropy.
    let logits = random_tensor(&[37, 10], 7)?.affine(3.0, 0.0)?;
    let labels = Tensor::new((0..37u32).map(|i| (i * 7) % 10).collect::<Vec<_>>().as_slice(), &Device::Cpu)?;
    let mut results = Vec::new();
    for dev in [&Device::Cpu, device] {
        let lv = Var::from_tensor(&to(&logits, dev)?)?;
        let loss = ops::cross_entropy(lv.as_tensor(), &to(&labels, dev)?)?;
        let grads = (&loss * 2.0)?.backward()?;
        results.push([loss.reshape(1)?, grads.get(lv.as_tensor()).cloned().context("no gradient")?]);
    }
    out.push(check("fused cross-entropy loss".into(), &results[1][0], &results[0][0], FORWARD_TOL)?);
    out.push(check("fused cross-entropy logit gradient".into(), &results[1][1], &results[0][1], GRAD_TOL)?);
    // Multi-tensor SGD: 30 tensors (two launches), weight-decay-like terms on every third.
    let shapes: Vec<Vec<usize>> = (0..30).map(|i| vec![1 + i % 7, 3 + (i * 5) % 11]).collect();
    let mut results = Vec::new();
    for dev in [&Device::Cpu, device] {
        let mut store = ParamStore::new();
        let mut vars = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            vars.push(store.insert(&format!("p{i}"), to(&random_tensor(s, 100 + i as u64)?, dev)?, Role::Trainable)?);
        }
        let mut sgd = Sgd::new(0.05, 0.9);
        for step in 0..3u64 {
            // Gradients from a loss Σ p·c (c random per step): ∂/∂p = c.
            let mut loss = Tensor::zeros((), DType::F32, dev)?;
            for (i, v) in vars.iter().enumerate() {
                loss = (loss + (v.as_tensor() * to(&random_tensor(&shapes[i], 1000 * step + i as u64)?, dev)?)?.sum_all()?)?;
            }
            let grads = loss.backward()?;
            let mut terms = crate::optim::GradTerms::default();
            for (i, v) in vars.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
                terms.insert(&format!("p{i}"), 1e-2, v.as_tensor().detach());
            }
            sgd.step(&store, &grads, &terms)?;
        }
        let params = vars.iter().map(|v| v.as_tensor().to_device(&Device::Cpu)?.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?;
        let bufs = (0..30).map(|i| sgd.state()[&format!("p{i}")].to_device(&Device::Cpu)?.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?;
        results.push([Tensor::cat(&params, 0)?, Tensor::cat(&bufs, 0)?]);
    }
    out.push(check("fused SGD, 3 steps: parameters".into(), &results[1][0], &results[0][0], FORWARD_TOL)?);
    out.push(check("fused SGD, 3 steps: momentum buffers".into(), &results[1][1], &results[0][1], FORWARD_TOL)?);
    Ok(out)
}

/// An APGD-CE + APGD-T evaluation of a fixed batch on `device` against the CPU: the clean
/// margins must agree to the forward tolerance and the robust accuracies within one point
/// (a point whose loss ties within rounding may fall on either side).
pub fn compare_attack(arch: Arch, device: &Device, n: usize) -> Result<Vec<Check>> {
    let (x, y) = fixed_batch(n)?;
    let images: Vec<u8> = x.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| (v * 255.0).round() as u8).collect();
    let split = Split::new(images, y.to_vec1::<u32>()?.iter().map(|&l| l as u8).collect())?;
    let cfg = AttackConfig {
        attacks: NonEmpty(vec![AttackKind::ApgdCe, AttackKind::ApgdT]),
        eps: NonEmpty(vec![Radius(2.0 / 255.0)]),
        n: std::num::NonZeroUsize::new(n).context("compare_attack needs n ≥ 1")?,
        seed: 3,
        iters: std::num::NonZeroU32::new(10).expect("10 > 0"),
        ..AttackConfig::default()
    };
    let mut reports = Vec::new();
    for dev in [&Device::Cpu, device] {
        let model = Model::new(arch, 7, dev)?;
        let f = |t: &Tensor| model.forward(t, false);
        reports.push(protocol::evaluate(&f, &split, &cfg, n, dev)?.remove(0));
    }
    let margins = |r: &protocol::RobustReport| Tensor::new(r.margins.as_slice(), &Device::Cpu);
    let name = arch.name();
    let mut out = vec![check(format!("{name} attack clean margins"), &margins(&reports[1])?, &margins(&reports[0])?, FORWARD_TOL)?];
    let diff = (reports[1].robust_acc - reports[0].robust_acc).abs();
    let tolerance = 1.0 / n as f64 + 1e-12;
    out.push(Check { name: format!("{name} APGD-CE + APGD-T robust accuracy"), rel_error: diff, tolerance, pass: diff <= tolerance });
    Ok(out)
}

fn fixed_batch(batch: usize) -> Result<(Tensor, Tensor)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let data: Vec<f32> = (0..batch * 3 * 32 * 32).map(|_| rng.gen::<u8>() as f32 / 255.0).collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    Ok((Tensor::from_vec(data, (batch, 3, 32, 32), &Device::Cpu)?, Tensor::new(labels.as_slice(), &Device::Cpu)?))
}

/// Arguments of `normlab selftest`.
#[derive(Debug, clap::Args)]
pub struct SelftestArgs {
    /// The device to check against the CPU (`cuda:0`; `cpu` checks the CPU against itself,
    /// which exercises every path without a GPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Models to check (default: the paper's four).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub models: Vec<Arch>,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Kernels on the device: `fast` (cuDNN forward and backward on CUDA), `portable` or
    /// `stock` (candle's own ops, on the CPU reference too).
    #[arg(long, default_value = "fast")]
    pub kernels: String,
    /// Allow TF32 tensor cores on CUDA. Off by default: the check compares exact f32 with the
    /// CPU (TF32 rounds products to 10 mantissa bits, ~1e-3 relative, beyond the tolerances).
    #[arg(long)]
    pub tf32: bool,
}

/// Runs `normlab selftest`: every check, a line each; exits non-zero on any mismatch.
pub fn run(args: SelftestArgs) -> Result<()> {
    crate::device::set_tf32(args.tf32);
    crate::ops::set_kernels(crate::ops::Kernels::parse(&args.kernels)?);
    let device = crate::device::open(&args.device)?;
    let models = if args.models.is_empty() { Arch::PAPER.to_vec() } else { args.models.clone() };
    let mut checks = Vec::new();
    let print = |done: &[Check]| {
        if !args.json {
            for c in done {
                println!("{:<4} {:<55} rel. error {:>10.3e} (tolerance {:.0e})", if c.pass { "ok" } else { "FAIL" }, c.name, c.rel_error, c.tolerance);
            }
        }
    };
    // The fused kernels alone first: a failure there explains the model checks below.
    let clock = std::time::Instant::now();
    let fused = compare_fused(&device)?;
    print(&fused);
    if !args.json {
        eprintln!("selftest: fused kernel checks in {:.1} s", clock.elapsed().as_secs_f64());
    }
    checks.extend(fused);
    // Each group's lines are printed as soon as it is done, so a run cut short by a time
    // limit still shows what passed and where it stopped.
    type Group = fn(Arch, &Device, usize) -> Result<Vec<Check>>;
    let groups: [(&str, Group); 3] = [("model", compare_model), ("regularizers", compare_regularizers), ("attack", compare_attack)];
    for arch in models {
        for (what, group) in groups {
            let clock = std::time::Instant::now();
            let done = group(arch, &device, args.batch)?;
            print(&done);
            if !args.json {
                eprintln!("selftest: {} {what} checks in {:.1} s", arch.name(), clock.elapsed().as_secs_f64());
            }
            checks.extend(done);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} selftest checks failed on {}", checks.len(), args.device);
    }
    eprintln!("selftest: all {} checks passed on {} against the CPU", checks.len(), args.device);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_against_itself_passes() {
        let checks = compare_model(Arch::Vgg11, &Device::Cpu, 2).unwrap();
        assert!(checks.iter().all(|c| c.pass && c.rel_error == 0.0), "{checks:?}");
        let checks = compare_regularizers(Arch::Vgg11, &Device::Cpu, 2).unwrap();
        assert!(checks.iter().all(|c| c.pass), "{checks:?}");
        let checks = compare_fused(&Device::Cpu).unwrap();
        assert_eq!(checks.len(), 10);
        assert!(checks.iter().all(|c| c.pass && c.rel_error == 0.0), "{checks:?}");
    }

    #[test]
    fn rel_error_catches_a_wrong_result() {
        let a = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1f32, 2.0, 3.5], &Device::Cpu).unwrap();
        assert!(rel_error(&a, &b).unwrap() > FORWARD_TOL);
        assert_eq!(rel_error(&a, &a).unwrap(), 0.0);
    }
}
