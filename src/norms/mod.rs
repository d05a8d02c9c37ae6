//! Operator norms of CNN layers: the exact ℓ1/ℓ∞ formulas of Theorem 1, and (from other
//! files) the exact spectral norm by power iteration, the FFT + SVD method, and per-model
//! tables.

pub mod theorem1;

pub use theorem1::{conv_norm, layer_norm, position_sets, Maximiser, NormKind};
