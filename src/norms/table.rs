//! Per-layer norms of a whole model (ℓ1, ℓ∞ by Theorem 1, their ℓ2 bound, the exact spectral
//! norm), their summary over the weight layers, the Lipschitz bounds they give, and the
//! table / CSV / JSON renderings that `normlab norms` prints and the results rows reuse.

use super::spectral::{layer_spectral_norm, SpectralOptions};
use super::theorem1::{conv_norms, layer_norm, NormKind};
use crate::models::{LayerKind, LayerSpec, Model};
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// The CSV header of a norms table, exactly as the issue fixes it.
pub const CSV_HEADER: [&str; 15] =
    ["layer", "kind", "in_c", "in_h", "in_w", "out_c", "kh", "kw", "stride", "padding", "groups", "l1", "linf", "l2_bound", "spectral"];

/// The norms of one layer. For BatchNorm (eval mode, a diagonal map) all four are
/// max_c |γ_c| / √(var_c + eps).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerNorms {
    /// The layer.
    pub spec: LayerSpec,
    /// Exact ℓ1 → ℓ1 operator norm (max column abs-sum) on the layer's input size.
    pub l1: f64,
    /// Exact ℓ∞ → ℓ∞ operator norm (max row abs-sum).
    pub linf: f64,
    /// √(l1 · linf), an upper bound of the spectral norm.
    pub l2_bound: f64,
    /// The exact spectral norm (to 1e-5 relative), when asked for.
    pub spectral: Option<f64>,
}

/// A layer's tensors copied to the CPU in f64: weight and, for BatchNorm, running variance.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// The layer.
    pub spec: LayerSpec,
    /// Its weight (γ for BatchNorm), PyTorch layout, row-major.
    pub weight: Vec<f64>,
    /// BatchNorm's running variance.
    pub running_var: Option<Vec<f64>>,
}

fn to_f64(t: &candle_core::Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Every layer's tensors of `model`, copied to the CPU in f64, in forward order.
pub fn layer_weights(model: &Model) -> Result<Vec<LayerWeights>> {
    model
        .layers
        .iter()
        .map(|spec| {
            let weight = to_f64(model.weight(spec)?).with_context(|| format!("reading {}", spec.name))?;
            let running_var = match spec.kind {
                LayerKind::Bn => Some(to_f64(model.params.get(&spec.tensor_name("running_var"))?)?),
                _ => None,
            };
            Ok(LayerWeights { spec: spec.clone(), weight, running_var })
        })
        .collect()
}

/// The norms of every conv, linear and BatchNorm layer of `model`, in forward order,
/// computed in f64 on the CPU whatever the model's device (in parallel over layers). With
/// `with_spectral` false the spectral column is left empty (it is the slow one: power
/// iteration). A spectral norm that did not reach 1e-5 within the iteration cap is reported
/// as its certified lower bound with a warning on stderr naming the layer and its bracket.
pub fn model_norms(model: &Model, with_spectral: bool) -> Result<Vec<LayerNorms>> {
    let layers = layer_weights(model)?;
    let opts = SpectralOptions::default();
    layers
        .par_iter()
        .map(|lw| {
            let var = lw.running_var.as_deref();
            let (l1, linf) = if lw.spec.is_matrix() {
                let (a, b) = conv_norms(&lw.spec, &lw.weight);
                (a.value, b.value)
            } else {
                (layer_norm(&lw.spec, &lw.weight, var, NormKind::L1).value, layer_norm(&lw.spec, &lw.weight, var, NormKind::Linf).value)
            };
            let spectral = if with_spectral {
                let s = layer_spectral_norm(&lw.spec, &lw.weight, var, &opts)?;
                if !s.converged {
                    eprintln!(
                        "warning: spectral norm of {} not certified to {:e} after {} iterations: it lies in [{}, {}]; reporting the lower bound",
                        lw.spec.name, opts.tol, s.iterations, s.value, s.upper
                    );
                }
                Some(s.value)
            } else {
                None
            };
            Ok(LayerNorms { spec: lw.spec.clone(), l1, linf, l2_bound: (l1 * linf).sqrt(), spectral })
        })
        .collect()
}

/// Sums, maxima and the ℓ∞ product of the norms over the conv and linear layers only
/// (BatchNorm layers are excluded: they are diagonal maps that norm decay does not
/// regularize; their norms stay in the per-layer table). The training metrics and the
/// results CSV report these.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NormSummary {
    /// Σ ℓ1 over conv + linear layers.
    pub sum_l1: f64,
    /// max ℓ1.
    pub max_l1: f64,
    /// Σ ℓ∞.
    pub sum_linf: f64,
    /// max ℓ∞.
    pub max_linf: f64,
    /// Σ √(ℓ1 ℓ∞).
    pub sum_l2_bound: f64,
    /// max √(ℓ1 ℓ∞).
    pub max_l2_bound: f64,
    /// Π ℓ∞ (the plain chain bound, ignoring residual structure and BatchNorm).
    pub prod_linf: f64,
}

impl NormSummary {
    /// The summary of a norms table (conv and linear rows).
    pub fn of(norms: &[LayerNorms]) -> Self {
        let layers: Vec<(f64, f64)> = norms.iter().filter(|n| n.spec.is_matrix()).map(|n| (n.l1, n.linf)).collect();
        Self::from_layers(&layers)
    }

    /// The summary of per-layer (ℓ1, ℓ∞) pairs of conv and linear layers.
    pub fn from_layers(layers: &[(f64, f64)]) -> Self {
        let mut s = Self { sum_l1: 0.0, max_l1: 0.0, sum_linf: 0.0, max_linf: 0.0, sum_l2_bound: 0.0, max_l2_bound: 0.0, prod_linf: 1.0 };
        for &(l1, linf) in layers {
            let l2 = (l1 * linf).sqrt();
            s.sum_l1 += l1;
            s.max_l1 = s.max_l1.max(l1);
            s.sum_linf += linf;
            s.max_linf = s.max_linf.max(linf);
            s.sum_l2_bound += l2;
            s.max_l2_bound = s.max_l2_bound.max(l2);
            s.prod_linf *= linf;
        }
        s
    }

    /// Reads a per-layer norms file (`normlab norms --format csv` columns: layer, kind, ...,
    /// l1, linf, ...) and summarises its conv and linear rows (BatchNorm rows are left out, as
    /// the regularizers leave them by default).
    pub fn from_norms_csv(path: &std::path::Path) -> Result<Self> {
        let mut r = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
        let headers = r.headers()?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name).with_context(|| format!("{}: no column '{name}'", path.display()));
        let (kind, l1, linf) = (col("kind")?, col("l1")?, col("linf")?);
        let mut layers = Vec::new();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
            if matches!(&rec[kind], "conv" | "linear") {
                let num = |c: usize| -> Result<f64> { rec[c].parse().with_context(|| format!("{}: row {}: '{}' is not a number", path.display(), i + 2, &rec[c])) };
                layers.push((num(l1)?, num(linf)?));
            }
        }
        if layers.is_empty() {
            anyhow::bail!("{}: no conv or linear layer rows", path.display());
        }
        Ok(Self::from_layers(&layers))
    }

    /// The seven values in the results CSV's column order: l1_sum, l1_max, linf_sum,
    /// linf_max, l2_bound_sum, l2_bound_max, linf_product.
    pub fn values(&self) -> [f64; 7] {
        [self.sum_l1, self.max_l1, self.sum_linf, self.max_linf, self.sum_l2_bound, self.max_l2_bound, self.prod_linf]
    }
}

/// The model's Lipschitz bounds from its layer norms, via [`Model::lipschitz_bound`]
/// (residual sums, BatchNorm diagonals): (ℓ∞ from the ℓ∞ norms, ℓ2 from the spectral
/// norms). `None` where the model has no such bound (SENet's gating) or, for ℓ2, where the
/// table has no spectral norms. Certified accuracy uses these.
pub fn lipschitz_bounds(model: &Model, norms: &[LayerNorms]) -> (Option<f64>, Option<f64>) {
    let linf: HashMap<&str, f64> = norms.iter().map(|n| (n.spec.name.as_str(), n.linf)).collect();
    let l2: HashMap<&str, f64> = norms.iter().filter_map(|n| n.spectral.map(|s| (n.spec.name.as_str(), s))).collect();
    let bound = |table: &HashMap<&str, f64>| {
        let b = model.lipschitz_bound(&|name| table.get(name).copied().unwrap_or(f64::NAN))?;
        b.is_finite().then_some(b)
    };
    (bound(&linf), bound(&l2))
}

/// A fixed-width text table, one row per layer, followed by the summary.
pub fn render_table(norms: &[LayerNorms]) -> String {
    let mut out = format!(
        "{:<34} {:<6} {:>5} {:>7} {:>5} {:>5} {:>2} {:>3} {:>6} {:>12} {:>12} {:>12} {:>12}\n",
        "layer", "kind", "in_c", "in_hxw", "out_c", "k", "s", "pad", "groups", "l1", "linf", "l2_bound", "spectral"
    );
    for n in norms {
        let s = &n.spec;
        out += &format!(
            "{:<34} {:<6} {:>5} {:>7} {:>5} {:>5} {:>2} {:>3} {:>6} {:>12.6} {:>12.6} {:>12.6} {:>12}\n",
            s.name,
            s.kind.as_str(),
            s.in_c,
            format!("{}x{}", s.in_h, s.in_w),
            s.out_c,
            format!("{}x{}", s.kh, s.kw),
            s.stride,
            s.padding,
            s.groups,
            n.l1,
            n.linf,
            n.l2_bound,
            n.spectral.map_or("-".to_string(), |v| format!("{v:.6}"))
        );
    }
    let m = NormSummary::of(norms);
    out += &format!(
        "conv+linear layers: sum l1 {:.4}, max l1 {:.4}, sum linf {:.4}, max linf {:.4}, sum l2_bound {:.4}, max l2_bound {:.4}, prod linf {:.4e}\n",
        m.sum_l1, m.max_l1, m.sum_linf, m.max_linf, m.sum_l2_bound, m.max_l2_bound, m.prod_linf
    );
    out
}

/// CSV with the header [`CSV_HEADER`]; values in full precision, the spectral field empty
/// when it was not computed.
pub fn render_csv(norms: &[LayerNorms]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for n in norms {
        let s = &n.spec;
        w.write_record([
            s.name.clone(),
            s.kind.as_str().to_string(),
            s.in_c.to_string(),
            s.in_h.to_string(),
            s.in_w.to_string(),
            s.out_c.to_string(),
            s.kh.to_string(),
            s.kw.to_string(),
            s.stride.to_string(),
            s.padding.to_string(),
            s.groups.to_string(),
            n.l1.to_string(),
            n.linf.to_string(),
            n.l2_bound.to_string(),
            n.spectral.map_or(String::new(), |v| v.to_string()),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// What `normlab norms --format json` prints: the layers, the summary and the bounds.
#[derive(Debug, Clone, Serialize)]
pub struct NormsReport<'a> {
    /// The model's name.
    pub model: &'a str,
    /// Where the weights came from (`seed N` or the checkpoint path).
    pub source: String,
    /// One entry per layer: the spec's fields plus l1, linf, l2_bound, spectral.
    pub layers: Vec<LayerRow<'a>>,
    /// Over conv + linear layers.
    pub summary: NormSummary,
    /// [`lipschitz_bounds`]' ℓ∞ bound.
    pub lipschitz_linf: Option<f64>,
    /// [`lipschitz_bounds`]' ℓ2 bound.
    pub lipschitz_l2: Option<f64>,
    /// The model's input normalization (mean, std, origin, its factor max 1/std in both
    /// bounds), null without one.
    pub normalization: Option<serde_json::Value>,
}

/// One flat JSON row (the CSV's columns).
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow<'a> {
    /// The spec's fields, flattened.
    #[serde(flatten)]
    pub spec: &'a LayerSpec,
    /// ℓ1.
    pub l1: f64,
    /// ℓ∞.
    pub linf: f64,
    /// √(ℓ1 ℓ∞).
    pub l2_bound: f64,
    /// The spectral norm, null when not computed.
    pub spectral: Option<f64>,
}

/// The JSON report of one model's norms (pretty-printed).
pub fn render_json(model: &Model, source: String, norms: &[LayerNorms]) -> Result<String> {
    let (lipschitz_linf, lipschitz_l2) = lipschitz_bounds(model, norms);
    let report = NormsReport {
        model: model.arch.name(),
        source,
        layers: norms.iter().map(|n| LayerRow { spec: &n.spec, l1: n.l1, linf: n.linf, l2_bound: n.l2_bound, spectral: n.spectral }).collect(),
        summary: NormSummary::of(norms),
        lipschitz_linf,
        lipschitz_l2,
        normalization: model.normalization.as_ref().map(crate::models::Normalization::to_json),
    };
    Ok(serde_json::to_string_pretty(&report)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    #[test]
    fn summary_covers_conv_and_linear_rows_only() {
        let model = Model::new(Arch::Resnet18, 0, &Device::Cpu).unwrap();
        let norms = model_norms(&model, false).unwrap();
        assert_eq!(norms.len(), model.layers.len());
        let s = NormSummary::of(&norms);
        let matrix: Vec<&LayerNorms> = norms.iter().filter(|n| n.spec.kind != LayerKind::Bn).collect();
        let sum_l1: f64 = matrix.iter().map(|n| n.l1).sum();
        let prod: f64 = matrix.iter().map(|n| n.linf).product();
        assert!((s.sum_l1 - sum_l1).abs() < 1e-9 * sum_l1 && (s.prod_linf - prod).abs() < 1e-9 * prod);
        assert_eq!(s.max_linf, matrix.iter().map(|n| n.linf).fold(0.0, f64::max));
        // BatchNorm at init: γ = 1, var = 1, so its norm is 1/√(1 + eps) and stays out of the sums.
        let bn = norms.iter().find(|n| n.spec.kind == LayerKind::Bn).unwrap();
        assert!((bn.l1 - 1.0 / (1.0 + 1e-5f64).sqrt()).abs() < 1e-12 && bn.linf == bn.l1);
    }

    #[test]
    fn lipschitz_bounds_need_the_norms_they_compose() {
        let vgg = Model::new(Arch::Vgg11, 0, &Device::Cpu).unwrap();
        let norms = model_norms(&vgg, false).unwrap();
        let (linf, l2) = lipschitz_bounds(&vgg, &norms);
        // A plain chain: the bound is the product of every layer's ℓ∞ norm (BatchNorm included).
        let prod: f64 = norms.iter().map(|n| n.linf).product();
        assert!((linf.unwrap() - prod).abs() < 1e-9 * prod, "{linf:?} vs {prod}");
        assert_eq!(l2, None, "no spectral norms, no ℓ2 bound");
        let se = Model::new(Arch::Senet18, 0, &Device::Cpu).unwrap();
        assert_eq!(lipschitz_bounds(&se, &model_norms(&se, false).unwrap()), (None, None));
    }

    #[test]
    fn csv_starts_with_the_fixed_header() {
        let model = Model::new(Arch::Regnet200mf, 0, &Device::Cpu).unwrap();
        let text = render_csv(&model_norms(&model, false).unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), "layer,kind,in_c,in_h,in_w,out_c,kh,kw,stride,padding,groups,l1,linf,l2_bound,spectral");
        assert_eq!(text.lines().count(), model.layers.len() + 1);
    }
}
