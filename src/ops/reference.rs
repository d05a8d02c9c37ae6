//! Test-only reference for the CPU convolution kernels: deterministic inputs and the
//! convolution, its input gradient and its weight gradient by direct sums in f64, for any
//! stride, padding, kernel size and group count. Each specialised kernel (Winograd, grouped,
//! dense) is held to these sums rather than to another kernel of ours.

use super::conv::Geom;

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| (((i + seed * 7919) * 2654435761) % 2001) as f32 / 1000.0 - 1.0).collect()
}

/// A convolution's output and gradients by direct sums.
pub struct Direct {
    /// `conv(x, w)`.
    pub y: Vec<f64>,
    /// The input gradient for `dy`.
    pub dx: Vec<f64>,
    /// The weight gradient for `dy`.
    pub dw: Vec<f64>,
}

/// `y = conv(x, w)` and, for the output gradient `dy`, `dx` and `dw`, in f64.
pub fn direct(x: &[f32], w: &[f32], dy: &[f32], g: &Geom) -> Direct {
    let (oh, ow, cg, og) = (g.oh(), g.ow(), g.cg(), g.og());
    let mut d = Direct { y: vec![0f64; g.n * g.o * oh * ow], dx: vec![0f64; x.len()], dw: vec![0f64; w.len()] };
    for n in 0..g.n {
        for o in 0..g.o {
            let gi = o / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = ((n * g.o + o) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        for ki in 0..g.kh {
                            for kj in 0..g.kw {
                                let (iy, ix) = ((oy * g.stride + ki) as isize - g.pad as isize, (ox * g.stride + kj) as isize - g.pad as isize);
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.c + gi * cg + ci) * g.h + iy as usize) * g.w + ix as usize;
                                let wi = ((o * cg + ci) * g.kh + ki) * g.kw + kj;
                                d.y[at] += x[xi] as f64 * w[wi] as f64;
                                d.dx[xi] += dy[at] as f64 * w[wi] as f64;
                                d.dw[wi] += x[xi] as f64 * dy[at] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    d
}

/// Asserts `ours` is within 1e-5 of the largest magnitude in `want`, element by element.
pub fn assert_close(ours: &[f32], want: &[f64], what: &str) {
    assert_eq!(ours.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    let err = ours.iter().zip(want).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    assert!(err <= 1e-5 * scale, "{what}: max error {err} over scale {scale}");
}
