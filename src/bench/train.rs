//! `normlab bench train`: the speed of one training step (SGD momentum 0.9, lr 0.01,
//! cross-entropy, augmented batches, a regularizer), split into its phases, with the achieved GFLOP/s beside
//! the machine's matrix-multiply rate measured in the same run.
//!
//! The batches come from a synthetic in-memory split (random bytes, random labels) through the
//! same augmentation as training, so the bench needs no dataset and measures what a real
//! epoch does per step.

use super::counts::StepCounts;
use super::device_clock::DeviceClock;
use super::op_profile;
use super::record::BenchResult;
use crate::data::{Split, IMAGE_BYTES};
use crate::models::{Arch, Model, NUM_CLASSES};
use crate::ops::conv::Threading;
use crate::ops::gemm::{gemm_on, Engine, View};
use crate::ops::{self, Kernels};
use crate::optim::Sgd;
use crate::regularize::{NormKind, RegConfig, Regularizer};
use anyhow::{bail, Result};
use candle_core::counters::Counts;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// Arguments of `normlab bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainBenchArgs {
    /// Model: vgg11, resnet18, senet18 or regnet200mf.
    #[arg(long)]
    pub model: String,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Kernels: `fast` (normlab's: CPU custom ops, cuDNN forward and backward on CUDA),
    /// `portable` (on CUDA: candle's forward, backward from a forward conv and a matmul) or
    /// `stock` (candle's own ops), to measure one against another.
    #[arg(long, default_value = "fast")]
    pub kernels: String,
    /// Also time each conv and BatchNorm layer's forward and backward in isolation (median of
    /// 3 calls after a warm-up call) and print where a step's time goes by op type.
    #[arg(long)]
    pub profile: bool,
    /// GEMM under the fast kernels: `faer` (AVX-512 where available) or `gemm` (the crate
    /// candle's matmul uses).
    #[arg(long, default_value = "faer")]
    pub gemm: String,
    /// Conv threading under the fast kernels: `batch` (image chunks in parallel, one thread
    /// per GEMM) or `gemm` (chunks in sequence, multi-threaded GEMMs).
    #[arg(long, default_value = "batch")]
    pub threading: String,
    /// CPU convolutions: `auto` (Winograd F(2×2, 3×3) for 3×3 stride-1 layers with ≥ 128
    /// channels, a direct kernel for narrow channel groups, im2col + GEMM for the rest) or
    /// `im2col` (every conv as im2col + GEMM), to measure one against the other. GFLOP/s below
    /// always count a direct convolution's FLOPs.
    #[arg(long, default_value = "auto")]
    pub conv_algo: String,
    /// Regularizer applied between backward and the optimizer, timed: plain, wd, nd-l1 or
    /// nd-linf (SVC runs every 100 steps, outside a short bench).
    #[arg(long, default_value = "nd-l1")]
    pub reg: String,
    /// Strength β of wd / nd-l1 / nd-linf.
    #[arg(long, default_value_t = 1e-3)]
    pub beta: f64,
    /// CUDA: exact f32 products only (no TF32 tensor cores in convolutions and matmuls), as
    /// PyTorch with `allow_tf32 = False`; the default allows TF32, as PyTorch's cuDNN does.
    #[arg(long)]
    pub fp32: bool,
}

impl TrainBenchArgs {
    /// The regularizer `--reg` and `--beta` describe.
    pub fn reg_config(&self) -> Result<RegConfig> {
        let beta = || crate::values::Positive::new(self.beta).map_err(|e| anyhow::anyhow!("--beta: {e}"));
        Ok(match self.reg.as_str() {
            "plain" => RegConfig::Plain,
            "wd" => RegConfig::WeightDecay { beta: beta()? },
            "nd-l1" => RegConfig::norm_decay(NormKind::L1, beta()?),
            "nd-linf" => RegConfig::norm_decay(NormKind::Linf, beta()?),
            other => bail!("unknown --reg '{other}' for bench train: expected plain, wd, nd-l1 or nd-linf"),
        })
    }
}

/// Wall time of each phase of a training step, summed over the timed steps.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepTimes {
    /// Augmented batch creation (crop, flip, to f32, to the device).
    pub data: Duration,
    /// Forward pass and loss.
    pub forward: Duration,
    /// `loss.backward()`.
    pub backward: Duration,
    /// The regularizer's gradient transform between backward and the optimizer.
    pub regularizer: Duration,
    /// The SGD update.
    pub optimizer: Duration,
    /// CPU time of the whole process (all threads) over the timed steps, where the OS tells
    /// (Linux): robust to other processes sharing the cores, unlike wall time.
    pub cpu: Option<Duration>,
}

impl StepTimes {
    /// The whole step.
    pub fn total(&self) -> Duration {
        self.data + self.forward + self.backward + self.regularizer + self.optimizer
    }

    /// Adds another step's phases (not its CPU time).
    fn add(&mut self, t: &StepTimes) {
        self.data += t.data;
        self.forward += t.forward;
        self.backward += t.backward;
        self.regularizer += t.regularizer;
        self.optimizer += t.optimizer;
    }
}

/// The timed steps run as training runs them: no waits between phases, the losses read back
/// once after the last step.
#[derive(Debug, Clone, Copy)]
pub struct Steady {
    /// Wall time of the steps, the final wait for the device included.
    pub wall: Duration,
    /// Host time: the wall time minus the time the host waited for the device (CUDA).
    pub host: Duration,
    /// Device time (CUDA events around each step; `None` on the CPU, where ops run on the host
    /// as they are issued and host time is the step).
    pub device: Option<Duration>,
    /// The counters' difference over the steps (all of them, not per step).
    pub counts: Counts,
}

/// What [`time_steps`] measured.
#[derive(Debug, Clone, Copy)]
pub struct BenchTimes {
    /// The phase split (on a GPU from separate steps with a wait after each phase).
    pub phases: StepTimes,
    /// The steps as training runs them.
    pub steady: Steady,
}

/// Runs the bench and prints its report.
pub fn run(args: &TrainBenchArgs) -> Result<()> {
    let arch = Arch::parse(&args.model)?;
    let device = crate::device::open(&args.device)?;
    let kernels = Kernels::parse(&args.kernels)?;
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1 (got {} and {})", args.batch, args.steps);
    }
    let engine = match args.gemm.as_str() {
        "faer" => Engine::Faer,
        "gemm" => Engine::Gemm,
        other => bail!("unknown --gemm '{other}': expected faer or gemm"),
    };
    ops::set_kernels(kernels);
    ops::gemm::set_engine(engine);
    ops::conv::set_threading(match args.threading.as_str() {
        "batch" => Threading::Batch,
        "gemm" => Threading::Gemm,
        other => bail!("unknown --threading '{other}': expected batch or gemm"),
    });
    ops::conv::set_specialized(match args.conv_algo.as_str() {
        "auto" => true,
        "im2col" => false,
        other => bail!("unknown --conv-algo '{other}': expected auto or im2col"),
    });
    crate::device::set_tf32(!args.fp32);
    let model = Model::new(arch, 1, &device)?;
    let mut reg = Regularizer::new(args.reg_config()?, &model)?;
    let candle_rate = matmul_gflops(&device)?;
    let faer_rate = if device.is_cpu() { Some(faer_gflops()) } else { None };
    let matmul = faer_rate.unwrap_or(0.0).max(candle_rate);
    let run = time_steps(&model, &mut reg, &device, args.batch, args.steps)?;
    let times = run.phases;
    let images = (args.batch * args.steps) as f64;
    // Images/s of the steps as training runs them (on the CPU the same steps as the phases).
    let secs = run.steady.wall.as_secs_f64();
    let images_per_s = images / secs;
    // Forward is 2 FLOPs per MAC; forward + backward (input and weight gradients) about 3×.
    let flops_per_image = 3.0 * 2.0 * model.forward_macs() as f64;
    let achieved = flops_per_image * images_per_s / 1e9;
    println!(
        "bench train: model {} device {} kernels {} gemm {} threading {} conv-algo {} batch {} steps {} threads {} tf32 {}",
        arch.name(),
        crate::device::describe(&device),
        kernels.name(),
        args.gemm,
        args.threading,
        args.conv_algo,
        args.batch,
        args.steps,
        rayon::current_num_threads(),
        crate::device::tf32() && !device.is_cpu()
    );
    println!("images/s            {images_per_s:10.1}");
    println!("step                {:10.1} ms", 1e3 * secs / args.steps as f64);
    if let Some(cpu) = times.cpu {
        println!("images/CPU-s        {:10.1} (process CPU time, all threads)", images / cpu.as_secs_f64());
    }
    let per_step = |d: Duration| 1e3 * d.as_secs_f64() / args.steps as f64;
    let host_ms = per_step(run.steady.host);
    let device_ms = run.steady.device.map(per_step);
    match device_ms {
        Some(d) => println!("host / device       {host_ms:10.2} / {d:.2} ms per step (host: issuing, waits excluded; device: CUDA events, a step's first to last command)"),
        None => println!("host / device       {host_ms:10.2} ms / n/a (CPU: ops run on the host as issued; host time is the step)"),
    }
    let counts = StepCounts::of(&run.steady.counts, args.steps, &device);
    for line in counts.lines(&run.steady.counts, args.steps, &device) {
        println!("{line}");
    }
    let phase_total = times.total().as_secs_f64();
    let share = |d: Duration| 100.0 * d.as_secs_f64() / phase_total;
    if !device.is_cpu() {
        println!("phases (separate steps, waiting for the device after each phase; {:.1} ms per step):", per_step(times.total()));
    }
    for (name, d) in [("data", times.data), ("forward", times.forward), ("backward", times.backward), ("regularizer", times.regularizer), ("optimizer", times.optimizer)] {
        let note = if name == "regularizer" { format!(" ({})", args.reg) } else { String::new() };
        println!("  {name:<17} {:10.1} ms {:5.1}%{note}", per_step(d), share(d));
    }
    println!("fwd+bwd GFLOP/img   {:10.3}", flops_per_image / 1e9);
    println!("achieved GFLOP/s    {achieved:10.1}");
    println!("matmul GFLOP/s      {candle_rate:10.1} ({n}² f32 via candle's matmul, best of 3)", n = matmul_size(&device));
    if let Some(rate) = faer_rate {
        println!("matmul GFLOP/s      {rate:10.1} (2048² f32 via faer, best of 3)");
    }
    println!("ratio               {:10.1}% of the faster matmul", 100.0 * achieved / matmul);
    let result = BenchResult {
        tool: "normlab".into(),
        model: arch.name().into(),
        device: crate::device::describe(&device),
        precision: if !device.is_cpu() && crate::device::tf32() { "tf32" } else { "fp32" }.into(),
        batch: args.batch,
        steps: args.steps,
        images_per_s,
        step_ms: 1e3 * secs / args.steps as f64,
        host_ms_per_step: Some(host_ms),
        device_ms_per_step: device_ms,
        launches_per_step: Some(counts.launches),
        allocations_per_step: Some(counts.allocations),
        copies_per_step: Some(counts.copies),
        syncs_per_step: Some(counts.syncs),
        cudnn_per_step: Some(counts.cudnn),
        build: Some(env!("NORMLAB_GIT_COMMIT").to_string()),
    };
    if args.profile {
        let (rows, convs) = op_profile::profile_layers(&model, &device, args.batch)?;
        op_profile::print(&rows, times.forward + times.backward, args.steps);
        op_profile::print_convs(&convs);
    }
    // Last, so scripts find it as the output's final RESULT line.
    println!("{}", result.line()?);
    Ok(())
}

/// A synthetic split of `n` random images and labels, seeded.
pub fn synthetic_split(n: usize, seed: u64) -> Result<Split> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images: Vec<u8> = (0..n * IMAGE_BYTES).map(|_| rng.gen()).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..NUM_CLASSES as u8)).collect();
    Split::new(images, labels)
}

/// Times `steps` training steps of `model` with `reg` (after one untimed warm-up step): as
/// training runs them (counted; on CUDA with device time from events) and phase by phase.
/// On the CPU one loop gives both (a CPU op is done when it returns, so the phases need no
/// waits); on a GPU the phase split waits for the device after each phase, which training does
/// not, so it runs as separate steps after the steady ones.
pub fn time_steps(model: &Model, reg: &mut Regularizer, device: &Device, batch: usize, steps: usize) -> Result<BenchTimes> {
    let split = synthetic_split(batch.max(256), 7)?;
    let mut sgd = Sgd::new(0.01, 0.9);
    let cpu = device.is_cpu();
    // Warm-up (module loads, cuDNN plans, first allocations), untimed.
    let (_, loss) = one_step(model, reg, &mut sgd, &split, device, batch, 0, false)?;
    check_losses(&[loss], 0)?;
    let mut clock = DeviceClock::new(device)?;
    let mut phases = StepTimes::default();
    let mut losses = Vec::with_capacity(steps);
    let cpu_start = process_cpu_time();
    let (counts0, wall0) = (Counts::now(), Instant::now());
    for step in 1..=steps {
        if let Some(c) = clock.as_mut() {
            c.start()?;
        }
        let (t, loss) = one_step(model, reg, &mut sgd, &split, device, batch, step, false)?;
        if let Some(c) = clock.as_mut() {
            c.stop()?;
        }
        phases.add(&t);
        losses.push(loss);
    }
    if !cpu {
        device.synchronize()?;
    }
    let wall = wall0.elapsed();
    let counts = Counts::now().since(&counts0);
    phases.cpu = cpu_start.zip(process_cpu_time()).map(|(a, b)| b.saturating_sub(a));
    let device_time = match &clock {
        Some(c) => Some(Duration::from_secs_f64(c.total_seconds()?)),
        None => None,
    };
    let host = wall.saturating_sub(Duration::from_nanos(counts.wait_ns));
    let steady = Steady { wall, host, device: device_time, counts };
    check_losses(&losses, 1)?;
    if !cpu {
        // The phase split, a wait after each phase (kept out of the counts above).
        let mut split_times = StepTimes::default();
        for step in steps + 1..=2 * steps {
            let (t, loss) = one_step(model, reg, &mut sgd, &split, device, batch, step, true)?;
            check_losses(&[loss], step)?;
            split_times.add(&t);
        }
        split_times.cpu = phases.cpu;
        phases = split_times;
    }
    Ok(BenchTimes { phases, steady })
}

/// One training step on batch `step` of `split`; with `wait`, the device is waited for after
/// each phase so the phase times are the device's. Returns the phase times (host time when
/// not waiting) and the loss, left on the device.
#[allow(clippy::too_many_arguments)]
fn one_step(model: &Model, reg: &mut Regularizer, sgd: &mut Sgd, split: &Split, device: &Device, batch: usize, step: usize, wait: bool) -> Result<(StepTimes, Tensor)> {
    let sync = || if wait { device.synchronize() } else { Ok(()) };
    let mut t = StepTimes::default();
    let idx: Vec<usize> = (0..batch).map(|i| (step * batch + i) % split.len()).collect();
    let clock = Instant::now();
    let (x, y) = split.augmented_batch(&idx, step as u64, device)?;
    sync()?;
    t.data = clock.elapsed();
    let clock = Instant::now();
    let logits = model.forward(&x, true)?;
    let loss = crate::ops::cross_entropy(&logits, &y)?;
    sync()?;
    t.forward = clock.elapsed();
    let clock = Instant::now();
    let mut grads = loss.backward()?;
    sync()?;
    t.backward = clock.elapsed();
    let clock = Instant::now();
    let terms = reg.apply(model, &mut grads)?;
    sync()?;
    t.regularizer = clock.elapsed();
    let clock = Instant::now();
    sgd.step(&model.params, &grads, &terms)?;
    sync()?;
    t.optimizer = clock.elapsed();
    Ok((t, loss.detach()))
}

/// Fails on the first non-finite loss (`first`: the bench step of `losses[0]`), reading them
/// back in one copy.
fn check_losses(losses: &[Tensor], first: usize) -> Result<()> {
    if losses.is_empty() {
        return Ok(());
    }
    let values = Tensor::stack(losses, 0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!("loss is {v} at bench step {}: the model diverged", first + i);
    }
    Ok(())
}

/// The side of the square product [`matmul_gflops`] times: 2048 on a CPU, 8192 on a GPU (a
/// smaller one leaves an H100 mostly idle).
pub fn matmul_size(device: &Device) -> usize {
    if device.is_cpu() {
        2048
    } else {
        8192
    }
}

/// The device's f32 matrix-multiply rate in GFLOP/s: a square product through candle (its own
/// GEMM and threading on the CPU, cuBLAS on CUDA), best of three.
pub fn matmul_gflops(device: &Device) -> Result<f64> {
    let n = matmul_size(device);
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    a.matmul(&b)?;
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let clock = Instant::now();
        let c = a.matmul(&b)?;
        device.synchronize()?;
        best = best.min(clock.elapsed().as_secs_f64());
        drop(c);
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// The CPU's f32 matrix-multiply rate in GFLOP/s through faer (AVX-512 kernels where the CPU
/// has them): a 2048×2048 product, best of three.
pub fn faer_gflops() -> f64 {
    let n = 2048;
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 89) as f32 - 44.0) / 89.0).collect();
    let mut c = vec![0f32; n * n];
    let mut best = f64::INFINITY;
    for rep in 0..4 {
        let clock = Instant::now();
        gemm_on(Engine::Faer, n, n, n, &mut c, n, false, true, View::rows(&a, n), View::rows(&b, n));
        if rep > 0 {
            best = best.min(clock.elapsed().as_secs_f64());
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Assumes the usual 100 clock ticks per second.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A training step of a small model (vgg11, batch 2, norm decay in the step) counted step
    /// by step: the same nonzero counts every step after the warm-up.
    #[test]
    fn a_training_step_has_stable_nonzero_counts() {
        let device = Device::Cpu;
        let model = Model::new(Arch::Vgg11, 1, &device).unwrap();
        let nd = RegConfig::norm_decay(NormKind::L1, crate::values::Positive::new(1e-3).unwrap());
        let mut reg = Regularizer::new(nd, &model).unwrap();
        let mut sgd = Sgd::new(0.01, 0.9);
        let split = synthetic_split(8, 3).unwrap();
        let mut per_step = Vec::new();
        for step in 0..3 {
            let before = Counts::now();
            one_step(&model, &mut reg, &mut sgd, &split, &device, 2, step, false).unwrap();
            per_step.push(Counts::now().since(&before));
        }
        let c = per_step[1];
        assert_eq!(per_step[2], c, "step 2 differs from step 1");
        // Norm decay reads every layer's maximiser back in one copy per step.
        assert!(c.ops > 200 && c.storages > 200 && c.uploads >= 2 && c.readbacks >= 1, "{c:?}");
        assert_eq!((c.launches, c.allocs, c.htod, c.waits), (0, 0, 0, 0), "CUDA counters moved on the CPU: {c:?}");
    }
}
