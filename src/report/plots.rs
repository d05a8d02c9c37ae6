//! SVG plots of a results file (plotters): robust accuracy against the regularization
//! strength, norms against β, clean against robust accuracy, per-layer norms of two cells,
//! and training curves. Each plot reads only the results rows and the cells' own CSV files
//! (norms.csv, metrics.csv) and is skipped when it has nothing to show.

use super::evidence::Evidence;
use super::paper::{self, same_strength};
use super::setting;
use crate::results::read::{eps_label, ResultRow};
use crate::stats::Interval;
use crate::results::Layout;
use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

const FONT: &str = "sans-serif";
const REGS: [&str; 5] = ["plain", "wd", "svc", "nd-l1", "nd-linf"];

/// The colour of a regularizer, the same in every plot; a variant of it (a label with notes,
/// `nd-l1 (coverage all)`) in a darker shade of the same colour.
fn color(reg: &str) -> RGBColor {
    let (base, notes) = setting::split(reg);
    let c = match base {
        "plain" => RGBColor(40, 40, 40),
        "wd" => RGBColor(31, 119, 180),
        "svc" => RGBColor(255, 127, 14),
        "nd-l1" => RGBColor(44, 160, 44),
        "nd-linf" => RGBColor(214, 39, 40),
        _ => RGBColor(148, 103, 189),
    };
    match notes {
        Some(_) => RGBColor(c.0 / 2, c.1 / 2, c.2 / 2),
        None => c,
    }
}

/// A regularizer's name in legends, with its label's notes.
fn reg_name(reg: &str) -> String {
    let (base, notes) = setting::split(reg);
    let name = match base {
        "plain" => "plain",
        "wd" => "weight decay",
        "svc" => "SVC",
        "nd-l1" => "ℓ1 norm decay",
        "nd-linf" => "ℓ∞ norm decay",
        other => other,
    };
    match notes {
        Some(n) => format!("{name} ({n})"),
        None => name.to_string(),
    }
}

/// The regularizer labels present in `rows` whose own name is one of `bases`, in that order,
/// the published protocol's before its variants.
fn labels(rows: &[ResultRow], bases: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for b in bases {
        let mut these: Vec<String> = rows.iter().filter(|r| setting::split(&r.regularizer).0 == *b).map(|r| r.regularizer.clone()).collect();
        these.sort_by_key(|l| (l.contains(" ("), l.clone()));
        these.dedup();
        out.extend(these);
    }
    out
}

/// The width in pixels that `text` takes at plotters font size `size` (rendered at
/// size/1.24 px, as plotters' SVG backend writes it), bounded from above with per-character
/// widths a little above DejaVu Sans' (the font browsers on Linux use for sans-serif), so
/// layout that fits this estimate fits the rendered text.
pub fn text_width(text: &str, size: f64) -> f64 {
    let px = size / 1.24;
    text.chars()
        .map(|c| match c {
            ' ' => 0.33,
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | 'I' | '(' | ')' | '[' | ']' | '/' | 'f' | 't' | 'r' => 0.45,
            'm' | 'w' | 'M' | 'W' | '%' | '—' => 1.0,
            c if c.is_ascii_uppercase() || c.is_ascii_digit() => 0.78,
            c if c.is_ascii() => 0.64,
            _ => 0.9,
        })
        .sum::<f64>()
        * px
}

/// The largest font size up to `preferred` (and at least 10) at which `text` fits `width`
/// pixels.
fn fitting_size(text: &str, width: f64, preferred: f64) -> f64 {
    let w = text_width(text, preferred);
    if w <= width {
        preferred
    } else {
        (preferred * width / w).floor().max(10.0)
    }
}

/// The standard-trained models present, in the paper's order.
fn models(rows: &[ResultRow]) -> Vec<String> {
    let mut ms: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| r.adv == "none") {
        if !ms.contains(&r.model) {
            ms.push(r.model.clone());
        }
    }
    ms.sort_by_key(|m| paper::MODELS.iter().position(|x| x == m).unwrap_or(99));
    ms
}

/// Mean of a value over the ok rows of one (model, regularizer, strength), standard training.
fn mean_of(rows: &[ResultRow], model: &str, reg: &str, s: Option<f64>, f: &dyn Fn(&ResultRow) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r.adv == "none" && r.status == "ok" && r.model == model && r.regularizer == reg && same_strength(r.strength, s))
        .filter_map(f)
        .filter(|x| x.is_finite())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// (strength, value) of a regularizer's ok cells, sorted by strength.
fn curve(rows: &[ResultRow], model: &str, reg: &str, f: &dyn Fn(&ResultRow) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut ss: Vec<f64> = rows.iter().filter(|r| r.model == model && r.regularizer == reg).filter_map(|r| r.strength).collect();
    ss.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    ss.dedup_by(|a, b| same_strength(Some(*a), Some(*b)));
    ss.into_iter().filter_map(|s| mean_of(rows, model, reg, Some(s), f).map(|v| (s, v))).collect()
}

/// The error bar of one plotted accuracy (%): the 95% Wilson interval of its one ok row
/// (`interval`), or mean ± sd over several seeds.
fn error_bar(rows: &[&ResultRow], f: &dyn Fn(&ResultRow) -> Option<f64>, interval: &dyn Fn(&ResultRow) -> Option<Interval>) -> Option<(f64, f64)> {
    match rows {
        [] => None,
        [one] => interval(one).map(|i| (100.0 * i.lo, 100.0 * i.hi)),
        several => crate::stats::mean_sd(several.iter().filter_map(|r| f(r))).map(|m| (m.mean - m.sd, m.mean + m.sd)),
    }
}

/// [`curve`] of an accuracy (%, `f` as a fraction) with each point's [`error_bar`].
fn bar_curve(rows: &[ResultRow], model: &str, reg: &str, f: &dyn Fn(&ResultRow) -> Option<f64>, interval: &dyn Fn(&ResultRow) -> Option<Interval>) -> Vec<Bar> {
    let pct = |r: &ResultRow| f(r).map(|x| 100.0 * x);
    curve(rows, model, reg, &pct)
        .into_iter()
        .map(|(s, v)| {
            let ok: Vec<&ResultRow> = rows
                .iter()
                .filter(|r| r.adv == "none" && r.status == "ok" && r.model == model && r.regularizer == reg && same_strength(r.strength, Some(s)))
                .filter(|r| pct(r).is_some_and(f64::is_finite))
                .collect();
            (s, v, error_bar(&ok, &pct, interval))
        })
        .collect()
}

fn paper_curve(model: &str, reg: &str, eps: &str, clean: bool) -> Vec<(f64, f64)> {
    if eps != paper::PAPER_EPS_COLUMN {
        return Vec::new();
    }
    let mut v: Vec<(f64, f64)> = paper::COLUMNS
        .iter()
        .filter(|(r, _)| *r == reg)
        .filter_map(|&(r, s)| s.and_then(|s| paper::published(model, r, Some(s)).map(|p| (s, if clean { p.0 } else { p.1 }))))
        .collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    v
}

/// A tick label with three significant digits and no trailing zeros: 0.0123, 1.5, 40, 1200.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let t = format!("{v:.digits$}");
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

/// One entry of a figure-wide legend.
struct Key {
    label: String,
    color: RGBColor,
    width: u32,
    dashed: bool,
    dot: Option<bool>,
}

impl Key {
    fn new(label: impl Into<String>, color: RGBColor, width: u32, dashed: bool, dot: Option<bool>) -> Self {
        Self { label: label.into(), color, width, dashed, dot }
    }
}

/// Draws a legend across a band above the panels (so it never hides data), wrapping lines.
fn legend_band(area: &Area, keys: &[Key]) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let widths: Vec<i32> = keys.iter().map(|k| 44 + text_width(&k.label, 14.0).ceil() as i32).collect();
    let mut lines: Vec<Vec<usize>> = vec![Vec::new()];
    let mut used = 0;
    for (i, kw) in widths.iter().enumerate() {
        if used + kw > w as i32 - 40 && !lines.last().expect("a line").is_empty() {
            lines.push(Vec::new());
            used = 0;
        }
        lines.last_mut().expect("a line").push(i);
        used += kw;
    }
    for (li, line) in lines.iter().enumerate() {
        let total: i32 = line.iter().map(|&i| widths[i]).sum();
        let mut x = ((w as i32 - total) / 2).max(10);
        let y = 14 + 24 * li as i32;
        for &i in line {
            let k = &keys[i];
            let style = k.color.stroke_width(k.width);
            if k.dashed {
                for s in 0..3 {
                    area.draw(&PathElement::new(vec![(x + 10 * s, y), (x + 10 * s + 6, y)], style)).map_err(perr)?;
                }
            } else {
                area.draw(&PathElement::new(vec![(x, y), (x + 26, y)], style)).map_err(perr)?;
            }
            if let Some(filled) = k.dot {
                let st = if filled { k.color.filled() } else { k.color.stroke_width(1) };
                area.draw(&Circle::new((x + 13, y), 4, st)).map_err(perr)?;
            }
            area.draw(&Text::new(k.label.clone(), (x + 34, y - 8), (FONT, 14))).map_err(perr)?;
            x += widths[i];
        }
    }
    Ok(())
}

/// The legend of the strength figures: plain, then the regularizer labels `regs`.
fn strength_keys(regs: &[String], with_paper: bool) -> Vec<Key> {
    let mut keys = vec![Key::new("plain", color("plain"), 2, true, None)];
    if with_paper {
        keys.push(Key::new("plain, paper", RGBColor(150, 150, 150), 1, true, None));
    }
    for reg in regs {
        keys.push(Key::new(reg_name(reg), color(reg), 2, false, Some(true)));
    }
    if with_paper {
        keys.push(Key::new("the paper's value (same colour, dashed, hollow)", RGBColor(150, 150, 150), 1, true, Some(false)));
    }
    keys
}

fn span(values: impl Iterator<Item = f64>, pad: f64, lo_bound: f64, hi_bound: f64) -> (f64, f64) {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (lo_bound, hi_bound);
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    ((lo - pad).max(lo_bound), (hi + pad).min(hi_bound).max((lo - pad).max(lo_bound) + 1.0))
}

/// A low..high range of a plotted value (an error bar), %.
type Span = (f64, f64);

/// One plotted point: strength, value, and its error bar (low, high) if known.
type Bar = (f64, f64, Option<Span>);

/// One regularizer's curve in a panel: its label, our points with their error bars and the
/// paper's (strength, value) points.
type Curve = (String, Vec<Bar>, Vec<(f64, f64)>);

/// One line of a training-curve panel: regularizer label, legend text, (epoch, accuracy).
type TrainLine = (String, String, Vec<(f64, f64)>);

/// Draws one panel of value against strength: a line per regularizer in `regs` (ours solid
/// with filled dots, the paper's dashed with hollow dots), plain as a horizontal line.
#[allow(clippy::too_many_arguments)]
fn strength_panel(
    area: &Area,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    log_x: bool,
    log_y: bool,
    series: &[Curve],
    plain: (Option<f64>, Option<f64>),
) -> Result<()> {
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0).chain(s.2.iter().map(|p| p.0)));
    let bars = series.iter().flat_map(|s| s.1.iter().flat_map(|p| p.2.map(|(lo, hi)| [lo, hi]).into_iter().flatten()));
    let ys: Vec<f64> =
        series.iter().flat_map(|s| s.1.iter().map(|p| p.1).chain(s.2.iter().map(|p| p.1))).chain(bars).chain(plain.0).chain(plain.1).collect();
    let (x0, x1) = if log_x {
        let (lo, hi) = span(xs.map(f64::log10), 0.3, -12.0, 3.0);
        (10f64.powf(lo), 10f64.powf(hi))
    } else {
        span(xs, 0.25, 0.0, 1e9)
    };
    let (y0, y1) = if log_y {
        let (lo, hi) = span(ys.iter().filter(|y| **y > 0.0).map(|y| y.log10()), 0.1, -12.0, 300.0);
        (10f64.powf(lo), 10f64.powf(hi))
    } else if y_desc.contains('%') {
        let (lo, hi) = span(ys.iter().copied(), 4.0, 0.0, 100.0);
        (lo.floor(), hi.ceil())
    } else {
        // Norms: pad by a tenth of the spread (or of the value when all are equal).
        let (lo, hi) = span(ys.iter().copied(), 0.0, 0.0, f64::INFINITY);
        let hi = if hi.is_finite() { hi } else { lo + 1.0 };
        let pad = 0.1 * (hi - lo).max(0.1 * hi.abs()).max(1e-9);
        ((lo - pad).max(0.0), hi + pad)
    };
    let mut b = ChartBuilder::on(area);
    let width = area.dim_in_pixel().0 as f64 - 24.0;
    b.caption(title, (FONT, fitting_size(title, width, 18.0))).margin(12).x_label_area_size(42).y_label_area_size(58);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(8)
                .y_labels(8)
                .x_label_formatter(&|x| if log_x { format!("{x:.0e}") } else { tick(*x) })
                .y_label_formatter(&|y| tick(*y))
                .light_line_style(RGBColor(247, 247, 247))
                .bold_line_style(RGBColor(222, 222, 222))
                .max_light_lines(4)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(perr)?;
            let black = color("plain");
            if let Some(p) = plain.0 {
                chart
                    .draw_series(DashedLineSeries::new(vec![(x0, p), (x1, p)], 8, 5, black.stroke_width(2)))
                    .map_err(perr)?
                    .label("plain")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], black.stroke_width(2)));
            }
            if let Some(p) = plain.1 {
                let grey = RGBColor(150, 150, 150);
                chart
                    .draw_series(DashedLineSeries::new(vec![(x0, p), (x1, p)], 3, 4, grey.stroke_width(1)))
                    .map_err(perr)?
                    .label("plain (paper)")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(1)));
            }
            for (reg, ours, theirs) in series {
                let c = color(reg);
                if !ours.is_empty() {
                    let pts: Vec<(f64, f64)> = ours.iter().map(|p| (p.0, p.1)).collect();
                    chart
                        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                        .map_err(perr)?
                        .label(reg_name(reg))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                    chart
                        .draw_series(ours.iter().filter_map(|&(x, v, bar)| bar.map(|(lo, hi)| ErrorBar::new_vertical(x, lo.max(y0), v, hi.min(y1), c.stroke_width(1), 8))))
                        .map_err(perr)?;
                    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(perr)?;
                }
                if !theirs.is_empty() {
                    let light = c.mix(0.6);
                    chart
                        .draw_series(DashedLineSeries::new(theirs.clone(), 5, 4, light.stroke_width(1)))
                        .map_err(perr)?
                        .label(format!("{} (paper)", reg_name(reg)))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], light.stroke_width(1)));
                    chart.draw_series(theirs.iter().map(|&p| Circle::new(p, 3, c.stroke_width(1)))).map_err(perr)?;
                }
            }
        }};
    }
    match (log_x, log_y) {
        (true, true) => body!(b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()).map_err(perr)?),
        (true, false) => body!(b.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(perr)?),
        (false, true) => body!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(perr)?),
        (false, false) => body!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(perr)?),
    }
    Ok(())
}

/// A figure of `size` pixels with `title` across its top, shrunk to fit the width.
fn titled<'a>(path: &'a Path, size: (u32, u32), title: &str) -> Result<Area<'a>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    root.titled(title, (FONT, fitting_size(title, size.0 as f64 - 24.0, 22.0))).map_err(perr)
}

/// Robust accuracy against β (log axis) and against SVC's C, one row per model, plain and the
/// paper's numbers as reference lines; each of our points with its error bar (the 95% Wilson
/// interval of one seed from `evidence`, mean ± sd over several).
pub fn robust_vs_strength(rows: &[ResultRow], eps: &str, evidence: &Evidence, path: &Path) -> Result<bool> {
    let ms = models(rows);
    let beta_labels = labels(rows, &["wd", "nd-l1", "nd-linf"]);
    let svc_labels = labels(rows, &["svc"]);
    let (with_beta, with_svc) = (!beta_labels.is_empty(), !svc_labels.is_empty());
    if ms.is_empty() || !(with_beta || with_svc) {
        return Ok(false);
    }
    let cols = usize::from(with_beta) + usize::from(with_svc);
    let robust = |r: &ResultRow| r.robust_at(eps);
    let interval = |r: &ResultRow| evidence.robust(&r.cell_id, eps).and_then(|m| m.interval());
    let root = titled(path, (560 * cols as u32, 380 * ms.len() as u32 + 110), &format!("Robust accuracy (%) at ε = {} against strength, 95% intervals", eps_label(eps)))?;
    let (band, body) = root.split_vertically(64);
    let mut shown = beta_labels.clone();
    shown.extend(svc_labels.iter().cloned());
    legend_band(&band, &strength_keys(&shown, eps == paper::PAPER_EPS_COLUMN))?;
    let panels = body.split_evenly((ms.len(), cols));
    for (mi, m) in ms.iter().enumerate() {
        let pct = |r: &ResultRow| robust(r).map(|x| 100.0 * x);
        let plain = (mean_of(rows, m, "plain", None, &pct), paper::published(m, "plain", None).filter(|_| eps == paper::PAPER_EPS_COLUMN).map(|p| p.1));
        let series_of = |ls: &[String]| -> Vec<Curve> {
            ls.iter()
                .map(|reg| (reg.clone(), bar_curve(rows, m, reg, &robust, &interval), paper_curve(m, reg, eps, false)))
                .filter(|s| !s.1.is_empty())
                .collect()
        };
        let mut col = 0;
        if with_beta {
            strength_panel(&panels[mi * cols + col], &format!("{m}: weight decay and norm decay"), "β (log scale)", "robust accuracy (%)", true, false, &series_of(&beta_labels), plain)?;
            col += 1;
        }
        if with_svc {
            strength_panel(&panels[mi * cols + col], &format!("{m}: singular value clipping"), "clip value C", "robust accuracy (%)", false, false, &series_of(&svc_labels), plain)?;
        }
    }
    root.present().map_err(perr)?;
    Ok(true)
}

/// Σ ℓ1 and Σ ℓ∞ over layers against β, one row per model, plain as a line (log axes).
pub fn norms_vs_strength(rows: &[ResultRow], path: &Path) -> Result<bool> {
    let ms = models(rows);
    let shown = labels(rows, &["wd", "nd-l1", "nd-linf"]);
    let has = rows.iter().any(|r| r.l1_sum.is_some() && shown.contains(&r.regularizer));
    if ms.is_empty() || !has {
        return Ok(false);
    }
    let root = titled(path, (1120, 380 * ms.len() as u32 + 90), "Layer norms of the final weights against β (sum over conv and linear layers)")?;
    let (band, body) = root.split_vertically(40);
    legend_band(&band, &strength_keys(&shown, false))?;
    let panels = body.split_evenly((ms.len(), 2));
    for (mi, m) in ms.iter().enumerate() {
        for (k, (name, f)) in [("Σ ℓ1", (|r: &ResultRow| r.l1_sum) as fn(&ResultRow) -> Option<f64>), ("Σ ℓ∞", |r: &ResultRow| r.linf_sum)].into_iter().enumerate() {
            let series: Vec<Curve> = shown
                .iter()
                .map(|reg| (reg.clone(), curve(rows, m, reg, &f).into_iter().map(|(x, v)| (x, v, None)).collect(), Vec::new()))
                .filter(|s: &Curve| !s.1.is_empty())
                .collect();
            let plain = (mean_of(rows, m, "plain", None, &f), None);
            strength_panel(&panels[mi * 2 + k], &format!("{m}: {name} of layer norms"), "β (log scale)", name, true, false, &series, plain)?;
        }
    }
    root.present().map_err(perr)?;
    Ok(true)
}

/// Clean against robust accuracy of every ok cell: colour = regularizer, shape = model, error
/// bars the 95% Wilson intervals of both (from `evidence`); the paper's cells in grey for
/// reference.
pub fn clean_vs_robust(rows: &[ResultRow], eps: &str, evidence: &Evidence, path: &Path) -> Result<bool> {
    let pts: Vec<(&ResultRow, f64, f64)> = rows
        .iter()
        .filter(|r| r.status == "ok")
        .filter_map(|r| Some((r, 100.0 * r.clean_acc?, 100.0 * r.robust_at(eps)?)))
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .collect();
    if pts.is_empty() {
        return Ok(false);
    }
    let paper_pts: Vec<(f64, f64)> = if eps == paper::PAPER_EPS_COLUMN { paper::VALUES.iter().flatten().copied().collect() } else { Vec::new() };
    let pct = |i: Interval| (100.0 * i.lo, 100.0 * i.hi);
    // Per point: its clean and its robust accuracy's 95% interval, %.
    let bars: Vec<(Option<Span>, Option<Span>)> = pts
        .iter()
        .map(|(r, _, _)| {
            let c = evidence.clean(&r.cell_id).and_then(|m| m.interval()).map(pct);
            let rb = evidence.robust(&r.cell_id, eps).and_then(|m| m.interval()).map(pct);
            (c, rb)
        })
        .collect();
    let xs_bars = bars.iter().filter_map(|b| b.0).flat_map(|(lo, hi)| [lo, hi]);
    let ys_bars = bars.iter().filter_map(|b| b.1).flat_map(|(lo, hi)| [lo, hi]);
    let (x0, x1) = span(pts.iter().map(|p| p.1).chain(paper_pts.iter().map(|p| p.0)).chain(xs_bars), 3.0, 0.0, 100.0);
    let (y0, y1) = span(pts.iter().map(|p| p.2).chain(paper_pts.iter().map(|p| p.1)).chain(ys_bars), 3.0, 0.0, 100.0);
    let root = titled(path, (860, 640), &format!("Clean against robust accuracy (ε = {})", eps_label(eps)))?;
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(58)
        .build_cartesian_2d(x0.floor()..x1.ceil(), y0.floor()..y1.ceil())
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("clean accuracy (%)")
        .y_desc("robust accuracy (%)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(RGBColor(247, 247, 247))
                .bold_line_style(RGBColor(222, 222, 222))
                .max_light_lines(4)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(perr)?;
    if !paper_pts.is_empty() {
        let grey = RGBColor(170, 170, 170);
        chart
            .draw_series(paper_pts.iter().map(|&p| Circle::new(p, 3, grey.stroke_width(1))))
            .map_err(perr)?
            .label("paper, all 68 cells")
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, grey.stroke_width(1)));
    }
    let ms = {
        let mut v: Vec<String> = Vec::new();
        for p in &pts {
            if !v.contains(&p.0.model) {
                v.push(p.0.model.clone());
            }
        }
        v
    };
    let shape = |m: &str| ms.iter().position(|x| x == m).unwrap_or(0) % 4;
    for (p, (cb, rb)) in pts.iter().zip(&bars) {
        let c = color(&p.0.regularizer).stroke_width(1);
        if let Some((lo, hi)) = rb {
            chart.draw_series(std::iter::once(ErrorBar::new_vertical(p.1, *lo, p.2, *hi, c, 6))).map_err(perr)?;
        }
        if let Some((lo, hi)) = cb {
            chart.draw_series(std::iter::once(ErrorBar::new_horizontal(p.2, *lo, p.1, *hi, c, 6))).map_err(perr)?;
        }
    }
    for p in &pts {
        let c = color(&p.0.regularizer).filled();
        let at = (p.1, p.2);
        match shape(&p.0.model) {
            0 => chart.draw_series(std::iter::once(Circle::new(at, 5, c))).map_err(perr)?,
            1 => chart.draw_series(std::iter::once(TriangleMarker::new(at, 6, c))).map_err(perr)?,
            2 => chart.draw_series(std::iter::once(Cross::new(at, 5, color(&p.0.regularizer).stroke_width(2)))).map_err(perr)?,
            _ => chart.draw_series(std::iter::once(EmptyElement::at(at) + Rectangle::new([(-4, -4), (4, 4)], c))).map_err(perr)?,
        };
    }
    // Every drawn point and error-bar end, for placing the legend where it hides least.
    let mut occupied: Vec<(f64, f64)> = pts.iter().map(|p| (p.1, p.2)).chain(paper_pts.iter().copied()).collect();
    for (p, (cb, rb)) in pts.iter().zip(&bars) {
        occupied.extend(rb.iter().flat_map(|&(lo, hi)| [(p.1, lo), (p.1, hi)]));
        occupied.extend(cb.iter().flat_map(|&(lo, hi)| [(lo, p.2), (hi, p.2)]));
    }
    let present: Vec<ResultRow> = pts.iter().map(|p| p.0.clone()).collect();
    for reg in &labels(&present, &REGS) {
        let c = color(reg);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(perr)?
            .label(reg_name(reg))
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
    }
    let black = RGBColor(60, 60, 60);
    for (i, m) in ms.iter().enumerate() {
        let leg = chart.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>()).map_err(perr)?.label(format!("model {m}"));
        match i % 4 {
            0 => leg.legend(move |(x, y)| Circle::new((x + 8, y), 5, black.filled())),
            1 => leg.legend(move |(x, y)| TriangleMarker::new((x + 8, y), 6, black.filled())),
            2 => leg.legend(move |(x, y)| Cross::new((x + 8, y), 5, black.stroke_width(2))),
            _ => leg.legend(move |(x, y)| Rectangle::new([(x + 3, y - 4), (x + 11, y + 4)], black.filled())),
        };
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 13))
        .position(emptiest_corner(&occupied, (x0.floor(), x1.ceil()), (y0.floor(), y1.ceil())))
        .draw()
        .map_err(perr)?;
    root.present().map_err(perr)?;
    Ok(true)
}

/// The corner of the plot area (x and y ranges) holding the fewest of `points`, for a legend
/// box that covers about 40% of the width and 35% of the height there (ties: upper left,
/// upper right, lower left, lower right).
fn emptiest_corner(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let (w, h) = (x.1 - x.0, y.1 - y.0);
    let (left, right) = (x.0 + 0.4 * w, x.1 - 0.4 * w);
    let (low, high) = (y.0 + 0.35 * h, y.1 - 0.35 * h);
    let count = |inside: &dyn Fn(f64, f64) -> bool| points.iter().filter(|p| inside(p.0, p.1)).count();
    let corners = [
        (SeriesLabelPosition::UpperLeft, count(&|px, py| px <= left && py >= high)),
        (SeriesLabelPosition::UpperRight, count(&|px, py| px >= right && py >= high)),
        (SeriesLabelPosition::LowerLeft, count(&|px, py| px <= left && py <= low)),
        (SeriesLabelPosition::LowerRight, count(&|px, py| px >= right && py <= low)),
    ];
    corners.into_iter().min_by_key(|c| c.1).map(|c| c.0).unwrap_or(SeriesLabelPosition::UpperLeft)
}

/// Reads a numeric column of a cell's CSV file (metrics.csv, norms.csv), with an optional
/// filter column; None if the file or column is absent.
fn csv_column(path: &Path, column: &str, keep: &dyn Fn(&csv::StringRecord, &csv::StringRecord) -> bool) -> Option<Vec<f64>> {
    let mut r = csv::Reader::from_path(path).ok()?;
    let h = r.headers().ok()?.clone();
    let c = h.iter().position(|x| x == column)?;
    Some(r.records().flatten().filter(|rec| keep(&h, rec)).filter_map(|rec| rec.get(c)?.parse().ok()).collect())
}

/// A cell shown in the per-layer plot: its description and its norms.csv.
#[derive(Debug, Clone)]
pub struct LayerCell {
    /// Legend text.
    pub label: String,
    /// The cell's norms.csv.
    pub norms_csv: PathBuf,
}

/// Per-layer ℓ1 and ℓ∞ norms (conv and linear layers, in network order) of two cells.
pub fn layer_norms(a: &LayerCell, b: &LayerCell, path: &Path) -> Result<bool> {
    let keep = |h: &csv::StringRecord, rec: &csv::StringRecord| {
        h.iter().position(|x| x == "kind").and_then(|k| rec.get(k)).is_some_and(|k| k == "conv" || k == "linear")
    };
    let load = |c: &LayerCell, col: &str| csv_column(&c.norms_csv, col, &keep).unwrap_or_default();
    let data = [("ℓ1", load(a, "l1"), load(b, "l1")), ("ℓ∞", load(a, "linf"), load(b, "linf"))];
    if data.iter().all(|d| d.1.is_empty() || d.2.is_empty()) {
        return Ok(false);
    }
    let root = titled(path, (1120, 460), "Per-layer operator norms of two trained models (conv and linear layers)")?;
    let panels = root.split_evenly((1, 2));
    for (k, (name, va, vb)) in data.iter().enumerate() {
        let n = va.len().max(vb.len()).max(1);
        let all: Vec<f64> = va.iter().chain(vb).copied().filter(|v| *v > 0.0).collect();
        let (lo, hi) = span(all.iter().map(|v| v.log10()), 0.15, -12.0, 300.0);
        let mut chart = ChartBuilder::on(&panels[k])
            .caption(format!("{name} norm per layer"), (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d(0f64..(n as f64 - 1.0).max(1.0), (10f64.powf(lo)..10f64.powf(hi)).log_scale())
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("layer (network order)")
            .y_desc(format!("{name} norm (log scale)"))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| tick(*y))
            .light_line_style(RGBColor(247, 247, 247))
                .bold_line_style(RGBColor(222, 222, 222))
                .max_light_lines(4)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(perr)?;
        for (vals, cell, c) in [(va, a, RGBColor(31, 119, 180)), (vb, b, RGBColor(214, 39, 40))] {
            let pts: Vec<(f64, f64)> = vals.iter().enumerate().map(|(i, v)| (i as f64, *v)).filter(|p| p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(perr)?
                .label(cell.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(perr)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(true)
}

/// Test accuracy per epoch from each cell's metrics.csv, one panel per model, a line per
/// cell coloured by regularizer.
pub fn training_curves(rows: &[ResultRow], layout: &Layout, path: &Path) -> Result<bool> {
    let mut per_model: Vec<(String, Vec<TrainLine>)> = Vec::new();
    // Lines in table order: regularizer, then strongest setting first.
    let order = |r: &ResultRow| {
        let s = r.strength.unwrap_or(0.0);
        (REGS.iter().position(|x| *x == r.regularizer).unwrap_or(REGS.len()), if r.regularizer == "svc" { s } else { -s })
    };
    let mut sorted: Vec<&ResultRow> = rows.iter().collect();
    sorted.sort_by(|a, b| order(a).partial_cmp(&order(b)).unwrap_or(std::cmp::Ordering::Equal));
    for r in sorted {
        let f = layout.cell(&r.plan, &r.cell_id).metrics();
        let all = |_: &csv::StringRecord, _: &csv::StringRecord| true;
        let (Some(ep), Some(acc)) = (csv_column(&f, "epoch", &all), csv_column(&f, "test_acc", &all)) else { continue };
        if ep.is_empty() || ep.len() != acc.len() {
            continue;
        }
        let scale = if acc.iter().all(|a| *a <= 1.0) { 100.0 } else { 1.0 };
        let pts: Vec<(f64, f64)> = ep.iter().zip(&acc).map(|(e, a)| (*e, a * scale)).collect();
        let key = if r.adv == "none" { r.model.clone() } else { format!("{} ({})", r.model, r.adv) };
        let label = match r.strength {
            Some(s) if r.regularizer == "svc" => format!("{} C={s}", reg_name(&r.regularizer)),
            Some(s) => format!("{} β={s:e}", reg_name(&r.regularizer)),
            None => reg_name(&r.regularizer).to_string(),
        };
        let label = if r.seed.is_empty() || r.seed == "1" { label } else { format!("{label} seed {}", r.seed) };
        match per_model.iter_mut().find(|m| m.0 == key) {
            Some(m) => m.1.push((r.regularizer.clone(), label, pts)),
            None => per_model.push((key, vec![(r.regularizer.clone(), label, pts)])),
        }
    }
    if per_model.is_empty() {
        return Ok(false);
    }
    let cols = per_model.len().min(2);
    let nrows = per_model.len().div_ceil(cols);
    let root = titled(path, (600 * cols as u32, 420 * nrows as u32 + 50), "Test accuracy during training (from each cell's metrics.csv)")?;
    let panels = root.split_evenly((nrows, cols));
    for (i, (model, lines)) in per_model.iter().enumerate() {
        let max_ep = lines.iter().flat_map(|l| l.2.iter().map(|p| p.0)).fold(1.0, f64::max);
        let (y0, y1) = span(lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)), 3.0, 0.0, 100.0);
        let mut chart = ChartBuilder::on(&panels[i])
            .caption(model, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(1f64.min(max_ep - 1.0).max(0.0)..max_ep, y0.floor()..y1.ceil())
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("test accuracy (%)")
            .x_labels((max_ep as usize).clamp(2, 12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(RGBColor(247, 247, 247))
                .bold_line_style(RGBColor(222, 222, 222))
                .max_light_lines(4)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(perr)?;
        // Within a regularizer, weaker settings are drawn lighter.
        for (reg, label, pts) in lines {
            let same: Vec<&String> = lines.iter().filter(|l| &l.0 == reg).map(|l| &l.1).collect();
            let rank = same.iter().position(|l| *l == label).unwrap_or(0);
            let c = color(reg).mix(1.0 - 0.5 * rank as f64 / same.len().max(1) as f64);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(perr)?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            if pts.len() == 1 {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(perr)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT, 11))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(true)
}

/// Picks two cells for the per-layer comparison: a standard plain cell and an adversarially
/// trained one of the same model if any (paper §7), else the plain cell and the strongest
/// norm-decay (or other) cell of the first model with norms.csv files.
pub fn pick_layer_cells(rows: &[ResultRow], layout: &Layout) -> Option<(ResultRow, ResultRow)> {
    let has = |r: &&ResultRow| r.status == "ok" && layout.cell(&r.plan, &r.cell_id).norms().exists();
    let usable: Vec<&ResultRow> = rows.iter().filter(has).collect();
    for plain in usable.iter().filter(|r| r.regularizer == "plain" && r.adv == "none") {
        let same_model = |r: &&&ResultRow| r.model == plain.model && r.cell_id != plain.cell_id;
        if let Some(adv) = usable.iter().filter(same_model).find(|r| r.adv != "none" && r.regularizer == "plain") {
            return Some(((*plain).clone(), (**adv).clone()));
        }
        let mut others: Vec<&&ResultRow> = usable.iter().filter(same_model).filter(|r| r.adv == "none").collect();
        others.sort_by_key(|r| match setting::split(&r.regularizer).0 {
            "nd-linf" => 0,
            "nd-l1" => 1,
            "wd" => 2,
            _ => 3,
        });
        if let Some(first) = others.first() {
            let reg = first.regularizer.clone();
            let strongest = others
                .iter()
                .filter(|r| r.regularizer == reg)
                .max_by(|a, b| {
                    let key = |r: &ResultRow| if r.regularizer == "svc" { -r.strength.unwrap_or(0.0) } else { r.strength.unwrap_or(0.0) };
                    key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal)
                })
                .expect("non-empty");
            return Some(((*plain).clone(), (***strongest).clone()));
        }
    }
    None
}

/// Describes a cell for legends.
pub fn describe(r: &ResultRow) -> String {
    let mut s = format!("{} {}", r.model, r.regularizer);
    if let Some(v) = r.strength {
        s.push_str(&if r.regularizer == "svc" { format!(" C={v}") } else { format!(" β={v:e}") });
    }
    if r.adv != "none" {
        s.push_str(&format!(" ({})", r.adv));
    }
    s
}

/// Checks that a plot file was written (for callers that list them).
pub fn exists(path: &Path) -> Result<()> {
    std::fs::metadata(path).map(|_| ()).with_context(|| format!("{} was not written", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        // Points in the upper left (as results/short.csv's vgg11 cells against the paper's
        // ResNets in the lower right): the legend goes to the lower left.
        let pts = [(1.0, 9.0), (2.0, 8.5), (9.0, 1.0), (8.0, 2.0), (9.5, 9.5)];
        assert!(matches!(emptiest_corner(&pts, (0.0, 10.0), (0.0, 10.0)), SeriesLabelPosition::LowerLeft));
        // Nothing anywhere: upper left.
        assert!(matches!(emptiest_corner(&[], (0.0, 10.0), (0.0, 10.0)), SeriesLabelPosition::UpperLeft));
        let pts = [(1.0, 9.0), (1.0, 1.0), (9.0, 1.0)];
        assert!(matches!(emptiest_corner(&pts, (0.0, 10.0), (0.0, 10.0)), SeriesLabelPosition::UpperRight));
    }
}
