//! Writes the augmented batches one epoch of `normlab train` feeds the model, in order, so
//! another framework can train on exactly the same data (`bench/pytorch_epoch.py --replay`).
//!
//!     cargo run --release --example dump_epoch -- DATA_DIR SEED TRAIN_SUBSET OUT_PREFIX [EPOCH]
//!
//! Writes `OUT_PREFIX.x` (f32 little-endian, images × 3 × 32 × 32, in [0, 1]) and
//! `OUT_PREFIX.y` (u8 labels), batches of 128 one after another (the last one partial).

use anyhow::{Context, Result};
use candle_core::Device;
use normlab::data::{binary::load_dir, dataset::epoch_order};
use normlab::train::augment_seed;
use std::io::Write;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, seed, subset, out, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: dump_epoch DATA_DIR SEED TRAIN_SUBSET OUT_PREFIX [EPOCH]");
    };
    let (seed, subset): (u64, usize) = (seed.parse().context("SEED")?, subset.parse().context("TRAIN_SUBSET")?);
    let epoch: usize = rest.first().map(|e| e.parse()).transpose().context("EPOCH")?.unwrap_or(0);
    let data = load_dir(std::path::Path::new(dir))?;
    let train = data.train.prefix(subset.min(data.train.len()));
    let order = epoch_order(train.len(), seed, epoch);
    let (mut xs, mut ys) = (std::fs::File::create(format!("{out}.x"))?, std::fs::File::create(format!("{out}.y"))?);
    for (b, idx) in order.chunks(128).enumerate() {
        let (x, y) = train.augmented_batch(idx, augment_seed(seed, epoch, b), &Device::Cpu)?;
        // One write per batch (an unbuffered write per value was 30 M system calls).
        xs.write_all(&x.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
        ys.write_all(&y.to_vec1::<u32>()?.iter().map(|&l| l as u8).collect::<Vec<u8>>())?;
    }
    println!("{} images in {} batches of epoch {epoch}, seed {seed}: {out}.x, {out}.y", order.len(), order.len().div_ceil(128));
    Ok(())
}
