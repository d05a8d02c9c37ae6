//! normlab: exact operator norms of CNN layers, norm decay and its baselines, and clean and
//! robust accuracy on CIFAR-10, reproducing "Large Norms of CNN Layers Do Not Hurt
//! Adversarial Robustness" (Liang & Huang, AAAI 2021).
//!
//! The flow: a plan (`plan`) expands into cells; the scheduler (`run`) trains each cell
//! (`train`, with `regularize` and `optim`), evaluates it (`attack`, `norms`) and appends one
//! CSV row; `report` renders rows into the paper's table and plots.

pub mod attack;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod memory;
pub mod models;
pub mod norms;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod regularize;
pub mod report;
pub mod results;
pub mod run;
pub mod selftest;
pub mod stats;
pub mod theory;
pub mod train;
pub mod util;
pub mod values;
