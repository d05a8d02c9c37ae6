//! Every text of every SVG plot the report draws must lie inside its canvas. The text is
//! measured as a browser would draw it: each glyph's advance and ink box from DejaVu Sans (the
//! font Debian's fontconfig gives "sans-serif"; package fonts-dejavu-core), at the SVG's own
//! font size, anchor, baseline shift and rotation. Plots are rendered from the committed
//! results (results/short.csv, results/demo.csv) and from fake grids whose canvases are the
//! narrowest (one model, SVC only) and whose labels are the longest (variants with notes).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    let exe = std::env::var("NORMLAB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_normlab").to_string());
    let mut c = Command::new(exe);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// The font, or `None` (the test then says SKIPPED).
fn font_bytes() -> Option<Vec<u8>> {
    let candidates = [std::env::var("NORMLAB_TEST_FONT").unwrap_or_default(), "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_string()];
    candidates.iter().filter(|p| !p.is_empty()).find_map(|p| std::fs::read(p).ok())
}

/// Where a text's ink lies, in the canvas' pixels.
#[derive(Debug)]
struct Extent {
    text: String,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

fn number(s: &str) -> f64 {
    s.trim().parse().unwrap_or_else(|_| panic!("not a number: '{s}'"))
}

/// The ink extent of one `<text>` element.
fn measure(face: &ttf_parser::Face, node: roxmltree::Node) -> Extent {
    let raw: String = node.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
    // SVG's default white-space handling (xml:space="default"): newlines removed, tabs as
    // spaces, leading and trailing spaces stripped, runs of spaces as one.
    let text = raw.replace('\n', "").replace('\t', " ").split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    let upem = face.units_per_em() as f64;
    let size = number(node.attribute("font-size").expect("font-size"));
    let scale = size / upem;
    // Advance widths and the union of the glyphs' ink boxes along the baseline.
    let (mut pen, mut ink_top, mut ink_bottom) = (0.0f64, 0.0f64, 0.0f64);
    for c in text.chars() {
        let Some(g) = face.glyph_index(c) else {
            // A glyph the font lacks: a browser falls back to another font; count a full em.
            pen += upem;
            ink_top = ink_top.max(face.ascender() as f64);
            continue;
        };
        if let Some(b) = face.glyph_bounding_box(g) {
            ink_top = ink_top.max(b.y_max as f64);
            ink_bottom = ink_bottom.min(b.y_min as f64);
        }
        pen += face.glyph_hor_advance(g).unwrap_or(0) as f64;
    }
    let width = pen * scale;
    let x = number(node.attribute("x").unwrap_or("0"));
    let y = number(node.attribute("y").unwrap_or("0"));
    let x_height = face.x_height().map(|h| h as f64).unwrap_or(upem / 2.0) * scale;
    let dy = match node.attribute("dy").unwrap_or("0") {
        d if d.ends_with("em") => number(&d[..d.len() - 2]) * size,
        d if d.ends_with("ex") => number(&d[..d.len() - 2]) * x_height,
        d => number(d),
    };
    let (lx0, lx1) = match node.attribute("text-anchor").unwrap_or("start") {
        "middle" => (-width / 2.0, width / 2.0),
        "end" => (-width, 0.0),
        _ => (0.0, width),
    };
    let baseline = y + dy;
    let (top, bottom) = (baseline - ink_top * scale, baseline - ink_bottom * scale);
    let mut corners = [(x + lx0, top), (x + lx1, top), (x + lx0, bottom), (x + lx1, bottom)];
    if let Some(t) = node.attribute("transform") {
        let args: Vec<f64> = t.trim_start_matches("rotate(").trim_end_matches(')').split(',').map(number).collect();
        let (a, cx, cy) = (args[0].to_radians(), args[1], args[2]);
        for p in &mut corners {
            let (dx, dy) = (p.0 - cx, p.1 - cy);
            *p = (cx + dx * a.cos() - dy * a.sin(), cy + dx * a.sin() + dy * a.cos());
        }
    }
    let xs = corners.iter().map(|p| p.0);
    let ys = corners.iter().map(|p| p.1);
    Extent {
        text,
        x0: xs.clone().fold(f64::INFINITY, f64::min),
        x1: xs.fold(f64::NEG_INFINITY, f64::max),
        y0: ys.clone().fold(f64::INFINITY, f64::min),
        y1: ys.fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The texts of `svg` that leave its canvas (half a pixel of slack).
fn overflowing(face: &ttf_parser::Face, svg: &Path) -> Vec<String> {
    let source = std::fs::read_to_string(svg).unwrap();
    let doc = roxmltree::Document::parse(&source).unwrap_or_else(|e| panic!("{}: {e}", svg.display()));
    let root = doc.root_element();
    let (w, h) = (number(root.attribute("width").unwrap()), number(root.attribute("height").unwrap()));
    let mut bad = Vec::new();
    let mut texts = 0;
    for node in doc.descendants().filter(|n| n.has_tag_name("text")) {
        texts += 1;
        let e = measure(face, node);
        if e.x0 < -0.5 || e.y0 < -0.5 || e.x1 > w + 0.5 || e.y1 > h + 0.5 {
            bad.push(format!("{}: '{}' spans x {:.1}..{:.1}, y {:.1}..{:.1} on a {w}×{h} canvas", svg.display(), e.text, e.x0, e.x1, e.y0, e.y1));
        }
    }
    assert!(texts > 0, "{} has no text", svg.display());
    bad
}

fn svgs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "svg")).collect();
    v.sort();
    v
}

/// A fake-executor grid from `body` (a plan without its name and data), reported into `out`.
fn fake_report(dir: &Path, name: &str, body: &str) -> PathBuf {
    let plan = dir.join(format!("{name}.ron"));
    std::fs::write(&plan, format!("(name: \"{name}\", data: (dir: \"{d}/none\", sources: [\"{p}\"]), {body})", d = dir.display(), p = plan.display())).unwrap();
    let results = dir.join("results");
    ok(bin().args(["run", plan.to_str().unwrap(), "--results", results.to_str().unwrap(), "--executor", "fake"]));
    let out = dir.join(format!("{name}-report"));
    ok(bin().args(["report", results.join(format!("{name}.csv")).to_str().unwrap(), "--out", out.to_str().unwrap()]));
    out
}

#[test]
fn every_plot_text_fits_its_canvas() {
    let Some(font) = font_bytes() else {
        println!("SKIPPED: no DejaVuSans.ttf (install fonts-dejavu-core, or set NORMLAB_TEST_FONT)");
        return;
    };
    let face = ttf_parser::Face::parse(&font, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut outs = Vec::new();
    for csv in ["results/short.csv", "results/demo.csv"] {
        let out = dir.path().join(csv.replace(['/', '.'], "_"));
        ok(bin().args(["report", root.join(csv).to_str().unwrap(), "--out", out.to_str().unwrap()]));
        outs.push(out);
    }
    // The narrowest canvases: one model, SVC only (one 560-pixel column).
    outs.push(fake_report(dir.path(), "narrow", "models: [regnet200mf], regularizers: [svc(clips: [0.5, 2.0], every: 8, final_clip: true)], training: (epochs: 2)"));
    // The longest labels: every model, variants with notes.
    outs.push(fake_report(
        dir.path(),
        "wide",
        "models: [vgg11, resnet18, senet18, regnet200mf], regularizers: [weight_decay(betas: [1e-2]), svc(clips: [1.0], coverage: all, final_clip: true), \
         norm_decay(norm: l1, betas: [1e-2, 1e-3], coverage: all, project_bn: 5.0), norm_decay(norm: linf, betas: [1e-2], include_bn: true, variant: paper)], \
         training: (epochs: 2, seeds: [1, 2])",
    ));
    let mut bad = Vec::new();
    let mut checked = 0;
    for out in &outs {
        for svg in svgs(out) {
            checked += 1;
            bad.extend(overflowing(&face, &svg));
        }
    }
    assert!(checked >= 12, "only {checked} SVGs rendered");
    assert!(bad.is_empty(), "text outside its canvas:\n{}", bad.join("\n"));
}

/// The measurement itself: a title wider than its canvas is caught, one inside is not.
#[test]
fn measuring_catches_text_off_the_canvas() {
    let Some(font) = font_bytes() else {
        println!("SKIPPED: no DejaVuSans.ttf (install fonts-dejavu-core, or set NORMLAB_TEST_FONT)");
        return;
    };
    let face = ttf_parser::Face::parse(&font, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!(r#"<svg width="200" height="100" viewBox="0 0 200 100" xmlns="http://www.w3.org/2000/svg">{body}</svg>"#)).unwrap();
        p
    };
    // "Robust accuracy" at 17.7 px is about 130 px wide in DejaVu Sans.
    let inside = write("in.svg", r#"<text x="100" y="10" dy="0.76em" text-anchor="middle" font-family="sans-serif" font-size="17.7">Robust accuracy</text>"#);
    assert!(overflowing(&face, &inside).is_empty());
    let wide = write("wide.svg", r#"<text x="100" y="10" dy="0.76em" text-anchor="middle" font-family="sans-serif" font-size="17.7">Robust accuracy against strength</text>"#);
    assert_eq!(overflowing(&face, &wide).len(), 1);
    // Rotated 270° about its anchor: its width runs up the canvas from y = 50.
    let up = write("up.svg", r#"<text x="20" y="50" dy="0.5ex" text-anchor="start" font-family="sans-serif" font-size="12" transform="rotate(270, 20, 50)">a rotated label that is long</text>"#);
    assert_eq!(overflowing(&face, &up).len(), 1);
    let low = write("low.svg", r#"<text x="20" y="98" dy="0.76em" font-family="sans-serif" font-size="12">g</text>"#);
    assert_eq!(overflowing(&face, &low).len(), 1, "below the bottom edge");
}
