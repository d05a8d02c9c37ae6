//! Running a plan: the scheduler over devices and shards ([`scheduler`]), the locked results
//! file ([`store`]), the row a finished cell leaves ([`record`]), progress, and the
//! `normlab run` command ([`cli`]).
//!
//! The scheduler is generic over the cell executor ([`scheduler::Executor`]): the real one
//! trains and evaluates; [`fake`] is a deterministic stand-in for tests.

pub mod cli;
pub mod executor;
pub mod fake;
pub mod progress;
pub mod record;
pub mod scheduler;
pub mod store;

pub use record::{CellRecord, CellStatus, NormSummary};
pub use scheduler::{run_plan, CellContext, Executor, RunOptions, RunSummary, Shard};
