//! Times the fused BatchNorm+ReLU alone (train mode, forward and backward) on RegNet200MF's
//! activation shapes, batch 128, best of several calls, beside a one-read-one-write pass over
//! the same tensor (what the memory system gives): `cargo run --release --example bn_bench`.
use candle_core::{DType, Device, Tensor, Var};
use normlab::ops::{self, BatchNormState};
use rayon::prelude::*;
use std::time::Instant;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps).map(|_| { let t = Instant::now(); f(); t.elapsed().as_secs_f64() }).fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    normlab::memory::retain_freed_memory();
    let dev = Device::Cpu;
    for &(c, h) in &[(24usize, 32usize), (56, 32), (152, 16), (368, 8)] {
        let n = 128;
        let len = n * c * h * h;
        let xs: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(xs.clone(), (n, c, h, h), &dev)?)?;
        let gamma = Var::ones(c, DType::F32, &dev)?;
        let beta = Var::zeros(c, DType::F32, &dev)?;
        let (rm, rv) = (Var::zeros(c, DType::F32, &dev)?, Var::ones(c, DType::F32, &dev)?);
        let state = BatchNormState { running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
        let mb = (len * 4) as f64 / 1e6;
        let tf = best(15, || { std::hint::black_box(ops::batch_norm_relu(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), &state, true).unwrap()); });
        let y = ops::batch_norm_relu(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), &state, true)?;
        let loss = (&y * &y)?.sum_all()?;
        let _ = loss.backward()?; // warm
        // Backward of the BN alone: gradient of sum(y * g) for a fixed g is g through the op.
        let g = Tensor::from_vec(xs.iter().map(|v| v * 0.5).collect::<Vec<f32>>(), (n, c, h, h), &dev)?;
        let tb = best(15, || { std::hint::black_box((&y * &g).unwrap().sum_all().unwrap().backward().unwrap()); });
        // The same probe straight on x: its backward (mul, sum, bookkeeping) is subtracted.
        let tm = best(15, || { std::hint::black_box((x.as_tensor() * &g).unwrap().sum_all().unwrap().backward().unwrap()); });
        let mut out = vec![0f32; len];
        let ts = best(15, || { out.par_chunks_mut(1 << 14).zip(xs.par_chunks(1 << 14)).for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &i)| *o = i * 1.5 + 0.5)); std::hint::black_box(&out); });
        println!("{c}x{h}x{h} ({mb:.1} MB): fwd {:.2} ms ({:.1} GB/s at 3 passes) | bwd {:.2} ms ({:.1} GB/s at 5, the probe's own backward subtracted) | stream r+w {:.2} ms {:.1} GB/s",
            tf * 1e3, 3.0 * mb / tf / 1e3, (tb - tm) * 1e3, 5.0 * mb / (tb - tm) / 1e3, ts * 1e3, 2.0 * mb / ts / 1e3);
    }
    Ok(())
}
