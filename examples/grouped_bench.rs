//! Times the convolution kernels alone on RegNet200MF's grouped 3×3 layers, batch 128, best
//! of several calls: `cargo run --release --example grouped_bench [fwd|data]` (all three
//! passes, or only the forward, or only the stride-2 input gradients).
use normlab::ops::conv::{self, Geom, Threading};
use std::time::Instant;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps).map(|_| { let t = Instant::now(); f(); t.elapsed().as_secs_f64() }).fold(f64::INFINITY, f64::min)
}

fn main() {
    // As the CLI and training run: freed memory kept for reuse (else each 80 MB input
    // gradient is a fresh mapping, and its page faults dominate the timing).
    normlab::memory::retain_freed_memory();
    let n = 128;
    let only = std::env::args().nth(1).unwrap_or_default();
    for &(c, h, s) in &[(56usize, 32usize, 1usize), (152, 32, 2), (152, 16, 1), (368, 16, 2), (368, 8, 1)] {
        let g = Geom::new(&[n, c, h, h], &[c, 8, 3, 3], s, 1, c / 8).unwrap();
        let x: Vec<f32> = (0..n * c * h * h).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let w: Vec<f32> = (0..c * 72).map(|i| ((i * 31) % 100) as f32 / 100.0).collect();
        let dy: Vec<f32> = (0..n * c * g.oh() * g.ow()).map(|i| ((i * 13) % 100) as f32 / 100.0).collect();
        let flop = 2.0 * (n * c * g.oh() * g.ow() * 72) as f64 / 1e9;
        if only == "data" {
            if s == 1 { continue; }
            let t = best(30, || { std::hint::black_box(conv::backward_data(&dy, &w, &g, Threading::Batch)); });
            println!("{c}x{h}x{h} s{s}: data {:.2} ms {:.0} GF/s", t * 1e3, flop / t);
            continue;
        }
        if only == "fwd" {
            let t = best(30, || { std::hint::black_box(conv::forward(&x, &w, &g, Threading::Batch)); });
            println!("{c}x{h}x{h} s{s}: fwd {:.2} ms {:.0} GF/s", t * 1e3, flop / t);
            continue;
        }
        let tf = best(7, || { std::hint::black_box(conv::forward(&x, &w, &g, Threading::Batch)); });
        let td = best(7, || { std::hint::black_box(conv::backward_data(&dy, &w, &g, Threading::Batch)); });
        let tw = best(7, || { std::hint::black_box(conv::backward_weight(&dy, &x, &g, Threading::Batch)); });
        println!("{c}x{h}x{h} s{s}: fwd {:.2} ms {:.0} GF/s | data {:.2} ms {:.0} | weight {:.2} ms {:.0}", tf * 1e3, flop / tf, td * 1e3, flop / td, tw * 1e3, flop / tw);
    }
}
