//! A safe, bounds-checked front to an f32 GEMM, for the custom ops' matrix products on
//! strided views of plain slices. Two engines: faer's (its x86 kernels use AVX-512 where the
//! CPU has it, on stable Rust) and the `gemm` crate's (what candle's matmul runs on, AVX2 at
//! most without a nightly compiler). faer's is the default; `set_engine` picks for benchmarks.

use gemm::Parallelism;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which GEMM implementation the custom ops call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// faer 0.22 (private-gemm-x86: AVX-512 or AVX2 chosen at run time).
    Faer,
    /// The `gemm` crate 0.19, as candle's CPU matmul.
    Gemm,
}

static USE_GEMM_CRATE: AtomicBool = AtomicBool::new(false);

/// Selects the engine for the whole process.
pub fn set_engine(engine: Engine) {
    USE_GEMM_CRATE.store(engine == Engine::Gemm, Ordering::Relaxed);
}

/// The engine in use.
pub fn engine() -> Engine {
    if USE_GEMM_CRATE.load(Ordering::Relaxed) {
        Engine::Gemm
    } else {
        Engine::Faer
    }
}

/// A read-only strided matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn rows_t(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "gemm: {what} view of {rows}×{cols} overruns its {} elements", self.data.len());
        }
    }
}

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MACS: usize = 1 << 18;

/// `dst (m × n, row-major with row stride dst_rs) = [dst +] a (m × k) · b (k × n)`, on the
/// selected [`Engine`], multi-threaded when `parallel` and the product is large.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, accumulate: bool, parallel: bool, a: View, b: View) {
    gemm_on(engine(), m, n, k, dst, dst_rs, accumulate, parallel, a, b)
}

/// [`gemm`] on a given engine.
#[allow(clippy::too_many_arguments)]
pub fn gemm_on(engine: Engine, m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, accumulate: bool, parallel: bool, a: View, b: View) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_rs >= n && (m - 1) * dst_rs + n <= dst.len(), "gemm: destination of {m}×{n} overruns its {} elements", dst.len());
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    a.check(m, k, "left");
    b.check(k, n, "right");
    let threads = rayon::current_num_threads();
    let parallel = parallel && threads > 1 && m * n * k >= PARALLEL_MACS;
    if engine == Engine::Faer {
        use faer::{Accum, MatMut, MatRef, Par};
        let par = if parallel { Par::rayon(threads) } else { Par::Seq };
        // SAFETY: as below; the views cover exactly the checked extents.
        let (dst, a, b) = unsafe {
            (
                MatMut::from_raw_parts_mut(dst.as_mut_ptr(), m, n, dst_rs as isize, 1),
                MatRef::from_raw_parts(a.data.as_ptr(), m, k, a.rs as isize, a.cs as isize),
                MatRef::from_raw_parts(b.data.as_ptr(), k, n, b.rs as isize, b.cs as isize),
            )
        };
        let accum = if accumulate { Accum::Add } else { Accum::Replace };
        faer::linalg::matmul::matmul(dst, accum, a, b, 1.0f32, par);
        return;
    }
    let parallelism = if parallel { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: every index the product reads or writes was bounds-checked above; `dst` is a
    // unique borrow that does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        // Both engines; large enough for faer's x86 kernels, not only its small-matrix path.
        for (engine, (m, n, k)) in [(Engine::Faer, (5, 7, 3)), (Engine::Faer, (67, 45, 70)), (Engine::Gemm, (5, 7, 3))] {
            check(engine, m, n, k);
        }
    }

    fn check(engine: Engine, m: usize, n: usize, k: usize) {
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect(); // n × k
        let mut dst = vec![1.0f32; m * n];
        gemm_on(engine, m, n, k, &mut dst, n, true, true, View::rows(&a, k), View::rows_t(&bt, k));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-4 * (1.0 + want.abs()), "{engine:?} ({i},{j}): {} vs {want}", dst[i * n + j]);
            }
        }
    }
}
