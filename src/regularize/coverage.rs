//! Which layers a regularizer acts on, and (SVC) when: `all` (every conv and linear layer,
//! exactly, on normlab's own schedule) or `reference` (what the paper's published code does,
//! rule by rule). Every rule reads only a layer's [`LayerSpec`], so it holds for any model.
//!
//! The reference is github.com/youweiliang/norm_robustness at a258ae6; each rule cites the
//! file and line it follows.

use crate::models::{LayerKind, LayerSpec};
use serde::{Deserialize, Serialize};

/// Which layers (and, for SVC, at which moments) a regularizer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Coverage {
    /// Every conv and linear layer (norm decay) or conv (SVC), grouped convs exactly per
    /// group; SVC after the optimizer step every `every` steps of the run. What normlab did
    /// before `coverage` existed, so a configuration without the key means this.
    #[default]
    All,
    /// The reference code's layers and moments (see [`norm_decay_skip`], [`svc_skip`],
    /// [`SvcGrouping`], [`svc_clips_before_step`]).
    Reference,
}

impl Coverage {
    /// `all`: a configuration leaves the key out then (its meaning before the key existed).
    pub fn is_all(&self) -> bool {
        *self == Self::All
    }

    /// `all` or `reference`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Reference => "reference",
        }
    }
}

/// Whether some output pixel of a conv sees its whole kernel inside the input along one
/// axis: the first output whose window starts at or after the input's first pixel is
/// c = ⌈p/s⌉, and its window ends at k + c·s − p − 1, which must lie inside `size` pixels.
/// The reference's `check_size` (lip/add_lip.py:151-153) asserts exactly
/// `k + ceil(p/s)*s - p <= sz`, per axis (add_lip.py:164-165).
pub fn kernel_fits(size: usize, stride: usize, k: usize, padding: usize) -> bool {
    let c = padding.div_ceil(stride);
    k + c * stride <= size + padding
}

/// Why a rule leaves a layer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a conv or linear layer (BatchNorm follows `include_bn`, not coverage).
    NotAMatrix,
    /// A grouped conv.
    Grouped,
    /// No output pixel sees the whole kernel inside the input (norm decay), or the input is
    /// smaller than the kernel (SVC).
    InputTooSmall,
}

/// Why norm decay under `coverage` leaves the conv or linear layer `spec` alone, if it does.
///
/// `reference` follows the reference code's `bind_lip`/`add_lip_grad`:
/// - a grouped conv is no "conv2d" to it (lip/add_lip.py:485 asserts `layer.groups == 1`,
///   add_lip.py:494-497 skips the layer otherwise), so regnet200mf's `conv2` layers are not
///   decayed;
/// - a conv whose input no output pixel covers with its whole kernel ([`kernel_fits`],
///   checked at the first forward, add_lip.py:163-165) is skipped (add_lip.py:189-191:
///   "Skip ... because the input ... cannot be covered by the kernel"): vgg11's
///   `features.22` and `features.25` (3×3, padding 1, on 2×2 maps).
///
/// Linear layers are always decayed (add_lip.py:21-22 and 57-58; train_nd.py:242 sets
/// `linear, conv = True, True`).
pub fn norm_decay_skip(spec: &LayerSpec, coverage: Coverage) -> Option<Skip> {
    match spec.kind {
        LayerKind::Bn => Some(Skip::NotAMatrix),
        LayerKind::Linear => None,
        LayerKind::Conv => match coverage {
            Coverage::All => None,
            Coverage::Reference if spec.groups > 1 => Some(Skip::Grouped),
            Coverage::Reference => {
                let fits = kernel_fits(spec.in_h, spec.stride, spec.kh, spec.padding) && kernel_fits(spec.in_w, spec.stride, spec.kw, spec.padding);
                (!fits).then_some(Skip::InputTooSmall)
            }
        },
    }
}

/// Why SVC under `coverage` leaves the layer `spec` alone, if it does. SVC clips convs only
/// (regularization/conv2d_sv.py:84-86 walks the `Conv2d` modules; linear layers and BatchNorm
/// are never clipped). `reference` also skips a conv whose input is smaller than its kernel
/// (conv2d_sv.py:88-90: `if h < k1 or w < k2: continue`): vgg11's `features.22` and
/// `features.25` on 2×2 maps. Grouped convs are clipped, see [`SvcGrouping`].
pub fn svc_skip(spec: &LayerSpec, coverage: Coverage) -> Option<Skip> {
    match (spec.kind, coverage) {
        (LayerKind::Linear | LayerKind::Bn, _) => Some(Skip::NotAMatrix),
        (LayerKind::Conv, Coverage::All) => None,
        (LayerKind::Conv, Coverage::Reference) => (spec.in_h < spec.kh || spec.in_w < spec.kw).then_some(Skip::InputTooSmall),
    }
}

/// How SVC treats a grouped conv's kernel (out_c × in_c/groups × k × k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcGrouping {
    /// Each group's block is its own map: its singular values are clipped per frequency.
    /// The exact operator of the grouped conv is block-diagonal, so this clips exactly its
    /// singular values (`all`).
    PerGroup,
    /// The reference's: the kernel is transformed as it is stored, so at each frequency the
    /// groups' blocks stack into one out_c × in_c/groups matrix whose singular values are
    /// clipped (regularization/conv2d_sv.py:68-69: `fft2d` of the padded torch-shaped kernel,
    /// `svd` of its (n, n, out, in/groups) transpose). For an ungrouped conv both are the same.
    Stacked,
}

/// The grouping rule of `coverage`.
pub fn svc_grouping(coverage: Coverage) -> SvcGrouping {
    match coverage {
        Coverage::All => SvcGrouping::PerGroup,
        Coverage::Reference => SvcGrouping::Stacked,
    }
}

/// Whether SVC under `coverage` clips before the optimizer step of batch `batch` (counted
/// from 0 within its epoch, restarting each epoch). `reference`: when `batch % every == 1`,
/// after `backward()` and before `optimizer.step()` (train_svc.py:53 enumerates the epoch's
/// batches from 0, train_svc.py:70-72 clips on `batch_idx % args.clip_freq == 1`,
/// train_svc.py:77 steps after). With `every` = 1 that never holds: the reference never
/// clips. `all` clips after steps instead ([`svc_clips_after_step`]).
pub fn svc_clips_before_step(coverage: Coverage, every: usize, batch: usize) -> bool {
    coverage == Coverage::Reference && every > 1 && batch % every == 1
}

/// Whether SVC under `coverage` clips after optimizer step `step` (counted from 1 over the
/// whole run): `all` every `every` steps.
pub fn svc_clips_after_step(coverage: Coverage, every: usize, step: usize) -> bool {
    coverage == Coverage::All && step.is_multiple_of(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn conv(hw: usize, k: usize, stride: usize, padding: usize, groups: usize) -> LayerSpec {
        LayerSpec { name: "c.weight".into(), kind: LayerKind::Conv, in_c: 8, in_h: hw, in_w: hw, out_c: 8, kh: k, kw: k, stride, padding, groups, bias: false }
    }

    /// `check_size` of lip/add_lip.py:151-153, transcribed, on every small case.
    fn reference_check_size(sz: usize, s: usize, k: usize, p: usize) -> bool {
        let c = (p as f64 / s as f64).ceil() as usize;
        k + c * s <= sz + p
    }

    #[test]
    fn kernel_fits_is_the_reference_check_size() {
        for sz in 1..9 {
            for s in 1..4 {
                for k in 1..6 {
                    for p in 0..4 {
                        assert_eq!(kernel_fits(sz, s, k, p), reference_check_size(sz, s, k, p), "sz {sz} s {s} k {k} p {p}");
                    }
                }
            }
        }
        // vgg11's last two convs: 3×3, padding 1 on 2×2 maps; the 4×4 ones before them fit.
        assert!(!kernel_fits(2, 1, 3, 1));
        assert!(kernel_fits(4, 1, 3, 1));
        assert!(kernel_fits(1, 1, 1, 0), "a 1×1 conv on a 1×1 map (SENet's squeeze-excitation) fits");
        assert!(!kernel_fits(3, 2, 3, 1), "3×3 stride 2 padding 1: output 1 needs input rows 1..3, one past a 3-row input");
        assert!(kernel_fits(4, 2, 3, 1), "… which a 4-row input has");
        assert!(!kernel_fits(2, 2, 3, 1));
    }

    #[test]
    fn norm_decay_rules() {
        let linear = LayerSpec::linear("fc", 4, 3);
        let bn = LayerSpec::batch_norm("bn", 4, (2, 2));
        for c in [Coverage::All, Coverage::Reference] {
            assert_eq!(norm_decay_skip(&linear, c), None, "linear layers are always decayed");
            assert_eq!(norm_decay_skip(&bn, c), Some(Skip::NotAMatrix));
            assert_eq!(norm_decay_skip(&conv(8, 3, 1, 1, 1), c), None);
        }
        assert_eq!(norm_decay_skip(&conv(2, 3, 1, 1, 1), Coverage::All), None);
        assert_eq!(norm_decay_skip(&conv(2, 3, 1, 1, 1), Coverage::Reference), Some(Skip::InputTooSmall));
        assert_eq!(norm_decay_skip(&conv(8, 3, 1, 1, 2), Coverage::All), None);
        assert_eq!(norm_decay_skip(&conv(8, 3, 1, 1, 2), Coverage::Reference), Some(Skip::Grouped));
        // Non-square input: each axis is checked.
        let mut wide = conv(8, 3, 1, 1, 1);
        wide.in_h = 2;
        assert_eq!(norm_decay_skip(&wide, Coverage::Reference), Some(Skip::InputTooSmall));
    }

    #[test]
    fn svc_rules() {
        assert_eq!(svc_skip(&LayerSpec::linear("fc", 4, 3), Coverage::All), Some(Skip::NotAMatrix));
        assert_eq!(svc_skip(&conv(2, 3, 1, 1, 1), Coverage::All), None);
        assert_eq!(svc_skip(&conv(2, 3, 1, 1, 1), Coverage::Reference), Some(Skip::InputTooSmall));
        assert_eq!(svc_skip(&conv(3, 3, 1, 1, 1), Coverage::Reference), None, "an input as large as the kernel is clipped");
        assert_eq!(svc_skip(&conv(8, 3, 2, 1, 4), Coverage::Reference), None, "grouped convs are clipped (stacked)");
        assert_eq!(svc_grouping(Coverage::Reference), SvcGrouping::Stacked);
        assert_eq!(svc_grouping(Coverage::All), SvcGrouping::PerGroup);
    }

    #[test]
    fn svc_moments() {
        // The reference: batches 1, 101, 201, 301 of every epoch (391 batches of 128 per epoch).
        let clipped: Vec<usize> = (0..391).filter(|&b| svc_clips_before_step(Coverage::Reference, 100, b)).collect();
        assert_eq!(clipped, [1, 101, 201, 301]);
        assert!((0..50).all(|b| !svc_clips_before_step(Coverage::Reference, 1, b)), "b % 1 == 1 never holds");
        assert!((0..391).all(|b| !svc_clips_before_step(Coverage::All, 100, b)));
        let after: Vec<usize> = (1..=300).filter(|&s| svc_clips_after_step(Coverage::All, 100, s)).collect();
        assert_eq!(after, [100, 200, 300]);
        assert!((1..=300).all(|s| !svc_clips_after_step(Coverage::Reference, 100, s)));
    }
}
