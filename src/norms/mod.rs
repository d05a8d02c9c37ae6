//! Operator norms of CNN layers: the exact ℓ1/ℓ∞ formulas of Theorem 1 (`theorem1`), the
//! exact spectral norm by power iteration on the zero-padded conv (`spectral`, on the
//! explicit operator of `conv_operator`), the FFT + SVD method of Sedghi et al. for circular
//! convs and singular value clipping (`fft_svd`), and per-model tables (`table`).

pub mod cli;
pub mod conv_operator;
pub mod fft_svd;
pub mod spectral;
pub mod table;
pub mod theorem1;

pub use conv_operator::ConvOperator;
pub use spectral::{conv_spectral_norm, layer_spectral_norm, SpectralNorm, SpectralOptions};
pub use table::{lipschitz_bounds, model_norms, LayerNorms, NormSummary};
pub use theorem1::{conv_norm, conv_norms, layer_norm, position_sets, Maximiser, NormKind};

#[cfg(test)]
mod exactness_tests;
