//! Where a training step's forward and backward time goes, by op type: each conv and
//! BatchNorm layer of a model is run alone, at the model's shapes and batch size, through the
//! kernels the models use (`crate::ops`), and timed forward and backward (input and
//! weight gradients, as in training). What the layers do not account for (ReLU, pooling, residual adds,
//! loss, gradient bookkeeping) is the rest of the measured step.

use crate::models::{LayerKind, Model};
use crate::ops::{self, BatchNormState};
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use std::time::{Duration, Instant};

/// Time of one op type over all layers of a model, per step.
#[derive(Debug, Clone)]
pub struct OpTime {
    /// `conv fwd`, `conv bwd data` (input gradient), `conv bwd weight` (weight gradient),
    /// `bn fwd`, `bn bwd`.
    pub op: &'static str,
    /// Layers timed.
    pub layers: usize,
    /// Sum over the layers of one warm call each (the median of [`REPEATS`]).
    pub time: Duration,
    /// Multiply-adds of those calls (convs; 0 for BatchNorm), for the achieved rate.
    pub macs: usize,
    /// Bytes those calls must read and write at the least (BatchNorm, which is bound by
    /// memory: forward reads the input twice and writes the output; backward reads the input
    /// and its gradient twice each and writes the input gradient), for the achieved GB/s.
    pub bytes: usize,
}

/// Timed calls per op after the warm-up call; the median is reported.
const REPEATS: usize = 3;

/// The median time of [`REPEATS`] calls of `f`, after one untimed call. A single cold call
/// overstated small layers by up to 2× (fresh pages for its output, cold caches and code),
/// where a training step reuses the memory of the step before; the median drops a call that
/// another tenant of the machine interrupted.
fn timed<T>(device: &Device, f: impl Fn() -> Result<T>) -> Result<Duration> {
    drop(f()?);
    device.synchronize()?;
    let mut times = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let clock = Instant::now();
        let out = f()?;
        device.synchronize()?;
        times.push(clock.elapsed());
        drop(out);
    }
    times.sort();
    Ok(times[REPEATS / 2])
}

/// One conv layer's three timings, for the per-layer lines.
#[derive(Debug, Clone)]
pub struct ConvTime {
    /// `c×h×w → o kK×K sS gG`.
    pub shape: String,
    /// Forward, input gradient (zero for the stem) and weight gradient.
    pub times: [Duration; 3],
    /// Multiply-adds of the forward (each gradient has as many).
    pub macs: usize,
}

/// Times every conv and BatchNorm layer of `model` at batch `batch`: the totals by op type,
/// and each conv layer apart.
pub fn profile_layers(model: &Model, device: &Device, batch: usize) -> Result<(Vec<OpTime>, Vec<ConvTime>)> {
    let mut convs = Vec::new();
    let names = ["conv fwd", "conv bwd data", "conv bwd weight", "bn fwd", "bn bwd"];
    let mut rows: Vec<OpTime> = names.iter().map(|&op| OpTime { op, layers: 0, time: Duration::ZERO, macs: 0, bytes: 0 }).collect();
    for (i, spec) in model.layers.iter().enumerate() {
        let x = Tensor::randn(0f32, 1.0, (batch, spec.in_c, spec.in_h, spec.in_w), device)?;
        match spec.kind {
            LayerKind::Conv => {
                let w = Tensor::randn(0f32, 0.1, spec.weight_shape().as_slice(), device)?;
                let (s, p, g) = (spec.stride, spec.padding, spec.groups);
                let macs = batch * spec.forward_macs();
                let mut times = [Duration::ZERO; 3];
                times[0] = timed(device, || Ok(ops::conv2d(&x, &w, None, s, p, g)?))?;
                rows[0].time += times[0];
                rows[0].macs += macs;
                rows[0].layers += 1;
                // The two gradients apart, as in training: the input gradient for every layer
                // but the stem (its input is the images), the weight gradient for all.
                if i > 0 {
                    let xv = Var::from_tensor(&x)?;
                    let y = ops::conv2d(xv.as_tensor(), &w, None, s, p, g)?;
                    times[1] = timed(device, || Ok(y.backward()?))?;
                    rows[1].time += times[1];
                    rows[1].macs += macs;
                    rows[1].layers += 1;
                }
                let wv = Var::from_tensor(&w)?;
                let y = ops::conv2d(&x, wv.as_tensor(), None, s, p, g)?;
                times[2] = timed(device, || Ok(y.backward()?))?;
                rows[2].time += times[2];
                rows[2].macs += macs;
                rows[2].layers += 1;
                let shape = format!("{}×{}×{} → {} k{}×{} s{s} g{g}", spec.in_c, spec.in_h, spec.in_w, spec.out_c, spec.kh, spec.kw);
                convs.push(ConvTime { shape, times, macs });
            }
            LayerKind::Bn => {
                let c = spec.in_c;
                let gamma = Var::ones(c, candle_core::DType::F32, device)?;
                let beta = Var::zeros(c, candle_core::DType::F32, device)?;
                let rm = Var::zeros(c, candle_core::DType::F32, device)?;
                let rv = Var::ones(c, candle_core::DType::F32, device)?;
                let state = BatchNormState { running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
                rows[3].time += timed(device, || Ok(ops::batch_norm(&x, gamma.as_tensor(), beta.as_tensor(), &state, true)?))?;
                let xv = Var::from_tensor(&x)?;
                let y = ops::batch_norm(xv.as_tensor(), gamma.as_tensor(), beta.as_tensor(), &state, true)?;
                rows[4].time += timed(device, || Ok(y.backward()?))?;
                let bytes = x.elem_count() * std::mem::size_of::<f32>();
                rows[3].bytes += 3 * bytes;
                rows[4].bytes += 5 * bytes;
                rows[3].layers += 1;
                rows[4].layers += 1;
            }
            LayerKind::Linear => {}
        }
    }
    Ok((rows, convs))
}

/// Prints each conv layer's times and GFLOP/s: where a model's convolutions are slow.
pub fn print_convs(convs: &[ConvTime]) {
    println!("conv layers (ms and GFLOP/s of one warm call, median of {REPEATS}: forward | input gradient | weight gradient):");
    for c in convs {
        let cell = |t: Duration| if t.is_zero() { format!("{:>16}", "-") } else { format!("{:6.1} ms {:5.0}", 1e3 * t.as_secs_f64(), 2.0 * c.macs as f64 / t.as_secs_f64() / 1e9) };
        println!("  {:<28} {} | {} | {}", c.shape, cell(c.times[0]), cell(c.times[1]), cell(c.times[2]));
    }
}

/// Prints the op table beside the measured forward + backward time of `steps` steps.
pub fn print(rows: &[OpTime], fwd_bwd: Duration, steps: usize) {
    let step = fwd_bwd.as_secs_f64() / steps as f64;
    println!("profile (each layer alone, median of {REPEATS} warm calls; share of the measured forward+backward {:.1} ms):", 1e3 * step);
    let mut covered = 0.0;
    for r in rows {
        let t = r.time.as_secs_f64();
        covered += t;
        let rate = match (r.macs, r.bytes) {
            (0, 0) => String::new(),
            (0, bytes) => format!("  {:6.1} GB/s", bytes as f64 / t / 1e9),
            (macs, _) => format!("  {:6.1} GFLOP/s", 2.0 * macs as f64 / t / 1e9),
        };
        println!("  {:<17} {:3} layers {:10.1} ms {:5.1}%{rate}", r.op, r.layers, 1e3 * t, 100.0 * t / step);
    }
    let rest = step - covered;
    println!("  {:<17} {:>10} {:10.1} ms {:5.1}%  (relu, pooling, adds, loss, grad bookkeeping)", "rest", "", 1e3 * rest, 100.0 * rest / step);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    /// Every conv and BatchNorm layer of a model is timed once per op type (the stem without
    /// an input gradient), and each conv line reports its layer's multiply-adds.
    #[test]
    fn profile_times_every_conv_and_batch_norm_layer() {
        let batch = 2;
        let model = Model::new(Arch::Vgg11, 1, &Device::Cpu).unwrap();
        let (rows, convs) = profile_layers(&model, &Device::Cpu, batch).unwrap();
        let count = |k: LayerKind| model.layers.iter().filter(|l| l.kind == k).count();
        let (n_conv, n_bn) = (count(LayerKind::Conv), count(LayerKind::Bn));
        assert_eq!((n_conv, n_bn), (8, 8));
        let layers: Vec<usize> = rows.iter().map(|r| r.layers).collect();
        assert_eq!(layers, vec![n_conv, n_conv - 1, n_conv, n_bn, n_bn]);
        assert_eq!(convs.len(), n_conv);
        assert!(convs[0].times[1].is_zero() && convs[1..].iter().all(|c| !c.times[1].is_zero()));
        let macs: usize = model.layers.iter().filter(|l| l.kind == LayerKind::Conv).map(|l| batch * l.forward_macs()).sum();
        assert_eq!(rows[0].macs, macs);
        assert!(rows.iter().all(|r| !r.time.is_zero()));
    }
}
