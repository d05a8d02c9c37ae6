//! Where results live: a results folder holds `<plan>.csv` and `<plan>/cells/<id>/`, and each
//! cell's folder is a training run's folder ([`RunDir`]: what `normlab train --out` writes).
//! The training loop, the scheduler, the executor and the report all name these paths through
//! this module, so a file moves in one place.

use std::path::{Path, PathBuf};

/// The folder of one training run: `normlab train --out DIR`, and every plan cell's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// The run folder at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `config.json`: the run's configuration (`train::TrainConfig`).
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }

    /// `metrics.csv`: one row per finished epoch (`train::metrics::EpochRow`).
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }

    /// `norms.csv`: the final weights' per-layer norms, as `normlab norms --format csv` prints
    /// them (ℓ1, ℓ∞, their ℓ2 bound and the exact spectral norm).
    pub fn norms(&self) -> PathBuf {
        self.0.join("norms.csv")
    }

    /// `status.json`: how the run ended (finished, or diverged with the epoch).
    pub fn status(&self) -> PathBuf {
        self.0.join("status.json")
    }

    /// `model.safetensors`: the final weights under PyTorch names.
    pub fn model(&self) -> PathBuf {
        self.0.join("model.safetensors")
    }

    /// `outcomes.csv`: per-image clean and robust outcomes of the evaluation
    /// ([`super::outcomes`]).
    pub fn outcomes(&self) -> PathBuf {
        self.0.join("outcomes.csv")
    }

    /// `checkpoint/`: the state after the last finished epoch (`train::checkpoint`).
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint")
    }
}

/// A results folder: the CSV of each plan and the cells' folders beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The results folder `root` (`normlab run --results`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The results folder of a results CSV (its parent folder).
    pub fn of_csv(csv: &Path) -> Self {
        Self::new(csv.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
    }

    /// `<root>/<plan>.csv`: one row per finished cell.
    pub fn csv(&self, plan: &str) -> PathBuf {
        self.root.join(format!("{plan}.csv"))
    }

    /// `<root>/<plan>/cells/`: the cells' folders.
    pub fn cells(&self, plan: &str) -> PathBuf {
        self.root.join(plan).join("cells")
    }

    /// `<root>/<plan>/cells/<id>/`: one cell's folder, a training run's folder.
    pub fn cell(&self, plan: &str, id: &str) -> RunDir {
        RunDir::new(self.cells(plan).join(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_folder_sits_beside_its_results_csv() {
        let l = Layout::of_csv(Path::new("results/short.csv"));
        assert_eq!(l, Layout::new("results"));
        assert_eq!(l.csv("short"), Path::new("results/short.csv"));
        assert_eq!(l.cell("short", "0c22161bce14").norms(), Path::new("results/short/cells/0c22161bce14/norms.csv"));
        assert_eq!(Layout::of_csv(Path::new("short.csv")).csv("short"), Path::new("./short.csv"));
    }
}
