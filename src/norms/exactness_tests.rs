//! Cross-checks of every norm against an independent computation: the explicit matrix of the
//! zero-padded conv, built by applying candle's own conv2d to each basis vector, its max
//! column / row abs-sums, and its largest singular value by a dense SVD (faer); and the FFT
//! method against the explicit circulant matrix.

use super::conv_operator::ConvOperator;
use super::fft_svd;
use super::spectral::{conv_spectral_norm, lanczos, largest_singular_value, power_iteration, SpectralOptions};
use super::theorem1::{conv_norm, NormKind};
use crate::models::{LayerKind, LayerSpec};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[allow(clippy::too_many_arguments)]
fn spec(in_c: usize, out_c: usize, h: usize, w: usize, k: usize, stride: usize, padding: usize, groups: usize) -> LayerSpec {
    LayerSpec { name: format!("t{in_c}.{out_c}.{h}.{w}.{k}.{stride}.{padding}.{groups}.weight"), kind: LayerKind::Conv, in_c, in_h: h, in_w: w, out_c, kh: k, kw: k, stride, padding, groups, bias: false }
}

fn random_weight(s: &LayerSpec, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = s.weight_shape().iter().product();
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// The out_len × in_len matrix (row-major) of the conv, from candle's conv2d on the basis.
fn candle_matrix(s: &LayerSpec, w: &[f64]) -> Vec<f64> {
    let n = s.in_c * s.in_h * s.in_w;
    let eye = Tensor::eye(n, DType::F64, &Device::Cpu).unwrap().reshape((n, s.in_c, s.in_h, s.in_w)).unwrap();
    let k = Tensor::from_slice(w, s.weight_shape().as_slice(), &Device::Cpu).unwrap();
    let y = eye.conv2d(&k, s.padding, s.stride, 1, s.groups).unwrap();
    let m = y.elem_count() / n;
    let cols = y.reshape((n, m)).unwrap().to_vec2::<f64>().unwrap();
    let mut a = vec![0f64; m * n];
    for (c, col) in cols.iter().enumerate() {
        for (r, v) in col.iter().enumerate() {
            a[r * n + c] = *v;
        }
    }
    a
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// R(a): kernel rows a row of output pixels reads inside the input.
fn row_set(a: usize, n: usize, k: usize, s: usize, p: usize) -> Vec<usize> {
    (0..k).filter(|&kk| (a * s + kk) as isize - p as isize >= 0 && ((a * s + kk) as isize - (p as isize)) < n as isize).collect()
}

/// C(u): kernel rows through which input row u reaches an output.
fn col_set(u: usize, k: usize, s: usize, p: usize, out: usize) -> Vec<usize> {
    (0..k).filter(|&kk| (0..out).any(|a| (a * s + kk) as isize - p as isize == u as isize)).collect()
}

/// The grid of small convs the issue asks for: stride 1/2, padding 0/1, kernel 1/3,
/// groups 1/2, inputs from 1×1 up, odd sizes with stride 2, a non-square input.
fn cases() -> Vec<LayerSpec> {
    let mut v = Vec::new();
    for &k in &[1, 3] {
        for &stride in &[1, 2] {
            for &padding in &[0, 1] {
                for &groups in &[1, 2] {
                    for &(h, w) in &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (7, 7), (3, 5)] {
                        if h + 2 * padding < k || w + 2 * padding < k {
                            continue;
                        }
                        v.push(spec(2 * groups, 3 * groups, h, w, k, stride, padding, groups));
                    }
                }
            }
        }
    }
    v
}

#[test]
fn theorem1_matches_the_explicit_matrix_and_its_maximiser_attains_it() {
    for (idx, s) in cases().iter().enumerate() {
        let w = random_weight(s, idx as u64);
        let a = candle_matrix(s, &w);
        let (m, n) = (s.out_c * s.out_h() * s.out_w(), s.in_c * s.in_h * s.in_w);
        let col_sums: Vec<f64> = (0..n).map(|c| (0..m).map(|r| a[r * n + c].abs()).sum()).collect();
        let row_sums: Vec<f64> = (0..m).map(|r| a[r * n..][..n].iter().map(|v| v.abs()).sum()).collect();
        let l1 = col_sums.iter().cloned().fold(0.0, f64::max);
        let linf = row_sums.iter().cloned().fold(0.0, f64::max);
        let got1 = conv_norm(s, &w, NormKind::L1);
        let goti = conv_norm(s, &w, NormKind::Linf);
        assert!(rel(got1.value, l1) < 1e-12, "{}: l1 {} vs explicit {l1}", s.name, got1.value);
        assert!(rel(goti.value, linf) < 1e-12, "{}: linf {} vs explicit {linf}", s.name, goti.value);
        // The ℓ∞ maximiser: some output pixel of channel i* reads exactly rows × cols and its
        // row sum is the norm.
        let (oh, ow) = (s.out_h(), s.out_w());
        let attained = (0..oh).any(|a_| {
            (0..ow).any(|b_| {
                row_set(a_, s.in_h, s.kh, s.stride, s.padding) == goti.rows
                    && row_set(b_, s.in_w, s.kw, s.stride, s.padding) == goti.cols
                    && rel(row_sums[(goti.channel * oh + a_) * ow + b_], goti.value) < 1e-12
            })
        });
        assert!(attained, "{}: linf maximiser {:?} not attained", s.name, goti);
        let attained = (0..s.in_h).any(|u| {
            (0..s.in_w).any(|v| {
                col_set(u, s.kh, s.stride, s.padding, oh) == got1.rows
                    && col_set(v, s.kw, s.stride, s.padding, ow) == got1.cols
                    && rel(col_sums[(got1.channel * s.in_h + u) * s.in_w + v], got1.value) < 1e-12
            })
        });
        assert!(attained, "{}: l1 maximiser {:?} not attained", s.name, got1);
    }
}

#[test]
fn conv_operator_and_its_transpose_match_candle() {
    for (idx, s) in cases().iter().enumerate() {
        let w = random_weight(s, 100 + idx as u64);
        let want = candle_matrix(s, &w);
        let op = ConvOperator::new(s, &w).unwrap();
        let got = op.dense_matrix();
        let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-12, "{}: operator differs from candle's conv by {err}", s.name);
        // Transpose: <A x, y> = <x, Aᵀ y> for random x, y (two vectors in one block).
        let mut rng = ChaCha8Rng::seed_from_u64(idx as u64);
        let x: Vec<f64> = (0..2 * op.in_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let y: Vec<f64> = (0..2 * op.out_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let (ax, aty) = (op.apply(&x, 2), op.apply_transpose(&y, 2));
        for b in 0..2 {
            let lhs: f64 = ax[b * op.out_len()..][..op.out_len()].iter().zip(&y[b * op.out_len()..]).map(|(p, q)| p * q).sum();
            let rhs: f64 = x[b * op.in_len()..][..op.in_len()].iter().zip(&aty[b * op.in_len()..]).map(|(p, q)| p * q).sum();
            assert!((lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0), "{}: <Ax,y> {lhs} vs <x,Aᵀy> {rhs}", s.name);
        }
    }
}

#[test]
fn spectral_norm_matches_the_svd_of_the_explicit_matrix() {
    for (idx, s) in cases().iter().enumerate() {
        let w = random_weight(s, 200 + idx as u64);
        let (m, n) = (s.out_c * s.out_h() * s.out_w(), s.in_c * s.in_h * s.in_w);
        let want = largest_singular_value(&candle_matrix(s, &w), m, n).unwrap();
        let got = conv_spectral_norm(s, &w, &SpectralOptions::default()).unwrap();
        assert!(rel(got.value, want) < 1e-10, "{}: spectral {} vs SVD {want}", s.name, got.value);
        // The power iteration itself, where the block fits, to 1e-6 with a valid bracket.
        if n >= 8 {
            let op = ConvOperator::new(s, &w).unwrap();
            let p = power_iteration(&op, &s.name, &SpectralOptions { tol: 1e-6, block: 4, krylov_dim: 50, max_iter: 20_000 }).unwrap();
            assert!(p.converged, "{}: power iteration did not converge: {p:?}", s.name);
            assert!(rel(p.value, want) < 1e-5, "{}: power iteration {} vs SVD {want}", s.name, p.value);
            assert!(p.value <= want * (1.0 + 1e-12), "{}: lower bound {} above the truth {want}", s.name, p.value);
            assert!(p.upper >= want * (1.0 - 1e-12), "{}: upper bound {} below the truth {want}", s.name, p.upper);
            let l = lanczos(&op, &s.name, &SpectralOptions { tol: 1e-6, block: 4, krylov_dim: 50, max_iter: 20_000 }).unwrap();
            assert!(l.converged && rel(l.value, want) < 1e-5, "{}: Lanczos {l:?} vs SVD {want}", s.name);
            assert!(l.value <= want * (1.0 + 1e-12) && l.upper >= want * (1.0 - 1e-12), "{}: Lanczos bracket {l:?} misses {want}", s.name);
        }
    }
}

#[test]
fn power_iteration_on_a_larger_conv_matches_the_svd() {
    // Both sides above the dense shortcut: 8→8 channels on 10×10 at stride 1, and a grouped
    // stride-2 conv on 14×14.
    for (i, s) in [spec(8, 8, 10, 10, 3, 1, 1, 1), spec(8, 16, 14, 14, 3, 2, 1, 2)].iter().enumerate() {
        let w = random_weight(s, 300 + i as u64);
        let (m, n) = (s.out_c * s.out_h() * s.out_w(), s.in_c * s.in_h * s.in_w);
        let want = largest_singular_value(&candle_matrix(s, &w), m, n).unwrap();
        let got = conv_spectral_norm(s, &w, &SpectralOptions::default()).unwrap();
        assert!(got.converged && got.iterations > 0, "{}: {got:?}", s.name);
        assert!(rel(got.value, want) < 1e-5, "{}: spectral {} vs SVD {want}", s.name, got.value);
        assert!(got.upper >= want * (1.0 - 1e-12), "{}: the bracket [{}, {}] misses {want}", s.name, got.value, got.upper);
        let op = ConvOperator::new(s, &w).unwrap();
        let p = power_iteration(&op, &s.name, &SpectralOptions { tol: 1e-5, max_iter: 20_000, ..SpectralOptions::default() }).unwrap();
        assert!(p.converged && rel(p.value, want) < 1e-5, "{}: block power iteration {p:?} vs SVD {want}", s.name);
        assert!(p.value <= want * (1.0 + 1e-12) && p.upper >= want * (1.0 - 1e-12), "{}: bracket {p:?} misses {want}", s.name);
    }
}

#[test]
fn iteration_cap_reports_not_converged_with_a_lower_bound() {
    let s = spec(8, 8, 10, 10, 3, 1, 1, 1);
    let w = random_weight(&s, 7);
    let op = ConvOperator::new(&s, &w).unwrap();
    let n = op.in_len();
    let want = largest_singular_value(&op.dense_matrix(), op.out_len(), n).unwrap();
    let p = power_iteration(&op, &s.name, &SpectralOptions { tol: 1e-12, block: 2, krylov_dim: 10, max_iter: 3 }).unwrap();
    assert!(!p.converged && p.iterations == 3, "{p:?}");
    assert!(p.value <= want * (1.0 + 1e-12), "{p:?} vs {want}");
    let l = lanczos(&op, &s.name, &SpectralOptions { tol: 1e-12, block: 2, krylov_dim: 10, max_iter: 3 }).unwrap();
    assert!(!l.converged && l.iterations == 3 && l.value <= want * (1.0 + 1e-12), "{l:?} vs {want}");
}

/// The circular conv's explicit matrix on an n×n torus: y[i, a, b] = Σ K[i, j, k, t] x[j, a+k, b+t].
fn circulant_matrix(w: &[f64], out_c: usize, in_c: usize, k: usize, n: usize, groups: usize) -> Vec<f64> {
    let (cin_g, cout_g) = (in_c / groups, out_c / groups);
    let (rows, cols) = (out_c * n * n, in_c * n * n);
    let mut a = vec![0f64; rows * cols];
    for i in 0..out_c {
        let g = i / cout_g;
        for jl in 0..cin_g {
            let j = g * cin_g + jl;
            for p in 0..n {
                for q in 0..n {
                    for kk in 0..k {
                        for t in 0..k {
                            let r = (i * n + p) * n + q;
                            let c = (j * n + (p + kk) % n) * n + (q + t) % n;
                            a[r * cols + c] += w[((i * cin_g + jl) * k + kk) * k + t];
                        }
                    }
                }
            }
        }
    }
    a
}

#[test]
fn fft_singular_values_match_the_circulant_matrix() {
    for (idx, &(out_c, in_c, k, n, groups)) in [(3, 2, 3, 4, 1), (2, 3, 3, 5, 1), (4, 4, 3, 3, 2), (3, 2, 3, 2, 1), (2, 2, 1, 1, 1), (4, 6, 3, 4, 2)].iter().enumerate() {
        let s = spec(in_c, out_c, n, n, k, 1, 1, groups);
        let w = random_weight(&s, 400 + idx as u64);
        let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let w32: Vec<f64> = wf.iter().map(|&v| v as f64).collect();
        let a = circulant_matrix(&w32, out_c, in_c, k, n, groups);
        let mut want = faer::MatRef::from_row_major_slice(&a, out_c * n * n, in_c * n * n).singular_values().unwrap();
        want.sort_by(|x, y| y.total_cmp(x));
        let got = fft_svd::grouped_conv_singular_values(&wf, out_c, in_c, k, k, n, groups);
        // The circulant has min(out, in)·n² singular values; the per-frequency blocks give the
        // same multiset (block-diagonal groups included).
        assert_eq!(got.len(), want.len(), "case {idx}");
        for (g, w_) in got.iter().zip(&want) {
            assert!((g - w_).abs() < 1e-9 * want[0], "case {idx}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn clipping_leaves_a_kernel_below_the_bound_unchanged() {
    let s = spec(4, 6, 5, 5, 3, 1, 1, 1);
    let w: Vec<f32> = random_weight(&s, 9).iter().map(|&v| v as f32).collect();
    let top = fft_svd::max_singular_value(&w, 6, 4, 3, 3, 5, 1);
    let (clipped, err) = fft_svd::clip_conv_kernel(&w, 6, 4, 3, 3, 5, top * 1.001);
    assert_eq!(clipped, w);
    assert_eq!(err, 0.0);
}

#[test]
fn clipping_bounds_the_largest_singular_value_by_the_clip_plus_the_crop_error() {
    for (idx, &(out_c, in_c, n, groups)) in [(6, 4, 5, 1), (4, 4, 6, 2), (3, 5, 4, 1)].iter().enumerate() {
        let s = spec(in_c, out_c, n, n, 3, 1, 1, groups);
        let w: Vec<f32> = random_weight(&s, 500 + idx as u64).iter().map(|&v| v as f32).collect();
        let top = fft_svd::max_singular_value(&w, out_c, in_c, 3, 3, n, groups);
        let clip = 0.5 * top;
        let (clipped, crop_error) = fft_svd::clip_grouped_conv_kernel(&w, out_c, in_c, 3, 3, n, groups, clip, true);
        let crop_error = crop_error.unwrap();
        assert_eq!(clipped.len(), w.len());
        let after = fft_svd::max_singular_value(&clipped, out_c, in_c, 3, 3, n, groups);
        assert!(after <= clip + crop_error + 1e-5 * clip, "case {idx}: σmax {after} > clip {clip} + crop error {crop_error}");
        assert!(after < top, "case {idx}: clipping did not reduce σmax ({top} -> {after})");
        assert!(crop_error > 0.0 && crop_error < top, "case {idx}: crop error {crop_error}");
    }
}

#[test]
fn zero_padded_norm_is_below_the_circular_norm_on_a_large_enough_torus() {
    // Stride 1: the zero-padded conv on n×n is a submatrix of the circular conv on an
    // (n + 2p)-torus, so its spectral norm cannot exceed the FFT value there.
    let s = spec(4, 4, 6, 6, 3, 1, 1, 1);
    let w = random_weight(&s, 11);
    let exact = conv_spectral_norm(&s, &w, &SpectralOptions::default()).unwrap().value;
    let big = LayerSpec { in_h: 8, in_w: 8, ..s.clone() };
    let circ = fft_svd::layer_max_singular_value(&big, &w);
    assert!(exact <= circ * (1.0 + 1e-12) && exact > 0.5 * circ, "zero-padded {exact} vs circular {circ}");
}

#[test]
fn pointwise_clipping_equals_the_general_method_on_a_centre_tap_kernel() {
    // A 1×1 kernel clipped by the one-SVD path, and the same weights as the centre tap of an
    // otherwise zero 3×3 kernel clipped by the FFT path: the FFT path's matrices are the 1×1
    // matrix times a phase, so its result is the clipped matrix at the centre and 0 elsewhere.
    for (idx, &(out_c, in_c, groups)) in [(6, 4, 1), (8, 8, 2), (5, 7, 1)].iter().enumerate() {
        let s = spec(in_c, out_c, 6, 6, 1, 1, 0, groups);
        let w: Vec<f32> = random_weight(&s, 900 + idx as u64).iter().map(|&v| v as f32).collect();
        let clip = 0.5 * fft_svd::max_singular_value(&w, out_c, in_c, 1, 1, 6, groups);
        let (pointwise, crop) = fft_svd::clip_grouped_conv_kernel(&w, out_c, in_c, 1, 1, 6, groups, clip, true);
        assert_eq!(crop, Some(0.0));
        let mut w3 = vec![0f32; w.len() * 9];
        for (p, &v) in w.iter().enumerate() {
            w3[p * 9 + 4] = v;
        }
        let (general, _) = fft_svd::clip_grouped_conv_kernel(&w3, out_c, in_c, 3, 3, 6, groups, clip, false);
        for (p, &v) in pointwise.iter().enumerate() {
            for t in 0..9 {
                let want = if t == 4 { v } else { 0.0 };
                assert!((general[p * 9 + t] - want).abs() < 1e-5, "case {idx} pair {p} tap {t}: {} vs {want}", general[p * 9 + t]);
            }
        }
        let after = fft_svd::max_singular_value(&pointwise, out_c, in_c, 1, 1, 6, groups);
        assert!((after - clip).abs() < 1e-5 * clip, "case {idx}: σmax {after} after clipping at {clip}");
    }
}
