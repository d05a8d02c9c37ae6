//! Direct convolution for narrow channel groups (RegNet's grouped 3×3 convs, 8 channels per
//! group): the forward (and with it the stride-1 input gradient, a forward conv of the
//! gradient, see `conv::backward_data`) and the weight gradient. The stride-2 input gradient
//! stays on GEMM + col2im.
//!
//! im2col + GEMM suits wide layers. With 8 channels per group a group's product has 8 rows
//! and 72-long inner products, and unfolding the input costs more than multiplying it (25–90
//! GFLOP/s measured on RegNet's layers). Here each block of 8 output channels of a group is
//! computed straight from the group's zero-padded input planes: for each output row and run
//! of 8 output columns, 8 × 8 accumulators take one fused multiply-add per input channel, tap
//! and output channel, each input vector loaded once for the 8 output channels. The weight
//! gradient runs across the block's 8 output channels instead (one vector per tap, summed over
//! the output positions in a register). The loops are compiled for AVX2 + FMA where the CPU
//! has them (chosen at run time through `pulp`, the SIMD dispatch faer uses), else as
//! portable code.

use super::conv::{self, Geom};
use super::padded::{copy_row, Planes};
use rayon::prelude::*;

/// Output columns computed together (one AVX2 vector).
const LANES: usize = 8;

/// Output channels computed together.
const OB: usize = 8;

/// Wider groups than this stay on im2col + GEMM, whose products are then long enough.
const MAX_GROUP_CHANNELS: usize = 32;

/// Whether `g` runs on this path: a grouped convolution (2 or more groups) with at most
/// [`MAX_GROUP_CHANNELS`] input channels per group, a multiple of 8 output channels per group,
/// a square 1×1 or 3×3 kernel (the weight gradient keeps all taps in registers) and stride 1
/// or 2.
pub fn applies(g: &Geom) -> bool {
    conv::specialized()
        && g.groups > 1
        && g.og().is_multiple_of(OB)
        && g.cg() <= MAX_GROUP_CHANNELS
        && g.kh == g.kw
        && (g.kh == 1 || g.kh == 3)
        && (g.stride == 1 || g.stride == 2)
}

/// `(regrouped, original)` index pairs of every kernel entry: the original layout is
/// `[o][ci][ki][kj]`, the regrouped one `[block][ci][ki][kj][o]` by blocks of [`OB`] output
/// channels, so each tap's 8 weights are one contiguous load.
fn regrouped_indices(g: &Geom) -> impl Iterator<Item = (usize, usize)> {
    let (cg, kk, blocks) = (g.cg(), g.kh * g.kw, g.o / OB);
    (0..blocks * OB * cg * kk).map(move |orig| {
        let (o, ci, k) = (orig / (cg * kk), (orig / kk) % cg, orig % kk);
        ((((o / OB) * cg + ci) * kk + k) * OB + o % OB, orig)
    })
}

/// The kernel in the regrouped layout ([`regrouped_indices`]).
fn regroup(w: &[f32], g: &Geom) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    regrouped_indices(g).for_each(|(r, o)| out[r] = w[o]);
    out
}

/// The inverse of [`regroup`].
fn ungroup(wt: &[f32], g: &Geom) -> Vec<f32> {
    let mut w = vec![0f32; wt.len()];
    regrouped_indices(g).for_each(|(r, o)| w[o] = wt[r]);
    w
}

/// Rows and row length of the zero-bordered input planes [`block`] and [`weight_block`] read:
/// every window of an output padded to a whole number of [`LANES`] columns.
fn padded_dims(g: &Geom) -> (usize, usize) {
    let owp = g.ow().next_multiple_of(LANES);
    ((g.oh() - 1) * g.stride + g.kh, (owp - 1) * g.stride + g.kw)
}

/// `y = conv(x, w)` for a convolution [`applies`] accepts, in parallel over images.
pub fn forward(x: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    let (oh, ow, cg, og) = (g.oh(), g.ow(), g.cg(), g.og());
    let owp = ow.next_multiple_of(LANES);
    let (ph, pw) = padded_dims(g);
    let wt = regroup(w, g);
    let block_len = cg * g.kh * g.kw * OB;
    let (in_img, out_img, hw) = (g.c * g.h * g.w, g.o * oh * ow, g.h * g.w);
    let mut y = vec![0f32; g.n * out_img];
    // Rows a whole number of vectors long: the kernel writes the output in place.
    let in_place = ow == owp;
    y.par_chunks_mut(out_img).enumerate().for_each_init(
        || (Planes::new(cg, (ph, pw), (g.h, g.w), g.pad), if in_place { Vec::new() } else { vec![0f32; OB * oh * owp] }),
        |(planes, out), (img, yi)| {
            let xi = &x[img * in_img..][..in_img];
            for gi in 0..g.groups {
                for ci in 0..cg {
                    planes.load(ci, &xi[(gi * cg + ci) * hw..][..hw], g.w);
                }
                for b in 0..og / OB {
                    let o0 = gi * og + b * OB;
                    let wb = &wt[(o0 / OB) * block_len..][..block_len];
                    let yb = &mut yi[o0 * oh * ow..][..OB * oh * ow];
                    if in_place {
                        Kernel { pass: Pass::Forward, planes, other: wb, cg, k: g.kh, stride: g.stride, out: yb, oh, ow: owp }.run();
                        continue;
                    }
                    Kernel { pass: Pass::Forward, planes, other: wb, cg, k: g.kh, stride: g.stride, out, oh, ow: owp }.run();
                    for (o, plane) in yb.chunks_mut(oh * ow).enumerate() {
                        for (r, row) in plane.chunks_mut(ow).enumerate() {
                            copy_row(row, &out[(o * oh + r) * owp..][..ow]);
                        }
                    }
                }
            }
        },
    );
    y
}

/// The weight gradient of a convolution [`applies`] accepts, given `dy`: per-thread sums over
/// fixed runs of images ([`super::par_sum`]), each image's group blocks by [`weight_block`].
pub fn backward_weight(dy: &[f32], x: &[f32], g: &Geom) -> Vec<f32> {
    let (oh, ow, cg, og) = (g.oh(), g.ow(), g.cg(), g.og());
    let (ph, pw) = padded_dims(g);
    let block_len = cg * g.kh * g.kw * OB;
    let (in_img, out_img, hw, p) = (g.c * g.h * g.w, g.o * oh * ow, g.h * g.w, oh * ow);
    let image = |acc: &mut [f32], planes: &mut Planes, dyt: &mut [f32], img: usize| {
        let (xi, dyi) = (&x[img * in_img..][..in_img], &dy[img * out_img..][..out_img]);
        for gi in 0..g.groups {
            for ci in 0..cg {
                planes.load(ci, &xi[(gi * cg + ci) * hw..][..hw], g.w);
            }
            for b in 0..og / OB {
                let o0 = gi * og + b * OB;
                // The block's output gradient position-major: each position's OB values are
                // one vector.
                for (o, plane) in dyi[o0 * p..][..OB * p].chunks(p).enumerate() {
                    for (pos, &v) in plane.iter().enumerate() {
                        dyt[pos * OB + o] = v;
                    }
                }
                let dwb = &mut acc[(o0 / OB) * block_len..][..block_len];
                Kernel { pass: Pass::Weight, planes, other: dyt, cg, k: g.kh, stride: g.stride, out: dwb, oh, ow }.run();
            }
        }
    };
    let init = || (Planes::new(cg, (ph, pw), (g.h, g.w), g.pad), vec![0f32; OB * p]);
    let sums = super::par_sum(g.o * block_len / OB, g.n, init, |img, (planes, dyt), acc| image(acc, planes, dyt, img));
    ungroup(&sums, g)
}

/// Whether the input gradient of `g` runs on [`backward_data_strided`]: a convolution
/// [`applies`] accepts, with stride 2 and exactly [`LANES`] input channels per group (one
/// vector). Stride 1 needs no kernel of its own: its input gradient is a forward convolution.
pub fn applies_strided_data(g: &Geom) -> bool {
    applies(g) && g.stride == 2 && g.cg() == LANES
}

/// The input gradient of a convolution [`applies_strided_data`] accepts, given `dy`, in
/// parallel over images: each group's gradient is built position-major (a vector of the
/// group's input channels per input position) by [`data_block`], then cropped and transposed
/// into place. GEMM + col2im reached 17–20 GFLOP/s on RegNet's stride-2 layers.
pub fn backward_data_strided(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    let (oh, ow, og, k) = (g.oh(), g.ow(), g.og(), g.kh);
    let owp = ow.next_multiple_of(LANES);
    // The padded gradient's rows and columns: every position a padded output row reaches, and
    // every input position (the last rows and columns may be in no window).
    let (ph, pw) = (((oh - 1) * 2 + k).max(g.h + g.pad), ((owp - 1) * 2 + k).max(g.w + g.pad));
    // The kernel as `[group][o][ki][kj][ci]`: the group's input channels of each tap together.
    let kk = k * k;
    let mut wt = vec![0f32; w.len()];
    for (o, wo) in w.chunks_exact(LANES * kk).enumerate() {
        for (ci, wc) in wo.chunks_exact(kk).enumerate() {
            for (t, &v) in wc.iter().enumerate() {
                wt[(o * kk + t) * LANES + ci] = v;
            }
        }
    }
    let (in_img, out_img, hw, p) = (g.c * g.h * g.w, g.o * oh * ow, g.h * g.w, oh * ow);
    let mut dx = vec![0f32; g.n * in_img];
    dx.par_chunks_mut(in_img).enumerate().for_each_init(
        || (vec![0f32; oh * owp * og], vec![0f32; ph * pw * LANES]),
        |(dyt, dxt), (img, dxi)| {
            let dyi = &dy[img * out_img..][..out_img];
            for gi in 0..g.groups {
                // The group's output gradient as `[oy][o][ox]`, rows padded to `owp` with zeros.
                for (o, plane) in dyi[gi * og * p..][..og * p].chunks_exact(p).enumerate() {
                    for (oy, row) in plane.chunks_exact(ow).enumerate() {
                        copy_row(&mut dyt[(oy * og + o) * owp..][..ow], row);
                    }
                }
                dxt.fill(0.0);
                let wg = &wt[gi * og * kk * LANES..][..og * kk * LANES];
                DataKernel { dyt, wt: wg, dxt, og, k, oh, owp, pw }.run();
                // Crop the padding and transpose back to `[ci][iy][ix]`.
                for (ci, plane) in dxi[gi * LANES * hw..][..LANES * hw].chunks_exact_mut(hw).enumerate() {
                    for (iy, row) in plane.chunks_exact_mut(g.w).enumerate() {
                        let src = &dxt[((iy + g.pad) * pw + g.pad) * LANES..];
                        for (ix, d) in row.iter_mut().enumerate() {
                            *d = src[ix * LANES + ci];
                        }
                    }
                }
            }
        },
    );
    dx
}

/// One call of [`data_block`], for `pulp`'s dispatch (see [`Kernel`]).
struct DataKernel<'a> {
    dyt: &'a [f32],
    wt: &'a [f32],
    dxt: &'a mut [f32],
    og: usize,
    k: usize,
    oh: usize,
    owp: usize,
    pw: usize,
}

impl DataKernel<'_> {
    /// Runs the kernel, compiled for the best instruction set the CPU has.
    fn run(self) {
        pulp::Arch::new().dispatch(self)
    }
}

impl pulp::WithSimd for DataKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let DataKernel { dyt, wt, dxt, og, k, oh, owp, pw } = self;
        data_block(dyt, wt, dxt, (og, k), oh, owp, pw)
    }
}

/// Adds one group's stride-2 input gradient to `dxt` (`[iy][ix][ci]`, padded, rows of `pw`)
/// from its row-major output gradient `dyt` (`[oy][o][ox]`, rows of `owp`) and kernel
/// `wt` (`[o][ki][kj][ci]`). For each output row and tap, runs of [`LANES`] output columns
/// reach [`LANES`] distinct input positions two apart, whose vectors of input channels take
/// one multiply-add per output channel, the tap's weight vector loaded once for all of them.
#[inline(always)]
fn data_block(dyt: &[f32], wt: &[f32], dxt: &mut [f32], (og, k): (usize, usize), oh: usize, owp: usize, pw: usize) {
    for oy in 0..oh {
        for ki in 0..k {
            let dx_row = &mut dxt[(oy * 2 + ki) * pw * LANES..][..pw * LANES];
            for kj in 0..k {
                for x0 in (0..owp).step_by(LANES) {
                    let mut acc: [[f32; LANES]; LANES] = std::array::from_fn(|j| dx_row[((x0 + j) * 2 + kj) * LANES..][..LANES].try_into().expect("LANES values"));
                    let dy_rows = &dyt[oy * og * owp..][..og * owp];
                    for o in 0..og {
                        let wv: [f32; LANES] = wt[((o * k + ki) * k + kj) * LANES..][..LANES].try_into().expect("LANES weights");
                        let ds: [f32; LANES] = dy_rows[o * owp + x0..][..LANES].try_into().expect("LANES values");
                        for j in 0..LANES {
                            for l in 0..LANES {
                                acc[j][l] = wv[l].mul_add(ds[j], acc[j][l]);
                            }
                        }
                    }
                    for (j, a) in acc.iter().enumerate() {
                        dx_row[((x0 + j) * 2 + kj) * LANES..][..LANES].copy_from_slice(a);
                    }
                }
            }
        }
    }
}

/// Adds one image's weight gradient of one block of [`OB`] output channels to `dwb`
/// (`[ci][ki][kj][o]`) from the block's position-major output gradient `dyt`
/// (`[oy][ox][o]`). Vectorised over the block's output channels: each tap's sum over the
/// output positions stays in one register of [`OB`] lanes, with no reduction across lanes
/// (summing across position lanes cost as much as the multiply-adds on 8×8 maps), and the
/// `K × K` taps of an input channel share each load of the output gradient.
#[inline(always)]
fn weight_block<const S: usize, const K: usize>(planes: &Planes, dyt: &[f32], cg: usize, dwb: &mut [f32], oh: usize, ow: usize) {
    let pw = planes.pw;
    for (ci, dw_ci) in dwb.chunks_exact_mut(K * K * OB).take(cg).enumerate() {
        let plane = planes.plane(ci);
        let mut acc = [[[0f32; OB]; K]; K];
        let span = (ow - 1) * S + K;
        for (oy, dy_row) in dyt.chunks_exact(ow * OB).take(oh).enumerate() {
            let rows: [&[f32]; K] = std::array::from_fn(|ki| &plane[(oy * S + ki) * pw..][..span]);
            for (ox, d) in dy_row.chunks_exact(OB).enumerate() {
                let d: [f32; OB] = d.try_into().expect("OB values");
                // All loads before the multiply-adds, and fixed-count index loops: the shape
                // the compiler keeps in registers as K·K vector FMAs.
                let xs: [[f32; K]; K] = std::array::from_fn(|ki| std::array::from_fn(|kj| rows[ki][ox * S + kj]));
                for ki in 0..K {
                    for kj in 0..K {
                        for l in 0..OB {
                            acc[ki][kj][l] = d[l].mul_add(xs[ki][kj], acc[ki][kj][l]);
                        }
                    }
                }
            }
        }
        for (tap, a) in dw_ci.chunks_exact_mut(OB).zip(acc.iter().flatten()) {
            for (t, v) in tap.iter_mut().zip(a) {
                *t += v;
            }
        }
    }
}

/// Which kernel a [`Kernel`] call runs.
#[derive(Clone, Copy)]
enum Pass {
    /// [`block`]: `other` holds the regrouped weights, `out` the block's outputs.
    Forward,
    /// [`weight_block`]: `other` holds the block's position-major output gradient, `out` its
    /// weight gradient.
    Weight,
}

/// One call of [`block`] or [`weight_block`], for `pulp`'s dispatch: its `with_simd` is
/// inlined into a function compiled with the CPU's features (AVX2 + FMA), and the kernel into
/// it, so the multiply-adds become vector FMA instructions (a closure is not inlined there,
/// and its `mul_add` became a call to the software `fmaf`).
struct Kernel<'a> {
    pass: Pass,
    planes: &'a Planes,
    other: &'a [f32],
    /// Input channels per group.
    cg: usize,
    /// Kernel size (square: [`applies`]).
    k: usize,
    stride: usize,
    out: &'a mut [f32],
    oh: usize,
    /// Output columns: padded to a multiple of [`LANES`] for [`block`], as they are for
    /// [`weight_block`].
    ow: usize,
}

impl Kernel<'_> {
    /// Runs the kernel, compiled for the best instruction set the CPU has.
    fn run(self) {
        pulp::Arch::new().dispatch(self)
    }
}

impl pulp::WithSimd for Kernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Kernel { pass, planes, other, cg, k, stride, out, oh, ow } = self;
        match (pass, stride, k) {
            (Pass::Forward, 1, 1) => block::<1, 1>(planes, other, (cg, 1), out, oh, ow),
            (Pass::Forward, 1, _) => block::<1, 3>(planes, other, (cg, 3), out, oh, ow),
            (Pass::Forward, _, _) => block::<2, 0>(planes, other, (cg, k), out, oh, ow),
            (Pass::Weight, 1, 1) => weight_block::<1, 1>(planes, other, cg, out, oh, ow),
            (Pass::Weight, 1, _) => weight_block::<1, 3>(planes, other, cg, out, oh, ow),
            (Pass::Weight, _, 1) => weight_block::<2, 1>(planes, other, cg, out, oh, ow),
            (Pass::Weight, _, _) => weight_block::<2, 3>(planes, other, cg, out, oh, ow),
        }
    }
}

/// One block of [`OB`] output channels of one group of one image: `out (OB × oh × owp)` from
/// the group's padded planes and its regrouped weights `wb` (`[ci][ki][kj][o]`), for a
/// `k × k` kernel at stride `S`; `K` is `k` known at compile time (0: only at run time).
/// Each input channel's weights and each window row are sliced once, so the tap loop indexes
/// within them (indexing the whole planes and weights per tap cost four compare-and-branch
/// pairs and a reload per 8 multiply-adds), and with `K` the tap loops unroll (one thread,
/// `examples/grouped_bench fwd`: 368×8×8 8.2–8.9 → 6.8 ms, 56×32×32 20.5–21.4 → 17.8 ms).
/// Stride 2 keeps a run-time `k` (6% faster from the slicing alone): unrolled, its strided
/// input gathers spilled the accumulators and ran 4× slower.
#[inline(always)]
fn block<const S: usize, const K: usize>(planes: &Planes, wb: &[f32], (cg, k): (usize, usize), out: &mut [f32], oh: usize, owp: usize) {
    let k = if K == 0 { k } else { K };
    let pw = planes.pw;
    let span = (LANES - 1) * S + k;
    for oy in 0..oh {
        for x0 in (0..owp).step_by(LANES) {
            let mut acc = [[0f32; LANES]; OB];
            for (ci, wc) in wb.chunks_exact(k * k * OB).take(cg).enumerate() {
                let plane = planes.plane(ci);
                for (ki, wr) in wc.chunks_exact(k * OB).enumerate() {
                    let row = &plane[(oy * S + ki) * pw + x0 * S..][..span];
                    for (kj, wv) in wr.chunks_exact(OB).enumerate() {
                        let seg = &row[kj..][..(LANES - 1) * S + 1];
                        let inp: [f32; LANES] = std::array::from_fn(|l| seg[l * S]);
                        let wv: &[f32; OB] = wv.try_into().expect("OB weights");
                        for (a, &wo) in acc.iter_mut().zip(wv) {
                            for (al, &il) in a.iter_mut().zip(&inp) {
                                *al = wo.mul_add(il, *al);
                            }
                        }
                    }
                }
            }
            for (o, a) in acc.iter().enumerate() {
                out[(o * oh + oy) * owp + x0..][..LANES].copy_from_slice(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::{assert_close, direct, values};
    use super::*;

    /// Forward and weight gradient against direct sums: 1×1 and 3×3 kernels each at stride 1
    /// and 2 (the forward's four kernels), output widths that are and are not multiples of 8,
    /// padding 0 to 2, 16 output channels per group (two blocks).
    #[test]
    fn forward_and_weight_gradient_match_direct_sums() {
        for (i, &(n, c, o, h, w, k, stride, pad, groups)) in [
            (2, 16, 16, 8, 8, 3, 1, 1, 2),
            (3, 24, 24, 5, 7, 3, 2, 1, 3),
            (2, 8, 32, 9, 9, 3, 1, 2, 2),
            (2, 12, 24, 6, 11, 1, 2, 0, 3),
            (1, 32, 64, 16, 16, 3, 2, 1, 4),
            (2, 16, 32, 6, 10, 1, 1, 0, 2),
        ]
        .iter()
        .enumerate()
        {
            let g = Geom::new(&[n, c, h, w], &[o, c / groups, k, k], stride, pad, groups).unwrap();
            assert!(applies(&g), "{g:?}");
            let x = values(n * c * h * w, i);
            let wt = values(o * (c / groups) * k * k, i + 50);
            let dy = values(n * o * g.oh() * g.ow(), i + 100);
            let want = direct(&x, &wt, &dy, &g);
            assert_close(&forward(&x, &wt, &g), &want.y, &format!("{g:?} forward"));
            assert_close(&backward_weight(&dy, &x, &g), &want.dw, &format!("{g:?} weight gradient"));
        }
    }

    /// The stride-2 input gradient against direct sums: 3×3 with padding 1 and 2, 1×1 without,
    /// odd and even maps (the last row and column in no window), output widths below, at and above
    /// 8, one and two blocks per group.
    #[test]
    fn strided_input_gradient_matches_direct_sums() {
        for (i, &(n, c, o, h, w, k, pad, groups)) in
            [(3, 24, 24, 5, 7, 3, 1, 3), (1, 32, 64, 16, 16, 3, 1, 4), (2, 16, 16, 7, 9, 1, 0, 2), (2, 16, 32, 11, 19, 3, 2, 2), (2, 8, 8, 32, 34, 3, 1, 1), (2, 16, 16, 12, 12, 3, 0, 2), (2, 16, 16, 8, 10, 1, 0, 2)]
                .iter()
                .enumerate()
        {
            let g = Geom::new(&[n, c, h, w], &[o, c / groups, k, k], 2, pad, groups).unwrap();
            if groups > 1 {
                assert!(applies_strided_data(&g), "{g:?}");
            }
            let wt = values(o * (c / groups) * k * k, i + 50);
            let dy = values(n * o * g.oh() * g.ow(), i + 100);
            let want = direct(&values(n * c * h * w, i), &wt, &dy, &g);
            assert_close(&backward_data_strided(&dy, &wt, &g), &want.dx, &format!("{g:?} input gradient"));
        }
    }
}
