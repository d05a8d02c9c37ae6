//! `normlab bench ...`: measured speed claims, each subcommand timing alternatives in one run
//! on one machine.

pub mod norms;

use anyhow::Result;

/// Arguments of `normlab bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to time.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Theorem 1 formulas vs power iteration vs FFT + SVD over all weight layers of a model.
    Norms(norms::BenchNormsArgs),
}

/// Runs `normlab bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Norms(a) => norms::run(a),
//! Benchmarks: how fast normlab trains, against the machine's limit and PyTorch.
pub mod op_profile;
pub mod train;
/// The `normlab bench` subcommands.
    /// Images/s of a training step, its split into phases, and GFLOP/s against the matmul rate.
    Train(train::TrainBenchArgs),
/// Runs one bench subcommand.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Train(args) => train::run(&args),
    }
}
