//! Progress reporting of a training run: an indicatif bar (epoch, loss, accuracy, images/s,
//! ETA) when stderr is a terminal, plain log lines otherwise (logs, the plan scheduler).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Reports steps and epochs of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
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
        Self { bar, epochs }
    }

    /// Starts epoch `epoch` (from 0) of `steps` steps.
    pub fn start_epoch(&self, epoch: usize, steps: usize) {
        if let Some(b) = &self.bar {
            b.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
            b.set_length(steps as u64);
            b.set_position(0);
            b.reset_eta();
        }
    }

    /// One step done, with the running mean loss, accuracy (%) and images/s of the epoch.
    pub fn step(&self, loss: f64, acc: f64, images_per_s: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.4} acc {acc:.1}% {images_per_s:.0} img/s"));
            b.inc(1);
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
