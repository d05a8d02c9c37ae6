//! `normlab run PLAN --dry-run --format json`: every cell of a plan with its state, its
//! resolved configuration (what its id hashes) and the parameters its regularizer acts on,
//! as one JSON document for scripts and for checking a plan against the reference protocol.

use super::scheduler::{self, Shard};
use crate::models::{Arch, Model};
use crate::plan::{Cell, Plan};
use crate::regularize::Regularizer;
use crate::results::record;
use anyhow::Result;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// One cell in the listing.
#[derive(Debug, Serialize)]
pub struct ListedCell<'a> {
    /// Position in the plan's grid.
    pub index: usize,
    /// The cell id.
    pub id: &'a str,
    /// `remaining`, or `done (<status>)` when the results hold its row.
    pub state: String,
    /// One line: model, regularizer and strength, notes, seed.
    pub description: String,
    /// The resolved configuration, as hashed into the id.
    pub config: &'a crate::plan::CellConfig,
    /// The parameter names its regularizer acts on, from the regularizer built for the model
    /// ([`Regularizer::acted_on`]): the same code a training run uses.
    pub regularized_layers: Vec<String>,
}

/// The whole listing.
#[derive(Debug, Serialize)]
pub struct Listing<'a> {
    /// The plan's name.
    pub plan: &'a str,
    /// The plan file.
    pub path: String,
    /// Its results CSV.
    pub results: String,
    /// Cells in the plan.
    pub total: usize,
    /// Cells with a results row.
    pub done: usize,
    /// The cells of this shard, in grid order.
    pub cells: Vec<ListedCell<'a>>,
}

/// The listing of `plan`'s cells in `shard`, with states from the results under `results`.
pub fn listing<'a>(plan: &'a Plan, results: &Path, shard: Shard) -> Result<Listing<'a>> {
    let store = scheduler::open_store(results, plan)?;
    let rows = store.read_rows()?;
    let (id_col, status_col) = (store.column(record::col::CELL_ID), store.column(record::col::STATUS));
    let status: HashMap<&str, &str> = match (id_col, status_col) {
        (Some(i), Some(s)) => rows.iter().map(|r| (&r[i], &r[s])).collect(),
        _ => HashMap::new(),
    };
    let mut models: HashMap<Arch, Model> = HashMap::new();
    let mut cells = Vec::new();
    for cell in plan.cells.iter().filter(|c| shard.contains(c)) {
        let arch = cell.config.train.model;
        let model = match models.entry(arch) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Model::zeros(arch)?),
        };
        let model = &*model;
        cells.push(ListedCell {
            index: cell.index,
            id: &cell.id,
            state: status.get(cell.id.as_str()).map(|s| format!("done ({s})")).unwrap_or_else(|| "remaining".to_string()),
            description: Cell::describe(cell),
            config: &cell.config,
            regularized_layers: Regularizer::new(cell.config.train.regularizer, model)?.acted_on(model),
        });
    }
    Ok(Listing {
        plan: &plan.name,
        path: plan.path.display().to_string(),
        results: store.path().display().to_string(),
        total: plan.cells.len(),
        done: plan.cells.iter().filter(|c| status.contains_key(c.id.as_str())).count(),
        cells,
    })
}
