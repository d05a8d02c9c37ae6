//! Progress of a run: cells done out of the plan's total with an estimate of the time left,
//! as a bar on a terminal and as plain log lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts finished cells and prints one line per cell.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done_before: usize,
    to_run: usize,
    workers: usize,
    prior_secs_per_cell: Option<f64>,
    finished: AtomicUsize,
    started: Instant,
    bar: Option<ProgressBar>,
    multi: Option<MultiProgress>,
}

impl Progress {
    /// `total` cells in the plan, `done_before` already with a row, `to_run` for this process
    /// on `workers` workers; `prior_secs_per_cell` from earlier rows, if any.
    pub fn new(total: usize, done_before: usize, to_run: usize, workers: usize, prior_secs_per_cell: Option<f64>) -> Self {
        let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
        let bar = multi.as_ref().map(|m| {
            let pb = m.add(ProgressBar::new(total as u64));
            pb.set_style(
                ProgressStyle::with_template("cells {pos}/{len} [{bar:30}] {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            pb.set_position(done_before as u64);
            pb
        });
        let p = Self { total, done_before, to_run, workers: workers.max(1), prior_secs_per_cell, finished: AtomicUsize::new(0), started: Instant::now(), bar, multi };
        if let Some(pb) = &p.bar {
            pb.set_message(p.eta_text(0));
        }
        p
    }

    /// The terminal's bar group, to which an executor adds its inner (training, attack) bars
    /// so they draw under the overall one; `None` when stderr is not a terminal.
    pub fn multi(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    /// Prints a line above the bar (or to stderr).
    pub fn log(&self, line: &str) {
        match &self.bar {
            Some(pb) => pb.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Records one finished cell and prints its line with the overall count and ETA.
    pub fn finished(&self, line: &str) {
        let k = self.finished.fetch_add(1, Ordering::SeqCst) + 1;
        let eta = self.eta_text(k);
        let head = format!("[{}/{}]", self.done_before + k, self.total);
        match &self.bar {
            Some(pb) => {
                pb.inc(1);
                pb.set_message(eta.clone());
                pb.println(format!("{head} {line}"));
            }
            None => eprintln!("{head} {line} ({eta})"),
        }
    }

    /// Seconds left: measured throughput of this run once a cell has finished, else earlier
    /// rows' mean time per cell spread over the workers.
    pub fn eta_secs(&self, finished: usize) -> Option<f64> {
        let left = self.to_run.saturating_sub(finished) as f64;
        if finished > 0 {
            Some(self.started.elapsed().as_secs_f64() / finished as f64 * left)
        } else {
            self.prior_secs_per_cell.map(|s| s * left / self.workers as f64)
        }
    }

    fn eta_text(&self, finished: usize) -> String {
        match self.eta_secs(finished) {
            Some(s) => format!("ETA {}", format_duration(Duration::from_secs_f64(s))),
            None => "ETA unknown until a cell finishes".to_string(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

/// `1h 02m`, `4m 05s`, `12s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
