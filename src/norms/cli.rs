//! `normlab norms`: one model's per-layer norms (from a checkpoint or a seeded init), or two
//! checkpoints' norms side by side with their ratios (`--compare A B`).

use super::table::{model_norms, render_csv, render_json, render_table, LayerNorms, NormSummary};
use crate::models::{Arch, Model, Normalization, NormalizeArg};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Output format of `normlab norms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text with a summary line.
    Table,
    /// CSV (header `layer,kind,in_c,in_h,in_w,out_c,kh,kw,stride,padding,groups,l1,linf,l2_bound,spectral`).
    Csv,
    /// JSON with the layers, the summary and the Lipschitz bounds.
    Json,
}

/// Arguments of `normlab norms`.
#[derive(Debug, clap::Args)]
pub struct NormsArgs {
    /// Model: vgg11, resnet18, senet18, regnet200mf, wrn-28-10, wrn-34-10, preact-resnet18
    /// (`normlab models` lists them).
    #[arg(long)]
    pub model: String,
    /// Weights to read: safetensors or a PyTorch .pt/.pth (a state_dict, or a dict wrapping
    /// one under state_dict/model_state_dict/model/net; a `module.` prefix is removed), with
    /// PyTorch's names.
    #[arg(long, conflicts_with = "seed")]
    pub checkpoint: Option<PathBuf>,
    /// Use the PyTorch-default initial weights drawn from this seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the seeded initial weights to this safetensors file (needs --seed).
    #[arg(long, requires = "seed")]
    pub save_init: Option<PathBuf>,
    /// Compare two checkpoints of the model: per-layer norms of A and B and B/A.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["checkpoint", "seed", "save_init"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Device the weights are loaded on (cpu, cuda:N). The norms themselves are computed in
    /// f64 on the CPU from a copy of the weights.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Skip the spectral norms (power iteration, the slow column); the CSV field stays empty.
    #[arg(long)]
    pub no_spectral: bool,
    /// Input normalization in front of the model: CIFAR-10's mean and std, or none. Without
    /// the flag, a checkpoint's own `mu`/`sigma` tensors are used when it has them. It
    /// scales the Lipschitz bounds by max 1/std; the per-layer norms are unchanged.
    #[arg(long, value_enum)]
    pub normalize: Option<NormalizeArg>,
}

/// Runs `normlab norms`.
pub fn run(args: NormsArgs) -> Result<()> {
    let arch = Arch::parse(&args.model)?;
    let device = crate::device::open(&args.device)?;
    if let Some(pair) = &args.compare {
        let (a, b) = (&pair[0], &pair[1]);
        let (ma, mb) = (load(arch, a, &device, args.normalize)?, load(arch, b, &device, args.normalize)?);
        let (na, nb) = (model_norms(&ma, !args.no_spectral)?, model_norms(&mb, !args.no_spectral)?);
        let sides = [Side { path: a, normalization: ma.normalization.as_ref() }, Side { path: b, normalization: mb.normalization.as_ref() }];
        print!("{}", render_compare(&na, &nb, &sides, args.format)?);
        return Ok(());
    }
    let (model, source) = match (&args.checkpoint, args.seed) {
        (Some(path), _) => (load(arch, path, &device, args.normalize)?, path.display().to_string()),
        (None, Some(seed)) => {
            let mut m = Model::new(arch, seed, &device)?;
            m.normalization = crate::models::normalize::resolve(args.normalize, None, &device)?;
            (m, format!("seed {seed}"))
        }
        (None, None) => bail!("normlab norms needs weights: give --checkpoint FILE (.safetensors, .pt or .pth) or --seed S (initial weights), or --compare A B"),
    };
    if let Some(path) = &args.save_init {
        model.save(path).with_context(|| format!("writing the initial weights to {}", path.display()))?;
        eprintln!("wrote the initial weights of {arch} ({source}) to {}", path.display());
    }
    let norms = model_norms(&model, !args.no_spectral)?;
    let text = match args.format {
        Format::Table => normalization_line(model.normalization.as_ref()) + &render_table(&norms),
        Format::Csv => {
            if let Some(n) = &model.normalization {
                eprintln!("{}", n.describe());
            }
            render_csv(&norms)?
        }
        Format::Json => render_json(&model, source, &norms)?,
    };
    print!("{text}");
    Ok(())
}

/// Loads a checkpoint of any format ([`Model::load_checkpoint`]) and says on stderr what
/// was read.
fn load(arch: Arch, path: &Path, device: &candle_core::Device, normalize: Option<NormalizeArg>) -> Result<Model> {
    let (model, summary) = Model::load_checkpoint(arch, path, device, normalize)?;
    eprintln!("{summary}");
    Ok(model)
}

/// The table's first line when the model normalizes its input (empty otherwise).
fn normalization_line(n: Option<&Normalization>) -> String {
    n.map_or(String::new(), |n| format!("{}\n", n.describe()))
}

/// One side of a comparison: the checkpoint and its input normalization.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The checkpoint file.
    pub path: &'a Path,
    /// Its model's input normalization, if any.
    pub normalization: Option<&'a Normalization>,
}

/// One layer of a comparison: A's and B's norms and B/A.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// The weight's name.
    pub layer: String,
    /// conv | linear | bn.
    pub kind: String,
    /// (A, B, B/A) per norm: l1, linf, l2_bound, spectral (None when not computed).
    pub l1: (f64, f64, f64),
    /// ℓ∞ of A, B and B/A.
    pub linf: (f64, f64, f64),
    /// √(ℓ1 ℓ∞) of A, B and B/A.
    pub l2_bound: (f64, f64, f64),
    /// Spectral norm of A, B and B/A.
    pub spectral: Option<(f64, f64, f64)>,
}

fn triple(a: f64, b: f64) -> (f64, f64, f64) {
    (a, b, b / a)
}

/// The rows of a comparison of two norms tables of the same model.
pub fn compare_rows(a: &[LayerNorms], b: &[LayerNorms]) -> Vec<CompareRow> {
    a.iter()
        .zip(b)
        .map(|(x, y)| CompareRow {
            layer: x.spec.name.clone(),
            kind: x.spec.kind.as_str().to_string(),
            l1: triple(x.l1, y.l1),
            linf: triple(x.linf, y.linf),
            l2_bound: triple(x.l2_bound, y.l2_bound),
            spectral: x.spectral.zip(y.spectral).map(|(p, q)| triple(p, q)),
        })
        .collect()
}

/// Two checkpoints' norms side by side (ratio = B / A), as a table, CSV or JSON. Input
/// normalizations are stated in the table's header, in JSON, and on stderr for CSV.
pub fn render_compare(a: &[LayerNorms], b: &[LayerNorms], sides: &[Side; 2], format: Format) -> Result<String> {
    let rows = compare_rows(a, b);
    let (sa, sb) = (NormSummary::of(a), NormSummary::of(b));
    let (path_a, path_b) = (sides[0].path, sides[1].path);
    match format {
        Format::Table => {
            let mut out = String::new();
            for (label, side) in ["A", "B"].iter().zip(sides) {
                out += &format!("{label} = {}\n", side.path.display());
                if let Some(n) = side.normalization {
                    out += &format!("    {}\n", n.describe());
                }
            }
            out += &format!(
                "{:<34} {:<6} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7}\n",
                "layer", "kind", "l1 A", "l1 B", "B/A", "linf A", "linf B", "B/A", "spec A", "spec B", "B/A"
            );
            for r in &rows {
                let spec = r.spectral.map_or(format!("{:>11} {:>11} {:>7}", "-", "-", "-"), |(p, q, t)| format!("{p:>11.5} {q:>11.5} {t:>7.3}"));
                out += &format!(
                    "{:<34} {:<6} {:>11.5} {:>11.5} {:>7.3} {:>11.5} {:>11.5} {:>7.3} {spec}\n",
                    r.layer, r.kind, r.l1.0, r.l1.1, r.l1.2, r.linf.0, r.linf.1, r.linf.2
                );
            }
            out += &format!(
                "conv+linear: sum l1 {:.4} -> {:.4} (x{:.3}), sum linf {:.4} -> {:.4} (x{:.3}), max linf {:.4} -> {:.4} (x{:.3})\n",
                sa.sum_l1,
                sb.sum_l1,
                sb.sum_l1 / sa.sum_l1,
                sa.sum_linf,
                sb.sum_linf,
                sb.sum_linf / sa.sum_linf,
                sa.max_linf,
                sb.max_linf,
                sb.max_linf / sa.max_linf
            );
            Ok(out)
        }
        Format::Csv => {
            for (label, side) in ["A", "B"].iter().zip(sides) {
                if let Some(n) = side.normalization {
                    eprintln!("{label}: {}", n.describe());
                }
            }
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record([
                "layer", "kind", "l1_a", "l1_b", "l1_ratio", "linf_a", "linf_b", "linf_ratio", "l2_bound_a", "l2_bound_b", "l2_bound_ratio", "spectral_a",
                "spectral_b", "spectral_ratio",
            ])?;
            for r in &rows {
                let mut rec = vec![r.layer.clone(), r.kind.clone()];
                for t in [r.l1, r.linf, r.l2_bound] {
                    rec.extend([t.0.to_string(), t.1.to_string(), t.2.to_string()]);
                }
                match r.spectral {
                    Some(t) => rec.extend([t.0.to_string(), t.1.to_string(), t.2.to_string()]),
                    None => rec.extend([String::new(), String::new(), String::new()]),
                }
                w.write_record(&rec)?;
            }
            Ok(String::from_utf8(w.into_inner()?)?)
        }
        Format::Json => {
            let v = serde_json::json!({
                "a": path_a.display().to_string(),
                "b": path_b.display().to_string(),
                "layers": rows,
                "summary_a": sa,
                "summary_b": sb,
                "normalization_a": sides[0].normalization.map(Normalization::to_json),
                "normalization_b": sides[1].normalization.map(Normalization::to_json),
            });
            Ok(serde_json::to_string_pretty(&v)? + "\n")
        }
    }
}
