//! `normlab theory prop1|thm2|prop2|separation`: arguments and dispatch.

use super::thm2::{DataSource, ProbeOptions};
use super::{Activation, InputNorm, Report};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Runs the paper's theoretical statements as constructions and checks them.
#[derive(Debug, Args)]
pub struct TheoryArgs {
    /// Which statement.
    #[command(subcommand)]
    pub statement: Statement,
}

/// The statements.
#[derive(Debug, Subcommand)]
pub enum Statement {
    /// Proposition 1: every layer's ℓ1, ℓ∞ and spectral norm ≥ S, Lipschitz constant 0.
    Prop1 {
        /// Lower bound S on every layer's three norms.
        #[arg(long, default_value_t = 1e6)]
        scale: f64,
        /// Hidden width.
        #[arg(long, default_value_t = 64)]
        width: usize,
        /// Number of layers (≥ 3).
        #[arg(long, default_value_t = 3)]
        depth: usize,
        /// Seed of the random weights and probe inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Theorem 2: on 2ε-separated data, a network correct on every ε-ball.
    Thm2 {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Proposition 2: Theorem 2's certified robustness with Lipschitz constant ≥ ξ.
    Prop2 {
        /// Lower bound ξ on the Lipschitz constant, shown by an explicit pair of inputs.
        #[arg(long, default_value_t = 1e6)]
        xi: f64,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        common: Common,
    },
    /// The smallest distance between CIFAR-10 images of different classes (Assumption 2).
    Separation {
        /// A CIFAR-10 binary directory (`normlab data --out DIR`).
        #[arg(long)]
        data: PathBuf,
        /// Distance.
        #[arg(long, value_enum, default_value_t = InputNorm::Linf)]
        norm: InputNorm,
        /// Use only the first N images of each split (all when absent).
        #[arg(long)]
        subset: Option<usize>,
        /// The radius compared with half the separation, as a fraction (1/255) or decimal.
        #[arg(long, default_value = "1/255")]
        eps: String,
        /// Device for the ℓ2 Gram matrices: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Options every statement takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Output: a readable account or JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable account.
    Text,
    /// The report as JSON.
    Json,
}

/// Which data set Theorem 2 and Proposition 2 are built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataKind {
    /// Points generated 2ε-separated in [0, 1]^dim.
    Synthetic,
    /// The first `--points` CIFAR-10 training images (needs `--cifar-dir`).
    Cifar,
}

/// The data and radius of Theorem 2 and Proposition 2.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// synthetic or cifar.
    #[arg(long, value_enum, default_value_t = DataKind::Synthetic)]
    pub data: DataKind,
    /// CIFAR-10 binary directory, for `--data cifar`.
    #[arg(long)]
    pub cifar_dir: Option<PathBuf>,
    /// Radius ε, as a fraction (1/255) or decimal.
    #[arg(long, default_value = "0.1")]
    pub eps: String,
    /// Activation of the constructed network.
    #[arg(long, value_enum, default_value_t = Activation::Relu)]
    pub activation: Activation,
    /// Norm of the ε-balls.
    #[arg(long, value_enum, default_value_t = InputNorm::Linf)]
    pub norm: InputNorm,
    /// Number of points (synthetic: generated; cifar: first training images).
    #[arg(long)]
    pub points: Option<usize>,
    /// Synthetic: dimension.
    #[arg(long, default_value_t = 16)]
    pub dim: usize,
    /// Synthetic: classes.
    #[arg(long, default_value_t = 3)]
    pub classes: usize,
    /// Synthetic: separation of the generated set (default 3ε; below 2ε the hypothesis fails
    /// and the checks must fail).
    #[arg(long)]
    pub separation: Option<f64>,
    /// Seed of the generated data and of the random probes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Random probe points per ε-ball.
    #[arg(long, default_value_t = 16)]
    pub probes: usize,
    /// PGD steps per run.
    #[arg(long, default_value_t = 50)]
    pub pgd_steps: usize,
    /// PGD runs per point (each from a new random start).
    #[arg(long, default_value_t = 2)]
    pub pgd_restarts: usize,
}

impl DataArgs {
    fn source(&self, eps: f64) -> Result<DataSource> {
        match self.data {
            DataKind::Synthetic => {
                if self.cifar_dir.is_some() {
                    bail!("--cifar-dir is for --data cifar; with --data synthetic the points are generated");
                }
                Ok(DataSource::Synthetic {
                    points: self.points.unwrap_or(60),
                    dim: self.dim,
                    classes: self.classes,
                    separation: self.separation.unwrap_or(3.0 * eps),
                    seed: self.seed,
                })
            }
            DataKind::Cifar => {
                let Some(dir) = &self.cifar_dir else {
                    bail!("--data cifar needs --cifar-dir DIR, a CIFAR-10 binary directory (create it with `normlab data --source SRC --out DIR`)");
                };
                if self.separation.is_some() {
                    bail!("--separation is for --data synthetic; CIFAR-10's separation is measured");
                }
                Ok(DataSource::Cifar { dir: dir.clone(), points: self.points.unwrap_or(50) })
            }
        }
    }

    fn probe(&self) -> ProbeOptions {
        ProbeOptions { per_point: self.probes, seed: self.seed, pgd_steps: self.pgd_steps, pgd_restarts: self.pgd_restarts }
    }
}

/// Parses `--eps` with the attack module's parser (`8/255`, `0.0039`, `0`; in [0, 1]).
fn parse_eps(text: &str) -> Result<f64> {
    crate::attack::parse_eps(text).context("--eps")
}

/// Runs one statement, prints its report, and fails when a check fails.
pub fn run(args: TheoryArgs) -> Result<()> {
    let cpu = candle_core::Device::Cpu;
    let (report, format): (Report, Format) = match args.statement {
        Statement::Prop1 { scale, width, depth, seed, common } => (super::prop1::run(scale, width, depth, seed, &cpu)?, common.format),
        Statement::Thm2 { data, common } => {
            let eps = parse_eps(&data.eps)?;
            (super::thm2::run(&data.source(eps)?, eps, data.activation, data.norm, data.probe(), &cpu)?, common.format)
        }
        Statement::Prop2 { xi, data, common } => {
            let eps = parse_eps(&data.eps)?;
            (super::prop2::run(&data.source(eps)?, eps, xi, data.activation, data.norm, data.probe(), &cpu)?, common.format)
        }
        Statement::Separation { data, norm, subset, eps, device, common } => {
            let eps = parse_eps(&eps)?;
            let device = crate::device::DeviceSpec::parse(&device)?.open()?;
            let cifar = crate::data::binary::load_dir(&data)?;
            (super::separation::run(&cifar, norm, subset, eps, &device)?, common.format)
        }
    };
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let failed = report.failed();
    if !failed.is_empty() {
        bail!("{}: {} of {} checks failed: {}", report.statement, failed.len(), report.checks.len(), failed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}
