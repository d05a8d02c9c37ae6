//! `normlab bench attack`: normlab's AutoAttack standard suite (`normlab attack --suite
//! standard`) against AutoAttack's own code (PyPI `pyautoattack`, fra31/auto-attack's
//! attacks) on the same checkpoint, the same test images and the same device (the CPU), in
//! one run: robust accuracy after each attack on both sides, how many images both call
//! robust alike, and images/s as a ratio.
//!
//! The comparison is `bench/autoattack_compare.py`, run with the given Python: it runs this
//! binary's `attack` first (its seeded draw picks the images), then AutoAttack on the same
//! images with the PyTorch twin of the model loaded from the same safetensors. Python and its
//! packages are not a build dependency; the command says how to install them when missing.

use crate::attack::Norm;
use crate::values::Radius;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Arguments of `normlab bench attack`.
#[derive(Debug, clap::Args)]
pub struct AttackBenchArgs {
    /// Model architecture: vgg11, resnet18, senet18, regnet200mf.
    #[arg(long)]
    pub model: String,
    /// Checkpoint (safetensors state_dict with PyTorch names).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// CIFAR-10 directory in the binary layout (test_batch.bin).
    #[arg(long)]
    pub data: PathBuf,
    /// Radius: 8/255 (ℓ∞) or 0.5 (ℓ2).
    #[arg(long)]
    pub eps: String,
    /// Threat model: linf or l2.
    #[arg(long, default_value = "linf")]
    pub norm: String,
    /// Test images drawn at random.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per batch, both sides.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// A Python with torch, numpy, safetensors and pyautoattack.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// The comparison script.
    #[arg(long, default_value = "bench/autoattack_compare.py")]
    pub script: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `normlab bench attack`.
pub fn run(args: &AttackBenchArgs) -> Result<()> {
    Radius::parse(&args.eps).map_err(|e| anyhow::anyhow!("--eps {e}"))?;
    let norm = Norm::parse(&args.norm).context("--norm")?;
    if !args.script.is_file() {
        bail!("--script {}: no such file; run from the repository root or point --script at bench/autoattack_compare.py", args.script.display());
    }
    let exe = std::env::current_exe().context("cannot find the running normlab binary")?;
    let mut cmd = Command::new(&args.python);
    cmd.arg(&args.script)
        .args(["--model", &args.model, "--eps", &args.eps, "--norm", norm.name()])
        .arg("--checkpoint")
        .arg(&args.checkpoint)
        .arg("--data")
        .arg(&args.data)
        .args(["--n", &args.n.to_string(), "--seed", &args.seed.to_string(), "--batch", &args.batch.to_string()])
        .arg("--normlab")
        .arg(exe);
    if args.json {
        cmd.arg("--json");
    }
    let status = cmd.status().with_context(|| {
        format!(
            "cannot run --python {}: give a Python with torch, numpy, safetensors and pyautoattack \
             (python3 -m venv /tmp/venv-aa && /tmp/venv-aa/bin/pip install torch numpy safetensors pyautoattack)",
            args.python.display()
        )
    })?;
    if !status.success() {
        bail!("{} {} failed ({status})", args.python.display(), args.script.display());
    }
    Ok(())
}
