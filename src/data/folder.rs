//! CIFAR-10 as an image folder: `<top>/<split>/<class>/<n>.jpg|png` with splits `train` and
//! `test` and the ten CIFAR-10 class names as folders (the layout of
//! ../shared/data/cifar10-jpeg.tar.gz). The top folder's name may vary or be absent.
//!
//! Such folders group files by class, so the original record order is lost. After decoding
//! (in parallel), each split is shuffled with a fixed seed ([`DEFAULT_SEED`] unless told
//! otherwise) so that every prefix of the written batches is a fair subset: the training
//! split with `ChaCha8Rng::seed_from_u64(seed)`, the test split with
//! `ChaCha8Rng::seed_from_u64(seed ^ TEST_SEED_SALT)`, each a Fisher–Yates shuffle of the
//! records taken in class order, and within a class in file-number order.

use super::dataset::{Cifar10, Split, CLASSES, IMAGE_BYTES, SIDE};
use anyhow::{anyhow, bail, Result};
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeSet;

/// The seed that shuffles image-folder imports unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 0;
/// Mixed into the seed for the test split so train and test get different permutations.
pub const TEST_SEED_SALT: u64 = 0x7465_7374; // "test"
/// The split folder names, in the order of [`Cifar10`]'s fields.
pub const SPLITS: [&str; 2] = ["train", "test"];
/// Image file extensions accepted (case-insensitive).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// One file of a source (archive entry or file in a directory): its path relative to the
/// source root with `/` separators, and its bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// File contents.
    pub bytes: Vec<u8>,
}

/// Where an image file sits in the layout: split index (0 train, 1 test), label, and the
/// key that orders it within its class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    split: usize,
    label: u8,
    order: (u64, String),
}

/// Whether `path` looks like an image-folder member: `.../<train|test>/<class>/<file>`.
pub fn is_layout_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    parts.len() >= 3 && SPLITS.contains(&parts[parts.len() - 3])
}

/// Decodes an image folder into CIFAR-10 (`source` names it in messages), validating the
/// layout (one top folder at most, splits train and test, the ten class names, every class
/// present in both splits, no duplicate), each image (32×32 RGB, decodable) and then
/// shuffling each split with `seed` as described in the module doc. Files outside the
/// layout that are not images (a README) are ignored; images outside it are an error.
pub fn decode(source: &str, entries: Vec<Entry>, seed: u64) -> Result<Cifar10> {
    let mut slots: Vec<(Slot, Entry)> = Vec::new();
    let mut prefixes = BTreeSet::new();
    for entry in entries {
        let parts: Vec<&str> = entry.path.split('/').filter(|p| !p.is_empty()).collect();
        let is_image = parts.last().and_then(|f| f.rsplit_once('.')).is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
        if !is_layout_path(&entry.path) {
            if is_image {
                bail!("{source}: image {} is outside the layout <split>/<class>/<file> with split train or test", entry.path);
            }
            continue;
        }
        let n = parts.len();
        let (split_name, class, file) = (parts[n - 3], parts[n - 2], parts[n - 1]);
        if !is_image {
            bail!("{source}: {} is not an image: expected files ending in .{}", entry.path, EXTENSIONS.join(", ."));
        }
        let label = CLASSES.iter().position(|c| *c == class).ok_or_else(|| {
            anyhow!("{source}: unknown class folder '{class}' in {}: expected the CIFAR-10 classes {}", entry.path, CLASSES.join(", "))
        })? as u8;
        prefixes.insert(parts[..n - 3].join("/"));
        let split = SPLITS.iter().position(|s| *s == split_name).expect("checked by is_layout_path");
        let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
        let order = (stem.parse::<u64>().unwrap_or(u64::MAX), file.to_string());
        slots.push((Slot { split, label, order }, entry));
    }
    if slots.is_empty() {
        bail!("{source}: no images found: expected <split>/<class>/<n>.jpg|png with splits train and test and the CIFAR-10 class names");
    }
    if prefixes.len() > 1 {
        let list: Vec<String> = prefixes.iter().map(|p| if p.is_empty() { "(root)".into() } else { p.clone() }).collect();
        bail!("{source}: images under several top folders ({}): expected one <top>/<split>/<class> tree", list.join(", "));
    }
    slots.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = slots.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!("{source}: duplicate image {} (also {})", w[1].1.path, w[0].1.path);
    }
    for (split, split_name) in SPLITS.iter().enumerate() {
        let present: BTreeSet<u8> = slots.iter().filter(|(s, _)| s.split == split).map(|(s, _)| s.label).collect();
        let missing: Vec<&str> = (0..10u8).filter(|l| !present.contains(l)).map(|l| CLASSES[l as usize]).collect();
        if !missing.is_empty() {
            bail!("{source}: split '{split_name}' has no images of class {}: expected all ten CIFAR-10 classes in train and test", missing.join(", "));
        }
    }
    let bar = super::progress::bar(slots.len() as u64, "decoding images");
    let pixels: Vec<Vec<u8>> = slots
        .par_iter()
        .map(|(_, entry)| {
            let img = decode_image(source, entry);
            bar.inc(1);
            img
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let mut out = [Split::default(), Split::default()];
    for ((slot, _), img) in slots.iter().zip(pixels) {
        out[slot.split].images.extend_from_slice(&img);
        out[slot.split].labels.push(slot.label);
    }
    let [train, test] = out;
    Ok(Cifar10 { train: shuffle(&train, seed), test: shuffle(&test, seed ^ TEST_SEED_SALT) })
}

/// Decodes one image file to 3,072 bytes in planes R, G, B, refusing anything but 32×32 RGB.
fn decode_image(source: &str, entry: &Entry) -> Result<Vec<u8>> {
    let img = image::load_from_memory(&entry.bytes).map_err(|e| anyhow!("{source}: cannot decode image {}: {e}", entry.path))?;
    if (img.width(), img.height()) != (SIDE as u32, SIDE as u32) {
        bail!("{source}: image {} is {}x{}, expected {SIDE}x{SIDE}", entry.path, img.width(), img.height());
    }
    let rgb = match img {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other => bail!("{source}: image {} has color type {:?}, expected 8-bit RGB", entry.path, other.color()),
    };
    let plane = SIDE * SIDE;
    let mut out = vec![0u8; IMAGE_BYTES];
    for (p, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + p] = px.0[c];
        }
    }
    Ok(out)
}

/// The split's records permuted by a Fisher–Yates shuffle from `ChaCha8Rng::seed_from_u64(seed)`.
pub fn shuffle(split: &Split, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..split.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut out = Split { images: Vec::with_capacity(split.images.len()), labels: Vec::with_capacity(split.len()) };
    for i in order {
        out.images.extend_from_slice(split.image(i));
        out.labels.push(split.labels[i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32×32 PNG whose pixels encode (label, index) so a shuffled import can be checked.
    pub(crate) fn png(label: u8, index: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([label, index, (x * 8 + y) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn entries(per_class: u8) -> Vec<Entry> {
        let mut v = Vec::new();
        for split in SPLITS {
            for (l, class) in CLASSES.iter().enumerate() {
                for i in 0..per_class {
                    v.push(Entry { path: format!("top/{split}/{class}/{i}.png"), bytes: png(l as u8, i) });
                }
            }
        }
        v
    }

    #[test]
    fn decodes_shuffles_and_keeps_pixels() {
        let data = decode("t", entries(2), 3).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (20, 20));
        // Shuffled: not in class order.
        assert_ne!(data.train.labels, (0..20).map(|i| (i / 2) as u8).collect::<Vec<_>>());
        for s in [&data.train, &data.test] {
            for i in 0..s.len() {
                let img = s.image(i);
                assert_eq!(img[0], s.labels[i], "red plane encodes the label");
                assert!(img[1024..2048].iter().all(|&g| g == img[1024]), "green plane is constant");
                assert_eq!((img[2048 + 5], img[2048 + 32]), (40, 1), "blue plane at (x=5,y=0) and (x=0,y=1)");
            }
        }
        // Same seed, same order; another seed, another order.
        assert_eq!(decode("t", entries(2), 3).unwrap().train.labels, data.train.labels);
        assert_ne!(decode("t", entries(2), 4).unwrap().train.images, data.train.images);
    }

    #[test]
    fn refuses_bad_layouts() {
        let err = |e: Vec<Entry>| format!("{:#}", decode("src", e, 0).unwrap_err());
        let mut e = entries(1);
        e[0].path = "top/train/aeroplane/0.png".into();
        assert!(err(e).contains("unknown class folder 'aeroplane'"));
        let mut e = entries(1);
        e.retain(|x| !x.path.starts_with("top/test/dog/"));
        assert!(err(e).contains("split 'test' has no images of class dog"));
        let mut e = entries(1);
        e[3].bytes.truncate(40);
        assert!(err(e).contains("cannot decode image top/train/cat/0.png"));
        let mut e = entries(1);
        let small = image::RgbImage::new(16, 32);
        let mut buf = std::io::Cursor::new(Vec::new());
        small.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        e[0].bytes = buf.into_inner();
        assert!(err(e).contains("is 16x32, expected 32x32"));
        let mut e = entries(1);
        let gray = image::GrayImage::new(32, 32);
        let mut buf = std::io::Cursor::new(Vec::new());
        gray.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        e[0].bytes = buf.into_inner();
        assert!(err(e).contains("expected 8-bit RGB"));
        let mut e = entries(1);
        e[0].path = "other/train/airplane/0.png".into();
        assert!(err(e).contains("several top folders"));
        let mut e = entries(1);
        e.push(Entry { path: "top/train/cat/0.png".into(), bytes: png(3, 0) });
        assert!(err(e).contains("duplicate image"));
        assert!(err(vec![Entry { path: "README".into(), bytes: vec![] }]).contains("no images found"));
    }
}
