//! The statistics a report needs to say which differences are real: a confidence interval
//! for an accuracy measured on n images ([`wilson`]), an exact paired test of two models on
//! the same images ([`mcnemar`]), and mean ± sd over seeds ([`spread`]). The distributions
//! come from `statrs`.

pub mod mcnemar;
pub mod spread;
pub mod wilson;

pub use mcnemar::{mcnemar, Paired};
pub use spread::{mean_sd, MeanSd};
pub use wilson::{wilson, Interval};

/// The significance level of the report's tests, and 1 − the intervals' confidence.
pub const ALPHA: f64 = 0.05;
