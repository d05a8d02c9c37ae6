//! A deterministic stand-in for the real cell executor, for tests only (`normlab run
//! --executor fake`, a hidden flag). It behaves like training as far as the scheduler can
//! see: one "epoch" per configured epoch, each one sleeping a little and checkpointing its
//! progress in the cell's directory so a killed cell resumes, then metrics.csv and norms.csv,
//! and numbers that depend only on the cell's configuration (so a resumed run gives exactly
//! the numbers of an uninterrupted one). Its rows say `fake` in the device column.
//!
//! Environment (test-only knobs): `NORMLAB_FAKE_EPOCH_MS` sleep per epoch (default 0);
//! `NORMLAB_FAKE_FAIL`, `NORMLAB_FAKE_PANIC`, `NORMLAB_FAKE_NAN`: comma-separated regularizer
//! labels (`plain`, `wd`, `svc`, `nd-l1`, `nd-linf`) whose cells return an error, panic, or
//! report a NaN robust accuracy; `NORMLAB_FAKE_DISK_FULL`: labels whose cells find the disk
//! full when they write their metrics (the bytes go to `/dev/full`, so the OS error is real).

use crate::results::{CellRecord, CellStatus, NormSummary, RunDir};
use super::scheduler::CellContext;
use crate::plan::Cell;
use crate::regularize::RegConfig;
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// The fake's behaviour.
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor {
    /// Sleep per simulated epoch.
    pub epoch_ms: u64,
    /// Regularizer labels whose cells return an error.
    pub fail: Vec<String>,
    /// Regularizer labels whose cells panic.
    pub panic: Vec<String>,
    /// Regularizer labels whose cells report a NaN robust accuracy.
    pub nan: Vec<String>,
    /// Regularizer labels whose cells meet a full disk.
    pub disk_full: Vec<String>,
}

impl FakeExecutor {
    /// Reads the knobs from the environment (see the module doc).
    pub fn from_env() -> Result<Self> {
        let list = |k: &str| -> Vec<String> {
            std::env::var(k).unwrap_or_default().split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        let epoch_ms = match std::env::var("NORMLAB_FAKE_EPOCH_MS") {
            Ok(v) => v.parse().with_context(|| format!("NORMLAB_FAKE_EPOCH_MS='{v}' is not a number of milliseconds"))?,
            Err(_) => 0,
        };
        Ok(Self {
            epoch_ms,
            fail: list("NORMLAB_FAKE_FAIL"),
            panic: list("NORMLAB_FAKE_PANIC"),
            nan: list("NORMLAB_FAKE_NAN"),
            disk_full: list("NORMLAB_FAKE_DISK_FULL"),
        })
    }

    /// Runs one fake cell.
    pub fn run(&self, cell: &Cell, ctx: &CellContext) -> Result<CellRecord> {
        let c = &cell.config;
        let (t, epochs) = (&c.train, c.train.training.epochs.get());
        let label = t.regularizer.name().to_string();
        let t0 = Instant::now();
        let state = ctx.work_dir.join("fake_checkpoint.txt");
        let mut epoch: u32 = match std::fs::read_to_string(&state) {
            Ok(s) => s.trim().parse().with_context(|| format!("{}: corrupt fake checkpoint", state.display()))?,
            Err(_) => 0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from_str_radix(&cell.id, 16).unwrap_or(0));
        let (u_clean, u_robust, u_norm): (f64, f64, f64) = (rng.gen(), rng.gen(), rng.gen());
        let effect = strength_effect(&t.regularizer);
        let clean = 0.86 + 0.07 * u_clean - 0.03 * effect;
        while epoch < epochs {
            std::thread::sleep(Duration::from_millis(self.epoch_ms));
            epoch += 1;
            let mut metrics = String::from("epoch,lr,train_loss,train_acc,test_acc,seconds\n");
            for e in 1..=epoch {
                let f = e as f64 / epochs as f64;
                metrics.push_str(&format!("{e},{},{:.4},{:.4},{:.4},0.1\n", t.training.lr.get(), 2.3 * (1.0 - 0.8 * f), 0.3 + 0.6 * f, clean * (0.4 + 0.6 * f)));
            }
            let metrics_path = RunDir::new(&ctx.work_dir).metrics();
            if self.disk_full.contains(&label) {
                crate::util::atomic_write_with(&metrics_path, |_| Ok(std::fs::write("/dev/full", metrics.as_bytes())?))?;
            }
            crate::util::atomic_write(&metrics_path, metrics.as_bytes())?;
            crate::util::atomic_write(&state, epoch.to_string().as_bytes())?;
        }
        if self.fail.contains(&label) {
            bail!("fake failure asked for by NORMLAB_FAKE_FAIL for {label}");
        }
        if self.panic.contains(&label) {
            panic!("fake panic asked for by NORMLAB_FAKE_PANIC for {label}");
        }
        let mut norms = String::from("layer,kind,in_c,in_h,in_w,out_c,kh,kw,stride,padding,groups,l1,linf,l2_bound,spectral\n");
        for i in 0..8 {
            let l1 = (4.0 + 3.0 * i as f64 + 5.0 * u_norm) * (1.0 - 0.5 * effect);
            let linf = (3.0 + 2.0 * i as f64 + 4.0 * u_norm) * (1.0 - 0.6 * effect);
            let kind = if i == 7 { "linear" } else { "conv" };
            norms.push_str(&format!("layer{i}.weight,{kind},64,8,8,64,3,3,1,1,1,{l1},{linf},{},{}\n", (l1 * linf).sqrt(), 0.8 * (l1 * linf).sqrt()));
        }
        let norms_path = RunDir::new(&ctx.work_dir).norms();
        crate::util::atomic_write(&norms_path, norms.as_bytes())?;
        let eps = c.evaluation.robust.as_ref().map(|r| r.eps.0.clone()).unwrap_or_default();
        let mut robust: Vec<f64> =
            eps.iter().map(|e| clean * (0.55 - 0.1 * u_robust - 0.15 * effect) * (-e.get() * 255.0 * 0.4).exp()).collect();
        if self.nan.contains(&label) {
            robust.iter_mut().for_each(|r| *r = f64::NAN);
        }
        Ok(CellRecord {
            status: CellStatus::Ok,
            clean_acc: Some(clean),
            certified_acc: c.evaluation.certified.then_some(0.0),
            robust_acc: robust,
            norms: Some(NormSummary::from_norms_csv(&norms_path)?),
            train_seconds: t0.elapsed().as_secs_f64(),
            eval_seconds: 0.0,
            message: "fake executor (test only)".to_string(),
        })
    }
}

/// 0 for plain up to 1 for the paper's strongest setting (β = 1e-2, C = 0.5).
fn strength_effect(reg: &RegConfig) -> f64 {
    match reg {
        RegConfig::Plain => 0.0,
        RegConfig::Svc { clip, .. } => ((2.5 - clip.get()) / 2.0).clamp(0.0, 1.0),
        RegConfig::WeightDecay { beta } | RegConfig::NormDecay { beta, .. } => ((beta.get().log10() + 6.0) / 4.0).clamp(0.0, 1.0),
    }
}
