//! `normlab train`: the command-line face of [`crate::train::train`].

use super::{schedule, AdvConfig, RunStatus, TrainConfig};
use crate::device::DeviceSpec;
use crate::models::{Arch, Model};
use crate::regularize::{Coverage, NdVariant, NormKind, RegConfig, DEFAULT_GAMMA, DEFAULT_SVC_EVERY};
use crate::values::{Eps, Fraction, Positive};
use anyhow::{anyhow, bail, Context, Result};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};

/// The regularizers by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegName {
    /// No regularization.
    Plain,
    /// Weight decay (needs --beta).
    Wd,
    /// Singular value clipping of every conv (needs --clip).
    Svc,
    /// ℓ1 norm decay (needs --beta).
    NdL1,
    /// ℓ∞ norm decay (needs --beta).
    NdLinf,
}

/// Train one model on CIFAR-10 with one regularizer, following the paper's protocol.
///
/// Defaults are the paper's: 120 epochs, SGD with momentum 0.9, batch 128, lr 0.01 multiplied
/// by 0.1 at epochs 75, 90 and 100; with another --epochs the three milestones scale in
/// proportion (round(75·E/120), round(90·E/120), round(100·E/120)). Writes OUT/metrics.csv
/// (one row per epoch), OUT/model.safetensors (PyTorch names), OUT/status.json and a
/// checkpoint after every epoch (OUT/checkpoint/) that --resume continues from.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainArgs {
    /// Model: vgg11, resnet18, senet18 or regnet200mf.
    #[arg(long)]
    pub model: String,
    /// Regularizer.
    #[arg(long, value_enum)]
    pub reg: RegName,
    /// Strength β of wd, nd-l1 and nd-linf (the paper's grid: 1e-2, 1e-3, 1e-4, 1e-5).
    #[arg(long)]
    pub beta: Option<f64>,
    /// SVC's bound on the singular values (the paper's grid: 0.5, 1, 1.5, 2).
    #[arg(long)]
    pub clip: Option<f64>,
    /// SVC's period in optimizer steps [default: 100].
    #[arg(long)]
    pub svc_every: Option<u32>,
    /// Norm decay's running-average factor γ [default: 0.5].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Norm decay's buffer update: the reference code's (default) or the poster's.
    #[arg(long, value_enum)]
    pub nd_variant: Option<NdVariant>,
    /// Norm decay also decays the BatchNorm layers.
    #[arg(long)]
    pub nd_bn: bool,
    /// Norm decay also projects each BatchNorm layer's norm to at most this bound before
    /// every step (the reference's train_nd_proj_bn.py uses 5).
    #[arg(long)]
    pub nd_project_bn: Option<f64>,
    /// Which layers svc and norm decay act on, and when svc clips: the reference code's
    /// (skips convs whose input the kernel cannot cover and, for norm decay, grouped convs;
    /// svc before the step of each epoch's batches 1, 1+every, …) or all of them (svc after
    /// every `--svc-every`-th step) [default: reference].
    #[arg(long, value_enum)]
    pub coverage: Option<Coverage>,
    /// SVC clips once more after the last step, then re-estimates BatchNorm's running
    /// statistics on the last epoch's batches.
    #[arg(long)]
    pub svc_final_clip: bool,
    /// Epochs (the lr milestones scale in proportion).
    #[arg(long, default_value_t = schedule::PAPER_EPOCHS)]
    pub epochs: u32,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Seed of the initial weights, epoch orders and augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CIFAR-10 in the binary layout (data_batch_1..5.bin, test_batch.bin; `normlab data`).
    #[arg(long)]
    pub data: PathBuf,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory of the run.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in OUT from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start from these weights instead of the seeded init: safetensors or a PyTorch
    /// .pt/.pth of the same architecture, read and checked as every command reads weights
    /// (the seed still draws the epoch orders and augmentation).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Adversarial training (paper §7; use --lr 0.1 as the paper does): PGD-AT or TRADES.
    #[arg(long, value_enum)]
    pub adv: Option<AdvName>,
    /// ℓ∞ radius of the training attack (accepts 8/255).
    #[arg(long, default_value = "8/255", value_parser = parse_eps_flag)]
    pub adv_eps: f64,
    /// Step size of the training attack.
    #[arg(long, default_value = "2/255", value_parser = parse_eps_flag)]
    pub adv_step: f64,
    /// Steps of the training attack.
    #[arg(long, default_value_t = 10)]
    pub adv_steps: u32,
    /// TRADES' trade-off β.
    #[arg(long, default_value_t = 6.0)]
    pub trades_beta: f64,
}

impl TrainArgs {
    /// The regularizer the flags describe; flags that do not apply to --reg are errors.
    pub fn reg_config(&self) -> Result<RegConfig> {
        let name = match self.reg {
            RegName::Plain => "plain",
            RegName::Wd => "wd",
            RegName::Svc => "svc",
            RegName::NdL1 => "nd-l1",
            RegName::NdLinf => "nd-linf",
        };
        let nd = matches!(self.reg, RegName::NdL1 | RegName::NdLinf);
        let unused = |flag: &str, given: bool| -> Result<()> {
            if given {
                bail!("{flag} does not apply to --reg {name}");
            }
            Ok(())
        };
        unused("--beta", self.beta.is_some() && matches!(self.reg, RegName::Plain | RegName::Svc))?;
        unused("--clip", self.clip.is_some() && self.reg != RegName::Svc)?;
        unused("--svc-every", self.svc_every.is_some() && self.reg != RegName::Svc)?;
        unused("--gamma", self.gamma.is_some() && !nd)?;
        unused("--nd-variant", self.nd_variant.is_some() && !nd)?;
        unused("--nd-bn", self.nd_bn && !nd)?;
        unused("--nd-project-bn", self.nd_project_bn.is_some() && !nd)?;
        unused("--coverage", self.coverage.is_some() && !nd && self.reg != RegName::Svc)?;
        unused("--svc-final-clip", self.svc_final_clip && self.reg != RegName::Svc)?;
        let coverage = self.coverage.unwrap_or(Coverage::Reference);
        let positive = |flag: &str, v: Option<f64>, grid: &str| -> Result<Positive> {
            let v = v.with_context(|| format!("--reg {name} needs {flag} (the paper's grid: {grid})"))?;
            Positive::new(v).map_err(|e| anyhow!("{flag}: {e}"))
        };
        let beta = || positive("--beta", self.beta, "1e-2, 1e-3, 1e-4, 1e-5");
        let nd_config = |norm| -> Result<RegConfig> {
            Ok(RegConfig::NormDecay {
                norm,
                beta: beta()?,
                gamma: match self.gamma {
                    Some(g) => Fraction::new(g).map_err(|e| anyhow!("--gamma: {e}"))?,
                    None => DEFAULT_GAMMA,
                },
                variant: self.nd_variant.unwrap_or(NdVariant::Reference),
                include_bn: self.nd_bn,
                coverage,
                project_bn: self.nd_project_bn.map(|b| Positive::new(b).map_err(|e| anyhow!("--nd-project-bn: {e}"))).transpose()?,
            })
        };
        Ok(match self.reg {
            RegName::Plain => RegConfig::Plain,
            RegName::Wd => RegConfig::WeightDecay { beta: beta()? },
            RegName::Svc => RegConfig::Svc {
                clip: positive("--clip", self.clip, "0.5, 1, 1.5, 2")?,
                every: match self.svc_every {
                    Some(n) if n < 2 && coverage == Coverage::Reference => bail!(
                        "--svc-every {n} with --coverage reference never clips (the reference clips when the batch index % every == 1): \
                         use 2 or more, or --coverage all"
                    ),
                    Some(n) => NonZeroU32::new(n).context("--svc-every: SVC needs a period of at least 1 step, got 0")?,
                    None => DEFAULT_SVC_EVERY,
                },
                coverage,
                final_clip: self.svc_final_clip,
            },
            RegName::NdL1 => nd_config(NormKind::L1)?,
            RegName::NdLinf => nd_config(NormKind::Linf)?,
        })
    }

    /// The run the flags describe.
    pub fn config(&self) -> Result<TrainConfig> {
        let epochs = NonZeroU32::new(self.epochs).context("--epochs must be at least 1, got 0")?;
        let model = Arch::parse(&self.model)?;
        // As a plan's cell: `reference` where it runs what `all` runs is the `all` run.
        let mut cfg = TrainConfig::paper(model, self.reg_config()?.resolved_for(model.layers()));
        cfg.training = super::TrainingProtocol {
            lr: Positive::new(self.lr).map_err(|e| anyhow!("--lr: {e}"))?,
            momentum: Fraction::new(self.momentum).map_err(|e| anyhow!("--momentum: {e}"))?,
            batch: NonZeroUsize::new(self.batch).context("--batch must be at least 1, got 0")?,
            train_subset: subset("--train-subset", self.train_subset)?,
            test_subset: subset("--test-subset", self.test_subset)?,
            ..super::TrainingProtocol::paper_with_epochs(epochs)
        };
        cfg.seed = self.seed;
        cfg.adv = match self.adv {
            None => AdvConfig::None,
            Some(kind) => {
                let eps = |flag: &str, v: f64| -> Result<Eps> {
                    if v <= 0.0 {
                        bail!("{flag} must be > 0 for --adv, got {v}");
                    }
                    Eps::check(v).map_err(|e| anyhow!("{flag}: {e}"))
                };
                let (eps, step) = (eps("--adv-eps", self.adv_eps)?, eps("--adv-step", self.adv_step)?);
                let steps = NonZeroU32::new(self.adv_steps).context("--adv-steps must be at least 1 for --adv, got 0")?;
                match kind {
                    AdvName::Pgd => AdvConfig::Pgd { eps, step, steps },
                    AdvName::Trades => AdvConfig::Trades {
                        eps,
                        step,
                        steps,
                        beta: Positive::new(self.trades_beta).map_err(|e| anyhow!("--trades-beta (TRADES uses 6): {e}"))?,
                    },
                }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A subset size flag: absent is the whole split, 0 is an error naming the flag.
fn subset(flag: &str, n: Option<usize>) -> Result<Option<NonZeroUsize>> {
    n.map(|n| NonZeroUsize::new(n).with_context(|| format!("{flag} must be at least 1 image (leave it out to use the whole split), got 0"))).transpose()
}

/// The adversarial training methods `--adv` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdvName {
    /// PGD-AT: cross-entropy on PGD examples.
    Pgd,
    /// TRADES: CE + β·KL between clean and adversarial logits.
    Trades,
}

fn parse_eps_flag(text: &str) -> Result<f64, String> {
    crate::attack::parse_eps(text).map_err(|e| e.to_string())
}

/// Runs `normlab train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = args.config()?;
    let device = DeviceSpec::parse(&args.device).map_err(|e| anyhow!("--device: {e}"))?;
    if args.resume && !super::has_run(&args.out) {
        bail!(
            "--resume: {} holds nothing to resume (no checkpoint/, status.json or config.json): \
             leave out --resume to start a new run there, or give the --out of the run to continue",
            args.out.display()
        );
    }
    device.open().map_err(|e| anyhow!("--device {device}: {e:#}"))?;
    let data = crate::data::binary::load_dir(&args.data).map_err(|e| anyhow!("--data: {e:#}"))?;
    if let Err(e) = cfg.training.check_subsets(data.train.len(), data.test.len()) {
        bail!("--{}: {e}", e.field.replace('_', "-"));
    }
    if let Some(init) = &args.init {
        start_from(&cfg, init, device, &args.out)?;
    }
    let outcome = super::train(&cfg, device, &data, &args.out, args.resume || args.init.is_some())?;
    let acc = outcome.test_acc.map(|a| format!("{a:.2}%")).unwrap_or_else(|| "n/a".into());
    match outcome.status {
        RunStatus::Finished => println!("finished {} epochs: test accuracy {acc}; results in {}", outcome.epochs_done, args.out.display()),
        RunStatus::Diverged { epoch } => {
            println!("diverged in epoch {epoch} (non-finite loss); {} epochs kept in {}", outcome.epochs_done, args.out.display())
        }
    }
    Ok(())
}

/// Writes an epoch-0 checkpoint holding `init`'s weights into `out`, so the run starts from
/// them through the path that continues an interrupted run (nothing else differs from a
/// run from the seeded init).
fn start_from(cfg: &super::TrainConfig, init: &Path, device: DeviceSpec, out: &Path) -> Result<()> {
    if super::has_run(out) {
        bail!("{} already holds a training run: continue it with --resume (without --init), or choose another --out", out.display());
    }
    let device = device.open()?;
    let (model, summary) = Model::load_checkpoint(cfg.model, init, &device, None)?;
    if let Some(n) = &model.normalization {
        bail!(
            "--init {}: the checkpoint normalizes its input ({}), which normlab train does not do; its weights would see other inputs than those they were trained on",
            init.display(),
            n.describe()
        );
    }
    eprintln!("--init: {summary}");
    let sgd = crate::optim::Sgd::new(cfg.training.lr.get(), cfg.training.momentum.get());
    let mut reg = crate::regularize::Regularizer::new(cfg.regularizer, &model)?;
    let progress = super::checkpoint::Progress { config: cfg.clone(), epochs_done: 0, steps_done: 0, batches_tracked: model.batches_tracked(), train_seconds: 0.0, rows: Vec::new() };
    super::checkpoint::save(out, &progress, &model, &sgd, &mut reg)
}
