//! `normlab attack`: robust accuracy of one checkpoint under the AutoAttack-style protocol
//! (a suite of attacks under ℓ∞ or ℓ2), beside the accuracy its layer norms certify.

use super::certified::{certify_ball, Certified};
use super::protocol::{evaluate_with_progress, AttackConfig, AttackKind, RobustReport, Suite};
use super::Norm;
use crate::models::{Arch, Model, NormalizeArg};
use crate::values::{NonEmpty, Radius};
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
    /// Radius under --norm: a fraction (1/255, 8/255) or a decimal (0.0039, 0.5, 0); ℓ∞ radii
    /// up to 1, ℓ2 radii up to √3072.
    #[arg(long, value_parser = parse_eps_arg)]
    pub eps: f64,
    /// Threat model: linf (the paper's) or l2.
    #[arg(long, default_value = "linf", value_parser = parse_norm_arg)]
    pub norm: Norm,
    /// Attack suite: paper (APGD-CE, APGD-T; the default), standard (AutoAttack's standard
    /// version: APGD-CE, APGD-T, FAB-T, Square) or custom (--attacks).
    #[arg(long, value_parser = parse_suite_arg)]
    pub suite: Option<Suite>,
    /// Test images drawn at random.
    #[arg(long, default_value_t = 1024)]
    pub n: usize,
    /// Seed of the draw and of the random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Attacks in order, comma-separated (implies --suite custom): fgsm, pgd, apgd-ce,
    /// apgd-t, apgd-dlr, fab-t, square.
    #[arg(long, value_parser = parse_attacks_arg)]
    pub attacks: Option<AttackList>,
    /// Iterations per APGD and FAB run (AutoAttack: 100).
    #[arg(long, default_value_t = 100)]
    pub iters: u32,
    /// Square's queries per point (AutoAttack: 5000).
    #[arg(long, default_value_t = 5000)]
    pub queries: u32,
    /// Images per forward/backward batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Skip the spectral-norm certificate (it needs every layer's exact spectral norm, the
    /// slow part): under linf the ℓ∞ certificate is still given, under l2 none.
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
    Radius::parse(text).map(Radius::get).map_err(|e| format!("ε {e}"))
}

fn parse_norm_arg(text: &str) -> Result<Norm, String> {
    Norm::parse(text).map_err(|e| format!("{e:#}"))
}

fn parse_suite_arg(text: &str) -> Result<Suite, String> {
    Suite::parse(text).map_err(|e| format!("{e:#}"))
}

/// An ordered attack list as one command-line value (`apgd-ce,apgd-t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackList(pub Vec<AttackKind>);

fn parse_attacks_arg(text: &str) -> Result<AttackList, String> {
    AttackKind::parse_list(text).map(AttackList).map_err(|e| format!("{e:#}"))
}

impl AttackArgs {
    /// The protocol the flags describe; a zero count is an error naming its flag.
    pub fn config(&self) -> Result<AttackConfig> {
        let n = std::num::NonZeroUsize::new(self.n).context("attack n = 0: draw at least one test image (--n)")?;
        let iters = std::num::NonZeroU32::new(self.iters).context("attack iters = 0: give at least 1 iteration (--iters)")?;
        let queries = std::num::NonZeroU32::new(self.queries).context("attack queries = 0: give Square at least 1 query (--queries)")?;
        let list = Suite::resolve(self.suite, self.attacks.as_ref().map(|a| a.0.clone())).map_err(|e| anyhow::anyhow!("--suite/--attacks: {}", e.replace("suite: custom", "--suite custom")))?;
        let attacks = NonEmpty::new(list).map_err(|e| anyhow::anyhow!("--attacks: {e}"))?;
        let cfg = AttackConfig { attacks, eps: NonEmpty(vec![Radius(self.eps)]), n, seed: self.seed, iters, norm: self.norm, queries };
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

/// Runs `normlab attack`.
pub fn run(args: &AttackArgs) -> Result<()> {
    let arch = Arch::parse(&args.model)?;
    let device = crate::device::open(&args.device)?;
    let (model, summary) = Model::load_checkpoint(arch, &args.checkpoint, &device, args.normalize)?;
    eprintln!("{summary}");
    let data = crate::data::binary::load_dir(&args.data).with_context(|| format!("loading CIFAR-10 from {}", args.data.display()))?;
    let f = |x: &candle_core::Tensor| model.forward(x, false);
    let mut reports = evaluate_with_progress(&f, &data.test, &args.config()?, args.batch, &device, args.format == Format::Text)?;
    let report = reports.remove(0);
    let certs = certify_ball(&model, &report.margins, args.norm, args.eps, !args.no_spectral)?;
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
    // Per drawn image (test-set index order of the draw): classified correctly, and the
    // attack that flipped it (null: misclassified already, or robust).
    obj.insert("indices".into(), serde_json::to_value(&report.indices)?);
    obj.insert("correct".into(), serde_json::to_value(&report.correct)?);
    let flipped: Vec<Option<&str>> = report.flipped_by.iter().map(|f| f.map(|a| report.attacks[a].as_str())).collect();
    obj.insert("flipped_by".into(), serde_json::to_value(flipped)?);
    // `certified_*`: the certificate in the threat model's own norm (ℓ∞ norms for an ℓ∞
    // ball, spectral norms for an ℓ2 ball); under linf, `certified_*_l2` is the spectral
    // certificate of the same ℓ∞ ball.
    let keys: &[&str] = match args.norm {
        Norm::Linf => &["", "_l2"],
        Norm::L2 => &[""],
    };
    for (i, suffix) in keys.iter().enumerate() {
        match certs.get(i) {
            Some(cert) => {
                obj.insert(format!("certified_acc{suffix}"), serde_json::to_value(cert.certified_acc)?);
                obj.insert(format!("lipschitz_bound{suffix}"), serde_json::to_value(cert.lipschitz_bound)?);
                obj.insert(format!("certified_note{suffix}"), serde_json::to_value(&cert.note)?);
            }
            None => {
                obj.insert(format!("certified_acc{suffix}"), serde_json::Value::Null);
                obj.insert(format!("lipschitz_bound{suffix}"), serde_json::Value::Null);
                obj.insert(format!("certified_note{suffix}"), "skipped (--no-spectral)".into());
            }
        }
    }
    Ok(v)
}

fn text(args: &AttackArgs, model: &Model, report: &RobustReport, certs: &[Certified]) -> String {
    let radius = match report.norm {
        Norm::Linf => format!("{:.6} ({:.2}/255)", report.eps, report.eps * 255.0),
        Norm::L2 => format!("{}", report.eps),
    };
    let mut s = format!(
        "{} from {} on {}: {} test images, {} ε = {radius}, {} suite, {} iterations, seed {}\n",
        model.arch,
        args.checkpoint.display(),
        args.device,
        report.n,
        report.norm.symbol(),
        report.suite,
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
    if certs.is_empty() {
        s += &format!("  {:<22} {:>8}   (skipped: --no-spectral; the ℓ2 certificate needs the spectral norms)\n", "certified (l2)", "n/a");
    }
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
