//! A plan's results on disk, with one owner for the writer and the readers:
//! - [`record`]: a results row — the columns, what an executor measures ([`CellRecord`]) and
//!   the row the scheduler appends from it;
//! - [`read`]: the same columns read back into typed rows for the report;
//! - [`store`]: the results CSV appended under a lock (shards share it, a kill tears nothing);
//! - [`layout`]: where everything lives — `<results>/<plan>.csv`, and each cell's folder
//!   `<results>/<plan>/cells/<id>/` with the training run's files ([`RunDir`]);
//! - [`outcomes`]: each cell's per-image outcomes (`outcomes.csv`), for paired comparisons.

pub mod layout;
pub mod outcomes;
pub mod read;
pub mod record;
pub mod store;

pub use layout::{Layout, RunDir};
pub use read::{read, ResultRow};
pub use record::{CellRecord, CellStatus, NormSummary, Provenance, RobustColumn};
pub use store::{CellLock, ResultsStore};
