//! Finite labelled point sets the constructions are built on: synthetic data generated
//! 2ε-separated, or a subset of CIFAR-10 images; and their separation (Assumption 2).

use super::InputNorm;
use crate::data::Split;
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `len()` labelled points of dimension `dim`.
#[derive(Debug, Clone)]
pub struct PointSet {
    /// Dimension of each point.
    pub dim: usize,
    /// `len() × dim` coordinates, row-major.
    pub coords: Vec<f64>,
    /// One label in `0..classes` per point.
    pub labels: Vec<usize>,
    /// Number of classes (labels are below it).
    pub classes: usize,
}

/// The closest pair of points with different labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosestPair {
    /// Their distance: the set is 2ε-separated exactly when this exceeds 2ε.
    pub distance: f64,
    /// The two points' indices (first < second).
    pub pair: (usize, usize),
}

impl PointSet {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no point.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Point `i`'s coordinates.
    pub fn point(&self, i: usize) -> &[f64] {
        &self.coords[i * self.dim..][..self.dim]
    }

    /// Synthetic data in [0, 1]^dim: `n` points with labels cycling over `classes`, every two
    /// points of different classes at least `separation` apart in `norm`, and one planted pair
    /// (points 0 and 1) exactly `separation` apart along the first axis, so the set's
    /// separation is `separation` itself. Rejection sampling from a seeded generator.
    pub fn synthetic(n: usize, dim: usize, classes: usize, separation: f64, norm: InputNorm, seed: u64) -> Result<Self> {
        if classes < 2 || n < classes {
            bail!("synthetic data needs at least 2 classes and a point per class (got {n} points, {classes} classes)");
        }
        if dim == 0 {
            bail!("synthetic data needs dimension ≥ 1");
        }
        if !(separation > 0.0 && separation < 1.0) {
            bail!("synthetic separation {separation} must lie in (0, 1): the points live in [0, 1]^{dim}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut set = Self { dim, coords: Vec::with_capacity(n * dim), labels: Vec::with_capacity(n), classes };
        let first: Vec<f64> = (0..dim).map(|k| if k == 0 { rng.gen::<f64>() * (1.0 - separation) } else { rng.gen() }).collect();
        let mut second = first.clone();
        second[0] += separation;
        set.coords.extend(first.iter().chain(&second));
        set.labels.extend([0, 1]);
        const TRIES: usize = 100_000;
        for i in 2..n {
            let label = i % classes;
            let placed = (0..TRIES).find_map(|_| {
                let p: Vec<f64> = (0..dim).map(|_| rng.gen()).collect();
                let clear = (0..set.len()).all(|j| set.labels[j] == label || norm.distance(&p, set.point(j)) >= separation);
                clear.then_some(p)
            });
            let Some(p) = placed else {
                bail!("could not place point {i} of {n} with {norm} separation {separation} in [0, 1]^{dim} after {TRIES} tries: lower --separation (or --eps) or --points, or raise --dim");
            };
            set.coords.extend(p);
            set.labels.push(label);
        }
        Ok(set)
    }

    /// The first `n` images of a CIFAR-10 split as points in [0, 1]^3072 (pixel / 255).
    pub fn from_split(split: &Split, n: usize) -> Result<Self> {
        if n > split.len() {
            bail!("asked for {n} images but the split holds {}", split.len());
        }
        let part = split.prefix(n);
        let labels: Vec<usize> = part.labels.iter().map(|&l| l as usize).collect();
        if labels.iter().all(|&l| l == labels[0]) {
            bail!("the first {n} images all have class {}: take more points so that two classes appear", labels[0]);
        }
        Ok(Self {
            dim: crate::data::IMAGE_BYTES,
            coords: part.images.iter().map(|&b| b as f64 / 255.0).collect(),
            labels,
            classes: crate::data::CLASSES.len(),
        })
    }

    /// The closest pair of points with different labels in `norm` (exhaustive), or `None`
    /// when all labels agree.
    pub fn closest_pair(&self, norm: InputNorm) -> Option<ClosestPair> {
        let mut best: Option<ClosestPair> = None;
        for i in 0..self.len() {
            for j in i + 1..self.len() {
                if self.labels[i] != self.labels[j] {
                    let d = norm.distance(self.point(i), self.point(j));
                    if best.is_none_or(|b| d < b.distance) {
                        best = Some(ClosestPair { distance: d, pair: (i, j) });
                    }
                }
            }
        }
        best
    }

    /// Points per class, for reports.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes];
        for &l in &self.labels {
            c[l] += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_sets_have_exactly_the_requested_separation() {
        for norm in [InputNorm::Linf, InputNorm::L2] {
            let s = PointSet::synthetic(30, 6, 3, 0.25, norm, 7).unwrap();
            let c = s.closest_pair(norm).unwrap();
            assert!((c.distance - 0.25).abs() < 1e-12, "{norm}: {c:?}");
            assert!(s.coords.iter().all(|v| (0.0..=1.0).contains(v)));
            assert_eq!(s.class_counts(), vec![10, 10, 10]);
        }
        assert!(PointSet::synthetic(30, 2, 3, 0.9, InputNorm::Linf, 0).is_err());
    }
}
