//! Theorem 1: the exact ℓ1 and ℓ∞ operator norms of a zero-padded convolution on its real
//! input size, and the entries that attain them (which norm decay's subgradient needs).
//!
//! A conv maps a d_in×h×w input to a d_out×oh×ow output. Output pixel (a, b) reads input
//! pixel (a·s − p + k, b·s − p + t) through kernel position (k, t), when that pixel lies
//! inside the input. So:
//! - a *row* of the matrix (output channel i, pixel (a, b)) sums |K[i, j, k, t]| over the
//!   input channels j of i's group and the positions (k, t) ∈ R(a) × R(b), where
//!   R(a) = {k : 0 ≤ a·s − p + k < h} (positions that stay inside the input);
//! - a *column* (input channel j, pixel (u, v)) sums |K[i, j, k, t]| over the output
//!   channels i of j's group and the positions (k, t) ∈ C(u) × C(v), where
//!   C(u) = {k : s divides u + p − k and 0 ≤ (u + p − k)/s < oh} (the stride classes of the
//!   paper, cut by the input size and the padding).
//!
//! Rows and columns factor into a row-set times a column-set of kernel positions, so the
//! norm is a maximum over channels and over the few distinct set pairs: one pass over the
//! weights, exact for every input size (Assumption 1 is not needed), strides and groups.
//! Linear layers are the 1×1-kernel, 1×1-input case.

use crate::models::{LayerKind, LayerSpec};

/// Which induced norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// Max absolute column sum (ℓ1 → ℓ1).
    L1,
    /// Max absolute row sum (ℓ∞ → ℓ∞).
    Linf,
}

/// The distinct sets of kernel positions along one axis that a row (ℓ∞) or a column (ℓ1) of
/// the conv matrix gathers, for one kernel extent `k` on one input extent `n`.
fn axis_sets(kind: NormKind, n: usize, k: usize, stride: usize, padding: usize) -> Vec<Vec<usize>> {
    let out = (n + 2 * padding - k) / stride + 1;
    let mut sets: Vec<Vec<usize>> = Vec::new();
    let mut push = |set: Vec<usize>| {
        if !set.is_empty() && !sets.contains(&set) {
            sets.push(set);
        }
    };
    match kind {
        NormKind::Linf => {
            for a in 0..out {
                let set = (0..k)
                    .filter(|&kk| {
                        let pos = (a * stride + kk) as isize - padding as isize;
                        pos >= 0 && (pos as usize) < n
                    })
                    .collect();
                push(set);
            }
        }
        NormKind::L1 => {
            for u in 0..n {
                let set = (0..k)
                    .filter(|&kk| {
                        let num = (u + padding) as isize - kk as isize;
                        num >= 0 && num as usize % stride == 0 && (num as usize / stride) < out
                    })
                    .collect();
                push(set);
            }
        }
    }
    sets
}

/// The distinct kernel-position sets of a layer for `kind`: (row-sets over kh, column-sets
/// over kw). Every row (ℓ∞) or column (ℓ1) of the conv matrix uses one pair from their
/// product. Norm decay builds its on-device indicator from these same sets.
pub fn position_sets(spec: &LayerSpec, kind: NormKind) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    (
        axis_sets(kind, spec.in_h, spec.kh, spec.stride, spec.padding),
        axis_sets(kind, spec.in_w, spec.kw, spec.stride, spec.padding),
    )
}

/// Where a layer's ℓ1 or ℓ∞ norm is attained.
#[derive(Debug, Clone, PartialEq)]
pub struct Maximiser {
    /// The norm's value.
    pub value: f64,
    /// ℓ1: the input channel j*; ℓ∞: the output channel i*.
    pub channel: usize,
    /// Kernel rows k of the maximising position set.
    pub rows: Vec<usize>,
    /// Kernel columns t of the maximising position set.
    pub cols: Vec<usize>,
}

/// Per-channel absolute kernel mass, channel × kh × kw: for ℓ∞, summed over each output
/// channel's inputs; for ℓ1, summed over each input channel's outputs (within its group).
fn channel_mass(spec: &LayerSpec, weight: &[f64], kind: NormKind) -> Vec<f64> {
    let (kh, kw, g) = (spec.kh, spec.kw, spec.groups);
    let cin_g = spec.in_c / g;
    let cout_g = spec.out_c / g;
    let khw = kh * kw;
    assert_eq!(weight.len(), spec.out_c * cin_g * khw, "weight of {} has the wrong size", spec.name);
    match kind {
        NormKind::Linf => {
            let mut m = vec![0f64; spec.out_c * khw];
            for i in 0..spec.out_c {
                for j in 0..cin_g {
                    let src = &weight[(i * cin_g + j) * khw..][..khw];
                    for (d, s) in m[i * khw..][..khw].iter_mut().zip(src) {
                        *d += s.abs();
                    }
                }
            }
            m
        }
        NormKind::L1 => {
            let mut m = vec![0f64; spec.in_c * khw];
            for i in 0..spec.out_c {
                let group = i / cout_g;
                for j in 0..cin_g {
                    let c = group * cin_g + j;
                    let src = &weight[(i * cin_g + j) * khw..][..khw];
                    for (d, s) in m[c * khw..][..khw].iter_mut().zip(src) {
                        *d += s.abs();
                    }
                }
            }
            m
        }
    }
}

/// The exact ℓ1 or ℓ∞ norm of a conv or linear layer and where it is attained, from its
/// weight (row-major, PyTorch layout) in f64. Ties go to the first channel and set pair.
pub fn conv_norm(spec: &LayerSpec, weight: &[f64], kind: NormKind) -> Maximiser {
    assert!(spec.is_matrix(), "{} is not a conv or linear layer", spec.name);
    maximise(spec, &channel_mass(spec, weight, kind), kind)
}

/// Both norms, (ℓ1, ℓ∞), in one pass over the weights (what tables and the bench use).
pub fn conv_norms(spec: &LayerSpec, weight: &[f64]) -> (Maximiser, Maximiser) {
    assert!(spec.is_matrix(), "{} is not a conv or linear layer", spec.name);
    let (kh, kw, g) = (spec.kh, spec.kw, spec.groups);
    let (cin_g, cout_g, khw) = (spec.in_c / g, spec.out_c / g, kh * kw);
    assert_eq!(weight.len(), spec.out_c * cin_g * khw, "weight of {} has the wrong size", spec.name);
    let mut l1 = vec![0f64; spec.in_c * khw];
    let mut linf = vec![0f64; spec.out_c * khw];
    for i in 0..spec.out_c {
        let group = i / cout_g;
        let row = &mut linf[i * khw..][..khw];
        for j in 0..cin_g {
            let src = &weight[(i * cin_g + j) * khw..][..khw];
            let col = &mut l1[(group * cin_g + j) * khw..][..khw];
            for ((r, c), w) in row.iter_mut().zip(col.iter_mut()).zip(src) {
                let a = w.abs();
                *r += a;
                *c += a;
            }
        }
    }
    (maximise(spec, &l1, NormKind::L1), maximise(spec, &linf, NormKind::Linf))
}

/// The largest channel mass summed over a row-set × column-set pair, and where.
fn maximise(spec: &LayerSpec, mass: &[f64], kind: NormKind) -> Maximiser {
    let (row_sets, col_sets) = position_sets(spec, kind);
    let channels = match kind {
        NormKind::Linf => spec.out_c,
        NormKind::L1 => spec.in_c,
    };
    let khw = spec.kh * spec.kw;
    let mut best = Maximiser { value: -1.0, channel: 0, rows: Vec::new(), cols: Vec::new() };
    for c in 0..channels {
        let m = &mass[c * khw..][..khw];
        for rows in &row_sets {
            for cols in &col_sets {
                let v: f64 = rows.iter().flat_map(|&k| cols.iter().map(move |&t| m[k * spec.kw + t])).sum();
                if v > best.value {
                    best = Maximiser { value: v, channel: c, rows: rows.clone(), cols: cols.clone() };
                }
            }
        }
    }
    best.value = best.value.max(0.0);
    best
}

/// The ℓ1 (= ℓ∞ = ℓ2) norm of a BatchNorm layer in eval mode: max_c |γ_c| / √(var_c + eps).
pub fn batch_norm_norm(gamma: &[f64], running_var: &[f64], eps: f64) -> Maximiser {
    let mut best = Maximiser { value: 0.0, channel: 0, rows: vec![0], cols: vec![0] };
    for (c, (g, v)) in gamma.iter().zip(running_var).enumerate() {
        let x = g.abs() / (v + eps).sqrt();
        if x > best.value {
            best.value = x;
            best.channel = c;
        }
    }
    best
}

/// ℓ1 and ℓ∞ of any layer kind, given its weight (and, for BatchNorm, running variance).
pub fn layer_norm(spec: &LayerSpec, weight: &[f64], running_var: Option<&[f64]>, kind: NormKind) -> Maximiser {
    match spec.kind {
        LayerKind::Conv | LayerKind::Linear => conv_norm(spec, weight, kind),
        LayerKind::Bn => batch_norm_norm(weight, running_var.expect("BatchNorm norms need the running variance"), crate::models::layers::BN_EPS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(in_c: usize, out_c: usize, hw: usize, k: usize, stride: usize, padding: usize, groups: usize) -> LayerSpec {
        LayerSpec {
            name: "t.weight".into(),
            kind: LayerKind::Conv,
            in_c,
            in_h: hw,
            in_w: hw,
            out_c,
            kh: k,
            kw: k,
            stride,
            padding,
            groups,
            bias: false,
        }
    }

    #[test]
    fn stride_one_large_input_uses_all_positions() {
        let s = spec(2, 3, 8, 3, 1, 1, 1);
        let (r, c) = position_sets(&s, NormKind::L1);
        assert!(r.contains(&vec![0, 1, 2]) && c.contains(&vec![0, 1, 2]));
        let w = vec![1.0; 3 * 2 * 9];
        assert_eq!(conv_norm(&s, &w, NormKind::L1).value, 27.0);
        assert_eq!(conv_norm(&s, &w, NormKind::Linf).value, 18.0);
    }

    #[test]
    fn stride_two_splits_positions_into_classes() {
        let s = spec(1, 1, 8, 3, 2, 1, 1);
        let (r, _) = position_sets(&s, NormKind::L1);
        assert!(r.contains(&vec![0, 2]) && r.contains(&vec![1]));
    }

    #[test]
    fn one_pass_gives_both_norms_as_the_single_ones() {
        for s in [spec(4, 6, 5, 3, 2, 1, 2), spec(3, 3, 2, 3, 1, 1, 1), spec(2, 4, 1, 1, 1, 0, 2)] {
            let n: usize = s.weight_shape().iter().product();
            let w: Vec<f64> = (0..n).map(|i| ((i * 7919) % 23) as f64 - 11.0).collect();
            let (l1, linf) = conv_norms(&s, &w);
            assert_eq!(l1, conv_norm(&s, &w, NormKind::L1));
            assert_eq!(linf, conv_norm(&s, &w, NormKind::Linf));
        }
    }

    #[test]
    fn one_by_one_input_sees_only_the_centre() {
        let s = spec(4, 4, 1, 3, 1, 1, 1);
        let (r, c) = position_sets(&s, NormKind::Linf);
        assert_eq!((r, c), (vec![vec![1]], vec![vec![1]]));
    }
}
