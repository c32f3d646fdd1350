//! The numeric check: one step run by the distributed executor and by the
//! dense reference on the same routing, and how far apart they are.
//!
//! Error metric: per token, over its final hidden state and, separately,
//! its logits, `max_i |a_i - b_i| / max_i |b_i|` (`a` the executor, `b` the
//! reference): a relative error in the row's infinity norm. Per element
//! relative error is ill-defined where the reference is near zero (and a
//! floor on it is arbitrary), while round-off scales with the row's
//! magnitude, not the element's. `max_rel_error` is the largest over all
//! rows; `max_abs_error` the largest `|a_i - b_i|`. A NaN or infinite
//! difference counts as an infinite error.

use crate::routing::StepRouting;

/// The largest `max_rel_error` a correct executor may show at a reduced
/// width: f32 round-off, differently blocked GEMMs (a die multiplies its
/// own rows, the reference all of them) compounding over the layers. A
/// lost or misrouted row is off by tens of percent. The tests measure
/// below 1e-5 at every width.
pub const TOLERANCE: f64 = 1e-3;

/// The tolerance at the model's full width: the run a user sets beside an
/// engine's numbers, held ten times tighter (still ten times the largest
/// error the tests measure).
pub const TOLERANCE_FULL: f64 = 1e-4;

/// Where a failed check first differs: the first layer whose output
/// differs beyond the tolerance (`None`: only the LM head's logits do),
/// the token, its home die, and the element furthest apart.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Difference {
    pub layer: Option<u32>,
    /// The numeric token (sequence-major).
    pub token: usize,
    pub die: Option<u32>,
    /// The element of the row furthest from the reference, and the two values.
    pub element: usize,
    pub got: f32,
    pub want: f32,
    /// The row's error, as `max_rel_error` counts it.
    pub rel_error: f64,
}

/// The first row of `got` against `want` (rows of `width`) whose relative
/// error passes `tolerance`: (row, element, got, want, error).
pub fn first_over(got: &[f32], want: &[f32], width: usize, tolerance: f64) -> Option<(usize, usize, f32, f32, f64)> {
    let width = width.max(1);
    for (row, (a, b)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        let (_, rel) = errors(a, b, width);
        if rel > tolerance || rel.is_nan() {
            let element = (0..a.len().min(b.len()))
                .max_by(|&i, &j| {
                    let d = |k: usize| (f64::from(a[k]) - f64::from(b[k])).abs();
                    d(i).total_cmp(&d(j))
                })
                .unwrap_or(0);
            return Some((row, element, a[element], b[element], rel));
        }
    }
    None
}

/// One step's numeric outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericStep {
    /// The numeric tokens' routing actually used.
    pub routing: StepRouting,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    /// Bytes dispatch and combine copied between dies: `rows_copied` rows
    /// of the numeric width in the model's dtype.
    pub bytes_copied: u64,
    /// Rows dispatch and combine copied between dies.
    pub rows_copied: u64,
    /// Token-layer choices the gate made because the given routing's were
    /// unusable (see `route.rs`).
    pub gate_fallbacks: u64,
    /// With the real gate: token-layer choices where the executor's gate
    /// and the reference's gate, on their own (nearly equal) activations,
    /// disagree. Non-zero only on near-ties; 0 when a routing was given.
    pub gate_disagreements: u64,
    /// [`TOLERANCE`] at a reduced width, [`TOLERANCE_FULL`] at the full one.
    pub tolerance: f64,
    /// Where it first differs, when it failed.
    pub difference: Option<Difference>,
}

impl NumericStep {
    /// Whether the executor matched the reference within its tolerance.
    pub fn passed(&self) -> bool {
        self.max_rel_error <= self.tolerance
    }
}

/// `(max_abs_error, max_rel_error)` between `got` and `want`, rows of
/// `width` (see the module doc).
pub fn errors(got: &[f32], want: &[f32], width: usize) -> (f64, f64) {
    if got.len() != want.len() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (a, b) in got.chunks(width.max(1)).zip(want.chunks(width.max(1))) {
        let mut diff = 0.0f64;
        let mut scale = 0.0f64;
        for (&x, &y) in a.iter().zip(b) {
            let d = (f64::from(x) - f64::from(y)).abs();
            diff = if d.is_finite() { diff.max(d) } else { f64::INFINITY };
            scale = scale.max(f64::from(y).abs());
        }
        let rel = if diff == 0.0 {
            0.0
        } else if scale > 0.0 && scale.is_finite() {
            diff / scale
        } else {
            f64::INFINITY
        };
        max_abs = max_abs.max(diff);
        max_rel = max_rel.max(rel);
    }
    (max_abs, max_rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_is_relative_per_row_and_catches_non_finite_values() {
        let want = [100.0, -50.0, 0.001, 0.0];
        assert_eq!(errors(&want, &want, 2), (0.0, 0.0));
        // 1 off in a row of scale 100: 1%; the tiny row is exact.
        let got = [101.0, -50.0, 0.001, 0.0];
        let (abs, rel) = errors(&got, &want, 2);
        assert!((abs - 1.0).abs() < 1e-9 && (rel - 0.01).abs() < 1e-9);
        // A small absolute error on a small row is a large relative one.
        let got = [100.0, -50.0, 0.002, 0.0];
        assert!((errors(&got, &want, 2).1 - 1.0).abs() < 1e-6);
        let got = [f32::NAN, -50.0, 0.001, 0.0];
        assert_eq!(errors(&got, &want, 2).1, f64::INFINITY);
        assert_eq!(errors(&got[..2], &want, 2).1, f64::INFINITY);
    }
}
