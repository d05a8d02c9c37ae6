//! `normlab report RESULTS.csv`: the paper's table (Markdown and/or LaTeX) beside the
//! published numbers, the finding checked per model, and SVG plots, from the results CSV and
//! the cells' own CSV files only.

use super::plots::{self, LayerCell};
use super::table;
use crate::results::{self, Layout};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `normlab report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A results file written by `normlab run`, e.g. results/demo.csv.
    pub results: PathBuf,
    /// Output directory (default: <results dir>/<name>-report/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Table format(s): md, latex or both.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
    /// Two cell ids (comma-separated) whose per-layer norms to plot side by side (default: a
    /// plain cell against an adversarially trained or the strongest norm-decay one).
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub compare: Option<Vec<String>>,
    /// The plan the results come from: its cells without a row yet are shown as missing (—).
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

/// Table formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// report.md (tables, findings, plots linked).
    Md,
    /// report.tex (the accuracy tables).
    Latex,
    /// Both.
    Both,
}

/// What a report wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Files written, in order.
    pub files: Vec<PathBuf>,
}

/// Runs `normlab report`.
pub fn run(args: &ReportArgs) -> Result<()> {
    let out = match &args.out {
        Some(o) => o.clone(),
        None => default_out(&args.results),
    };
    let compare = args.compare.as_ref().map(|v| (v[0].clone(), v[1].clone()));
    let plan = args.plan.as_deref().map(crate::plan::load).transpose()?;
    let w = render(&args.results, &out, args.format, compare, plan.as_ref())?;
    for f in &w.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// The grid positions of a plan's cells, for marking the missing ones.
pub fn expected_cells(plan: &crate::plan::Plan) -> Vec<table::Expected> {
    plan.cells
        .iter()
        .map(|c| {
            let (t, r) = (&c.config.train, &c.config.train.regularizer);
            (t.model.name().to_string(), t.adv.label().to_string(), super::setting::label(r, t.model), r.strength())
        })
        .collect()
}

/// `<dir>/<stem>-report/` beside the results file.
pub fn default_out(results: &Path) -> PathBuf {
    let stem = results.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "results".into());
    results.parent().unwrap_or(Path::new(".")).join(format!("{stem}-report"))
}

/// Renders the report of `results_csv` into `out`. With the plan the results come from, its
/// cells without a row show as missing and rows of cells that are not the plan's are named
/// and left out (none of the plan's: an error).
pub fn render(results_csv: &Path, out: &Path, format: Format, compare: Option<(String, String)>, plan: Option<&crate::plan::Plan>) -> Result<Written> {
    let mut file = results::read::read_file(results_csv)?;
    let expected = match plan {
        Some(p) => {
            file.keep_plan_cells(results_csv, &p.name, &p.cells.iter().map(|c| c.id.clone()).collect())?;
            expected_cells(p)
        }
        None => Vec::new(),
    };
    for n in &file.notes {
        eprintln!("note: {n}");
    }
    let rows: Vec<results::ResultRow> = file.rows.drain(..).map(super::setting::labelled).collect();
    if rows.is_empty() {
        bail!("{} has no result rows yet: run the plan first (`normlab run PLAN`)", results_csv.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let plan = rows[0].plan.clone();
    let layout = Layout::of_csv(results_csv);
    let evidence = super::evidence::Evidence::gather(&rows, &layout);
    let grid = table::build(&rows, &expected, &evidence);
    let eps = grid.eps.first().cloned();
    let mut written = Written::default();

    // Plots first, so the Markdown links only what exists.
    let mut plots_md = String::new();
    let mut plot = |name: &str, caption: &str, made: bool| {
        if made {
            written.files.push(out.join(name));
            plots_md.push_str(&format!("### {caption}\n\n![{caption}]({name})\n\n"));
        }
    };
    if let Some(e) = &eps {
        plot("robust_vs_strength.svg", "Robust accuracy against the regularization strength", plots::robust_vs_strength(&rows, e, &evidence, &out.join("robust_vs_strength.svg"))?);
    }
    plot("norms_vs_strength.svg", "Layer norms against β", plots::norms_vs_strength(&rows, &out.join("norms_vs_strength.svg"))?);
    if let Some(e) = &eps {
        plot("clean_vs_robust.svg", "Clean against robust accuracy", plots::clean_vs_robust(&rows, e, &evidence, &out.join("clean_vs_robust.svg"))?);
    }
    let pair = match &compare {
        Some((a, b)) => {
            let find = |id: &str| rows.iter().find(|r| r.cell_id == id).cloned().with_context(|| format!("--compare: no row with cell id {id} in {}", results_csv.display()));
            Some((find(a)?, find(b)?))
        }
        None => plots::pick_layer_cells(&rows, &layout),
    };
    if let Some((a, b)) = pair {
        let cell = |r: &results::ResultRow| LayerCell { label: plots::describe(r), norms_csv: layout.cell(&r.plan, &r.cell_id).norms() };
        let caption = format!("Per-layer norms: {} against {}", plots::describe(&a), plots::describe(&b));
        plot("layer_norms.svg", &caption, plots::layer_norms(&cell(&a), &cell(&b), &out.join("layer_norms.svg"))?);
    }
    plot("training_curves.svg", "Training curves", plots::training_curves(&rows, &layout, &out.join("training_curves.svg"))?);

    if matches!(format, Format::Md | Format::Both) {
        let ok = rows.iter().filter(|r| r.status == "ok").count();
        let mut builds: Vec<&str> = rows.iter().map(|r| r.build.as_str()).collect();
        builds.sort();
        builds.dedup();
        let mut md = format!(
            "# normlab report: {plan}\n\nFrom `{}`: {} row(s), {ok} ok, {} not ok; built by normlab {}.\n\
             Accuracies in %; cells averaged over seeds where a setting has several.\n\n",
            results_csv.display(),
            rows.len(),
            rows.len() - ok,
            builds.join(", ")
        );
        for n in &file.notes {
            md.push_str(&format!("Note: {n}\n\n"));
        }
        md.push_str(&table::markdown(&grid, &evidence));
        if !plots_md.is_empty() {
            md.push_str("## Plots\n\n");
            md.push_str(&plots_md);
        }
        let p = out.join("report.md");
        crate::util::atomic_write(&p, md.as_bytes())?;
        written.files.push(p);
    }
    if matches!(format, Format::Latex | Format::Both) {
        let p = out.join("report.tex");
        crate::util::atomic_write(&p, table::latex(&grid).as_bytes())?;
        written.files.push(p);
    }
    Ok(written)
}
