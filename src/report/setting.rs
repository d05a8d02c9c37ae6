//! What a results row's `config` column says beyond its other columns: the regularizer in
//! full (its coverage, final clip, BatchNorm projection) and the evaluation protocol (how many
//! images each accuracy was measured on). The report labels a setting that differs from the
//! published table's protocol by its notes (`nd-l1 (coverage all)`), so rows that ran
//! different things never share a table column, and sizes intervals by the protocol's n when
//! a cell kept no per-image outcomes.

use crate::models::Arch;
use crate::plan::EvaluationSpec;
use crate::regularize::RegConfig;
use crate::results::ResultRow;

/// The parts of a row's configuration the report reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSetting {
    /// The regularizer, when the config column names one normlab reads.
    pub regularizer: Option<RegConfig>,
    /// The evaluation protocol, when the config column holds one.
    pub evaluation: Option<EvaluationSpec>,
}

impl RowSetting {
    /// Reads `row`'s config column (empty or foreign JSON gives `None` parts: the report
    /// still renders what the other columns say).
    pub fn of(row: &ResultRow) -> Self {
        let Ok(serde_json::Value::Object(mut v)) = serde_json::from_str::<serde_json::Value>(&row.config) else {
            return Self { regularizer: None, evaluation: None };
        };
        let regularizer = v.remove("regularizer").and_then(|r| serde_json::from_value(crate::regularize::upgrade_legacy(r)).ok());
        let evaluation = v.remove("evaluation").and_then(|e| serde_json::from_value(e).ok());
        Self { regularizer, evaluation }
    }
}

/// The label the report files a regularizer under on `model`: its name (`nd-l1`), and in
/// parentheses what sets it apart from the published table's protocol
/// ([`RegConfig::notes`]): `nd-l1 (coverage all)`, `svc (final clip)`.
pub fn label(reg: &RegConfig, model: Arch) -> String {
    let notes = reg.notes(model.layers());
    if notes.is_empty() {
        reg.name().to_string()
    } else {
        format!("{} ({})", reg.name(), notes.join(", "))
    }
}

/// `row` with its regularizer column replaced by [`label`] when its config names the
/// regularizer and its model is one normlab knows; otherwise unchanged.
pub fn labelled(mut row: ResultRow) -> ResultRow {
    if let (Some(reg), Ok(model)) = (RowSetting::of(&row).regularizer, Arch::parse(&row.model)) {
        row.regularizer = label(&reg, model);
    }
    row
}

/// The regularizer's own name in a label (`nd-l1` of `nd-l1 (coverage all)`) and its notes.
pub fn split(label: &str) -> (&str, Option<&str>) {
    match label.split_once(" (") {
        Some((base, rest)) => (base, Some(rest.strip_suffix(')').unwrap_or(rest))),
        None => (label, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regularize::{Coverage, NormKind};
    use crate::values::Positive;

    fn row(model: &str, reg: &str, config: &str) -> ResultRow {
        ResultRow { model: model.into(), regularizer: reg.into(), strength: Some(0.01), robust: Vec::new(), ..crate::report::test_row(config) }
    }

    #[test]
    fn rows_are_labelled_by_what_ran() {
        // results/short.csv's vgg11 ℓ1 row: recorded before coverage existed, so `all`, which
        // on vgg11 also decays features.22 and .25.
        let old = r#"{"model":"vgg11","regularizer":{"kind":"norm_decay","norm":"l1","beta":0.01,"gamma":0.5,"variant":"reference","include_bn":false},"adv":"none","seed":1,"training":{"epochs":10,"lr":0.01,"momentum":0.9,"batch":128,"milestones":[6,8],"train_subset":null,"test_subset":null},"evaluation":{"clean_subset":null,"robust":{"attacks":["apgd_ce","apgd_t"],"eps":[0.00392156862745098],"n":512,"seed":0,"iters":100},"certified":true}}"#;
        let s = RowSetting::of(&row("vgg11", "nd-l1", old));
        assert_eq!(s.regularizer, Some(RegConfig::norm_decay(NormKind::L1, Positive(0.01))));
        assert_eq!(s.evaluation.unwrap().robust.unwrap().n.get(), 512);
        assert_eq!(labelled(row("vgg11", "nd-l1", old)).regularizer, "nd-l1 (coverage all)");
        // The same on resnet18 decays every layer either way: no note.
        assert_eq!(labelled(row("resnet18", "nd-l1", &old.replace("vgg11", "resnet18"))).regularizer, "nd-l1");
        let reference = old.replace(r#""include_bn":false}"#, r#""include_bn":false,"coverage":"reference"}"#);
        assert_eq!(labelled(row("vgg11", "nd-l1", &reference)).regularizer, "nd-l1");
        // No or foreign config: the row as written.
        assert_eq!(labelled(row("vgg11", "wd", "")).regularizer, "wd");
        assert_eq!(labelled(row("mlp", "nd-l1", old)).regularizer, "nd-l1");
        let svc = RegConfig::Svc { clip: Positive(1.0), every: crate::regularize::DEFAULT_SVC_EVERY, coverage: Coverage::Reference, final_clip: true };
        assert_eq!(label(&svc, Arch::Vgg11), "svc (final clip)");
        assert_eq!(split("svc (final clip)"), ("svc", Some("final clip")));
        assert_eq!(split("wd"), ("wd", None));
    }
}
