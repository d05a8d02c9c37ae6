//! Progress reporting of a training run: an indicatif bar (epoch, loss, accuracy, images/s,
//! ETA) when stderr is a terminal, plain log lines otherwise (logs, the plan scheduler): one
//! per tenth of an epoch and one per epoch.

use indicatif::{ProgressBar, ProgressStyle};
use std::cell::Cell;
use std::io::IsTerminal;

/// Reports steps and epochs of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    epoch: Cell<usize>,
    steps: Cell<usize>,
    done: Cell<usize>,
}

impl Progress {
    /// A reporter for a run of `epochs` epochs; a bar only when stderr is a terminal.
    pub fn new(epochs: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ETA {eta}")
                    .expect("valid progress template")
                    .progress_chars("=> "),
            );
            b
        });
        Self { bar, epochs, epoch: Cell::new(0), steps: Cell::new(0), done: Cell::new(0) }
    }

    /// Starts epoch `epoch` (from 0) of `steps` steps.
    pub fn start_epoch(&self, epoch: usize, steps: usize) {
        self.epoch.set(epoch);
        self.steps.set(steps);
        self.done.set(0);
        if let Some(b) = &self.bar {
            b.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
            b.set_length(steps as u64);
            b.set_position(0);
            b.reset_eta();
        }
    }

    /// One step done, with the running mean loss, accuracy (%) and images/s of the epoch.
    pub fn step(&self, loss: f64, acc: f64, images_per_s: f64) {
        let done = self.done.get() + 1;
        self.done.set(done);
        let message = format!("loss {loss:.4} acc {acc:.1}% {images_per_s:.1} img/s");
        match &self.bar {
            Some(b) => {
                b.set_message(message);
                b.inc(1);
            }
            None => {
                let steps = self.steps.get();
                if done < steps && done % steps.div_ceil(10).max(1) == 0 {
                    eprintln!("epoch {}/{} step {done}/{steps} {message}", self.epoch.get() + 1, self.epochs);
                }
            }
        }
    }

    /// A line of text (the end-of-epoch summary, divergence), above the bar if there is one.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
