//! 2-D convolution on the CPU as im2col + GEMM, with its backward as GEMM + col2im (input
//! gradient) and GEMM (weight gradient), as candle custom ops.
//!
//! candle 0.11 computes a conv's input gradient with a direct conv_transpose2d and its weight
//! gradient with a conv whose kernel is the whole output map (candle #2144, #3119), which is
//! several times slower than the forward. Here all three are matrix products on im2col
//! buffers: a chunk of images is unfolded into a `(C/g·kh·kw) × (images·OH·OW)` matrix so each
//! product is large enough for the GEMM to run near the machine's rate even on 2×2 maps.
//! The backward skips the input gradient when the input needs none (the images) and the
//! weight gradient when the weight is detached (eval mode, attacks).

use super::gemm::{gemm, View};
use super::{cpu_f32, dense, grouped, winograd};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// The largest im2col buffer per chunk, in elements (16 MiB of f32).
const COL_CAP: usize = 4 << 20;

/// Output positions per image from which each image gets its own matrix products that read
/// and write the NCHW tensors in place (no gather or scatter copies, an im2col buffer the
/// size of one image's): below it a product over one image is too small to run near the
/// GEMM's rate, and chunks of images are unfolded together. From 256 to 64 (8×8 maps):
/// regnet200mf's thirteen 368-channel 1×1 layers on 8×8 maps, forward and both gradients,
/// 721–726 → 548–569 ms in isolation (`bench train --profile`, alternated); 16 (4×4 maps)
/// looked slower on resnet18 and was not taken.
const DIRECT_MIN_POSITIONS: usize = 64;

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geom {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Geom {
    /// The geometry of `x (n, c, h, w)` convolved with `w (o, c/groups, kh, kw)`, checked.
    pub fn new(x: &[usize], w: &[usize], stride: usize, pad: usize, groups: usize) -> Result<Self> {
        let (&[n, c, h, wd], &[o, cg, kh, kw]) = (x, w) else {
            bail!("conv2d: expected 4-d input and kernel, got {x:?} and {w:?}")
        };
        if groups == 0 || stride == 0 || c % groups != 0 || o % groups != 0 || cg != c / groups {
            bail!("conv2d: input {x:?}, kernel {w:?}, groups {groups}, stride {stride} do not fit")
        }
        if h + 2 * pad < kh || wd + 2 * pad < kw {
            bail!("conv2d: kernel {kh}×{kw} larger than the padded input {h}×{wd} (padding {pad})")
        }
        Ok(Self { n, c, h, w: wd, o, kh, kw, stride, pad, groups })
    }

    /// Output height.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }

    pub(super) fn cg(&self) -> usize {
        self.c / self.groups
    }

    pub(super) fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of a group's im2col matrix: C/g·kh·kw.
    fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    fn p(&self) -> usize {
        self.oh() * self.ow()
    }

    /// Whether each image is its own product (see [`DIRECT_MIN_POSITIONS`]).
    fn direct(&self) -> bool {
        self.p() >= DIRECT_MIN_POSITIONS
    }

    /// A 1×1 convolution with stride 1 and no padding: the input planes are already its
    /// im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// The im2col buffer one image needs ([`unfolded`]): none for a pointwise conv.
    fn image_col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.kg() * self.p()
        }
    }

    /// The geometry of the input gradient as a forward convolution of `dy` (see
    /// [`flipped_transpose`]); `None` unless stride 1, a square kernel and padding < kernel.
    fn transposed(&self) -> Option<Geom> {
        (self.stride == 1 && self.kh == self.kw && self.pad < self.kh).then(|| Geom {
            n: self.n,
            c: self.o,
            h: self.oh(),
            w: self.ow(),
            o: self.c,
            kh: self.kh,
            kw: self.kw,
            stride: 1,
            pad: self.kh - 1 - self.pad,
            groups: self.groups,
        })
    }

    /// Images per chunk: as many as fit in [`COL_CAP`].
    fn chunk(&self) -> usize {
        (COL_CAP / (self.kg() * self.p()).max(1)).clamp(1, self.n.max(1))
    }

    /// The output shape.
    pub fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.o, self.oh(), self.ow()))
    }
}

/// How the conv kernels share the threads: the brief's two options, measured against each
/// other by `normlab bench train --threading`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// Image chunks one after another, each product multi-threaded inside the GEMM.
    Gemm,
    /// Image chunks in parallel (rayon work stealing), each product on one thread.
    Batch,
}

static BATCH_THREADING: AtomicBool = AtomicBool::new(true);

static SPECIALIZED: AtomicBool = AtomicBool::new(true);

/// Lets convolutions take the specialised kernels where they apply ([`winograd`] for wide
/// 3×3 stride-1 layers, [`grouped`] for narrow channel groups, [`dense`] for maps no larger
/// than the kernel; the default), or keeps every
/// convolution on im2col + GEMM, so `normlab bench train --conv-algo` can measure one against
/// the other.
pub fn set_specialized(on: bool) {
    SPECIALIZED.store(on, Ordering::Relaxed);
}

/// Whether the specialised kernels are allowed (see [`set_specialized`]).
pub fn specialized() -> bool {
    SPECIALIZED.load(Ordering::Relaxed)
}

/// Selects the threading for the whole process.
pub fn set_threading(t: Threading) {
    BATCH_THREADING.store(t == Threading::Batch, Ordering::Relaxed);
}

/// The threading in use (default [`Threading::Batch`]).
pub fn threading() -> Threading {
    if BATCH_THREADING.load(Ordering::Relaxed) {
        Threading::Batch
    } else {
        Threading::Gemm
    }
}

thread_local! {
    /// Per-thread im2col and gathered-gradient buffers, kept between calls: fresh multi-MB
    /// buffers for every chunk cost page faults and zeroing that showed in profiles.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two scratch buffers of `a` and `b` elements (contents unspecified: `f` must
/// write before it reads), reused per thread; fresh ones if this thread's are in use.
pub(super) fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (x, y) = &mut *bufs;
            if x.len() < a {
                x.resize(a, 0.0);
            }
            if y.len() < b {
                y.resize(b, 0.0);
            }
            f(&mut x[..a], &mut y[..b])
        }
        Err(_) => f(&mut vec![0f32; a], &mut vec![0f32; b]),
    })
}

/// Calls `f(i, piece)` on the `size`-long pieces of `data`, in parallel when `par`.
fn each_mut(data: &mut [f32], size: usize, par: bool, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if par {
        data.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// The output positions `ox` whose input column `ox·stride + kj − pad` lies in `0..w`.
fn valid_range(g: &Geom, kj: usize) -> (usize, usize) {
    let ow = g.ow();
    let lo = (g.pad.saturating_sub(kj)).div_ceil(g.stride).min(ow);
    let hi = if g.w + g.pad > kj { ((g.w + g.pad - kj - 1) / g.stride + 1).min(ow) } else { 0 };
    (lo, hi.max(lo))
}

/// Unfolds the `nb` images of `xc`, channels `c0..c0+cg`, into `col` (row `(ci, ki, kj)`,
/// column `(image, oy, ox)`).
fn im2col(xc: &[f32], g: &Geom, nb: usize, c0: usize, col: &mut [f32], par: bool) {
    let (p, ow, hw) = (g.p(), g.ow(), g.h * g.w);
    let cols = nb * p;
    each_mut(&mut col[..g.kg() * cols], cols, par, |r, row| {
        let (ci, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let (lo, hi) = valid_range(g, kj);
        for img in 0..nb {
            let plane = &xc[(img * g.c + c0 + ci) * hw..][..hw];
            for (oy, out) in row[img * p..(img + 1) * p].chunks_mut(ow).enumerate() {
                let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    out.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * g.w..][..g.w];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                if g.stride == 1 {
                    let start = lo + kj - g.pad;
                    out[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                } else {
                    for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                        *o = src[(lo + ox) * g.stride + kj - g.pad];
                    }
                }
            }
        }
    });
}

/// Folds `dcol` (as [`im2col`] lays it out) back onto the `nb` images of `dxc`, channels
/// `c0..c0+cg`, adding where windows overlap.
fn col2im(dcol: &[f32], g: &Geom, nb: usize, c0: usize, dxc: &mut [f32], par: bool) {
    let (p, ow, hw, kk) = (g.p(), g.ow(), g.h * g.w, g.kh * g.kw);
    let cols = nb * p;
    let cg = g.cg();
    each_mut(&mut dxc[..nb * g.c * hw], hw, par, |j, plane| {
        let (img, ch) = (j / g.c, j % g.c);
        if ch < c0 || ch >= c0 + cg {
            return;
        }
        let ci = ch - c0;
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let (lo, hi) = valid_range(g, kj);
                let row = &dcol[((ci * kk) + ki * g.kw + kj) * cols + img * p..][..p];
                for (oy, src) in row.chunks(ow).enumerate() {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    if g.stride == 1 {
                        let start = lo + kj - g.pad;
                        for (d, &v) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (ox, &v) in src[lo..hi].iter().enumerate() {
                            dst[(lo + ox) * g.stride + kj - g.pad] += v;
                        }
                    }
                }
            }
        }
    });
}

/// Copies output channels `o0..o0+og` of the `nb` images of `yc (nb, o, p)` into
/// `chunk (og × nb·p)`, row `o`, columns `(image, position)`.
fn gather_out(yc: &[f32], g: &Geom, nb: usize, o0: usize, chunk: &mut [f32], par: bool) {
    let p = g.p();
    each_mut(&mut chunk[..g.og() * nb * p], p, par, |s, slot| {
        let (o, img) = (s / nb, s % nb);
        slot.copy_from_slice(&yc[(img * g.o + o0 + o) * p..][..p]);
    });
}

/// The inverse of [`gather_out`]: writes `chunk` into its planes of `yc`.
fn scatter_out(chunk: &[f32], g: &Geom, nb: usize, o0: usize, yc: &mut [f32], par: bool) {
    let (p, og) = (g.p(), g.og());
    each_mut(&mut yc[..nb * g.o * p], p, par, |j, plane| {
        let (img, oc) = (j / g.o, j % g.o);
        if (o0..o0 + og).contains(&oc) {
            plane.copy_from_slice(&chunk[((oc - o0) * nb + img) * p..][..p]);
        }
    });
}

/// Images per chunk under the current threading: what fits [`COL_CAP`]; with
/// [`Threading::Batch`] also at least `parts_per_thread` chunks per thread, and a number of
/// chunks that the threads divide evenly (5 chunks on 2 threads left one idle a fifth of
/// the time).
fn chunk_images(g: &Geom, t: Threading, parts_per_thread: usize) -> (usize, bool) {
    split_images(g.n, g.chunk(), t, parts_per_thread)
}

/// Images per chunk of a batch of `n` when at most `cap` fit one, and whether the work inside
/// a chunk is multi-threaded: [`Threading::Gemm`] takes `cap`; [`Threading::Batch`] at least
/// `parts_per_thread` chunks per thread, in a number the threads divide.
pub(super) fn split_images(n: usize, cap: usize, t: Threading, parts_per_thread: usize) -> (usize, bool) {
    match t {
        Threading::Gemm => (cap, true),
        Threading::Batch => {
            let threads = rayon::current_num_threads();
            let parts = n.div_ceil(cap.max(1)).max(parts_per_thread * threads).next_multiple_of(threads);
            (n.div_ceil(parts).max(1), false)
        }
    }
}

/// Runs `f(chunk index, output chunk)` over `nb`-image chunks of `out`, in sequence with
/// multi-threaded inner work, or in parallel with sequential inner work.
pub(super) fn over_chunks(out: &mut [f32], per_image: usize, nb: usize, inner_par: bool, f: impl Fn(usize, &mut [f32], bool) + Sync + Send) {
    if inner_par {
        out.chunks_mut(nb * per_image).enumerate().for_each(|(i, c)| f(i, c, true));
    } else {
        out.par_chunks_mut(nb * per_image).enumerate().for_each(|(i, c)| f(i, c, false));
    }
}

/// The forward: `y = conv(x, w)` (no bias), threaded as `t` says.
pub fn forward(x: &[f32], w: &[f32], g: &Geom, t: Threading) -> Vec<f32> {
    if dense::applies(g) {
        return dense::forward(x, w, g);
    }
    if winograd::applies(g) {
        return winograd::forward(x, w, g, t);
    }
    if grouped::applies(g) {
        return grouped::forward(x, w, g);
    }
    let (p, og, kg, in_img) = (g.p(), g.og(), g.kg(), g.c * g.h * g.w);
    let mut y = vec![0f32; g.n * g.o * p];
    let (nb_max, inner_par) = chunk_images(g, t, 4);
    over_chunks(&mut y, g.o * p, nb_max, inner_par, |i, yc, par| {
        let nb = yc.len() / (g.o * p);
        let xc = &x[i * nb_max * in_img..][..nb * in_img];
        if g.direct() {
            return forward_direct(xc, w, g, yc, par);
        }
        let cols = nb * p;
        with_scratch(kg * cols, og * cols, |col, out| {
            for gi in 0..g.groups {
                im2col(xc, g, nb, gi * g.cg(), col, par);
                let wg = &w[gi * og * kg..(gi + 1) * og * kg];
                gemm(og, cols, kg, out, cols, false, par, View::rows(wg, kg), View::rows(col, cols));
                scatter_out(out, g, nb, gi * og, yc, par);
            }
        });
    });
    y
}

/// The `(C/g·kh·kw) × positions` unfolded input of group `gi` of one image `xi`: the image's
/// own planes for a pointwise conv, else unfolded into `col` (of [`Geom::image_col_len`]).
fn unfolded<'a>(xi: &'a [f32], g: &Geom, gi: usize, col: &'a mut [f32], par: bool) -> &'a [f32] {
    let len = g.kg() * g.p();
    if g.pointwise() {
        return &xi[gi * len..][..len];
    }
    im2col(xi, g, 1, gi * g.cg(), col, par);
    &col[..len]
}

/// [`forward`] one image at a time ([`Geom::direct`]): each group's product writes the
/// image's output planes in place.
fn forward_direct(xc: &[f32], w: &[f32], g: &Geom, yc: &mut [f32], par: bool) {
    let (p, og, kg, in_img) = (g.p(), g.og(), g.kg(), g.c * g.h * g.w);
    with_scratch(g.image_col_len(), 0, |col, _| {
        for (xi, yi) in xc.chunks(in_img).zip(yc.chunks_mut(g.o * p)) {
            for gi in 0..g.groups {
                let b = View::rows(unfolded(xi, g, gi, col, par), p);
                let wg = View::rows(&w[gi * og * kg..(gi + 1) * og * kg], kg);
                gemm(og, p, kg, &mut yi[gi * og * p..][..og * p], p, false, par, wg, b);
            }
        }
    });
}

/// The kernel of the input gradient as a forward convolution (stride 1): per group, `w`'s
/// `(og, cg, kh, kw)` block becomes `(cg, og, kh, kw)`, each kernel turned by 180°.
fn flipped_transpose(w: &[f32], g: &Geom) -> Vec<f32> {
    let (og, cg, kk) = (g.og(), g.cg(), g.kh * g.kw);
    let mut out = vec![0f32; w.len()];
    for gi in 0..g.groups {
        for o in 0..og {
            for c in 0..cg {
                let src = &w[((gi * og + o) * cg + c) * kk..][..kk];
                let dst = &mut out[((gi * cg + c) * og + o) * kk..][..kk];
                dst.iter_mut().zip(src.iter().rev()).for_each(|(d, &v)| *d = v);
            }
        }
    }
    out
}

/// The input gradient `dx` of `y = conv(x, w)` given `dy`, threaded as `t` says. With stride
/// 1 it is the forward convolution of `dy` with the flipped, transposed kernel (im2col, not
/// the slower col2im); otherwise GEMM + col2im.
pub fn backward_data(dy: &[f32], w: &[f32], g: &Geom, t: Threading) -> Vec<f32> {
    if dense::applies(g) {
        return dense::backward_data(dy, w, g);
    }
    if let Some(gt) = g.transposed() {
        return forward(dy, &flipped_transpose(w, g), &gt, t);
    }
    if grouped::applies_strided_data(g) {
        return grouped::backward_data_strided(dy, w, g);
    }
    let (p, og, kg, in_img) = (g.p(), g.og(), g.kg(), g.c * g.h * g.w);
    let mut dx = vec![0f32; g.n * in_img];
    let (nb_max, inner_par) = chunk_images(g, t, 4);
    over_chunks(&mut dx, in_img, nb_max, inner_par, |i, dxc, par| {
        let nb = dxc.len() / in_img;
        let dyc_all = &dy[i * nb_max * g.o * p..][..nb * g.o * p];
        if g.direct() {
            // One image at a time, reading its gradient planes in place.
            return with_scratch(kg * p, 0, |dcol, _| {
                for (dyi, dxi) in dyc_all.chunks(g.o * p).zip(dxc.chunks_mut(in_img)) {
                    for gi in 0..g.groups {
                        let wg = View::rows_t(&w[gi * og * kg..(gi + 1) * og * kg], kg);
                        gemm(kg, p, og, dcol, p, false, par, wg, View::rows(&dyi[gi * og * p..][..og * p], p));
                        col2im(dcol, g, 1, gi * g.cg(), dxi, par);
                    }
                }
            });
        }
        let cols = nb * p;
        with_scratch(kg * cols, og * cols, |dcol, dyc| {
            for gi in 0..g.groups {
                gather_out(dyc_all, g, nb, gi * og, dyc, par);
                let wg = &w[gi * og * kg..(gi + 1) * og * kg];
                gemm(kg, cols, og, dcol, cols, false, par, View::rows_t(wg, kg), View::rows(dyc, cols));
                col2im(dcol, g, nb, gi * g.cg(), dxc, par);
            }
        });
    });
    dx
}

/// Adds the weight gradient of images `n0..n0+nb` to `dw`.
fn weight_chunk(dy: &[f32], x: &[f32], g: &Geom, n0: usize, nb: usize, dw: &mut [f32], par: bool) {
    let (p, og, kg, in_img) = (g.p(), g.og(), g.kg(), g.c * g.h * g.w);
    let xc = &x[n0 * in_img..][..nb * in_img];
    let dyc_all = &dy[n0 * g.o * p..][..nb * g.o * p];
    if g.direct() {
        // One image at a time, reading its input and gradient planes in place.
        return with_scratch(g.image_col_len(), 0, |col, _| {
            for (xi, dyi) in xc.chunks(in_img).zip(dyc_all.chunks(g.o * p)) {
                for gi in 0..g.groups {
                    let b = View::rows_t(unfolded(xi, g, gi, col, par), p);
                    let dyg = View::rows(&dyi[gi * og * p..][..og * p], p);
                    gemm(og, kg, p, &mut dw[gi * og * kg..(gi + 1) * og * kg], kg, true, par, dyg, b);
                }
            }
        });
    }
    let cols = nb * p;
    with_scratch(kg * cols, og * cols, |col, dyc| {
        for gi in 0..g.groups {
            im2col(xc, g, nb, gi * g.cg(), col, par);
            gather_out(dyc_all, g, nb, gi * og, dyc, par);
            let dwg = &mut dw[gi * og * kg..(gi + 1) * og * kg];
            gemm(og, kg, cols, dwg, kg, true, par, View::rows(dyc, cols), View::rows_t(col, cols));
        }
    });
}

/// The weight gradient `dw` of `y = conv(x, w)` given `dy`, threaded as `t` says.
pub fn backward_weight(dy: &[f32], x: &[f32], g: &Geom, t: Threading) -> Vec<f32> {
    if dense::applies(g) {
        return dense::backward_weight(dy, x, g);
    }
    if winograd::applies(g) {
        return winograd::backward_weight(dy, x, g, t);
    }
    if grouped::applies(g) {
        return grouped::backward_weight(dy, x, g);
    }
    let len = g.o * g.kg();
    // One chunk per thread: each chunk's products accumulate into a whole `dw`, so fewer,
    // longer chunks read and write it less often (on 2×2 maps, 16-image chunks made the
    // product memory-bound).
    let (nb_max, inner_par) = chunk_images(g, t, 1);
    let starts: Vec<usize> = (0..g.n).step_by(nb_max).collect();
    let nb_at = |n0: usize| nb_max.min(g.n - n0);
    if inner_par {
        let mut dw = vec![0f32; len];
        for &n0 in &starts {
            weight_chunk(dy, x, g, n0, nb_at(n0), &mut dw, true);
        }
        return dw;
    }
    super::par_sum(len, starts.len(), || (), |i, _, acc| weight_chunk(dy, x, g, starts[i], nb_at(starts[i]), acc, false))
}

/// `conv2d(x, w)` as a candle op with a GEMM backward (CPU, f32, contiguous inputs).
#[derive(Debug, Clone, Copy)]
pub struct Conv2dOp {
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: usize,
    /// Channel groups.
    pub groups: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "normlab-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding, self.groups)?;
        let y = forward(cpu_f32("conv2d", s1, l1, "input")?, cpu_f32("conv2d", s2, l2, "kernel")?, &g, threading());
        Ok((CpuStorage::F32(y), g.out_shape()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() { Some(dy.apply_op2_no_bwd(w, &ConvBackwardData { op: *self, x_dims: x.dims4()? })?) } else { None };
        let dw = if w.track_op() { Some(dy.apply_op2_no_bwd(x, &ConvBackwardWeight { op: *self, w_dims: w.dims4()? })?) } else { None };
        Ok((dx, dw))
    }
}

/// The input gradient as a (forward-only) op on `(dy, w)`.
struct ConvBackwardData {
    op: Conv2dOp,
    x_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvBackwardData {
    fn name(&self) -> &'static str {
        "normlab-conv2d-backward-data"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.x_dims;
        let g = Geom::new(&[n, c, h, w], l2.dims(), self.op.stride, self.op.padding, self.op.groups)?;
        if l1.dims() != g.out_shape().dims() {
            bail!("conv2d backward: gradient {:?} does not match the output {:?}", l1.dims(), g.out_shape())
        }
        let dx = backward_data(cpu_f32("conv2d", s1, l1, "gradient")?, cpu_f32("conv2d", s2, l2, "kernel")?, &g, threading());
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims)))
    }
}

/// The weight gradient as a (forward-only) op on `(dy, x)`.
struct ConvBackwardWeight {
    op: Conv2dOp,
    w_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvBackwardWeight {
    fn name(&self) -> &'static str {
        "normlab-conv2d-backward-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (o, cg, kh, kw) = self.w_dims;
        let g = Geom::new(l2.dims(), &[o, cg, kh, kw], self.op.stride, self.op.padding, self.op.groups)?;
        if l1.dims() != g.out_shape().dims() {
            bail!("conv2d backward: gradient {:?} does not match the output {:?}", l1.dims(), g.out_shape())
        }
        let dw = backward_weight(cpu_f32("conv2d", s1, l1, "gradient")?, cpu_f32("conv2d", s2, l2, "input")?, &g, threading());
        Ok((CpuStorage::F32(dw), Shape::from(self.w_dims)))
    }
}
