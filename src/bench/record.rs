//! The machine-readable result of a training bench, and the rows of `bench/gpu-speed.csv`.
//!
//! `normlab bench train` and `bench/pytorch_train.py` each end with one line `RESULT {json}`
//! ([`BenchResult`]); `normlab bench record` reads the last such line of each side's raw output
//! and appends one row per model to the CSV, so a GPU call's script needs no parsing of its own.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The prefix of the machine-readable line.
pub const PREFIX: &str = "RESULT ";

/// One bench run, as its `RESULT` line states it. Fields a side does not measure are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// `normlab` or `pytorch`.
    pub tool: String,
    /// Model name (vgg11, resnet18, senet18, regnet200mf).
    pub model: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// `tf32` (TF32 tensor cores allowed in convolutions) or `fp32`.
    pub precision: String,
    /// Images per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Training images per second over the timed steps.
    pub images_per_s: f64,
    /// Wall time per step, ms.
    pub step_ms: f64,
    /// Host time per step (issuing work, waits excluded), ms.
    #[serde(default)]
    pub host_ms_per_step: Option<f64>,
    /// Device time per step (CUDA events), ms; absent on the CPU.
    #[serde(default)]
    pub device_ms_per_step: Option<f64>,
    /// Kernel launches per step (CPU: candle ops).
    #[serde(default)]
    pub launches_per_step: Option<f64>,
    /// Device allocations per step (CPU: new storages).
    #[serde(default)]
    pub allocations_per_step: Option<f64>,
    /// Host↔device copies per step.
    #[serde(default)]
    pub copies_per_step: Option<f64>,
    /// Host waits for the device per step.
    #[serde(default)]
    pub syncs_per_step: Option<f64>,
    /// cuDNN calls per step.
    #[serde(default)]
    pub cudnn_per_step: Option<f64>,
    /// The build (git commit) that produced it.
    #[serde(default)]
    pub build: Option<String>,
}

impl BenchResult {
    /// The `RESULT {json}` line.
    pub fn line(&self) -> Result<String> {
        Ok(format!("{PREFIX}{}", serde_json::to_string(self)?))
    }

    /// The last `RESULT` line of a bench's output `text`; `what` names the output in errors.
    pub fn parse_last(text: &str, what: &str) -> Result<Self> {
        let Some(line) = text.lines().rev().find_map(|l| l.trim_end().strip_prefix(PREFIX)) else {
            bail!("{what}: no '{}' line (did the bench run to the end? see its output)", PREFIX.trim_end())
        };
        serde_json::from_str(line).with_context(|| format!("{what}: unreadable RESULT line '{line}'"))
    }

    /// [`Self::parse_last`] of a file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read bench output {}", path.display()))?;
        Self::parse_last(&text, &path.display().to_string())
    }
}

/// The columns of `bench/gpu-speed.csv`.
pub const COLUMNS: [&str; 9] = ["date", "card", "model", "precision", "normlab_img_s", "pytorch_img_s", "launches_per_step", "host_ms_per_step", "build"];

/// One row of `bench/gpu-speed.csv` from the two sides' results (either may be missing, not
/// both; they must name the same model).
pub fn csv_row(date: &str, card: &str, normlab: Option<&BenchResult>, pytorch: Option<&BenchResult>) -> Result<Vec<String>> {
    let model = match (normlab, pytorch) {
        (Some(n), Some(p)) if n.model != p.model => bail!("the normlab result is for {} and the PyTorch one for {}: pair the same model", n.model, p.model),
        (Some(r), _) | (None, Some(r)) => r.model.clone(),
        (None, None) => bail!("neither a normlab nor a PyTorch result for this row"),
    };
    let precision = normlab.or(pytorch).map(|r| r.precision.clone()).unwrap_or_default();
    let num = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_default();
    Ok(vec![
        date.to_string(),
        card.to_string(),
        model,
        precision,
        num(normlab.map(|r| r.images_per_s), 1),
        num(pytorch.map(|r| r.images_per_s), 1),
        num(normlab.and_then(|r| r.launches_per_step), 1),
        num(normlab.and_then(|r| r.host_ms_per_step), 2),
        normlab.and_then(|r| r.build.clone()).unwrap_or_default(),
    ])
}

/// Appends `row` to the CSV at `path`, writing the header first when the file is new or empty.
pub fn append_row(path: &Path, row: &[String]) -> Result<()> {
    use std::io::Write;
    let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    if fresh {
        w.write_record(COLUMNS)?;
    }
    w.write_record(row)?;
    let bytes = w.into_inner().context("csv buffer")?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {} for appending", path.display()))?;
    f.write_all(&bytes).with_context(|| format!("cannot append to {}", path.display()))
}

/// Arguments of `normlab bench record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Raw output of `normlab bench train` (its last `RESULT` line is read).
    #[arg(long)]
    pub normlab: Option<PathBuf>,
    /// Raw output of `bench/pytorch_train.py` for the same model.
    #[arg(long)]
    pub pytorch: Option<PathBuf>,
    /// The card's name (e.g. from `nvidia-smi --query-gpu=name`).
    #[arg(long)]
    pub card: String,
    /// The date of the measurement (YYYY-MM-DD).
    #[arg(long)]
    pub date: String,
    /// The CSV to append to.
    #[arg(long, default_value = "bench/gpu-speed.csv")]
    pub csv: PathBuf,
}

/// Runs `normlab bench record`: one row from the two outputs. A side whose output has no
/// result (a crash, a time-out) is reported on stderr and left empty in the row.
pub fn run(args: &RecordArgs) -> Result<()> {
    let read = |p: &Option<PathBuf>| -> Option<BenchResult> {
        let p = p.as_ref()?;
        BenchResult::read(p).map_err(|e| eprintln!("bench record: {e:#}")).ok()
    };
    let (n, p) = (read(&args.normlab), read(&args.pytorch));
    let row = csv_row(&args.date, &args.card, n.as_ref(), p.as_ref())?;
    append_row(&args.csv, &row)?;
    println!("{}", row.join(","));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(tool: &str, model: &str, img_s: f64) -> BenchResult {
        BenchResult {
            tool: tool.into(),
            model: model.into(),
            device: "cuda".into(),
            precision: "tf32".into(),
            batch: 128,
            steps: 30,
            images_per_s: img_s,
            step_ms: 128e3 / img_s,
            host_ms_per_step: (tool == "normlab").then_some(12.345),
            device_ms_per_step: None,
            launches_per_step: (tool == "normlab").then_some(1234.0),
            allocations_per_step: None,
            copies_per_step: None,
            syncs_per_step: None,
            cudnn_per_step: None,
            build: (tool == "normlab").then(|| "abc123".to_string()),
        }
    }

    #[test]
    fn result_line_round_trips_and_the_last_one_wins() {
        let a = result("normlab", "resnet18", 100.0);
        let b = result("normlab", "resnet18", 200.0);
        let text = format!("bench train: ...\nimages/s 100\n{}\nnoise\n{}\n", a.line().unwrap(), b.line().unwrap());
        assert_eq!(BenchResult::parse_last(&text, "t").unwrap(), b);
        let err = BenchResult::parse_last("images/s 3\n", "out.txt").unwrap_err().to_string();
        assert!(err.contains("out.txt") && err.contains("RESULT"), "{err}");
        assert!(BenchResult::parse_last("RESULT {not json\n", "x").is_err());
    }

    #[test]
    fn pytorch_line_with_only_its_fields_parses() {
        // What bench/pytorch_train.py prints (see its `result_line`).
        let line = r#"RESULT {"tool": "pytorch", "model": "vgg11", "device": "cuda", "precision": "tf32", "batch": 128, "steps": 30, "images_per_s": 16146.6, "step_ms": 7.93}"#;
        let r = BenchResult::parse_last(line, "pt").unwrap();
        assert_eq!((r.tool.as_str(), r.model.as_str(), r.images_per_s, r.launches_per_step), ("pytorch", "vgg11", 16146.6, None));
    }

    #[test]
    fn rows_append_under_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("gpu-speed.csv");
        let (n, p) = (result("normlab", "resnet18", 2105.04), result("pytorch", "resnet18", 6918.0));
        append_row(&csv, &csv_row("2026-11-27", "NVIDIA H100 80GB HBM3", Some(&n), Some(&p)).unwrap()).unwrap();
        append_row(&csv, &csv_row("2026-11-27", "NVIDIA H100 80GB HBM3", Some(&result("normlab", "vgg11", 4077.0)), None).unwrap()).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(lines[1], "2026-11-27,NVIDIA H100 80GB HBM3,resnet18,tf32,2105.0,6918.0,1234.0,12.35,abc123");
        assert_eq!(lines[2], "2026-11-27,NVIDIA H100 80GB HBM3,vgg11,tf32,4077.0,,1234.0,12.35,abc123");
        assert_eq!(lines.len(), 3);
        assert!(csv_row("d", "c", Some(&n), Some(&result("pytorch", "vgg11", 1.0))).is_err());
        assert!(csv_row("d", "c", None, None).is_err());
    }
}
