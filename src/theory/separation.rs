//! Assumption 2 on real data: the smallest distance between two CIFAR-10 images of different
//! classes, within the training set, between test and training images, and within the test
//! set, with the pair that attains it. Theorem 2 gives a robust network at every radius
//! below half of it; the paper's ε = 1/255 is far below.
//!
//! ℓ∞ is exact by brute force on the u8 pixels: every pair of different classes, in parallel
//! (rayon), with an early exit once a pair's running maximum exceeds the best distance found
//! so far (pixels are visited in a scattered order so that the first block already spans the
//! image and most pairs exit after it). Pairs that tie with the minimum are all visited, so
//! the reported pair (the first in index order) and the tie count are deterministic.
//!
//! ℓ2 uses ‖a − b‖² = ‖a‖² + ‖b‖² − 2⟨a, b⟩ with a matrix product on the chosen device, in f64
//! on integer pixel values: every product and sum is an integer below 2⁵³, so the Gram
//! matrix is exact; the minimising pair is then rechecked with integer arithmetic.

use super::{Check, InputNorm, Report};
use crate::data::{Split, CLASSES, IMAGE_BYTES};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Yang et al. 2020 ("A Closer Look at Accuracy vs. Robustness"): the minimum ℓ∞ distance
/// between CIFAR-10 images of different classes, on the full data set.
pub const YANG_2020_LINF: f64 = 0.2118;

/// The closest pair of different classes between two sets of images.
#[derive(Debug, Clone, Serialize)]
pub struct MinPair {
    /// The distance in [0, 1] pixel units.
    pub distance: f64,
    /// The exact integer value: ℓ∞ in u8 levels, or ℓ2² in squared u8 levels.
    pub raw: u64,
    /// Index of the first image in its set.
    pub first: usize,
    /// Index of the second image in its set.
    pub second: usize,
    /// Their classes.
    pub classes: (String, String),
    /// Pairs of different classes at exactly this distance.
    pub ties: usize,
    /// Pairs of different classes compared.
    pub pairs: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A fixed scattered order of the 3,072 pixel bytes (stride 1031, coprime to 3072), so that
/// any prefix of it samples the whole image across the three colour planes.
fn scattered(images: &[u8]) -> Vec<u8> {
    let order: Vec<usize> = (0..IMAGE_BYTES).map(|k| (k * 1031) % IMAGE_BYTES).collect();
    let mut out = vec![0u8; images.len()];
    out.par_chunks_mut(IMAGE_BYTES).zip(images.par_chunks(IMAGE_BYTES)).for_each(|(dst, src)| {
        for (d, &k) in dst.iter_mut().zip(&order) {
            *d = src[k];
        }
    });
    out
}

/// max_k |a_k − b_k|, or `None` as soon as a block's running maximum exceeds `bound`.
#[inline]
fn linf_within(a: &[u8], b: &[u8], bound: u8) -> Option<u8> {
    let mut m = 0u8;
    for (ca, cb) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
        let block = ca.iter().zip(cb).fold(0u8, |acc, (x, y)| acc.max(x.abs_diff(*y)));
        m = m.max(block);
        if m > bound {
            return None;
        }
    }
    Some(m)
}

/// The ℓ∞-closest pair of different classes between `a` and `b` (within `a` when `same`:
/// pairs i < j), or `None` when no such pair exists.
pub fn linf_min(a: &Split, b: &Split, same: bool) -> Option<MinPair> {
    let start = Instant::now();
    let (pa, pb) = (scattered(&a.images), if same { Vec::new() } else { scattered(&b.images) });
    let pb: &[u8] = if same { &pa } else { &pb };
    let best = AtomicU32::new(u32::from(u8::MAX) + 1);
    // (distance, first, second, ties)
    let found: Mutex<Option<(u8, usize, usize, usize)>> = Mutex::new(None);
    let pairs: u64 = (0..a.len())
        .into_par_iter()
        .map(|i| {
            let xi = &pa[i * IMAGE_BYTES..][..IMAGE_BYTES];
            let mut compared = 0u64;
            for j in if same { i + 1 } else { 0 }..b.len() {
                if a.labels[i] == b.labels[j] {
                    continue;
                }
                compared += 1;
                let bound = best.load(Ordering::Relaxed).min(255) as u8;
                if let Some(d) = linf_within(xi, &pb[j * IMAGE_BYTES..][..IMAGE_BYTES], bound) {
                    if u32::from(d) > best.load(Ordering::Relaxed) {
                        continue;
                    }
                    let mut f = found.lock().expect("no panics while holding the lock");
                    match *f {
                        Some((bd, bi, bj, ties)) if d == bd => {
                            let (fi, fj) = (i, j).min((bi, bj));
                            *f = Some((d, fi, fj, ties + 1));
                        }
                        Some((bd, ..)) if d > bd => {}
                        _ => *f = Some((d, i, j, 1)),
                    }
                    best.fetch_min(u32::from(d), Ordering::Relaxed);
                }
            }
            compared
        })
        .sum();
    let f = found.into_inner().expect("no panics while holding the lock");
    f.map(|(d, i, j, ties)| MinPair {
        distance: f64::from(d) / 255.0,
        raw: u64::from(d),
        first: i,
        second: j,
        classes: (CLASSES[a.labels[i] as usize].to_string(), CLASSES[b.labels[j] as usize].to_string()),
        ties,
        pairs,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Exact squared ℓ2 distance of two images in u8 levels.
fn l2_squared(a: &[u8], b: &[u8]) -> u64 {
    a.iter().zip(b).map(|(x, y)| u64::from(x.abs_diff(*y)).pow(2)).sum()
}

/// The ℓ2-closest pair of different classes between `a` and `b` (within `a` when `same`),
/// by exact f64 Gram matrices on `device` in blocks of `block` rows.
pub fn l2_min(a: &Split, b: &Split, same: bool, device: &Device, block: usize) -> Result<Option<MinPair>> {
    let start = Instant::now();
    let to_tensor = |s: &Split| -> Result<Tensor> {
        Ok(Tensor::from_slice(&s.images, (s.len(), IMAGE_BYTES), &Device::Cpu)?.to_dtype(DType::F64)?.to_device(device)?)
    };
    let xa = to_tensor(a)?;
    let xb = if same { xa.clone() } else { to_tensor(b)? };
    let na = xa.sqr()?.sum(1)?;
    let nb = xb.sqr()?.sum(1)?;
    let la = Tensor::from_slice(&a.labels, a.len(), &Device::Cpu)?.to_dtype(DType::F64)?.to_device(device)?;
    let lb = Tensor::from_slice(&b.labels, b.len(), &Device::Cpu)?.to_dtype(DType::F64)?.to_device(device)?;
    const EXCLUDED: f64 = 1e18;
    let mut row_min: Vec<(f64, usize)> = Vec::with_capacity(a.len());
    let mut pairs = 0u64;
    for r0 in (0..a.len()).step_by(block.max(1)) {
        let r1 = (r0 + block).min(a.len());
        // Columns this block compares with: all of b, or (same set) those after r0.
        let c0 = if same { r0 } else { 0 };
        let cols = b.len() - c0;
        if cols == 0 {
            row_min.extend((r0..r1).map(|_| (f64::INFINITY, 0)));
            continue;
        }
        let xr = xa.narrow(0, r0, r1 - r0)?;
        let xc = xb.narrow(0, c0, cols)?;
        let gram = xr.matmul(&xc.t()?)?;
        let d2 = ((gram * -2.0)?.broadcast_add(&na.narrow(0, r0, r1 - r0)?.unsqueeze(1)?)?).broadcast_add(&nb.narrow(0, c0, cols)?.unsqueeze(0)?)?;
        let same_class = la.narrow(0, r0, r1 - r0)?.unsqueeze(1)?.broadcast_eq(&lb.narrow(0, c0, cols)?.unsqueeze(0)?)?.to_dtype(DType::F64)?;
        let mut penalty = same_class;
        if same {
            let i = Tensor::arange(r0 as u32, r1 as u32, device)?.unsqueeze(1)?;
            let j = Tensor::arange(c0 as u32, b.len() as u32, device)?.unsqueeze(0)?;
            penalty = penalty.broadcast_add(&j.broadcast_le(&i)?.to_dtype(DType::F64)?)?;
        }
        let masked = (d2 + (penalty * EXCLUDED)?)?;
        let mins: Vec<f64> = masked.min(1)?.to_vec1()?;
        let args: Vec<u32> = masked.argmin(1)?.to_vec1()?;
        row_min.extend(mins.into_iter().zip(args).map(|(m, j)| (m, c0 + j as usize)));
        for i in r0..r1 {
            let lo = if same { i + 1 } else { 0 };
            pairs += (lo..b.len()).filter(|&j| b.labels[j] != a.labels[i]).count() as u64;
        }
    }
    let best = row_min.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    if best >= EXCLUDED {
        return Ok(None);
    }
    // Exact recheck in integers of every row that reaches the minimum: its pairs at the
    // minimum, the first pair in index order, and agreement with the Gram value.
    let mut first: Option<(usize, usize)> = None;
    let mut ties = 0;
    let mut raw = 0u64;
    for (i, &(m, _)) in row_min.iter().enumerate() {
        if m != best {
            continue;
        }
        let xi = a.image(i);
        for j in if same { i + 1 } else { 0 }..b.len() {
            if a.labels[i] != b.labels[j] {
                let d = l2_squared(xi, b.image(j));
                if d as f64 == best {
                    ties += 1;
                    raw = d;
                    first.get_or_insert((i, j));
                }
            }
        }
    }
    let Some((i, j)) = first else {
        bail!("the Gram matrix gave a minimum squared distance {best} that no pair has exactly: the f64 product was not exact");
    };
    Ok(Some(MinPair {
        distance: (raw as f64).sqrt() / 255.0,
        raw,
        first: i,
        second: j,
        classes: (CLASSES[a.labels[i] as usize].to_string(), CLASSES[b.labels[j] as usize].to_string()),
        ties,
        pairs,
        seconds: start.elapsed().as_secs_f64(),
    }))
}

/// The closest pair for `norm` between `a` and `b`.
pub fn min_pair(a: &Split, b: &Split, same: bool, norm: InputNorm, device: &Device) -> Result<Option<MinPair>> {
    match norm {
        InputNorm::Linf => Ok(linf_min(a, b, same)),
        InputNorm::L2 => l2_min(a, b, same, device, 256),
    }
}

/// Measures CIFAR-10's separation in `norm` on `data` (the first `subset` images of each
/// split, or all) and compares it with 2ε.
pub fn run(data: &crate::data::Cifar10, norm: InputNorm, subset: Option<usize>, eps: f64, device: &Device) -> Result<Report> {
    let (train, test) = match subset {
        Some(n) => (data.train.prefix(n), data.test.prefix(n)),
        None => (data.train.clone(), data.test.clone()),
    };
    if train.is_empty() {
        bail!("the training split is empty: nothing to measure");
    }
    let full = subset.is_none_or(|n| n >= data.train.len() && n >= data.test.len());
    let mut parts = Vec::new();
    let mut overall: Option<(String, MinPair)> = None;
    for (name, a, b, same) in [("train-train", &train, &train, true), ("test-train", &test, &train, false), ("test-test", &test, &test, true)] {
        if a.is_empty() || b.is_empty() {
            continue;
        }
        let Some(p) = min_pair(a, b, same, norm, device)? else { continue };
        parts.push(json!({"between": name, "result": p}));
        if overall.as_ref().is_none_or(|(_, o)| p.raw < o.raw) {
            overall = Some((name.to_string(), p));
        }
    }
    let Some((where_, best)) = overall else {
        bail!("no two images of different classes in the data: nothing to measure");
    };
    let checks = vec![Check::new(
        "assumption2_at_eps",
        best.distance > 2.0 * eps,
        best.distance,
        format!("> 2ε = {}", super::fmt_value(2.0 * eps)),
        format!(
            "smallest {norm} distance between images of different classes ({where_}: images {} ({}) and {} ({})); ε = {} is {:.1}× below the limit δ/2 = {}",
            best.first,
            best.classes.0,
            best.second,
            best.classes.1,
            super::fmt_value(eps),
            best.distance / 2.0 / eps,
            super::fmt_value(best.distance / 2.0)
        ),
    )];
    let reference = match norm {
        InputNorm::Linf => json!({
            "published": YANG_2020_LINF,
            "source": "Yang et al. 2020, A Closer Look at Accuracy vs. Robustness: minimum ℓ∞ distance between CIFAR-10 images of different classes, full data set, original files",
            "measured_minus_published": best.distance - YANG_2020_LINF,
            "comparable": if full { "same images; pixels equal only if DIR holds the original files: a JPEG re-encoding (the image-folder import) moves pixels by ~5/255 on average, and the minimum by a few levels" } else { "no: a subset's minimum can only be ≥ the full set's" },
        }),
        InputNorm::L2 => json!({"published": null, "note": "no published ℓ2 value is compared"}),
    };
    let setting = json!({
        "norm": norm,
        "eps": eps,
        "images": {"train": train.len(), "test": test.len(), "which": if full { "all".to_string() } else { format!("the first {} of each split", subset.unwrap_or(0)) }},
        "device": format!("{device:?}"),
    });
    let facts = json!({
        "separation": best.distance,
        "attained": where_,
        "pair": best,
        "limit_eps": best.distance / 2.0,
        "reference": reference,
        "comparisons": parts,
    });
    Ok(Report::new("separation", "CIFAR-10's classes are separated: Assumption 2 holds far above ε = 1/255", setting, facts, checks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_split(n: usize, seed: u64) -> Split {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let images = (0..n * IMAGE_BYTES).map(|_| rng.gen()).collect();
        let labels = (0..n).map(|i| (i % 3) as u8).collect();
        Split::new(images, labels).unwrap()
    }

    fn brute(a: &Split, b: &Split, same: bool, norm: InputNorm) -> (u64, usize, usize) {
        let mut best = (u64::MAX, 0, 0);
        for i in 0..a.len() {
            for j in if same { i + 1 } else { 0 }..b.len() {
                if a.labels[i] != b.labels[j] {
                    let d = match norm {
                        InputNorm::Linf => a.image(i).iter().zip(b.image(j)).map(|(x, y)| u64::from(x.abs_diff(*y))).max().unwrap(),
                        InputNorm::L2 => l2_squared(a.image(i), b.image(j)),
                    };
                    if d < best.0 {
                        best = (d, i, j);
                    }
                }
            }
        }
        best
    }

    #[test]
    fn fast_searches_agree_with_brute_force() {
        let mut a = random_split(40, 1);
        let b = random_split(30, 2);
        // Plant a near pair of different classes: image 7 (class 1) ≈ image 3 (class 0).
        let near: Vec<u8> = a.image(3).iter().map(|&v| v.saturating_add(9)).collect();
        a.images[7 * IMAGE_BYTES..][..IMAGE_BYTES].copy_from_slice(&near);
        for norm in [InputNorm::Linf, InputNorm::L2] {
            for (x, y, same) in [(&a, &a, true), (&b, &a, false)] {
                let got = min_pair(x, y, same, norm, &Device::Cpu).unwrap().unwrap();
                let want = brute(x, y, same, norm);
                assert_eq!((got.raw, got.first, got.second), want, "{norm} same={same}");
            }
        }
        assert_eq!(linf_min(&a, &a, true).unwrap().raw, 9);
    }

    #[test]
    fn one_class_has_no_pair() {
        let mut s = random_split(5, 3);
        s.labels = vec![2; 5];
        assert!(linf_min(&s, &s, true).is_none());
        assert!(l2_min(&s, &s, true, &Device::Cpu, 2).unwrap().is_none());
    }
}
