//! Tiny classifiers for the attack tests whose worst case is known exactly.
//!
//! An affine classifier z = W·x + b on a box: every logit difference z_y − z_j is affine in
//! x, so its minimum over the box [max(x − ε, 0), min(x + ε, 1)] is attained at a corner,
//! and a point is vulnerable exactly when some corner is misclassified. With two inputs
//! that is four corners to check.

use candle_core::{Device, Tensor};

/// An affine classifier on 2-D inputs (K classes).
pub struct Affine2d {
    /// K × 2 weights.
    pub w: Vec<[f64; 2]>,
    /// K biases.
    pub b: Vec<f64>,
}

impl Affine2d {
    /// Four classes whose regions meet inside the unit square.
    pub fn four_classes() -> Self {
        Self { w: vec![[2.0, 0.5], [-1.5, 1.0], [0.3, -2.0], [-0.8, -0.7]], b: vec![-0.6, 0.4, 0.7, 0.9] }
    }

    /// Two classes split by a tilted line.
    pub fn two_classes() -> Self {
        Self { w: vec![[1.0, 2.0], [-1.0, 0.5]], b: vec![0.0, 0.4] }
    }

    /// Logits in f64 at one point.
    pub fn logits(&self, p: [f64; 2]) -> Vec<f64> {
        self.w.iter().zip(&self.b).map(|(w, b)| w[0] * p[0] + w[1] * p[1] + b).collect()
    }

    /// The class the classifier assigns to `p`.
    pub fn predict(&self, p: [f64; 2]) -> u32 {
        let z = self.logits(p);
        (0..z.len()).fold(0, |best, j| if z[j] > z[best] { j } else { best }) as u32
    }

    /// The smallest margin z_y − max_{j≠y} z_j over the box around `p`: negative exactly
    /// when some input in the box is misclassified (brute force over the corners).
    pub fn worst_margin(&self, p: [f64; 2], y: u32, eps: f64) -> f64 {
        let lo = [(p[0] - eps).max(0.0), (p[1] - eps).max(0.0)];
        let hi = [(p[0] + eps).min(1.0), (p[1] + eps).min(1.0)];
        let corners = [[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]];
        corners
            .iter()
            .map(|&c| {
                let z = self.logits(c);
                let other = (0..z.len()).filter(|&j| j as u32 != y).map(|j| z[j]).fold(f64::NEG_INFINITY, f64::max);
                z[y as usize] - other
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// The smallest margin over the ℓ2 disc of radius `eps` around `p` intersected with the
    /// unit square, from 3,600 points of the circle clipped to the square (a linear function's
    /// minimum over that convex set lies on its boundary, which these points trace).
    pub fn worst_margin_l2(&self, p: [f64; 2], y: u32, eps: f64) -> f64 {
        (0..3600)
            .map(|k| {
                let a = k as f64 * std::f64::consts::TAU / 3600.0;
                let c = [(p[0] + eps * a.cos()).clamp(0.0, 1.0), (p[1] + eps * a.sin()).clamp(0.0, 1.0)];
                let z = self.logits(c);
                let other = (0..z.len()).filter(|&j| j as u32 != y).map(|j| z[j]).fold(f64::NEG_INFINITY, f64::max);
                z[y as usize] - other
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// The classifier as a logits function on N × 2 tensors.
    pub fn function(&self) -> impl Fn(&Tensor) -> candle_core::Result<Tensor> {
        let k = self.w.len();
        let wt: Vec<f32> = (0..2).flat_map(|i| self.w.iter().map(move |w| w[i] as f32)).collect();
        let wt = Tensor::from_vec(wt, (2, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(self.b.iter().map(|&v| v as f32).collect::<Vec<_>>(), (1, k), &Device::Cpu).unwrap();
        move |x: &Tensor| x.matmul(&wt)?.broadcast_add(&b)
    }
}

/// A grid of `side`² points in [0, 1]² (as an N × 2 tensor and as host pairs).
pub fn grid(side: usize) -> (Tensor, Vec<[f64; 2]>) {
    let pts: Vec<[f64; 2]> = (0..side * side).map(|i| [(i / side) as f64 / (side - 1) as f64, (i % side) as f64 / (side - 1) as f64]).collect();
    let flat: Vec<f32> = pts.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect();
    (Tensor::from_vec(flat, (pts.len(), 2), &Device::Cpu).unwrap(), pts)
}

/// The largest ℓ∞ distance of `x_adv` from `x` and its range, computed independently of
/// the attack module's own check.
pub fn distance_and_range(x: &Tensor, x_adv: &Tensor) -> (f32, f32, f32) {
    let a = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = x_adv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    (d, b.iter().copied().fold(f32::INFINITY, f32::min), b.iter().copied().fold(f32::NEG_INFINITY, f32::max))
}
