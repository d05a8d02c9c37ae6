//! A conv or linear layer as an explicit linear operator on f64 vectors: the zero-padded,
//! strided, grouped convolution on its real input size (from [`LayerSpec`]) and its
//! transpose, each applied to a block of vectors at once by im2col and one matrix product per
//! group (faer). The spectral norm's power iteration and the tests' explicit matrices use it.
//!
//! Vector layout: channel-major `c × h × w` (PyTorch's NCHW for one image); a block of `b`
//! vectors is `b` such vectors one after the other.

use crate::models::{LayerKind, LayerSpec};
use anyhow::{bail, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// The conv of one layer with its weight, as a map R^{in_c·in_h·in_w} → R^{out_c·oh·ow}.
#[derive(Debug, Clone, Copy)]
pub struct ConvOperator<'a> {
    spec: &'a LayerSpec,
    weight: &'a [f64],
    out_h: usize,
    out_w: usize,
}

impl<'a> ConvOperator<'a> {
    /// The operator of a conv or linear layer (a linear layer is a 1×1 conv on a 1×1 input).
    /// Errors when the weight's length or the layer's geometry does not fit.
    pub fn new(spec: &'a LayerSpec, weight: &'a [f64]) -> Result<Self> {
        if !matches!(spec.kind, LayerKind::Conv | LayerKind::Linear) {
            bail!("{}: a {} layer is not a conv or linear operator", spec.name, spec.kind);
        }
        if spec.groups == 0 || !spec.in_c.is_multiple_of(spec.groups) || !spec.out_c.is_multiple_of(spec.groups) {
            bail!("{}: {} groups do not divide in_c {} and out_c {}", spec.name, spec.groups, spec.in_c, spec.out_c);
        }
        if spec.stride == 0 || spec.in_h + 2 * spec.padding < spec.kh || spec.in_w + 2 * spec.padding < spec.kw {
            bail!(
                "{}: a {}x{} kernel with padding {} and stride {} does not fit a {}x{} input",
                spec.name,
                spec.kh,
                spec.kw,
                spec.padding,
                spec.stride,
                spec.in_h,
                spec.in_w
            );
        }
        let want = spec.out_c * (spec.in_c / spec.groups) * spec.kh * spec.kw;
        if weight.len() != want {
            bail!("{}: weight has {} values, the layer needs {want} ({:?})", spec.name, weight.len(), spec.weight_shape());
        }
        Ok(Self { spec, weight, out_h: spec.out_h(), out_w: spec.out_w() })
    }

    /// Length of an input vector: in_c · in_h · in_w.
    pub fn in_len(&self) -> usize {
        self.spec.in_c * self.spec.in_h * self.spec.in_w
    }

    /// Length of an output vector: out_c · oh · ow.
    pub fn out_len(&self) -> usize {
        self.spec.out_c * self.out_h * self.out_w
    }

    /// `A x` for each of the `b` input vectors in `xs` (length b · in_len); returns b · out_len.
    pub fn apply(&self, xs: &[f64], b: usize) -> Vec<f64> {
        assert_eq!(xs.len(), b * self.in_len(), "{}: block of {b} inputs has the wrong length", self.spec.name);
        let s = self.spec;
        let (g_n, cin_g, cout_g) = (s.groups, s.in_c / s.groups, s.out_c / s.groups);
        let rows = cin_g * s.kh * s.kw;
        let opix = self.out_h * self.out_w;
        let cols = b * opix;
        let mut ys = vec![0f64; b * self.out_len()];
        let mut col = vec![0f64; rows * cols];
        let mut prod = vec![0f64; cout_g * cols];
        for g in 0..g_n {
            self.im2col(xs, b, g, &mut col);
            let w = MatRef::from_row_major_slice(&self.weight[g * cout_g * rows..][..cout_g * rows], cout_g, rows);
            let c = MatRef::from_row_major_slice(&col, rows, cols);
            matmul(MatMut::from_row_major_slice_mut(&mut prod, cout_g, cols), Accum::Replace, w, c, 1.0, Par::rayon(0));
            for beta in 0..b {
                for i in 0..cout_g {
                    let dst = &mut ys[beta * self.out_len() + (g * cout_g + i) * opix..][..opix];
                    dst.copy_from_slice(&prod[i * cols + beta * opix..][..opix]);
                }
            }
        }
        ys
    }

    /// `Aᵀ y` for each of the `b` output-space vectors in `ys` (length b · out_len); returns
    /// b · in_len.
    pub fn apply_transpose(&self, ys: &[f64], b: usize) -> Vec<f64> {
        assert_eq!(ys.len(), b * self.out_len(), "{}: block of {b} outputs has the wrong length", self.spec.name);
        let s = self.spec;
        let (g_n, cin_g, cout_g) = (s.groups, s.in_c / s.groups, s.out_c / s.groups);
        let rows = cin_g * s.kh * s.kw;
        let opix = self.out_h * self.out_w;
        let cols = b * opix;
        let mut xs = vec![0f64; b * self.in_len()];
        let mut u = vec![0f64; cout_g * cols];
        let mut col = vec![0f64; rows * cols];
        for g in 0..g_n {
            for beta in 0..b {
                for i in 0..cout_g {
                    u[i * cols + beta * opix..][..opix].copy_from_slice(&ys[beta * self.out_len() + (g * cout_g + i) * opix..][..opix]);
                }
            }
            let w = MatRef::from_row_major_slice(&self.weight[g * cout_g * rows..][..cout_g * rows], cout_g, rows);
            let um = MatRef::from_row_major_slice(&u, cout_g, cols);
            matmul(MatMut::from_row_major_slice_mut(&mut col, rows, cols), Accum::Replace, w.transpose(), um, 1.0, Par::rayon(0));
            self.col2im_add(&col, b, g, &mut xs);
        }
        xs
    }

    /// The explicit out_len × in_len matrix (row-major), built column by column from
    /// [`apply`](Self::apply) on the basis vectors. Only for small layers (tests, tiny maps).
    pub fn dense_matrix(&self) -> Vec<f64> {
        let (n, m) = (self.in_len(), self.out_len());
        let mut a = vec![0f64; m * n];
        let chunk = 256.min(n).max(1);
        let mut start = 0;
        while start < n {
            let b = chunk.min(n - start);
            let mut basis = vec![0f64; b * n];
            for k in 0..b {
                basis[k * n + start + k] = 1.0;
            }
            let cols = self.apply(&basis, b);
            for k in 0..b {
                for r in 0..m {
                    a[r * n + start + k] = cols[k * m + r];
                }
            }
            start += b;
        }
        a
    }

    /// Fills `col` (rows (j, k, t) of group g × columns (β, a, c)) with the input pixels each
    /// kernel position reads; zero where the position falls in the padding.
    fn im2col(&self, xs: &[f64], b: usize, g: usize, col: &mut [f64]) {
        let s = self.spec;
        let cin_g = s.in_c / s.groups;
        let (ih, iw, oh, ow) = (s.in_h, s.in_w, self.out_h, self.out_w);
        let opix = oh * ow;
        let cols = b * opix;
        for j in 0..cin_g {
            let ch = g * cin_g + j;
            for k in 0..s.kh {
                for t in 0..s.kw {
                    let r = (j * s.kh + k) * s.kw + t;
                    let row = &mut col[r * cols..][..cols];
                    for beta in 0..b {
                        let plane = &xs[beta * self.in_len() + ch * ih * iw..][..ih * iw];
                        for a in 0..oh {
                            let y = (a * s.stride + k) as isize - s.padding as isize;
                            let dst = &mut row[beta * opix + a * ow..][..ow];
                            if y < 0 || y as usize >= ih {
                                dst.fill(0.0);
                                continue;
                            }
                            let src = &plane[y as usize * iw..][..iw];
                            for (c, d) in dst.iter_mut().enumerate() {
                                let x = (c * s.stride + t) as isize - s.padding as isize;
                                *d = if x >= 0 && (x as usize) < iw { src[x as usize] } else { 0.0 };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds each column entry of `col` back onto the input pixel it was read from (the
    /// adjoint of [`im2col`](Self::im2col)).
    fn col2im_add(&self, col: &[f64], b: usize, g: usize, xs: &mut [f64]) {
        let s = self.spec;
        let cin_g = s.in_c / s.groups;
        let (ih, iw, oh, ow) = (s.in_h, s.in_w, self.out_h, self.out_w);
        let opix = oh * ow;
        let cols = b * opix;
        let in_len = self.in_len();
        for j in 0..cin_g {
            let ch = g * cin_g + j;
            for k in 0..s.kh {
                for t in 0..s.kw {
                    let r = (j * s.kh + k) * s.kw + t;
                    let row = &col[r * cols..][..cols];
                    for beta in 0..b {
                        let plane = &mut xs[beta * in_len + ch * ih * iw..][..ih * iw];
                        for a in 0..oh {
                            let y = (a * s.stride + k) as isize - s.padding as isize;
                            if y < 0 || y as usize >= ih {
                                continue;
                            }
                            let src = &row[beta * opix + a * ow..][..ow];
                            let dst = &mut plane[y as usize * iw..][..iw];
                            for (c, v) in src.iter().enumerate() {
                                let x = (c * s.stride + t) as isize - s.padding as isize;
                                if x >= 0 && (x as usize) < iw {
                                    dst[x as usize] += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
