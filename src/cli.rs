//! The `normlab` command line: clap definitions and dispatch only. Each subcommand's
//! arguments and entry point live in the module of the concept it serves.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// normlab: exact operator norms of CNN layers, norm decay, and robustness experiments on
/// CIFAR-10 (Liang & Huang, AAAI 2021).
#[derive(Debug, Parser)]
#[command(name = "normlab", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the models (the paper's four and RobustBench's three) with their parameter counts, layer counts and forward FLOPs.
    Models,
    /// Import CIFAR-10 (official archive, its URL, or an image folder) into the binary layout.
    Data(crate::data::cli::DataArgs),
    /// Per-layer norms (l1, linf, l2 bound, spectral) of a model, or of two checkpoints side by side.
    Norms(crate::norms::cli::NormsArgs),
    /// Time alternatives on this machine (`bench norms`, `bench train`, `bench stack`).
    Bench(crate::bench::BenchArgs),
    /// Train a model on CIFAR-10 with one regularizer (the paper's protocol).
    Train(crate::train::cli::TrainArgs),
    /// Robust accuracy (APGD-CE + APGD-T by default) and certified accuracy of a checkpoint.
    Attack(crate::attack::cli::AttackArgs),
    /// Run a plan's cells (or list them with --dry-run), appending one row per cell to results/<plan>.csv.
    Run(crate::run::cli::RunArgs),
    /// Render a results CSV into the paper's table (Markdown/LaTeX) and SVG plots.
    Report(crate::report::cli::ReportArgs),
    /// Check a device (e.g. cuda:0) against the CPU: forward, gradients, BatchNorm, regularizers, attacks.
    Selftest(crate::selftest::SelftestArgs),
    /// The paper's theory as runnable checks: Proposition 1, Theorem 2, Proposition 2, separation.
    Theory(crate::theory::cli::TheoryArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> Result<()> {
    crate::memory::retain_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Models => list_models(),
        Command::Data(args) => crate::data::cli::run(args),
        Command::Norms(args) => crate::norms::cli::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Train(args) => crate::train::cli::run(&args),
        Command::Attack(args) => crate::attack::cli::run(&args),
        Command::Run(args) => crate::run::cli::run(&args),
        Command::Report(args) => crate::report::cli::run(&args),
        Command::Selftest(args) => crate::selftest::run(args),
        Command::Theory(args) => crate::theory::cli::run(args),
    }
}

fn list_models() -> Result<()> {
    println!("{:<16} {:>12} {:>7} {:>14}", "model", "parameters", "layers", "fwd GFLOP/img");
    for arch in crate::models::Arch::ALL {
        let m = crate::models::Model::new(arch, 0, &candle_core::Device::Cpu)?;
        println!("{:<16} {:>12} {:>7} {:>14.3}", arch.name(), m.num_parameters(), m.layers.len(), 2.0 * m.forward_macs() as f64 / 1e9);
    }
    Ok(())
}
