//! `normlab run --stack`: which of a run's cells train together as one stacked model
//! ([`crate::train::stack`]) and how many at most. Cells that differ only in their
//! regularizer (same model, seed, data, protocol and training mode: the
//! [`crate::train::stack::stack_key`]) go together in grid order, cut into stacks of at most
//! K cells; a cell that stacks with nothing trains alone, as with `--stack off`.
//!
//! Some cells never stack and train alone ([`crate::train::stack::trains_alone`]):
//! adversarial training (each slice would need its own attacked images), SVC with
//! `final_clip` (BatchNorm's statistics are re-estimated after the last clip by train-mode
//! forward passes, which in a stack would move every slice's) and norm decay with
//! `project_bn` (the projection acts on whole BatchNorm tensors, not one slice's). SVC at
//! the reference's moments (`coverage: reference`, a clip before the step of each epoch's
//! batches 1, 1 + every, …) and norm decay's reference coverage stack: each slice clips or
//! decays its own layers, as alone.

use crate::device::DeviceSpec;
use crate::models::Arch;
use crate::plan::Cell;
use crate::train::stack::{cell_footprint, stack_key};
use crate::train::TrainConfig;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// The share of the free memory a stack may fill (the rest is left for the evaluation, the
/// data and whatever else runs).
const MEMORY_SHARE: f64 = 0.8;

/// How many cells may train as one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackMode {
    /// Every cell alone.
    Off,
    /// As many as fit the device's free memory: on the CPU the available RAM, on CUDA the free
    /// device memory, each divided by the memory one cell's training step was measured to take
    /// ([`cell_footprint`]) and by the jobs sharing the device.
    Auto,
    /// At most this many (≥ 1).
    Size(usize),
}

impl StackMode {
    /// `off`, `auto` or a number K ≥ 1.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            t => match t.parse::<usize>() {
                Ok(0) => bail!("--stack 0: expected at least 1 cell per stack (or off, auto)"),
                Ok(k) => Ok(Self::Size(k)),
                Err(_) => bail!("--stack '{text}': expected a number of cells K ≥ 1, auto or off"),
            },
        }
    }
}

impl std::fmt::Display for StackMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Auto => f.write_str("auto"),
            Self::Size(k) => write!(f, "{k}"),
        }
    }
}

/// Groups `cells` (a run's remaining cells, in grid order) into stacks: cells with the same
/// [`stack_key`] in grid order, cut into stacks of at most `max(key)` cells; cells that do not
/// stack ([`crate::train::stack::trains_alone`]: adversarial training, SVC's final clip,
/// BatchNorm projection) alone. Returns each stack as positions in `cells`, ordered by their first cell.
pub fn group(cells: &[&Cell], max: &mut dyn FnMut(&TrainConfig) -> Result<usize>) -> Result<Vec<Vec<usize>>> {
    let mut groups: Vec<(Option<TrainConfig>, Vec<usize>)> = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        match stack_key(&cell.config.train) {
            Some(key) => match groups.iter_mut().find(|(k, _)| k.as_ref() == Some(&key)) {
                Some((_, members)) => members.push(i),
                None => groups.push((Some(key), vec![i])),
            },
            None => groups.push((None, vec![i])),
        }
    }
    let mut stacks = Vec::new();
    for (key, members) in groups {
        let size = match &key {
            Some(key) if members.len() > 1 => max(key)?.max(1),
            _ => 1,
        };
        stacks.extend(members.chunks(size).map(<[usize]>::to_vec));
    }
    stacks.sort_by_key(|s| s[0]);
    Ok(stacks)
}

/// The stacks of `cells` under `mode`, for a run on `devices` with `jobs` cells at a time per
/// device; `log` receives how an automatic size was chosen.
pub fn stacks(cells: &[&Cell], mode: StackMode, devices: &[DeviceSpec], jobs: usize, log: &dyn Fn(&str)) -> Result<Vec<Vec<usize>>> {
    let mut sizes: HashMap<(Arch, usize), usize> = HashMap::new();
    let mut max = |key: &TrainConfig| -> Result<usize> {
        let batch = key.training.batch.get();
        Ok(match mode {
            StackMode::Off => 1,
            StackMode::Size(k) => k,
            StackMode::Auto => match sizes.get(&(key.model, batch)) {
                Some(&k) => k,
                None => {
                    let k = auto_size(key.model, batch, devices, jobs, log)?;
                    sizes.insert((key.model, batch), k);
                    k
                }
            },
        })
    };
    group(cells, &mut max)
}

/// The largest stack of `arch` at `batch` that fits every device's free memory (see
/// [`StackMode::Auto`]).
fn auto_size(arch: Arch, batch: usize, devices: &[DeviceSpec], jobs: usize, log: &dyn Fn(&str)) -> Result<usize> {
    let per_cell = cell_footprint(arch, batch).with_context(|| format!("--stack auto: measuring the memory of a {arch} step"))?;
    let mut free = u64::MAX;
    for &d in devices {
        free = free.min(free_memory(d)?.saturating_add(if d == DeviceSpec::Cpu { per_cell } else { 0 }));
    }
    let k = ((MEMORY_SHARE * free as f64 / jobs.max(1) as f64 / per_cell.max(1) as f64) as usize).max(1);
    log(&format!(
        "--stack auto: a {arch} cell at batch {batch} takes about {:.2} GB (one training step, measured now); {:.1} GB free on {} → stacks of at most {k}",
        per_cell as f64 / 1e9,
        free as f64 / 1e9,
        devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    ));
    Ok(k)
}

/// Free memory of `device` in bytes: available RAM for the CPU (the memory the measurement
/// kept is added back by the caller), free device memory for CUDA.
fn free_memory(device: DeviceSpec) -> Result<u64> {
    match device {
        DeviceSpec::Cpu => crate::memory::available_bytes().context("--stack auto: cannot read the available memory (/proc/meminfo); give --stack K"),
        DeviceSpec::Cuda(_) => crate::device::free_memory(&device.open()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(src: &str) -> crate::plan::Plan {
        crate::plan::parse(Path::new("t.ron"), src).unwrap()
    }

    #[test]
    fn cells_that_differ_only_in_the_regularizer_stack_in_grid_order() {
        let p = plan(
            r#"(name: "t", data: (sources: ["Cargo.toml"]), models: [vgg11, resnet18],
            regularizers: [weight_decay(betas: [1e-2, 1e-3]), norm_decay(norm: l1, betas: [1e-2])],
            training: (epochs: 2, seeds: [1, 2], adv: [none, pgd()]))"#,
        );
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let stacks = group(&cells, &mut |_| Ok(100)).unwrap();
        let mut seen = vec![0; cells.len()];
        for s in &stacks {
            for &i in s {
                seen[i] += 1;
            }
            let key = stack_key(&cells[s[0]].config.train);
            if s.len() > 1 {
                assert!(s.iter().all(|&i| stack_key(&cells[i].config.train) == key && key.is_some()), "{s:?}");
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every cell in exactly one stack");
        // 2 models × 2 seeds of standard training stack their 4 regularizer cells; the 16
        // adversarial cells train alone.
        assert_eq!(stacks.iter().filter(|s| s.len() == 4).count(), 4);
        assert_eq!(stacks.iter().filter(|s| s.len() == 1).count(), 16);
        assert!(stacks.windows(2).all(|w| w[0][0] < w[1][0]));
        // At most 3 per stack: each group of 4 becomes 3 + 1.
        let small = group(&cells, &mut |_| Ok(3)).unwrap();
        assert_eq!(small.iter().filter(|s| s.len() == 3).count(), 4);
        assert_eq!(stacks.len() + 4, small.len());
    }

    #[test]
    fn cells_that_must_train_alone_are_not_stacked() {
        // Per model: plain, SVC at the reference's moments, SVC with a final clip, norm decay
        // with BatchNorm projection; only the first two stack.
        let p = plan(
            r#"(name: "t", data: (sources: ["Cargo.toml"]), models: [vgg11],
            regularizers: [svc(clips: [1.0]), svc(clips: [0.5], final_clip: true), norm_decay(norm: l1, betas: [1e-2], project_bn: 5.0)],
            training: (epochs: 2))"#,
        );
        let cells: Vec<&Cell> = p.cells.iter().collect();
        assert_eq!(cells.len(), 4);
        let stacks = group(&cells, &mut |_| Ok(100)).unwrap();
        assert_eq!(stacks, vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(StackMode::parse("auto").unwrap(), StackMode::Auto);
        assert_eq!(StackMode::parse("off").unwrap(), StackMode::Off);
        assert_eq!(StackMode::parse("17").unwrap(), StackMode::Size(17));
        for bad in ["0", "-1", "many", ""] {
            assert!(StackMode::parse(bad).is_err(), "{bad}");
        }
        let p = plan(r#"(name: "t", data: (sources: ["Cargo.toml"]), models: [vgg11], regularizers: [weight_decay(betas: [1e-2])])"#);
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let off = stacks(&cells, StackMode::Off, &[DeviceSpec::Cpu], 1, &|_| {}).unwrap();
        assert_eq!(off, vec![vec![0], vec![1]]);
    }
}

/// A stacked training speed measured by `normlab bench stack --out FILE` (one CSV row).
#[derive(Debug, Clone, PartialEq)]
pub struct Speed {
    /// The device as the bench named it (`cpu`, `cuda:0`).
    pub device: String,
    /// The model.
    pub model: Arch,
    /// Cells in the stack.
    pub k: usize,
    /// Training images per second of the whole stack (all its cells).
    pub images_per_s: f64,
    /// When it was measured.
    pub measured_at: String,
}

/// Reads the rows of a `normlab bench stack --out` file.
pub fn read_speeds(path: &std::path::Path) -> Result<Vec<Speed>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = r.headers()?.clone();
    let col = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("{}: no '{name}' column (not a `normlab bench stack --out` file?)", path.display()));
    let (device, model, k, ips, at) = (col("device")?, col("model")?, col("k")?, col("stacked_images_per_s")?, col("measured_at")?);
    let mut out = Vec::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec?;
        let bad = |what: &str| format!("{}:{}: {what}", path.display(), line + 2);
        out.push(Speed {
            device: rec[device].to_string(),
            model: Arch::parse(&rec[model]).with_context(|| bad("unknown model"))?,
            k: rec[k].parse().with_context(|| bad("k is not a number"))?,
            images_per_s: rec[ips].parse().with_context(|| bad("stacked_images_per_s is not a number"))?,
            measured_at: rec[at].to_string(),
        });
    }
    Ok(out)
}

/// Seconds to train the stack `cells` (one model, one protocol) on `device` at the measured
/// `speeds`: all its cells' images at the images/s of the largest measured stack of that model
/// no larger than it (of the smallest one when none is), and that measurement. `None` when
/// the model was not measured on the device.
pub fn stack_seconds<'a>(cells: &[&Cell], device: &str, speeds: &'a [Speed]) -> Option<(f64, &'a Speed)> {
    let cfg = &cells.first()?.config.train;
    let mine: Vec<&Speed> = speeds.iter().filter(|s| s.device == device && s.model == cfg.model && s.images_per_s > 0.0).collect();
    let at = mine.iter().filter(|s| s.k <= cells.len()).max_by_key(|s| s.k).or_else(|| mine.iter().min_by_key(|s| s.k))?;
    let total = (cells.len() * cfg.training.epochs() * epoch_images(&cfg.training)) as f64;
    Some((total / at.images_per_s, at))
}

/// Training images per epoch of `protocol` on the full CIFAR-10 training set.
pub fn epoch_images(protocol: &crate::train::TrainingProtocol) -> usize {
    protocol.train_subset.map_or(crate::data::binary::TRAIN_IMAGES, |n| n.get().min(crate::data::binary::TRAIN_IMAGES))
}
