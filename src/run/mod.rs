//! Running a plan: the scheduler over devices and shards ([`scheduler`]), the executor that
//! trains and evaluates a cell ([`executor`]), what the machine must provide and the errors
//! that are the machine's rather than a cell's ([`environment`]), progress, and the `normlab
//! run` command ([`cli`]). What a run leaves on disk — rows, the locked CSV, the cells' folders — is
//! [`crate::results`]'s.
//!
//! The scheduler is generic over the cell executor ([`scheduler::Executor`]): the real one
//! trains and evaluates; [`fake`] is a deterministic stand-in for tests.

pub mod cli;
pub mod environment;
pub mod executor;
pub mod fake;
pub mod listing;
pub mod progress;
pub mod scheduler;
pub mod stack;

pub use crate::results::{CellRecord, CellStatus, NormSummary};
pub use scheduler::{run_plan, run_plan_stacked, CellContext, Executor, RunOptions, RunSummary, Shard, StackContext, StackTrainer, Stacking};
