//! Zero-bordered copies of image planes, so that convolution kernels read fixed windows
//! without bounds tests on the padding.

/// `count` planes of `ph × pw` holding copies of `h × w` source planes whose top-left corner
/// sits at `(pad, pad)`. Only the sources' own areas are ever rewritten, so the border stays
/// zero from one load to the next.
pub(super) struct Planes {
    /// The planes, one after another.
    pub buf: Vec<f32>,
    /// Row length of a padded plane.
    pub pw: usize,
    /// Elements per padded plane.
    pub size: usize,
    /// Rows and columns copied from a source plane (those that fit), and where they start.
    rows: usize,
    cols: usize,
    at: usize,
}

impl Planes {
    /// Zeroed planes for sources of `h × w` padded by `pad` on the top and left (and cropped
    /// to `ph × pw`).
    pub fn new(count: usize, (ph, pw): (usize, usize), (h, w): (usize, usize), pad: usize) -> Self {
        Self {
            buf: vec![0.0; count * ph * pw],
            pw,
            size: ph * pw,
            rows: h.min(ph.saturating_sub(pad)),
            cols: w.min(pw.saturating_sub(pad)),
            at: pad * pw + pad,
        }
    }

    /// Copies `plane` (rows of `w`) into padded plane `slot`.
    pub fn load(&mut self, slot: usize, plane: &[f32], w: usize) {
        let base = slot * self.size + self.at;
        for r in 0..self.rows {
            copy_row(&mut self.buf[base + r * self.pw..][..self.cols], &plane[r * w..][..self.cols]);
        }
    }

    /// Copies padded plane `slot` back into `plane` (rows of `w`), cropped.
    pub fn store(&self, slot: usize, plane: &mut [f32], w: usize) {
        let base = slot * self.size + self.at;
        for r in 0..self.rows {
            copy_row(&mut plane[r * w..][..self.cols], &self.buf[base + r * self.pw..][..self.cols]);
        }
    }

    /// Padded plane `slot`.
    pub fn plane(&self, slot: usize) -> &[f32] {
        &self.buf[slot * self.size..][..self.size]
    }
}

/// `dst.copy_from_slice(src)` for the short rows of small maps: in fixed blocks of 8, which
/// compile to plain vector moves, where `copy_from_slice` of a run-time length is a call to
/// `memmove` (a quarter of the grouped forward's time on 8×8 maps, by `perf`).
#[inline(always)]
pub(super) fn copy_row(dst: &mut [f32], src: &[f32]) {
    let (mut d, mut s) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 8] = s.try_into().expect("8 values");
        d.copy_from_slice(s);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}
