//! `normlab bench ...`: measured speed claims, each subcommand timing alternatives in one run
//! on one machine (norm formulas against power iteration and FFT + SVD; a training step
//! against the machine's matmul rate; the AutoAttack standard suite against AutoAttack's own
//! code).

pub mod attack;
pub mod counts;
pub mod device_clock;
pub mod norms;
pub mod op_profile;
pub mod record;
pub mod stack;
pub mod train;

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
    /// Images/s of a training step, its split into phases, and GFLOP/s against the matmul rate.
    Train(train::TrainBenchArgs),
    /// `normlab attack --suite standard` against AutoAttack (pyautoattack) on the same
    /// checkpoint and images: robust accuracy after each attack and the images/s ratio.
    Attack(attack::AttackBenchArgs),
    /// Cells per hour of training K cells of a plan's row as one stack against one by one.
    Stack(stack::StackBenchArgs),
    /// Appends a row to bench/gpu-speed.csv from the RESULT lines of a `bench train` output and
    /// a `bench/pytorch_train.py` output for the same model.
    Record(record::RecordArgs),
}

/// Runs `normlab bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Norms(a) => norms::run(a),
        BenchCommand::Train(a) => train::run(&a),
        BenchCommand::Attack(a) => attack::run(&a),
        BenchCommand::Stack(a) => stack::run(&a),
        BenchCommand::Record(a) => record::run(&a),
    }
}
