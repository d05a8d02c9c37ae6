//! Benchmarks: how fast normlab trains, against the machine's limit and PyTorch.

pub mod op_profile;
pub mod train;

use anyhow::Result;

/// The `normlab bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Images/s of a training step, its split into phases, and GFLOP/s against the matmul rate.
    Train(train::TrainBenchArgs),
}

/// Runs one bench subcommand.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Train(args) => train::run(&args),
    }
}
