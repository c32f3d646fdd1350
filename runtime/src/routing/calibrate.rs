//! Calibrated synthetic routing (the `calibrated(...)` routing source).

use super::StepRouting;

/// Successors counted by [`dependency`]: SOURCE.md's "4 most frequent".
pub const SUCCESSORS: usize = 4;

/// Cross-layer dependency as the OLMoE routing analysis's SOURCE.md
/// measures it: the fraction of tokens whose top-1 expert in MoE layer `b`
/// (an index into `step.layers`) is among the [`SUCCESSORS`] most frequent
/// successors of their top-1 expert in layer `a`, in-sample (the successors
/// are counted on the same tokens). 0 when the step has no tokens.
pub fn dependency(step: &StepRouting, a: usize, b: usize, experts: usize) -> f64 {
    let k = step.top_k.max(1);
    let (Some(la), Some(lb)) = (step.layers.get(a), step.layers.get(b)) else {
        return 0.0;
    };
    let mut pairs = vec![0u64; experts * experts];
    let mut n = 0u64;
    for (x, y) in la.experts.chunks(k).zip(lb.experts.chunks(k)) {
        let (i, j) = (x[0] as usize, y[0] as usize);
        if i < experts && j < experts {
            pairs[i * experts + j] += 1;
            n += 1;
        }
    }
    if n == 0 {
        return 0.0;
    }
    let mut kept = 0u64;
    let mut row = vec![0u64; experts];
    for r in pairs.chunks(experts) {
        row.copy_from_slice(r);
        row.sort_unstable_by(|p, q| q.cmp(p));
        kept += row.iter().take(SUCCESSORS).sum::<u64>();
    }
    kept as f64 / n as f64
}
