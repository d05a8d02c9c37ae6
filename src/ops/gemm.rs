//! A safe, bounds-checked front to the `gemm` crate (the f32 GEMM candle itself runs on the
//! CPU), for the custom ops' matrix products on strided views of plain slices.

use gemm::Parallelism;

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

/// `dst (m × n, row-major with row stride dst_rs) = [dst +] a (m × k) · b (k × n)`.
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, accumulate: bool, a: View, b: View) {
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
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_MACS { Parallelism::Rayon(threads) } else { Parallelism::None };
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
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect(); // n × k
        let mut dst = vec![1.0f32; m * n];
        gemm(m, n, k, &mut dst, n, true, View::rows(&a, k), View::rows_t(&bt, k));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5, "({i},{j}): {} vs {want}", dst[i * n + j]);
            }
        }
    }
}
