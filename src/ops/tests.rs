//! The CPU custom ops against candle's own ops on small random shapes: values, input and
//! weight gradients. Tolerance: max |ours − candle's| ≤ 1e-4 · max(1, max |candle's|) (f32
//! sums in a different order).

use super::*;
use candle_core::{Device, Tensor, Var};

const TOL: f32 = 1e-4;

fn close(ours: &Tensor, theirs: &Tensor, what: &str) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shapes differ");
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err <= TOL * scale, "{what}: max error {err} over scale {scale}");
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `conv(x, w, stride, padding, groups)` against candle's conv2d: values, input and weight
/// gradients, on small shapes, odd sizes the stride does not divide, grouped convs and the
/// models' large shapes.
fn check_conv_against_candle(conv: impl Fn(&Tensor, &Tensor, usize, usize, usize) -> Tensor) {
    let mut seed = 0;
    for (n, c, o, hw, k, stride, pad, groups) in [
        (1, 4, 8, 5, 3, 1, 1, 1),
        (2, 4, 8, 6, 3, 2, 1, 1),
        (3, 8, 8, 7, 1, 1, 0, 1),
        (4, 8, 4, 6, 1, 2, 0, 1),
        (2, 8, 8, 6, 3, 1, 0, 4),
        (3, 8, 8, 7, 3, 2, 1, 4),
        (4, 4, 8, 4, 1, 1, 0, 4),
        (1, 8, 12, 5, 3, 2, 0, 4),
        (2, 3, 6, 8, 3, 1, 1, 1),
        (2, 4, 8, 7, 3, 2, 1, 1),
        (2, 8, 8, 7, 1, 2, 0, 1),
        (2, 16, 16, 4, 3, 1, 1, 2),
        // Maps of ≥ 64 output positions, which take the one-image-at-a-time products:
        // stride 1 (input gradient as a flipped forward conv), stride 2 (col2im), 1×1.
        (2, 8, 16, 16, 3, 1, 1, 1),
        (2, 6, 8, 33, 3, 2, 1, 2),
        (2, 8, 4, 16, 1, 1, 0, 2),
        (1, 4, 4, 18, 3, 1, 0, 2),
        (1, 3, 4, 9, 5, 1, 1, 1),
        // The models' large shapes: deep 3×3 layers, stride 2, SE's 1×1 convs on 1×1 maps.
        (6, 512, 512, 4, 3, 1, 1, 1),
        (6, 256, 512, 8, 3, 2, 1, 1),
        (6, 512, 32, 1, 1, 1, 0, 1),
        (6, 32, 512, 1, 1, 1, 0, 1),
        (6, 152, 152, 8, 3, 1, 1, 19),
        // Winograd's (3×3, stride 1, ≥ 64 channels and 64·128 together, outputs ≥ 4×4):
        // odd maps, no padding.
        (2, 128, 256, 5, 3, 1, 1, 1),
        (3, 256, 136, 6, 3, 1, 0, 1),
        (2, 136, 256, 7, 3, 1, 1, 1),
        // Grouped (RegNet's 8 channels per group): stride 1 and 2, an odd map.
        (2, 64, 64, 8, 3, 1, 1, 8),
        (2, 48, 48, 9, 3, 2, 1, 6),
    ] {
        seed += 1;
        let what = format!("n{n} c{c} o{o} hw{hw} k{k} s{stride} p{pad} g{groups}");
        let x = Var::from_tensor(&randn(&[n, c, hw, hw], seed)).unwrap();
        let w = Var::from_tensor(&randn(&[o, c / groups, k, k], seed + 100)).unwrap();
        let ours = conv(x.as_tensor(), w.as_tensor(), stride, pad, groups);
        let theirs = x.as_tensor().conv2d(w.as_tensor(), pad, stride, 1, groups).unwrap();
        close(&ours, &theirs, &format!("{what} forward"));
        let g = randn(ours.dims(), seed + 200);
        let go = (&ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = (&theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
        close(go.get(x.as_tensor()).unwrap(), gt.get(x.as_tensor()).unwrap(), &format!("{what} dx"));
        close(go.get(w.as_tensor()).unwrap(), gt.get(w.as_tensor()).unwrap(), &format!("{what} dw"));
    }
}

#[test]
fn conv_matches_candle_values_and_gradients() {
    check_conv_against_candle(|x, w, stride, padding, groups| x.apply_op2(w, conv::Conv2dOp { stride, padding, groups }).unwrap());
}

/// The device-generic backward ([`conv_device`]), which CUDA runs with `--kernels portable`,
/// checked here on the CPU.
#[test]
fn device_conv_backward_matches_candle() {
    check_conv_against_candle(|x, w, stride, padding, groups| conv_device::conv2d(x, w, stride, padding, groups).unwrap());
}

/// A constant input gets no gradient from the device-generic conv and a detached kernel none
/// either: nothing is computed that nobody asked for.
#[test]
fn device_conv_skips_unneeded_gradients() {
    let x = randn(&[2, 4, 5, 5], 1);
    let w = Var::from_tensor(&randn(&[8, 4, 3, 3], 2)).unwrap();
    let y = conv_device::conv2d(&x, w.as_tensor(), 1, 1, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(w.as_tensor()).is_some());
    assert!(!conv_device::conv2d(&x, &w.as_tensor().detach(), 1, 1, 1).unwrap().track_op());
}

#[test]
fn conv_skips_gradients_nobody_needs() {
    let x = randn(&[2, 4, 5, 5], 1);
    let w = Var::from_tensor(&randn(&[8, 4, 3, 3], 2)).unwrap();
    let op = conv::Conv2dOp { stride: 1, padding: 1, groups: 1 };
    // Images (not a variable): only the weight gradient.
    let grads = x.apply_op2(w.as_tensor(), op).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(w.as_tensor()).is_some());
    // Detached weight (eval mode): only the input gradient.
    let xv = Var::from_tensor(&x).unwrap();
    let wd = w.as_tensor().detach();
    let grads = xv.as_tensor().apply_op2(&wd, op).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(xv.as_tensor()).is_some());
    assert!(grads.get(&wd).is_none());
}

#[test]
fn conv_wrapper_adds_bias_and_rejects_bad_shapes() {
    let x = randn(&[2, 4, 5, 5], 3);
    let w = randn(&[6, 4, 3, 3], 4);
    let b = randn(&[6], 5);
    let ours = conv2d(&x, &w, Some(&b), 2, 1, 1).unwrap();
    let theirs = x.conv2d(&w, 1, 2, 1, 1).unwrap().broadcast_add(&b.reshape((1, 6, 1, 1)).unwrap()).unwrap();
    close(&ours, &theirs, "conv2d with bias");
    assert!(conv2d(&x, &randn(&[6, 3, 3, 3], 6), None, 1, 1, 1).is_err(), "channel mismatch must fail");
}

fn bn_case(n: usize, c: usize, hw: usize, seed: u64, train: bool, relu: bool) {
    let what = format!("bn n{n} c{c} hw{hw} train {train} relu {relu}");
    // Shifted input: batch statistics far from (0, 1).
    let x = Var::from_tensor(&randn(&[n, c, hw, hw], seed).affine(3.0, 2.0).unwrap()).unwrap();
    let gamma = Var::from_tensor(&randn(&[c], seed + 1).affine(1.0, 1.5).unwrap()).unwrap();
    let beta = Var::from_tensor(&randn(&[c], seed + 2)).unwrap();
    let stats = |m: f64| Var::from_tensor(&randn(&[c], seed + 3).affine(0.5, m).unwrap()).unwrap();
    let (rm_a, rv_a, rm_b, rv_b) = (stats(0.0), stats(2.0), stats(0.0), stats(2.0));
    let sa = BatchNormState { running_mean: &rm_a, running_var: &rv_a, eps: 1e-5, momentum: 0.1 };
    let sb = BatchNormState { running_mean: &rm_b, running_var: &rv_b, eps: 1e-5, momentum: 0.1 };
    let (g, b) = if train { (gamma.as_tensor().clone(), beta.as_tensor().clone()) } else { (gamma.as_tensor().detach(), beta.as_tensor().detach()) };
    let ours = batch_norm_fused(x.as_tensor(), &g, &b, &sa, train, relu).unwrap();
    let theirs = batch_norm_generic(x.as_tensor(), &g, &b, &sb, train).unwrap();
    let theirs = if relu { theirs.relu().unwrap() } else { theirs };
    close(&ours, &theirs, &format!("{what} forward"));
    close(rm_a.as_tensor(), rm_b.as_tensor(), &format!("{what} running mean"));
    close(rv_a.as_tensor(), rv_b.as_tensor(), &format!("{what} running var"));
    let dy = randn(ours.dims(), seed + 4);
    let go = (&ours * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let gt = (&theirs * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    close(go.get(x.as_tensor()).unwrap(), gt.get(x.as_tensor()).unwrap(), &format!("{what} dx"));
    if train {
        close(go.get(&g).unwrap(), gt.get(&g).unwrap(), &format!("{what} dgamma"));
        close(go.get(&b).unwrap(), gt.get(&b).unwrap(), &format!("{what} dbeta"));
    } else {
        assert!(go.get(&g).is_none() && go.get(&b).is_none(), "{what}: detached γ, β got gradients");
    }
}

/// With and without the fused ReLU (against candle's relu after the generic BatchNorm).
#[test]
fn batch_norm_matches_generic_ops() {
    for (i, (n, c, hw)) in [(1, 3, 4), (2, 5, 3), (4, 2, 5), (3, 4, 1), (6, 512, 4), (6, 64, 32), (16, 24, 8), (6, 512, 1)].into_iter().enumerate() {
        for relu in [false, true] {
            bn_case(n, c, hw, 10 * i as u64, true, relu);
            bn_case(n, c, hw, 10 * i as u64 + 5, false, relu);
        }
    }
}

#[test]
fn relu_and_bias_match_candle() {
    let x = Var::from_tensor(&randn(&[2, 3, 4, 5], 40)).unwrap();
    let b = Var::from_tensor(&randn(&[3], 41)).unwrap();
    let ours = relu(&x.as_tensor().apply_op2(b.as_tensor(), pointwise::ChannelBias).unwrap()).unwrap();
    let theirs = x.as_tensor().broadcast_add(&b.as_tensor().reshape((1, 3, 1, 1)).unwrap()).unwrap().relu().unwrap();
    close(&ours, &theirs, "bias + relu forward");
    let dy = randn(ours.dims(), 42);
    let go = (&ours * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let gt = (&theirs * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    close(go.get(x.as_tensor()).unwrap(), gt.get(x.as_tensor()).unwrap(), "bias + relu dx");
    close(go.get(b.as_tensor()).unwrap(), gt.get(b.as_tensor()).unwrap(), "bias + relu db");
}

#[test]
fn max_pool_routes_each_gradient_to_the_window_maximum() {
    // One 4×4 plane, windows 2×2: maxima 9 (at 5), 8 (at 7), 5 (at 13), 7 (at 15).
    let v = vec![1f32, 2., 3., 4., 5., 9., 7., 8., 0., 1., 2., 3., 4., 5., 6., 7.];
    let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 4, 4), &Device::Cpu).unwrap()).unwrap();
    let y = max_pool2d(x.as_tensor(), 2).unwrap();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [9., 8., 5., 7.]);
    let dy = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let mut want = vec![0f32; 16];
    (want[5], want[7], want[13], want[15]) = (1., 2., 3., 4.);
    assert_eq!(g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    // Values against candle's on a random batch with odd sizes (floor).
    let x = randn(&[2, 3, 7, 6], 50);
    close(&max_pool2d(&x, 2).unwrap(), &x.max_pool2d(2).unwrap(), "max pool forward");
    // The generic path (other devices) gives the same values and gradients.
    let xv = Var::from_tensor(&x).unwrap();
    let dy = randn(&[2, 3, 3, 3], 51);
    let ours = max_pool2d(xv.as_tensor(), 2).unwrap();
    let generic = max_pool2d_generic(xv.as_tensor(), 2).unwrap();
    close(&ours, &generic, "max pool generic forward");
    let go = (&ours * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let gg = (&generic * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    close(go.get(xv.as_tensor()).unwrap(), gg.get(xv.as_tensor()).unwrap(), "max pool generic dx");
}

#[test]
fn conv_kernels_agree_under_both_threadings_and_uneven_chunks() {
    use conv::{Geom, Threading};
    // 9 images: batch threading cuts uneven chunks; gemm threading runs one chunk.
    for (k, stride, pad, groups, hw) in [(3, 1, 1, 1, 6), (3, 2, 1, 2, 6), (1, 2, 0, 1, 6), (3, 1, 1, 1, 16), (3, 2, 1, 2, 33), (1, 1, 0, 2, 16)] {
        let (x, w) = (randn(&[9, 4, hw, hw], 60), randn(&[6, 4 / groups, k, k], 61));
        let theirs = x.conv2d(&w, pad, stride, 1, groups).unwrap();
        let dy = randn(theirs.dims(), 62);
        let xv = Var::from_tensor(&x).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let grads = (xv.as_tensor().conv2d(wv.as_tensor(), pad, stride, 1, groups).unwrap() * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let g = Geom::new(x.dims(), w.dims(), stride, pad, groups).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (xs, ws, dys) = (flat(&x), flat(&w), flat(&dy));
        for t in [Threading::Batch, Threading::Gemm] {
            let what = format!("k{k} s{stride} p{pad} g{groups} hw{hw} {t:?}");
            let as_t = |v: Vec<f32>, like: &Tensor| Tensor::from_vec(v, like.dims(), &Device::Cpu).unwrap();
            close(&as_t(conv::forward(&xs, &ws, &g, t), &theirs), &theirs, &format!("{what} forward"));
            close(&as_t(conv::backward_data(&dys, &ws, &g, t), &x), grads.get(xv.as_tensor()).unwrap(), &format!("{what} dx"));
            close(&as_t(conv::backward_weight(&dys, &xs, &g, t), &w), grads.get(wv.as_tensor()).unwrap(), &format!("{what} dw"));
        }
    }
}

#[test]
fn par_collect_writes_every_chunk_in_order() {
    let v = super::par_collect(10, 4, |i| (0..4).map(move |k| (4 * i + k) as f32));
    assert_eq!(v, (0..10).map(|k| k as f32).collect::<Vec<_>>());
}

#[test]
#[should_panic(expected = "ended early")]
fn par_collect_refuses_a_chunk_left_short() {
    super::par_collect(10, 4, |i| (0..if i == 1 { 3 } else { 4 }).map(|k| k as f32));
}

/// Weight gradients sum over images in parallel; the result must not depend on which thread
/// took which images (rayon's `fold` regroups the sums with its work stealing: bitwise
/// different gradients from run to run, so "same seed, same result" failed). Grouped
/// (direct kernel) and ungrouped (im2col + GEMM) paths, several repeats each.
#[test]
fn weight_gradients_are_bitwise_repeatable() {
    for (c, h, groups) in [(64, 8, 8), (16, 16, 1)] {
        let n = 64;
        let g = conv::Geom::new(&[n, c, h, h], &[c, c / groups, 3, 3], 1, 1, groups).unwrap();
        let x: Vec<f32> = (0..n * c * h * h).map(|i| ((i * 7919 % 1000) as f32 / 1000.0).sin()).collect();
        let dy: Vec<f32> = (0..n * c * h * h).map(|i| ((i * 13 % 997) as f32 / 100.0).cos()).collect();
        let first = conv::backward_weight(&dy, &x, &g, conv::Threading::Batch);
        for repeat in 0..10 {
            assert!(conv::backward_weight(&dy, &x, &g, conv::Threading::Batch) == first, "groups {groups}: repeat {repeat} differs");
        }
    }
}

/// Without the fused ReLU, BatchNorm's affine map passes a NaN through, as candle's ops do
/// (a NaN must reach the loss, where a diverged run is detected).
#[test]
fn batch_norm_without_relu_propagates_nan() {
    let x = Tensor::from_vec(vec![1f32, f32::NAN, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = x.apply_op1_no_bwd(&bn::ChannelAffine { scale: vec![2.0], shift: vec![1.0] }).unwrap();
    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!((y[0], y[2], y[3]), (3.0, 7.0, 9.0));
    assert!(y[1].is_nan(), "NaN became {}", y[1]);
}

/// Norm decay's two reductions against candle's ops: `abs_sum_mid` on few long rows (the
/// middle axis split over the threads) and on many short rows; `axpy` over a length its
/// 16,384-value chunks do not divide.
#[test]
fn abs_sum_mid_and_axpy_match_candle() {
    for (i, dims) in [(1, 70, 300), (3, 33, 5), (2, 1, 9), (64, 20, 9), (100, 3, 1)].into_iter().enumerate() {
        let x = randn(&[dims.0 * dims.1 * dims.2], 60 + i as u64);
        let theirs = x.abs().unwrap().reshape(dims).unwrap().sum(1).unwrap();
        close(&abs_sum_mid(&x, dims).unwrap(), &theirs, &format!("abs_sum_mid {dims:?}"));
    }
    let (y, x) = (randn(&[40_000], 70), randn(&[40_000], 71));
    close(&axpy(&y, -0.75, &x).unwrap(), &(&y + (&x * -0.75).unwrap()).unwrap(), "axpy");
}

/// The running-statistics semantics every BatchNorm path keeps (PyTorch's, which cuDNN's
/// `exponentialAverageFactor` implements on CUDA): momentum 0.1 towards the batch mean and the
/// unbiased batch variance, hand-computed.
#[test]
fn batch_norm_running_statistics_are_pytorch_s() {
    // One channel, values 1, 2, 3, 4 (n = 2, 1×2 maps): mean 2.5, biased variance 1.25,
    // unbiased 5/3. From mean 0, variance 1: 0.9·0 + 0.1·2.5 and 0.9·1 + 0.1·5/3.
    let x = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (2, 1, 1, 2), &Device::Cpu).unwrap();
    let (g, b) = (Tensor::new(&[1f32], &Device::Cpu).unwrap(), Tensor::new(&[0f32], &Device::Cpu).unwrap());
    for fused in [true, false] {
        let rm = Var::new(&[0f32], &Device::Cpu).unwrap();
        let rv = Var::new(&[1f32], &Device::Cpu).unwrap();
        let state = BatchNormState { running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
        let y = if fused { batch_norm(&x, &g, &b, &state, true) } else { batch_norm_generic(&x, &g, &b, &state, true) }.unwrap();
        let (m, v) = (rm.as_tensor().to_vec1::<f32>().unwrap()[0], rv.as_tensor().to_vec1::<f32>().unwrap()[0]);
        assert!((m - 0.25).abs() < 1e-6 && (v - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "fused {fused}: running mean {m}, variance {v}");
        // Normalised with the biased variance: (1 − 2.5)/√(1.25 + ε).
        let y0 = y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((y0 - (-1.5 / (1.25f32 + 1e-5).sqrt())).abs() < 1e-5, "fused {fused}: {y0}");
    }
}
