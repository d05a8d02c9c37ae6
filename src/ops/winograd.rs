//! 3×3 stride-1 convolutions (forward, and with it the input gradient, and the weight
//! gradient) by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016).
//!
//! Each 2×2 output tile of a channel pair costs 16 multiplications instead of 36: the kernel
//! becomes `U = G·w·Gᵀ` (4×4), each 4×4 input tile `V = Bᵀ·d·B`, and the output
//! `Aᵀ·[Σ_c U ⊙ V]·A`. The sum over input channels at each of the 16 tile positions ξ is one
//! matrix product `M[ξ] (O × tiles) = U[ξ] (O × C) · V[ξ] (C × tiles)`, so the work is 16 GEMMs
//! with 4/9 of im2col's multiply-adds, and no im2col buffer (zero-padding taps included, which
//! im2col multiplies too). This is what oneDNN (PyTorch's CPU convolutions) reaches above the
//! machine's matmul rate with, measured on vgg11's layers (bench/README.md).
//!
//! The weight gradient is the transpose of the same bilinear map:
//! `dw = Gᵀ·[Σ_tiles (A·dy·Aᵀ) ⊙ V]·G`, again 16 GEMMs, now over tiles.
//! Tiles past an odd-sized map read zeros and their outputs are dropped (their output
//! gradient is zero), so any map size and padding is exact.
//!
//! Layouts: the transformed kernel is `[o][ξ][c]` and its gradient `[ξ][o][c]`; transformed
//! inputs, output gradients and products are `[channel][ξ][t]`, tile `t = image·tiles +
//! ty·tw + tx`. Each is blocked by the index its transform runs over, so the transforms are
//! parallel over channels, and every `·[ξ]` matrix is a strided view the GEMM reads as is.

use super::conv::{self, over_chunks, with_scratch, Geom, Threading};
use super::gemm::{gemm, View};
use super::padded::Planes;
use rayon::prelude::*;

/// Positions ξ of a transformed 4×4 tile.
const XI: usize = 16;

/// The largest transformed chunk (`16·channels·tiles`) of the forward, in elements (4 MiB
/// of f32): the 16 products of a chunk then read their operands from cache.
const CHUNK_CAP: usize = 1 << 20;

/// Fewer input or output channels than this stay on im2col, which was as fast or faster
/// there (best of 5, batch 128, 2 cores; GFLOP/s of im2col against Winograd, forward and
/// weight gradient): 64→64 channels on 32×32 maps 185/158 against 110–121/132–135, 64→128 on
/// 16×16 188–193/181–184 against 122–150/172–181: with few channels the 16 products are too
/// small to run near the GEMM's rate and the transforms weigh more.
const MIN_CHANNELS: usize = 128;

/// Nor below this product of input and output channels: 128→128 on 16×16 maps was still
/// slower forward (174–180 against 197–198) and level for the weight gradient, while
/// 128→256 on 8×8 gained (230 against 186) and 256→256 more (241 against 184).
const MIN_CHANNEL_PRODUCT: usize = 128 * 256;

/// Smaller output maps stay off this path (2×2 maps go to [`super::dense`], which was faster
/// still): with one tile per image (2×2 maps) the products are
/// short and the transformed gradient large, and Winograd was no faster (vgg11's 512×2×2
/// layers, best of 5: forward 160 against 178 GFLOP/s, weight gradient 119 against 127).
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

/// Tile rows, tile columns and tiles per image: 2×2 output tiles covering the output map.
fn tiles(g: &Geom) -> (usize, usize, usize) {
    let (th, tw) = (g.oh().div_ceil(2), g.ow().div_ceil(2));
    (th, tw, th * tw)
}

/// Images per chunk (at most `cap` transformed elements) and whether the work inside a chunk
/// is multi-threaded ([`conv::split_images`]).
fn chunk_images(g: &Geom, t: Threading, cap: usize) -> (usize, bool) {
    let per_image = XI * g.c.max(g.o) * tiles(g).2;
    conv::split_images(g.n, (cap / per_image.max(1)).clamp(1, g.n.max(1)), t, 1)
}

/// `G·v` for a kernel row or column `v` (3 → 4).
fn g3(a: f32, b: f32, c: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
}

/// `Gᵀ·v` (4 → 3), the transpose of [`g3`].
fn gt4(v: [f32; 4]) -> [f32; 3] {
    let s = 0.5 * (v[1] + v[2]);
    [v[0] + s, 0.5 * (v[1] - v[2]), s + v[3]]
}

/// `U = G·w·Gᵀ` for every (output, input) channel pair of a `(o, c, 3, 3)` kernel, laid out
/// `[o][ξ][c]`.
fn transform_kernel(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; o * XI * c];
    u.par_chunks_mut(XI * c).enumerate().for_each(|(oi, uo)| {
        for ci in 0..c {
            let k = &w[(oi * c + ci) * 9..][..9];
            // Columns first: G applied down each of the 3 kernel columns.
            let cols: [[f32; 4]; 3] = std::array::from_fn(|j| g3(k[j], k[3 + j], k[6 + j]));
            for i in 0..4 {
                let row = g3(cols[0][i], cols[1][i], cols[2][i]);
                for (j, &v) in row.iter().enumerate() {
                    uo[(4 * i + j) * c + ci] = v;
                }
            }
        }
    });
    u
}

/// `dw = Gᵀ·dU·G` for a `[ξ][o][c]` gradient of the transformed kernel: the `(o, c, 3, 3)`
/// weight gradient.
fn untransform_kernel_gradient(du: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut dw = vec![0f32; o * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(oi, dwo)| {
        for ci in 0..c {
            let t = |i: usize, j: usize| du[((4 * i + j) * o + oi) * c + ci];
            // Rows first: Gᵀ along each of the 4 rows, then down the 3 resulting columns.
            let rows: [[f32; 3]; 4] =
                std::array::from_fn(|i| gt4([t(i, 0), t(i, 1), t(i, 2), t(i, 3)]));
            for j in 0..3 {
                let col = gt4([rows[0][j], rows[1][j], rows[2][j], rows[3][j]]);
                for (i, &v) in col.iter().enumerate() {
                    dwo[ci * 9 + 3 * i + j] = v;
                }
            }
        }
    });
    dw
}

/// Tiles transformed together: the arithmetic runs on `[f32; LANES]` arrays (vectorized) and
/// each of the 16 outputs is stored as one contiguous run, instead of 16 scattered scalars.
const LANES: usize = 16;

/// The 16 rows (one per ξ, `len` long) of one channel's block of a `[channel][ξ][t]` buffer.
fn xi_rows(block: &mut [f32], len: usize) -> [&mut [f32]; XI] {
    let mut it = block.chunks_mut(len);
    std::array::from_fn(|_| it.next().expect("16 transformed rows"))
}

/// Zero-bordered copies of one channel of every image in a chunk ([`Planes`]) and each tile's
/// window offset in them.
struct Padded {
    planes: Planes,
    /// Offset of tile `t`'s top-left corner (2×2 tiles of an `th × tw` grid per plane), then
    /// zeros up to a whole number of [`LANES`] blocks.
    tile_at: Vec<usize>,
}

impl Padded {
    /// Planes whose corner is source position `(-pad, -pad)`, for sources of `h × w`.
    fn new(planes: usize, (ph, pw): (usize, usize), (h, w): (usize, usize), pad: usize, (th, tw): (usize, usize)) -> Self {
        let size = ph * pw;
        let mut tile_at: Vec<usize> = (0..planes).flat_map(|p| (0..th * tw).map(move |t| p * size + 2 * (t / tw) * pw + 2 * (t % tw))).collect();
        tile_at.resize(tile_at.len().next_multiple_of(LANES), 0);
        Self { planes: Planes::new(planes, (ph, pw), (h, w), pad), tile_at }
    }

    /// Element `(dy, dx)` of the windows of the tiles of one lane block.
    fn gather(&self, offsets: &[usize], dy: usize, dx: usize) -> [f32; LANES] {
        let d = dy * self.planes.pw + dx;
        std::array::from_fn(|l| self.planes.buf[offsets[l] + d])
    }
}

/// `a ∘ b` lane by lane.
fn lanes(a: &[f32; LANES], b: &[f32; LANES], f: impl Fn(f32, f32) -> f32) -> [f32; LANES] {
    std::array::from_fn(|l| f(a[l], b[l]))
}

/// Stores the first `len` lanes of the 16 transformed values of a block at `t0` of `dst`.
fn store_block(dst: &mut [&mut [f32]; XI], out: &[[f32; LANES]; XI], t0: usize, len: usize) {
    for (row, vals) in dst.iter_mut().zip(out) {
        row[t0..t0 + len].copy_from_slice(&vals[..len]);
    }
}

/// The padded planes and tile offsets [`transform_input`] needs for `nb` images.
fn input_planes(g: &Geom, nb: usize) -> Padded {
    let (th, tw, _) = tiles(g);
    Padded::new(nb, (2 * th + 2, 2 * tw + 2), (g.h, g.w), g.pad, (th, tw))
}

/// Transforms input channel `c` of a chunk of `nb` images into its `[ξ][t]` block of a
/// transformed input: `Bᵀ·d·B` of every 4×4 input tile.
fn transform_input(xc: &[f32], g: &Geom, nb: usize, c: usize, pad: &mut Padded, block: &mut [f32]) {
    let tc = nb * tiles(g).2;
    let hw = g.h * g.w;
    for img in 0..nb {
        pad.planes.load(img, &xc[(img * g.c + c) * hw..][..hw], g.w);
    }
    let mut dst = xi_rows(block, tc);
    for (blk, offsets) in pad.tile_at.chunks(LANES).enumerate() {
        let t0 = blk * LANES;
        // Bᵀ·d down each of the 4 window columns k: rows t[i][k].
        let mut t = [[[0f32; LANES]; 4]; 4];
        for k in 0..4 {
            let [d0, d1, d2, d3] = std::array::from_fn(|r| pad.gather(offsets, r, k));
            let column = [
                lanes(&d0, &d2, |a, b| a - b),
                lanes(&d1, &d2, |a, b| a + b),
                lanes(&d2, &d1, |a, b| a - b),
                lanes(&d1, &d3, |a, b| a - b),
            ];
            for (row, v) in t.iter_mut().zip(column) {
                row[k] = v;
            }
        }
        // ·B along each row i.
        let mut out = [[0f32; LANES]; XI];
        for (i, [a, b, cc, e]) in t.iter().enumerate() {
            out[4 * i] = lanes(a, cc, |a, c| a - c);
            out[4 * i + 1] = lanes(b, cc, |b, c| b + c);
            out[4 * i + 2] = lanes(cc, b, |c, b| c - b);
            out[4 * i + 3] = lanes(b, e, |b, e| b - e);
        }
        store_block(&mut dst, &out, t0, LANES.min(tc - t0));
    }
}

/// Writes `Aᵀ·m·A` of the products `m` (`[o][ξ][t]`) into the output planes of a chunk of
/// `nb` images, `yc (nb, o, oh, ow)`.
fn transform_output(m: &[f32], g: &Geom, nb: usize, yc: &mut [f32]) {
    let (th, tw, tpi) = tiles(g);
    let tc = nb * tpi;
    let (oh, ow) = (g.oh(), g.ow());
    let mut pad = Padded::new(nb, (2 * th, 2 * tw), (oh, ow), 0, (th, tw));
    let pw = pad.planes.pw;
    let tile_at = std::mem::take(&mut pad.tile_at);
    for o in 0..g.o {
        let src: [&[f32]; XI] = std::array::from_fn(|xi| &m[(o * XI + xi) * tc..][..tc]);
        for (blk, offsets) in tile_at.chunks(LANES).enumerate() {
            let t0 = blk * LANES;
            let len = LANES.min(tc - t0);
            let mm = |i: usize, j: usize| -> [f32; LANES] {
                let mut a = [0f32; LANES];
                a[..len].copy_from_slice(&src[4 * i + j][t0..t0 + len]);
                a
            };
            // Aᵀ·m: rows s0 = m0 + m1 + m2 and s1 = m1 − m2 − m3, per column j.
            let s: [[[f32; LANES]; 4]; 2] = {
                let cols: [_; 4] =
                    std::array::from_fn(|j| [mm(0, j), mm(1, j), mm(2, j), mm(3, j)]);
                [
                    cols.map(|[m0, m1, m2, _]| std::array::from_fn(|l| m0[l] + m1[l] + m2[l])),
                    cols.map(|[_, m1, m2, m3]| std::array::from_fn(|l| m1[l] - m2[l] - m3[l])),
                ]
            };
            // ·A along each row, scattered into the tiles' 2×2 corners.
            for (r, [a, b, c, d]) in s.iter().enumerate() {
                let left: [f32; LANES] = std::array::from_fn(|l| a[l] + b[l] + c[l]);
                let right: [f32; LANES] = std::array::from_fn(|l| b[l] - c[l] - d[l]);
                for l in 0..len {
                    let at = offsets[l] + r * pw;
                    pad.planes.buf[at] = left[l];
                    pad.planes.buf[at + 1] = right[l];
                }
            }
        }
        for img in 0..nb {
            pad.planes.store(img, &mut yc[(img * g.o + o) * oh * ow..][..oh * ow], ow);
        }
    }
}

/// Transforms output-gradient channel `o` of all `n` images into its `[ξ][t]` block:
/// `A·dy·Aᵀ` of every 2×2 tile.
fn transform_output_gradient(dy: &[f32], g: &Geom, o: usize, pad: &mut Padded, block: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    let tc = g.n * tiles(g).2;
    for img in 0..g.n {
        pad.planes.load(img, &dy[(img * g.o + o) * oh * ow..][..oh * ow], ow);
    }
    let mut dst = xi_rows(block, tc);
    for (blk, offsets) in pad.tile_at.chunks(LANES).enumerate() {
        let t0 = blk * LANES;
        let [a, b, c, e] = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(y, x)| pad.gather(offsets, y, x));
        // A·dy: four rows (p, q); then ·Aᵀ along each: (p, q) → (p, p+q, p−q, −q).
        let rows = [
            (a, b),
            (lanes(&a, &c, |a, c| a + c), lanes(&b, &e, |b, e| b + e)),
            (lanes(&a, &c, |a, c| a - c), lanes(&b, &e, |b, e| b - e)),
            (c.map(|v| -v), e.map(|v| -v)),
        ];
        let mut out = [[0f32; LANES]; XI];
        for (i, (p, q)) in rows.iter().enumerate() {
            out[4 * i] = *p;
            out[4 * i + 1] = lanes(p, q, |p, q| p + q);
            out[4 * i + 2] = lanes(p, q, |p, q| p - q);
            out[4 * i + 3] = q.map(|v| -v);
        }
        store_block(&mut dst, &out, t0, LANES.min(tc - t0));
    }
}

/// The forward `y = conv(x, w)` of a convolution [`applies`] accepts, threaded as `t` says:
/// chunks of images small enough that their 16 products read operands from cache.
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
/// ξ over all tiles, the 16 spread over the threads ([`Threading::Batch`]) or each
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
        let out_planes = || Padded::new(g.n, (2 * th, 2 * tw), (g.oh(), g.ow()), 0, (th, tw));
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

    #[test]
    fn applies_to_wide_3x3_stride_1_ungrouped_convs_on_4x4_maps_or_larger() {
        let geom = |c: usize, o: usize, k: usize, stride: usize, groups: usize| {
            Geom::new(&[2, c, 8, 8], &[o, c / groups, k, k], stride, 1, groups).unwrap()
        };
        assert!(applies(&geom(128, 256, 3, 1, 1)));
        assert!(!applies(&Geom::new(&[2, 256, 2, 2], &[256, 256, 3, 3], 1, 1, 1).unwrap()), "2×2 maps are not Winograd's");
        assert!(!applies(&geom(64, 64, 3, 1, 1)));
        assert!(!applies(&geom(128, 128, 3, 1, 1)));
        assert!(!applies(&geom(128, 128, 3, 2, 1)));
        assert!(!applies(&geom(128, 128, 1, 1, 1)));
        assert!(!applies(&geom(128, 128, 3, 1, 2)));
    }
}
