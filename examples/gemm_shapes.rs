//! Times one f32 GEMM shape alone, single-threaded, through normlab's GEMM front
//! (`ops::gemm`), as the per-image products of a conv call it: `cargo run --release --example
//! gemm_shapes M N K [row-major dst]`.
use normlab::ops::gemm::{gemm, View};
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (m, n, k) = (a[0], a[1], a[2]);
    let x: Vec<f32> = (0..k * n).map(|i| (i % 97) as f32 / 97.0).collect();
    let w: Vec<f32> = (0..m * k).map(|i| (i % 89) as f32 / 89.0).collect();
    let mut y = vec![0f32; m * n];
    let reps = 200;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            gemm(m, n, k, &mut y, n, false, false, View::rows(&w, k), View::rows(&x, n));
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    println!("{m}x{n}x{k}: {:.1} us, {:.1} GFLOP/s (one thread)", best * 1e6, 2.0 * (m * n * k) as f64 / best / 1e9);
}
