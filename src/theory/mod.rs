//! The paper's theory (paper.md §8) as constructions that normlab builds and checks.
//!
//! Each statement is a small network built from normlab's own layers ([`network`]), a claim
//! about it, and checks that a reader can run, vary and see fail when the hypothesis fails:
//! - [`prop1`]: every layer's ℓ1, ℓ∞ and spectral norm is as large as asked, yet the network's
//!   Lipschitz constant is 0;
//! - [`thm2`]: on 2ε-separated data a network with any of four activations is robust at
//!   radius ε, certified soundly ([`certify`]) and probed empirically ([`probe`]);
//! - [`prop2`]: the same certified robustness with a Lipschitz constant as large as asked,
//!   shown by an explicit pair of inputs;
//! - [`separation`]: Assumption 2 measured on CIFAR-10 (the smallest distance between two
//!   images of different classes).
//!
//! Every statement returns a [`Report`]: its setting, what was measured, and checks that each
//! carry `pass`; the command exits non-zero when one fails.

pub mod certify;
pub mod cli;
pub mod metric;
pub mod network;
pub mod points;
pub mod probe;
pub mod prop1;
pub mod prop2;
pub mod separation;
pub mod thm2;

pub use metric::InputNorm;
pub use network::{Activation, Dense, LayerNorms, Mlp};

use serde::Serialize;

/// One checked consequence of a statement: what was measured, what it had to satisfy and
/// whether it did.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short identifier, e.g. `certified_robust_accuracy`.
    pub name: String,
    /// Whether the measured value satisfies the requirement.
    pub pass: bool,
    /// The measured value.
    pub value: f64,
    /// The requirement in words, e.g. `= 1` or `≥ 1e6`.
    pub requirement: String,
    /// How the value was measured and what it means.
    pub detail: String,
}

impl Check {
    /// A check of `value` against `requirement`, passing when `pass`.
    pub fn new(name: &str, pass: bool, value: f64, requirement: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.to_string(), pass, value, requirement: requirement.into(), detail: detail.into() }
    }
}

/// What one statement's run established: its setting, the measured facts, and the checks.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `proposition1`, `theorem2`, `proposition2` or `separation`.
    pub statement: String,
    /// The claim in one sentence.
    pub claim: String,
    /// The parameters the construction was run with.
    pub setting: serde_json::Value,
    /// What was built and measured (network shape, norms, margins, the witness pair...).
    pub facts: serde_json::Value,
    /// The checks; the statement holds on this instance when all pass.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub pass: bool,
}

impl Report {
    /// A report whose `pass` is the conjunction of its checks.
    pub fn new(statement: &str, claim: &str, setting: serde_json::Value, facts: serde_json::Value, checks: Vec<Check>) -> Self {
        let pass = checks.iter().all(|c| c.pass);
        Self { statement: statement.to_string(), claim: claim.to_string(), setting, facts, checks, pass }
    }

    /// The checks that failed.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.pass).collect()
    }

    /// A readable account: the claim, the setting, the facts, then one line per check.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}: {}\n", self.statement, self.claim);
        s += &format!("setting:\n{}", indent_json(&self.setting, 2));
        s += &format!("measured:\n{}", indent_json(&self.facts, 2));
        s += "checks:\n";
        for c in &self.checks {
            s += &format!("  [{}] {}: {} (required {})\n        {}\n", if c.pass { "PASS" } else { "FAIL" }, c.name, fmt_value(c.value), c.requirement, c.detail);
        }
        let failed = self.failed().len();
        s += &if failed == 0 { format!("all {} checks pass\n", self.checks.len()) } else { format!("{failed} of {} checks FAIL\n", self.checks.len()) };
        s
    }
}

/// Numbers as a reader wants them: plain for moderate magnitudes, scientific otherwise.
pub fn fmt_value(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        format!("{}", (v * 1e6).round() / 1e6)
    } else {
        format!("{v:.4e}")
    }
}

fn indent_json(v: &serde_json::Value, depth: usize) -> String {
    let pad = " ".repeat(depth);
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Object(_) => format!("{pad}{k}:\n{}", indent_json(v, depth + 2)),
                serde_json::Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                    let mut s = format!("{pad}{k}:\n");
                    for item in items {
                        s += &format!("{pad}  - {}\n", compact(item));
                    }
                    s
                }
                _ => format!("{pad}{k}: {}\n", compact(v)),
            })
            .collect(),
        _ => format!("{pad}{}\n", compact(v)),
    }
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(fmt_value).unwrap_or_else(|| n.to_string()),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => map.iter().map(|(k, v)| format!("{k}={}", compact(v))).collect::<Vec<_>>().join(", "),
        serde_json::Value::Array(items) => format!("[{}]", items.iter().map(compact).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}
