//! One FFN (a routed expert, a shared expert or a dense layer's FFN) on a
//! block of rows, and the grouped form that runs several experts' row
//! blocks in one call, as a die's `Experts` instruction does.

use super::activation::{apply_in_place, swiglu_in_place};
use super::gemm::matmul;
use crate::model::Activation;

/// The weights of one FFN, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct FfnWeights {
    /// Width of the rows it reads and writes.
    pub hidden: usize,
    /// Intermediate size.
    pub ffn: usize,
    pub activation: Activation,
    /// `hidden x ffn`, SwiGLU's gate projection; empty for other activations.
    pub gate: Vec<f32>,
    /// `hidden x ffn`.
    pub up: Vec<f32>,
    /// `ffn x hidden`.
    pub down: Vec<f32>,
}

impl FfnWeights {
    /// Number of weights it holds.
    pub fn params(&self) -> usize {
        self.gate.len() + self.up.len() + self.down.len()
    }

    /// The part of this FFN that holds intermediate columns `columns`: the
    /// gate and up projections' columns and the down projection's rows.
    /// The parts of a partition of `0..ffn` sum to the whole FFN's output
    /// (the activation is elementwise, so no column needs another's).
    pub fn part(&self, columns: std::ops::Range<usize>) -> FfnWeights {
        let columns = columns.start.min(self.ffn)..columns.end.min(self.ffn);
        let take_columns = |m: &[f32]| -> Vec<f32> {
            if m.is_empty() {
                return Vec::new();
            }
            m.chunks_exact(self.ffn)
                .flat_map(|row| row[columns.clone()].iter().copied())
                .collect()
        };
        FfnWeights {
            hidden: self.hidden,
            ffn: columns.len(),
            activation: self.activation,
            gate: take_columns(&self.gate),
            up: take_columns(&self.up),
            down: self.down[columns.start * self.hidden..columns.end * self.hidden].to_vec(),
        }
    }
}

/// The FFN of `w` on `n` rows (`n x hidden`), giving `n x hidden`.
pub fn ffn(w: &FfnWeights, rows: &[f32], n: usize) -> Vec<f32> {
    if w.ffn == 0 {
        // A part too narrow to hold a column at this width adds nothing.
        return vec![0.0; n * w.hidden];
    }
    let mut inner = matmul(rows, &w.up, n, w.hidden, w.ffn);
    match w.activation {
        Activation::Swiglu => {
            let mut gated = matmul(rows, &w.gate, n, w.hidden, w.ffn);
            swiglu_in_place(&mut gated, &inner);
            inner = gated;
        }
        other => apply_in_place(other, &mut inner),
    }
    matmul(&inner, &w.down, n, w.ffn, w.hidden)
}

/// The summed output of a layer's shared experts on `n` rows, in expert
/// order; `None` when the layer has none.
pub fn shared_ffn(shared: &[FfnWeights], rows: &[f32], n: usize) -> Option<Vec<f32>> {
    let mut experts = shared.iter();
    let mut sum = ffn(experts.next()?, rows, n);
    for w in experts {
        for (s, o) in sum.iter_mut().zip(ffn(w, rows, n)) {
            *s += o;
        }
    }
    Some(sum)
}

/// One expert's rows in a grouped call.
#[derive(Clone, Copy, Debug)]
pub struct ExpertBlock<'a> {
    pub weights: &'a FfnWeights,
    /// `n x hidden` rows gathered for this expert.
    pub rows: &'a [f32],
    pub n: usize,
}

/// Every block's FFN, outputs concatenated in block order (block `i`'s rows
/// start after the rows of blocks `0..i`). Each block runs on its own rows
/// only, so an expert's output does not depend on which other experts share
/// the call: that is what makes placement invisible in the numbers.
pub fn grouped_ffn(blocks: &[ExpertBlock<'_>]) -> Vec<f32> {
    let total: usize = blocks.iter().map(|b| b.n * b.weights.hidden).sum();
    let mut out = Vec::with_capacity(total);
    for b in blocks {
        out.extend(ffn(b.weights, b.rows, b.n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn weights(rng: &mut Rng, hidden: usize, ffn: usize, activation: Activation) -> FfnWeights {
        let mut draw = |len: usize| (0..len).map(|_| rng.normal() as f32 * 0.3).collect::<Vec<f32>>();
        FfnWeights {
            hidden,
            ffn,
            activation,
            gate: if activation == Activation::Swiglu {
                draw(hidden * ffn)
            } else {
                Vec::new()
            },
            up: draw(hidden * ffn),
            down: draw(ffn * hidden),
        }
    }

    /// The FFN of one row, written out element by element.
    fn by_hand(w: &FfnWeights, x: &[f32]) -> Vec<f32> {
        let project = |m: &[f32], j: usize| (0..w.hidden).map(|i| x[i] * m[i * w.ffn + j]).sum::<f32>();
        let inner: Vec<f32> = (0..w.ffn)
            .map(|j| match w.activation {
                Activation::Swiglu => {
                    let g = project(&w.gate, j);
                    g / (1.0 + (-g).exp()) * project(&w.up, j)
                }
                Activation::Relu => project(&w.up, j).max(0.0),
                Activation::Gelu => super::super::activation::gelu(project(&w.up, j)),
            })
            .collect();
        (0..w.hidden)
            .map(|o| (0..w.ffn).map(|j| inner[j] * w.down[j * w.hidden + o]).sum())
            .collect()
    }

    #[test]
    fn column_parts_sum_to_the_whole_expert() {
        let mut rng = Rng::new(4);
        for activation in [Activation::Swiglu, Activation::Gelu, Activation::Relu] {
            let w = weights(&mut rng, 6, 7, activation);
            let rows: Vec<f32> = (0..12).map(|_| rng.normal() as f32).collect();
            let whole = ffn(&w, &rows, 2);
            let mut sum = vec![0.0f32; whole.len()];
            for cut in [0..3, 3..3, 3..4, 4..7] {
                let part = w.part(cut.clone());
                assert_eq!(part.ffn, cut.len());
                sum.iter_mut().zip(ffn(&part, &rows, 2)).for_each(|(s, p)| *s += p);
            }
            for (s, h) in sum.iter().zip(&whole) {
                assert!((s - h).abs() < 1e-5 * (1.0 + h.abs()), "{activation:?}: {s} vs {h}");
            }
            // A part that misses a column does not.
            let short: f32 = ffn(&w.part(0..6), &rows, 2)
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(short > 1e-3, "{activation:?}");
        }
    }

    #[test]
    fn every_activation_matches_the_formula_and_grouping_changes_nothing() {
        let mut rng = Rng::new(9);
        let experts: Vec<FfnWeights> = [Activation::Swiglu, Activation::Gelu, Activation::Relu]
            .into_iter()
            .map(|a| weights(&mut rng, 6, 5, a))
            .collect();
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|i| (0..6 * (i + 1)).map(|_| rng.normal() as f32).collect())
            .collect();
        let blocks: Vec<ExpertBlock<'_>> = (0..3)
            .map(|i| ExpertBlock {
                weights: &experts[i],
                rows: &rows[i],
                n: i + 1,
            })
            .collect();
        let grouped = grouped_ffn(&blocks);
        let mut at = 0;
        for (i, w) in experts.iter().enumerate() {
            let alone = ffn(w, &rows[i], i + 1);
            assert_eq!(&grouped[at..at + alone.len()], &alone[..], "expert {i}");
            for (r, row) in rows[i].chunks(6).enumerate() {
                let want = by_hand(w, row);
                for (g, h) in alone[r * 6..r * 6 + 6].iter().zip(&want) {
                    assert!((g - h).abs() < 1e-5, "{:?}: {g} vs {h}", w.activation);
                }
            }
            at += alone.len();
        }
        assert_eq!(at, grouped.len());
    }
}
