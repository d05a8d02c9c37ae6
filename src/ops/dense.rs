//! Convolutions on maps no larger than their kernel (vgg11's 512-channel layers on 2×2 maps)
//! as one dense matrix product over the whole batch.
//!
//! On such a map most of each window is padding: a 3×3 kernel over a 2×2 map links 16 of
//! the 36 (output position, tap) pairs im2col multiplies to a real input. The convolution
//! is a linear map from an image's `c·H·W` inputs to its `o·OH·OW` outputs; written out as
//! the matrix `K` (`(o·P) × (c·Q)`: P output and Q input positions, zero where no tap links
//! them), the batch's output is `X·Kᵀ` with the NCHW tensors read as they lie (row: image,
//! column: channel and position), the input gradient `dY·K`, and the weight gradient
//! `dYᵀ·X` folded back onto the taps. That is `Q / (kh·kw)` of im2col's multiply-adds (4/9
//! on 2×2 maps), each pass one large GEMM with no unfolding; building `K` costs writing
//! `o·c·P·Q` elements (4 M, 16 MiB, for 512 channels on 2×2: 2.3 ms against 6 ms for the
//! product, measured on 2 cores).

use super::conv::{self, with_scratch, Geom};
use super::gemm::{gemm, View};
use rayon::prelude::*;

/// The largest matrix `K` built, in elements (64 MiB of f32): a bound on the scratch memory
/// this path holds (vgg11's layers need a quarter of it); larger ones stay on im2col.
const MAX_MATRIX: usize = 16 << 20;

/// Whether `g` runs on this path: an ungrouped convolution whose input map has no more
/// positions than the kernel has taps (so `K` has no more nonzeros per row than im2col's
/// matrix has entries), with `K` under [`MAX_MATRIX`].
pub fn applies(g: &Geom) -> bool {
    conv::specialized()
        && g.groups == 1
        && g.kh * g.kw > 1
        && g.h * g.w <= g.kh * g.kw
        && g.o * g.oh() * g.ow() * g.c * g.h * g.w <= MAX_MATRIX
}

/// For each output position `p` and input position `q` (index `p·Q + q`), the kernel tap
/// (`ki·kw + kj`) linking them, if any: the pattern of every channel pair's block of `K`.
fn taps(g: &Geom) -> Vec<Option<usize>> {
    let q = g.h * g.w;
    let mut out = vec![None; g.oh() * g.ow() * q];
    for oy in 0..g.oh() {
        for ox in 0..g.ow() {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let (iy, ix) = ((oy * g.stride + ki) as isize - g.pad as isize, (ox * g.stride + kj) as isize - g.pad as isize);
                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                        out[(oy * g.ow() + ox) * q + iy as usize * g.w + ix as usize] = Some(ki * g.kw + kj);
                    }
                }
            }
        }
    }
    out
}

/// Writes every entry of `K` (`(o·P) × (c·Q)`, row-major) of the kernel `w (o, c, kh, kw)`
/// into `k`, zeros included, so a reused buffer needs no clearing.
fn fill_matrix(w: &[f32], g: &Geom, k: &mut [f32]) {
    let (p, q, kk) = (g.oh() * g.ow(), g.h * g.w, g.kh * g.kw);
    let taps = taps(g);
    k.par_chunks_mut(g.c * q).enumerate().for_each(|(row, out)| {
        let (o, pi) = (row / p, row % p);
        let links = &taps[pi * q..][..q];
        for (c, block) in out.chunks_mut(q).enumerate() {
            let kernel = &w[(o * g.c + c) * kk..][..kk];
            for (v, link) in block.iter_mut().zip(links) {
                *v = link.map_or(0.0, |t| kernel[t]);
            }
        }
    });
}

/// The forward: `y = conv(x, w)` (no bias), as `X·Kᵀ`.
pub fn forward(x: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    times_matrix(x, w, g, true)
}

/// The input gradient of `y = conv(x, w)` given `dy`, as `dY·K`.
pub fn backward_data(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    times_matrix(dy, w, g, false)
}

/// `A·Kᵀ` when `transposed` (A: inputs, a row per image) or `A·K` (A: output gradients).
fn times_matrix(a: &[f32], w: &[f32], g: &Geom, transposed: bool) -> Vec<f32> {
    let (rows, cols) = (g.o * g.oh() * g.ow(), g.c * g.h * g.w);
    let (inner, outer) = if transposed { (cols, rows) } else { (rows, cols) };
    let mut out = vec![0f32; g.n * outer];
    with_scratch(rows * cols, 0, |k, _| {
        fill_matrix(w, g, k);
        let b = if transposed { View::rows_t(k, cols) } else { View::rows(k, cols) };
        gemm(g.n, outer, inner, &mut out, outer, false, true, View::rows(a, inner), b);
    });
    out
}

/// The weight gradient of `y = conv(x, w)` given `dy`: `dK = dYᵀ·X`, each tap the sum of
/// the entries of `dK` it links.
pub fn backward_weight(dy: &[f32], x: &[f32], g: &Geom) -> Vec<f32> {
    let (p, q, kk) = (g.oh() * g.ow(), g.h * g.w, g.kh * g.kw);
    let (rows, cols) = (g.o * p, g.c * q);
    let taps = taps(g);
    let mut dw = vec![0f32; g.o * g.c * kk];
    with_scratch(rows * cols, 0, |dk, _| {
        gemm(rows, cols, g.n, dk, cols, false, true, View::rows_t(dy, rows), View::rows(x, cols));
        dw.par_chunks_mut(g.c * kk).enumerate().for_each(|(o, dwo)| {
            for (pi, links) in taps.chunks(q).enumerate() {
                let row = &dk[(o * p + pi) * cols..][..cols];
                for (dwc, block) in dwo.chunks_mut(kk).zip(row.chunks(q)) {
                    for (link, &v) in links.iter().zip(block) {
                        if let Some(t) = link {
                            dwc[*t] += v;
                        }
                    }
                }
            }
        });
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::super::reference::{assert_close, direct, values};
    use super::*;

    /// Forward, input gradient and weight gradient against direct sums: 2×2, 1×1, 3×3 and
    /// non-square maps, padding 0 to 2, stride 1 and 2, a 2×2 kernel.
    #[test]
    fn forward_and_gradients_match_direct_sums() {
        for (i, &(n, c, o, h, w, k, stride, pad)) in
            [(3, 5, 4, 2, 2, 3, 1, 1), (2, 3, 6, 1, 1, 3, 1, 1), (2, 4, 3, 3, 3, 3, 1, 1), (4, 2, 5, 2, 3, 3, 1, 2), (2, 6, 4, 3, 3, 3, 2, 1), (3, 4, 4, 2, 2, 2, 1, 0), (2, 7, 3, 2, 2, 3, 2, 1)]
                .iter()
                .enumerate()
        {
            let g = Geom::new(&[n, c, h, w], &[o, c, k, k], stride, pad, 1).unwrap();
            assert!(applies(&g), "{g:?}");
            let x = values(n * c * h * w, i);
            let wt = values(o * c * k * k, i + 50);
            let dy = values(n * o * g.oh() * g.ow(), i + 100);
            let want = direct(&x, &wt, &dy, &g);
            assert_close(&forward(&x, &wt, &g), &want.y, &format!("{g:?} forward"));
            assert_close(&backward_data(&dy, &wt, &g), &want.dx, &format!("{g:?} input gradient"));
            assert_close(&backward_weight(&dy, &x, &g), &want.dw, &format!("{g:?} weight gradient"));
        }
    }

    #[test]
    fn applies_only_to_ungrouped_convs_on_maps_no_larger_than_the_kernel() {
        let geom = |h: usize, k: usize, groups: usize| Geom::new(&[2, 8, h, h], &[8, 8 / groups, k, k], 1, k / 2, groups).unwrap();
        assert!(applies(&geom(2, 3, 1)));
        assert!(applies(&geom(3, 3, 1)));
        assert!(!applies(&geom(4, 3, 1)), "4×4 maps have more positions than taps");
        assert!(!applies(&geom(2, 3, 2)), "grouped");
        assert!(!applies(&geom(1, 1, 1)), "1×1 kernels");
        assert!(!applies(&Geom::new(&[2, 2048, 2, 2], &[2048, 2048, 3, 3], 1, 1, 1).unwrap()), "K past MAX_MATRIX");
    }
}
