//! `normlab attack`: robust accuracy of one checkpoint under the AutoAttack-style protocol,
//! beside the accuracy its layer norms certify.

use super::certified::{certify, certify_both, Certified};
use super::protocol::{evaluate_with_progress, AttackConfig, AttackKind, RobustReport};
use super::parse_eps;
use crate::models::{Arch, Model, NormalizeArg};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Arguments of `normlab attack`.
#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Model architecture: vgg11, resnet18, senet18, regnet200mf, wrn-28-10, wrn-34-10,
    /// preact-resnet18.
    #[arg(long)]
    pub model: String,
    /// Checkpoint: safetensors or a PyTorch .pt/.pth state_dict (wrapped or not), PyTorch's
    /// names.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Input normalization in front of the model: CIFAR-10's mean and std, or none. Without
    /// the flag, a checkpoint's own `mu`/`sigma` are used when it has them. ε stays in pixel
    /// units; the certified bounds include the normalization's factor max 1/std.
    #[arg(long, value_enum)]
    pub normalize: Option<NormalizeArg>,
    /// CIFAR-10 directory in the binary layout (test_batch.bin).
    #[arg(long)]
    pub data: PathBuf,
    /// ℓ∞ radius: a fraction (1/255, 8/255) or a decimal (0.0039, 0).
    #[arg(long, value_parser = parse_eps_arg)]
    pub eps: f64,
    /// Test images drawn at random.
    #[arg(long, default_value_t = 1024)]
    pub n: usize,
    /// Seed of the draw and of the random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Attacks in order, comma-separated: fgsm, pgd, apgd-ce, apgd-t, apgd-dlr.
    #[arg(long, default_value = "apgd-ce,apgd-t", value_parser = parse_attacks_arg)]
    pub attacks: AttackList,
    /// Iterations per attack run (AutoAttack: 100).
    #[arg(long, default_value_t = 100)]
    pub iters: usize,
    /// Images per forward/backward batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Skip the ℓ2 certificate (it needs every layer's exact spectral norm, the slow part);
    /// the ℓ∞ certificate is always given.
    #[arg(long)]
    pub no_spectral: bool,
    /// Output: a readable summary or one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// How `normlab attack` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned lines for people.
    Text,
    /// One JSON object (accuracies as fractions).
    Json,
}

fn parse_eps_arg(text: &str) -> Result<f64, String> {
    parse_eps(text).map_err(|e| format!("{e:#}"))
}

/// An ordered attack list as one command-line value (`apgd-ce,apgd-t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackList(pub Vec<AttackKind>);

fn parse_attacks_arg(text: &str) -> Result<AttackList, String> {
    AttackKind::parse_list(text).map(AttackList).map_err(|e| format!("{e:#}"))
}

/// Runs `normlab attack`.
pub fn run(args: &AttackArgs) -> Result<()> {
    let arch = Arch::parse(&args.model)?;
    let device = crate::device::open(&args.device)?;
    let (model, summary) = Model::load_checkpoint(arch, &args.checkpoint, &device, args.normalize)?;
    eprintln!("{summary}");
    let data = crate::data::binary::load_dir(&args.data).with_context(|| format!("loading CIFAR-10 from {}", args.data.display()))?;
    let cfg = AttackConfig { eps: args.eps, n: args.n, seed: args.seed, attacks: args.attacks.0.clone(), iters: args.iters, batch: args.batch };
    let f = |x: &candle_core::Tensor| model.forward(x, false);
    let report = evaluate_with_progress(&f, &data.test, &cfg, &device, args.format == Format::Text)?;
    let certs = if args.no_spectral { vec![certify(&model, &report.margins, args.eps)?] } else { certify_both(&model, &report.margins, args.eps)?.to_vec() };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json(args, &model, &report, &certs)?)?),
        Format::Text => print!("{}", text(args, &model, &report, &certs)),
    }
    Ok(())
}

/// Attacked image-iterations per second: forward+backward passes of single images.
fn throughput(report: &RobustReport) -> f64 {
    report.forward_images as f64 / report.seconds.max(1e-9)
}

/// The report as one JSON object: the protocol's fields, the run's identity, and the
/// certificates (`certified_acc` / `lipschitz_bound` from the ℓ∞ norms, `*_l2` from the
/// spectral norms, null when n/a or skipped).
fn json(args: &AttackArgs, model: &Model, report: &RobustReport, certs: &[Certified]) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(report)?;
    let obj = v.as_object_mut().context("report is not a JSON object")?;
    obj.insert("model".into(), model.arch.name().into());
    obj.insert("normalization".into(), model.normalization.as_ref().map_or(serde_json::Value::Null, crate::models::Normalization::to_json));
    obj.insert("checkpoint".into(), args.checkpoint.display().to_string().into());
    obj.insert("device".into(), args.device.clone().into());
    obj.insert("images_per_second".into(), throughput(report).into());
    for (cert, suffix) in certs.iter().zip(["", "_l2"]) {
        obj.insert(format!("certified_acc{suffix}"), serde_json::to_value(cert.certified_acc)?);
        obj.insert(format!("lipschitz_bound{suffix}"), serde_json::to_value(cert.lipschitz_bound)?);
        obj.insert(format!("certified_note{suffix}"), serde_json::to_value(&cert.note)?);
    }
    if certs.len() < 2 {
        for key in ["certified_acc_l2", "lipschitz_bound_l2"] {
            obj.insert(key.into(), serde_json::Value::Null);
        }
        obj.insert("certified_note_l2".into(), "skipped (--no-spectral)".into());
    }
    Ok(v)
}

fn text(args: &AttackArgs, model: &Model, report: &RobustReport, certs: &[Certified]) -> String {
    let mut s = format!(
        "{} from {} on {}: {} test images, ε = {:.6} ({:.2}/255), {} iterations, seed {}\n",
        model.arch,
        args.checkpoint.display(),
        args.device,
        report.n,
        report.eps,
        report.eps * 255.0,
        report.iters,
        report.seed
    );
    if let Some(n) = &model.normalization {
        s += &format!("  {}\n", n.describe());
    }
    s += &format!("  {:<22} {:>7.2}%\n", "clean accuracy", 100.0 * report.clean_acc);
    for ((name, acc), secs) in report.attacks.iter().zip(&report.robust_acc_after).zip(&report.attack_seconds) {
        s += &format!("  {:<22} {:>7.2}%   ({secs:.1} s)\n", format!("after {name}"), 100.0 * acc);
    }
    s += &format!("  {:<22} {:>7.2}%\n", "robust accuracy", 100.0 * report.robust_acc);
    for cert in certs {
        let label = format!("certified ({})", cert.norm);
        match (cert.certified_acc, cert.lipschitz_bound) {
            (Some(c), Some(l)) => s += &format!("  {label:<22} {:>7.2}%   (Lipschitz bound {l:.3e})\n", 100.0 * c),
            _ => s += &format!("  {label:<22} {:>8}   ({})\n", "n/a", cert.note.as_deref().unwrap_or("no bound")),
        }
    }
    s += &format!("  {:.1} s, {} image passes, {:.1} image passes/s\n", report.seconds, report.forward_images, throughput(report));
    s
}
