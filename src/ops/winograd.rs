//! 3×3 stride-1 convolutions (forward, and with it the input gradient, and the weight
//! gradient) by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016).
//!
//! Each 4×4 output tile of a channel pair costs 36 multiplications instead of 144: the kernel
//! becomes `U = G·w·Gᵀ` (6×6), each 6×6 input tile `V = Bᵀ·d·B`, and the output
//! `Aᵀ·[Σ_c U ⊙ V]·A`. The sum over input channels at each of the 36 tile positions ξ is one
//! matrix product `M[ξ] (O × tiles) = U[ξ] (O × C) · V[ξ] (C × tiles)`, so the work is 36 GEMMs
//! with 1/4 of im2col's multiply-adds (F(2×2, 3×3), which this replaced, does 4/9), and no
//! im2col buffer (zero-padding taps included, which im2col multiplies too). oneDNN (PyTorch's
//! CPU convolutions) runs vgg11's layers above the machine's matmul rate the same way
//! (bench/README.md).
//!
//! The weight gradient is the transpose of the same bilinear map:
//! `dw = Gᵀ·[Σ_tiles (A·dy·Aᵀ) ⊙ V]·G`, again 36 GEMMs, now over tiles.
//! Tiles past a map whose side is not a multiple of 4 read zeros and their outputs are
//! dropped (their output gradient is zero), so any map size and padding is exact.
//!
//! Layouts: the transformed kernel is `[o][ξ][c]` and its gradient `[ξ][o][c]`; transformed
//! inputs, output gradients and products are `[channel][ξ][t]`, tile `t = image·tiles +
//! ty·tw + tx`. Each is blocked by the index its transform runs over, so the transforms are
//! parallel over channels, and every `·[ξ]` matrix is a strided view the GEMM reads as is.

use super::conv::{self, over_chunks, with_scratch, Geom, Threading};
use super::gemm::{gemm, View};
use super::padded::Planes;
use rayon::prelude::*;

/// Side of an output tile (the m of F(m×m, 3×3)).
const M: usize = 4;

/// Side of an input tile and of a transformed tile: m + 3 − 1.
const ALPHA: usize = 6;

/// Positions ξ of a transformed tile.
const XI: usize = ALPHA * ALPHA;

/// The largest transformed chunk (`36·channels·tiles`) of the forward, in elements (4 MiB
/// of f32): the 36 products of a chunk then read their operands from cache.
const CHUNK_CAP: usize = 1 << 20;

/// Fewer input or output channels than this stay on im2col: with few channels the 36
/// products are too small to run near the GEMM's rate and the transforms weigh more.
const MIN_CHANNELS: usize = 64;

/// Nor below this product of input and output channels. Measured with F(4×4, 3×3) (`bench
/// train --profile`, one call per layer, 2 cores; ms of forward / input gradient / weight
/// gradient, im2col against Winograd): vgg11's 64→128 on 16×16 maps 32/37/28 against
/// 30/27/22 and resnet18's 128→128 on 16×16 about 57/54/62 against 44/40/39 gained, while
/// resnet18's 64→64 on 32×32 was level (about 59/63/73 against 65/68/60), so it stays out.
/// (F(2×2, 3×3) gained only from 128→256 channels up.)
const MIN_CHANNEL_PRODUCT: usize = 64 * 128;

/// Smaller output maps stay off this path: maps no larger than the kernel (2×2, 3×3) go to
/// [`super::dense`], which does 4/9 of a direct convolution's multiply-adds on 2×2 maps,
/// where a 4×4 tile, mostly cropped away, would cost as many as the direct one.
const MIN_OUTPUT_SIDE: usize = 4;

/// Whether `g` runs on this path: an ungrouped 3×3 convolution with stride 1 (any padding),
/// at least [`MIN_CHANNELS`] channels in and out, [`MIN_CHANNEL_PRODUCT`] together, and an
/// output of at least [`MIN_OUTPUT_SIDE`] on each side.
pub fn applies(g: &Geom) -> bool {
    conv::specialized()
        && g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.groups == 1
        && g.c.min(g.o) >= MIN_CHANNELS
        && g.c * g.o >= MIN_CHANNEL_PRODUCT
        && g.oh().min(g.ow()) >= MIN_OUTPUT_SIDE
}

/// Tile rows, tile columns and tiles per image: 4×4 output tiles covering the output map.
fn tiles(g: &Geom) -> (usize, usize, usize) {
    let (th, tw) = (g.oh().div_ceil(M), g.ow().div_ceil(M));
    (th, tw, th * tw)
}

/// Images per chunk (at most `cap` transformed elements) and whether the work inside a chunk
/// is multi-threaded ([`conv::split_images`]).
fn chunk_images(g: &Geom, t: Threading, cap: usize) -> (usize, bool) {
    let per_image = XI * g.c.max(g.o) * tiles(g).2;
    conv::split_images(g.n, (cap / per_image.max(1)).clamp(1, g.n.max(1)), t, 1)
}

/// `Bᵀ·d` for one column `d` of an input tile (the rows of `Bᵀ`, written out; the tests hold
/// each of these functions to its matrix).
#[inline(always)]
fn bt(d: [f32; ALPHA]) -> [f32; ALPHA] {
    let (a, b) = (d[3] + d[4], d[1] + d[2]);
    let (c, e) = (d[4] - d[3], d[1] - d[2]);
    let (f, h) = (d[4] - d[2], d[3] - d[1]);
    [4.0 * d[0] - 5.0 * d[2] + d[4], a - 4.0 * b, c + 4.0 * e, f + 2.0 * h, f - 2.0 * h, 4.0 * d[1] - 5.0 * d[3] + d[5]]
}

/// `Aᵀ·m` for one column `m` of a transformed product (the rows of `Aᵀ`).
#[inline(always)]
fn at(m: [f32; ALPHA]) -> [f32; M] {
    let (s12, d12, s34, d34) = (m[1] + m[2], m[1] - m[2], m[3] + m[4], m[3] - m[4]);
    [m[0] + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + m[5]]
}

/// `A·v` for one column `v` of an output-gradient tile (the columns of `Aᵀ`).
#[inline(always)]
fn a(v: [f32; M]) -> [f32; ALPHA] {
    let (e, o) = (v[0] + v[2], v[1] + v[3]);
    let (e4, o2) = (v[0] + 4.0 * v[2], 2.0 * v[1] + 8.0 * v[3]);
    [v[0], e + o, e - o, e4 + o2, e4 - o2, v[3]]
}

/// `G·w` for one column `w` of a kernel (the rows of `G`).
#[inline(always)]
fn g(w: [f32; 3]) -> [f32; ALPHA] {
    let (s, d) = (w[0] + w[2], w[1]);
    let (q, r) = (w[0] / 24.0 + w[2] / 6.0, w[1] / 12.0);
    [w[0] / 4.0, -(s + d) / 6.0, -(s - d) / 6.0, q + r, q - r, w[2]]
}

/// `Gᵀ·u` for one column `u` of a transformed-kernel gradient (the columns of `G`).
#[inline(always)]
fn gt(u: [f32; ALPHA]) -> [f32; 3] {
    let (p, q) = (u[1] + u[2], u[3] + u[4]);
    [u[0] / 4.0 - p / 6.0 + q / 24.0, (u[2] - u[1]) / 6.0 + (u[3] - u[4]) / 12.0, -p / 6.0 + q / 6.0 + u[5]]
}

/// A block of [`LANES`] values, one per tile (or channel) transformed together.
type Lanes = [f32; LANES];

/// The first `len` values of `src` as a lane block, zeros after them; a whole block is one
/// fixed-size copy (a few vector moves, not a call to memmove).
fn load_lanes(src: &[f32], len: usize) -> Lanes {
    if len == LANES {
        src[..LANES].try_into().expect("a whole block")
    } else {
        std::array::from_fn(|l| if l < len { src[l] } else { 0.0 })
    }
}

/// `F·X·Fᵀ` of a small square matrix of lane blocks, where `f(v)` is `F·v` for one column
/// (one of [`bt`], [`at`], [`a`], [`g`], [`gt`]): every tile transform has this shape. Columns
/// first, each lane on its own (the loops over lanes vectorize), then rows.
#[inline(always)]
fn sandwich<const I: usize, const O: usize>(x: &[[Lanes; I]; I], f: impl Fn([f32; I]) -> [f32; O], out: &mut [[Lanes; O]; O]) {
    let mut cols = [[[0f32; LANES]; I]; O];
    for j in 0..I {
        for l in 0..LANES {
            let y = f(std::array::from_fn(|i| x[i][j][l]));
            for (row, v) in cols.iter_mut().zip(y) {
                row[j][l] = v;
            }
        }
    }
    for (row, c) in out.iter_mut().zip(&cols) {
        for l in 0..LANES {
            let y = f(std::array::from_fn(|j| c[j][l]));
            for (o, v) in row.iter_mut().zip(y) {
                o[l] = v;
            }
        }
    }
}

/// `U = G·w·Gᵀ` for every (output, input) channel pair of a `(o, c, 3, 3)` kernel, laid out
/// `[o][ξ][c]`; [`LANES`] input channels at a time.
fn transform_kernel(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; o * XI * c];
    u.par_chunks_mut(XI * c).enumerate().for_each(|(oi, uo)| {
        let mut t = [[[0f32; LANES]; ALPHA]; ALPHA];
        for c0 in (0..c).step_by(LANES) {
            let len = LANES.min(c - c0);
            let x: [[Lanes; 3]; 3] = std::array::from_fn(|i| {
                std::array::from_fn(|j| std::array::from_fn(|l| if l < len { w[(oi * c + c0 + l) * 9 + 3 * i + j] } else { 0.0 }))
            });
            sandwich(&x, g, &mut t);
            for (xi, v) in t.as_flattened().iter().enumerate() {
                uo[xi * c + c0..][..len].copy_from_slice(&v[..len]);
            }
        }
    });
    u
}

/// `dw = Gᵀ·dU·G` for a `[ξ][o][c]` gradient of the transformed kernel: the `(o, c, 3, 3)`
/// weight gradient; [`LANES`] input channels at a time.
fn untransform_kernel_gradient(du: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut dw = vec![0f32; o * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(oi, dwo)| {
        let mut t = [[[0f32; LANES]; 3]; 3];
        for c0 in (0..c).step_by(LANES) {
            let len = LANES.min(c - c0);
            let x: [[Lanes; ALPHA]; ALPHA] = std::array::from_fn(|i| std::array::from_fn(|j| load_lanes(&du[((ALPHA * i + j) * o + oi) * c + c0..], len)));
            sandwich(&x, gt, &mut t);
            for (k, v) in t.as_flattened().iter().enumerate() {
                for l in 0..len {
                    dwo[(c0 + l) * 9 + k] = v[l];
                }
            }
        }
    });
    dw
}

/// Tiles transformed together: the arithmetic runs on `[f32; LANES]` arrays (vectorized) and
/// each of the 36 outputs is stored as one contiguous run, instead of 36 scattered scalars.
const LANES: usize = 16;

/// The 36 rows (one per ξ, `len` long) of one channel's block of a `[channel][ξ][t]` buffer.
fn xi_rows(block: &mut [f32], len: usize) -> [&mut [f32]; XI] {
    let mut it = block.chunks_mut(len);
    std::array::from_fn(|_| it.next().expect("36 transformed rows"))
}

/// Zero-bordered copies of one channel of every image in a chunk ([`Planes`]) and each tile's
/// window offset in them.
struct Padded {
    planes: Planes,
    /// Offset of tile `t`'s top-left corner (4×4 tiles of an `th × tw` grid per plane), then
    /// zeros up to a whole number of [`LANES`] blocks.
    tile_at: Vec<usize>,
}

impl Padded {
    /// Planes whose corner is source position `(-pad, -pad)`, for sources of `h × w`.
    fn new(planes: usize, (ph, pw): (usize, usize), (h, w): (usize, usize), pad: usize, (th, tw): (usize, usize)) -> Self {
        let size = ph * pw;
        let mut tile_at: Vec<usize> = (0..planes).flat_map(|p| (0..th * tw).map(move |t| p * size + M * (t / tw) * pw + M * (t % tw))).collect();
        tile_at.resize(tile_at.len().next_multiple_of(LANES), 0);
        Self { planes: Planes::new(planes, (ph, pw), (h, w), pad), tile_at }
    }

    /// Element `(dy, dx)` of the windows of the tiles of one lane block.
    fn gather(&self, offsets: &[usize], dy: usize, dx: usize) -> [f32; LANES] {
        let d = dy * self.planes.pw + dx;
        std::array::from_fn(|l| self.planes.buf[offsets[l] + d])
    }
}

/// Stores the first `len` lanes of the 36 transformed values of a block at `t0` of `dst`.
fn store_block(dst: &mut [&mut [f32]; XI], out: &[Lanes], t0: usize, len: usize) {
    for (row, vals) in dst.iter_mut().zip(out) {
        if len == LANES {
            // A fixed-size copy: a few vector moves, not a call to memmove.
            let full: &mut Lanes = (&mut row[t0..t0 + LANES]).try_into().expect("a whole block");
            *full = *vals;
        } else {
            row[t0..t0 + len].copy_from_slice(&vals[..len]);
        }
    }
}

/// The padded planes and tile offsets [`transform_input`] needs for `nb` images.
fn input_planes(g: &Geom, nb: usize) -> Padded {
    let (th, tw, _) = tiles(g);
    Padded::new(nb, (M * th + 2, M * tw + 2), (g.h, g.w), g.pad, (th, tw))
}

/// Transforms input channel `c` of a chunk of `nb` images into its `[ξ][t]` block of a
/// transformed input: `Bᵀ·d·B` of every 6×6 input tile.
fn transform_input(xc: &[f32], g: &Geom, nb: usize, c: usize, pad: &mut Padded, block: &mut [f32]) {
    let tc = nb * tiles(g).2;
    let hw = g.h * g.w;
    for img in 0..nb {
        pad.planes.load(img, &xc[(img * g.c + c) * hw..][..hw], g.w);
    }
    let mut dst = xi_rows(block, tc);
    let mut v = [[[0f32; LANES]; ALPHA]; ALPHA];
    for (blk, offsets) in pad.tile_at.chunks(LANES).enumerate() {
        let t0 = blk * LANES;
        let d: [[Lanes; ALPHA]; ALPHA] = std::array::from_fn(|r| std::array::from_fn(|k| pad.gather(offsets, r, k)));
        sandwich(&d, bt, &mut v);
        store_block(&mut dst, v.as_flattened(), t0, LANES.min(tc - t0));
    }
}

/// Writes `Aᵀ·m·A` of the products `m` (`[o][ξ][t]`) into the output planes of a chunk of
/// `nb` images, `yc (nb, o, oh, ow)`.
fn transform_output(m: &[f32], g: &Geom, nb: usize, yc: &mut [f32]) {
    let (th, tw, tpi) = tiles(g);
    let tc = nb * tpi;
    let (oh, ow) = (g.oh(), g.ow());
    let mut pad = Padded::new(nb, (M * th, M * tw), (oh, ow), 0, (th, tw));
    let pw = pad.planes.pw;
    let tile_at = std::mem::take(&mut pad.tile_at);
    for o in 0..g.o {
        let src: [&[f32]; XI] = std::array::from_fn(|xi| &m[(o * XI + xi) * tc..][..tc]);
        let mut y = [[[0f32; LANES]; M]; M];
        for (blk, offsets) in tile_at.chunks(LANES).enumerate() {
            let t0 = blk * LANES;
            let len = LANES.min(tc - t0);
            let mm: [[Lanes; ALPHA]; ALPHA] = std::array::from_fn(|i| std::array::from_fn(|j| load_lanes(&src[ALPHA * i + j][t0..], len)));
            sandwich(&mm, at, &mut y);
            // Scattered into the tiles' 4×4 corners.
            for (r, row) in y.iter().enumerate() {
                for (cx, vals) in row.iter().enumerate() {
                    for l in 0..len {
                        pad.planes.buf[offsets[l] + r * pw + cx] = vals[l];
                    }
                }
            }
        }
        for img in 0..nb {
            pad.planes.store(img, &mut yc[(img * g.o + o) * oh * ow..][..oh * ow], ow);
        }
    }
}

/// Transforms output-gradient channel `o` of all `n` images into its `[ξ][t]` block:
/// `A·dy·Aᵀ` of every 4×4 tile.
fn transform_output_gradient(dy: &[f32], g: &Geom, o: usize, pad: &mut Padded, block: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    let tc = g.n * tiles(g).2;
    for img in 0..g.n {
        pad.planes.load(img, &dy[(img * g.o + o) * oh * ow..][..oh * ow], ow);
    }
    let mut dst = xi_rows(block, tc);
    let mut v = [[[0f32; LANES]; ALPHA]; ALPHA];
    for (blk, offsets) in pad.tile_at.chunks(LANES).enumerate() {
        let t0 = blk * LANES;
        let d: [[Lanes; M]; M] = std::array::from_fn(|r| std::array::from_fn(|k| pad.gather(offsets, r, k)));
        sandwich(&d, a, &mut v);
        store_block(&mut dst, v.as_flattened(), t0, LANES.min(tc - t0));
    }
}

/// The forward `y = conv(x, w)` of a convolution [`applies`] accepts, threaded as `t` says:
/// chunks of images small enough that their 36 products read operands from cache.
pub fn forward(x: &[f32], w: &[f32], g: &Geom, t: Threading) -> Vec<f32> {
    let (p, in_img, (_, _, tpi)) = (g.oh() * g.ow(), g.c * g.h * g.w, tiles(g));
    let u = transform_kernel(w, g.o, g.c);
    let mut y = vec![0f32; g.n * g.o * p];
    let (nb_max, inner_par) = chunk_images(g, t, CHUNK_CAP);
    over_chunks(&mut y, g.o * p, nb_max, inner_par, |i, yc, par| {
        let nb = yc.len() / (g.o * p);
        let xc = &x[i * nb_max * in_img..][..nb * in_img];
        let tc = nb * tpi;
        with_scratch(XI * g.c * tc, XI * g.o * tc, |v, m| {
            let mut pad = input_planes(g, nb);
            for (c, block) in v.chunks_mut(XI * tc).enumerate() {
                transform_input(xc, g, nb, c, &mut pad, block);
            }
            for xi in 0..XI {
                let a = View {
                    data: &u[xi * g.c..],
                    rs: XI * g.c,
                    cs: 1,
                };
                let b = View {
                    data: &v[xi * tc..],
                    rs: XI * tc,
                    cs: 1,
                };
                gemm(g.o, tc, g.c, &mut m[xi * tc..], XI * tc, false, par, a, b);
            }
            transform_output(m, g, nb, yc);
        });
    });
    y
}

/// The weight gradient of a convolution [`applies`] accepts, given `dy`: the whole batch's
/// transformed inputs and output gradients (in parallel over channels), then one product per
/// ξ over all tiles, the 36 spread over the threads ([`Threading::Batch`]) or each
/// multi-threaded ([`Threading::Gemm`]). Per-thread partial sums over image chunks, as
/// [`forward`] chunks, were slower: on 2×2 maps each chunk's products were too short to
/// amortize re-reading the 16/9-size transformed gradient (90 against 140 GFLOP/s).
pub fn backward_weight(dy: &[f32], x: &[f32], g: &Geom, t: Threading) -> Vec<f32> {
    let tc = g.n * tiles(g).2;
    let mut du = vec![0f32; XI * g.o * g.c];
    with_scratch(XI * g.c * tc, XI * g.o * tc, |v, dyt| {
        v.par_chunks_mut(XI * tc).enumerate().for_each_init(
            || input_planes(g, g.n),
            |pad, (c, block)| transform_input(x, g, g.n, c, pad, block),
        );
        let (th, tw, _) = tiles(g);
        let out_planes = || Padded::new(g.n, (M * th, M * tw), (g.oh(), g.ow()), 0, (th, tw));
        dyt.par_chunks_mut(XI * tc)
            .enumerate()
            .for_each_init(out_planes, |pad, (o, block)| {
                transform_output_gradient(dy, g, o, pad, block)
            });
        let product = |xi: usize, dst: &mut [f32], par: bool| {
            let a = View {
                data: &dyt[xi * tc..],
                rs: XI * tc,
                cs: 1,
            };
            let b = View {
                data: &v[xi * tc..],
                rs: 1,
                cs: XI * tc,
            };
            gemm(g.o, g.c, tc, dst, g.c, false, par, a, b);
        };
        match t {
            Threading::Batch => du
                .par_chunks_mut(g.o * g.c)
                .enumerate()
                .for_each(|(xi, dst)| product(xi, dst, false)),
            Threading::Gemm => du
                .chunks_mut(g.o * g.c)
                .enumerate()
                .for_each(|(xi, dst)| product(xi, dst, true)),
        }
    });
    untransform_kernel_gradient(&du, g.o, g.c)
}

#[cfg(test)]
mod tests {
    use super::super::reference::{assert_close, direct, values};
    use super::*;

    /// Forward and weight gradient against direct sums: odd and even map sizes (partial tiles),
    /// 1×1 and non-square maps, padding 0 to 2, batches the chunks do not divide, both
    /// threadings.
    #[test]
    fn forward_and_weight_gradient_match_direct_sums() {
        for (i, &(n, c, o, h, w, pad)) in [
            (3, 5, 4, 5, 5, 1),
            (2, 3, 6, 6, 6, 1),
            (4, 4, 3, 7, 4, 0),
            (2, 6, 5, 1, 1, 1),
            (3, 2, 2, 2, 2, 1),
            (2, 4, 4, 3, 5, 2),
            (5, 16, 8, 8, 8, 1),
        ]
        .iter()
        .enumerate()
        {
            let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], 1, pad, 1).unwrap();
            let x = values(n * c * h * w, i);
            let wt = values(o * c * 9, i + 50);
            let dy = values(n * o * g.oh() * g.ow(), i + 100);
            let want = direct(&x, &wt, &dy, &g);
            for t in [Threading::Batch, Threading::Gemm] {
                let what = format!("{g:?} {t:?}");
                assert_close(&forward(&x, &wt, &g, t), &want.y, &format!("{what} forward"));
                assert_close(
                    &backward_weight(&dy, &x, &g, t),
                    &want.dw,
                    &format!("{what} weight gradient"),
                );
            }
        }
    }

    /// `Bᵀ`, the input transform of F(4×4, 3×3) (interpolation points 0, ±1, ±2, ∞).
    const BT: [[f32; ALPHA]; ALPHA] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];

    /// `G`, the kernel transform (3 → 6).
    const G: [[f32; 3]; ALPHA] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];

    /// `Aᵀ`, the output transform (6 → 4).
    const AT: [[f32; ALPHA]; M] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    /// Each written-out transform against its matrix (Lavin & Gray's), on unit vectors.
    #[test]
    fn transforms_match_their_matrices() {
        fn unit<const N: usize>(k: usize) -> [f32; N] {
            std::array::from_fn(|i| if i == k { 1.0 } else { 0.0 })
        }
        let close = |x: f32, y: f32, what: &str| assert!((x - y).abs() < 1e-6, "{what}: {x} against {y}");
        for k in 0..ALPHA {
            let (b, m, u) = (bt(unit(k)), at(unit(k)), gt(unit(k)));
            (0..ALPHA).for_each(|i| close(b[i], BT[i][k], "Bᵀ"));
            (0..M).for_each(|i| close(m[i], AT[i][k], "Aᵀ"));
            (0..3).for_each(|i| close(u[i], G[k][i], "Gᵀ"));
        }
        for (k, column) in AT.iter().enumerate() {
            let v = a(unit(k));
            (0..ALPHA).for_each(|i| close(v[i], column[i], "A"));
        }
        (0..3).for_each(|k| {
            let v = g(unit(k));
            (0..ALPHA).for_each(|i| close(v[i], G[i][k], "G"));
        });
    }

    #[test]
    fn applies_to_wide_3x3_stride_1_ungrouped_convs_on_4x4_maps_or_larger() {
        let geom = |c: usize, o: usize, k: usize, stride: usize, groups: usize| {
            Geom::new(&[2, c, 8, 8], &[o, c / groups, k, k], stride, 1, groups).unwrap()
        };
        assert!(applies(&geom(128, 256, 3, 1, 1)));
        assert!(applies(&geom(128, 128, 3, 1, 1)));
        assert!(applies(&geom(64, 128, 3, 1, 1)));
        assert!(!applies(&Geom::new(&[2, 256, 2, 2], &[256, 256, 3, 3], 1, 1, 1).unwrap()), "2×2 maps are not Winograd's");
        assert!(!applies(&geom(64, 64, 3, 1, 1)));
        assert!(!applies(&geom(32, 256, 3, 1, 1)));
        assert!(!applies(&geom(128, 128, 3, 2, 1)));
        assert!(!applies(&geom(128, 128, 1, 1, 1)));
        assert!(!applies(&geom(128, 128, 3, 1, 2)));
    }
}
