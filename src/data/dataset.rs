//! CIFAR-10 held in memory as bytes, and the batches the training loop and the attacks take
//! from it.
//!
//! Images stay u8 (3,072 bytes each, planes R, G, B, row-major 32×32, the binary format's
//! layout) so the whole training set is 150 MB; a batch becomes an f32 tensor in [0, 1] only
//! when it is used. Augmentation (random crop of the 4-pixel zero-padded image, random
//! horizontal flip) runs per image in parallel, from a seed, so a run is reproducible and a
//! resumed run sees the same batches.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Bytes per image: 3 channels × 32 × 32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Image side in pixels.
pub const SIDE: usize = 32;
/// CIFAR-10's class names in label order.
pub const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// One split (train or test): images as bytes and their labels.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// `len() × 3072` bytes, each image as planes R, G, B of 32×32 pixels.
    pub images: Vec<u8>,
    /// One label in 0..10 per image.
    pub labels: Vec<u8>,
}

/// The CIFAR-10 training and test splits.
#[derive(Debug, Clone, Default)]
pub struct Cifar10 {
    /// 50,000 images in the full set.
    pub train: Split,
    /// 10,000 images in the full set.
    pub test: Split,
}

impl Split {
    /// A split from raw bytes, checking that sizes and labels agree.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if images.len() != labels.len() * IMAGE_BYTES {
            bail!("{} image bytes for {} labels: expected {} bytes per image", images.len(), labels.len(), IMAGE_BYTES);
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= 10) {
            bail!("label {bad} out of range: CIFAR-10 labels are 0..9");
        }
        Ok(Self { images, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` images (all of them when `n` is larger), the cheap and reproducible
    /// subset that short runs use.
    pub fn prefix(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split { images: self.images[..n * IMAGE_BYTES].to_vec(), labels: self.labels[..n].to_vec() }
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..][..IMAGE_BYTES]
    }

    /// Images `idx` as an f32 tensor N×3×32×32 in [0, 1] and their labels as u32, on `device`.
    pub fn batch(&self, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let mut pixels = vec![0f32; idx.len() * IMAGE_BYTES];
        pixels.par_chunks_mut(IMAGE_BYTES).zip(idx.par_iter()).for_each(|(dst, &i)| {
            for (d, &s) in dst.iter_mut().zip(self.image(i)) {
                *d = s as f32 / 255.0;
            }
        });
        to_tensors(pixels, idx.iter().map(|&i| self.labels[i] as u32).collect(), device)
    }

    /// Images `idx` with the paper's training augmentation (random 32×32 crop of the image
    /// zero-padded by 4 pixels, random horizontal flip), drawn from `seed`: the same seed and
    /// indices give the same batch.
    pub fn augmented_batch(&self, idx: &[usize], seed: u64, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut pixels = vec![0f32; idx.len() * IMAGE_BYTES];
        pixels.par_chunks_mut(IMAGE_BYTES).zip(idx.par_iter()).enumerate().for_each(|(slot, (dst, &i))| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (slot as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let dy = rng.gen_range(0..=8) as isize - 4;
            let dx = rng.gen_range(0..=8) as isize - 4;
            let flip = rng.gen_bool(0.5);
            crop_flip(self.image(i), dst, dy, dx, flip);
        });
        to_tensors(pixels, idx.iter().map(|&i| self.labels[i] as u32).collect(), device)
    }
}

/// Writes `src` shifted by (dy, dx) with zero fill, optionally mirrored, as f32 in [0, 1].
fn crop_flip(src: &[u8], dst: &mut [f32], dy: isize, dx: isize, flip: bool) {
    let n = SIDE as isize;
    for c in 0..3 {
        for y in 0..n {
            for x in 0..n {
                let sy = y + dy;
                let sx0 = x + dx;
                let sx = if flip { n - 1 - sx0 } else { sx0 };
                let v = if (0..n).contains(&sy) && (0..n).contains(&sx0) {
                    src[c * SIDE * SIDE + (sy * n + sx) as usize] as f32 / 255.0
                } else {
                    0.0
                };
                dst[c * SIDE * SIDE + (y * n + x) as usize] = v;
            }
        }
    }
}

fn to_tensors(pixels: Vec<f32>, labels: Vec<u32>, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = labels.len();
    let x = Tensor::from_vec(pixels, (n, 3, SIDE, SIDE), &Device::Cpu)?.to_device(device)?;
    let y = Tensor::from_vec(labels, n, &Device::Cpu)?.to_device(device)?;
    Ok((x, y))
}

/// The order in which epoch `epoch` visits `n` training images: a permutation drawn from
/// (`seed`, `epoch`), so a resumed run replays the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    idx.shuffle(&mut rng);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> Split {
        let images = (0..n * IMAGE_BYTES).map(|i| (i % 251) as u8).collect();
        Split::new(images, (0..n).map(|i| (i % 10) as u8).collect()).unwrap()
    }

    #[test]
    fn batch_scales_to_unit_interval() {
        let s = split(3);
        let (x, y) = s.batch(&[2, 0], &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 3, 32, 32]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![2, 0]);
        let max = x.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max <= 1.0 && max > 0.9);
    }

    #[test]
    fn augmentation_is_seeded_and_keeps_pixels() {
        let s = split(4);
        let (a, _) = s.augmented_batch(&[0, 1, 2, 3], 7, &Device::Cpu).unwrap();
        let (b, _) = s.augmented_batch(&[0, 1, 2, 3], 7, &Device::Cpu).unwrap();
        let (c, _) = s.augmented_batch(&[0, 1, 2, 3], 8, &Device::Cpu).unwrap();
        let diff = |p: &Tensor, q: &Tensor| (p - q).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff(&a, &b), 0.0);
        assert!(diff(&a, &c) > 0.0);
    }

    #[test]
    fn no_shift_no_flip_is_identity() {
        let s = split(1);
        let mut dst = vec![0f32; IMAGE_BYTES];
        crop_flip(s.image(0), &mut dst, 0, 0, false);
        assert!(dst.iter().zip(s.image(0)).all(|(d, &p)| *d == p as f32 / 255.0));
    }

    #[test]
    fn epoch_order_is_a_permutation() {
        let mut o = epoch_order(100, 1, 3);
        assert_ne!(o, epoch_order(100, 1, 4));
        o.sort();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn rejects_bad_labels() {
        assert!(Split::new(vec![0; IMAGE_BYTES], vec![10]).is_err());
        assert!(Split::new(vec![0; 5], vec![1]).is_err());
    }
}
