//! The combine: each token's routed expert outputs weighted by its gate
//! weights, plus its shared experts' output, added to its residual.
//!
//! The sum runs in one fixed order per token, shared first, then the routed
//! outputs in choice order, then onto the residual, so the dense reference
//! and the distributed executor (which receives the rows from many dies in
//! any order) add the same numbers in the same order.

/// For each of the `residual.len() / width` tokens `t`:
/// `residual[t] += shared[t] + sum_j weights[t*top_k + j] * outputs[t*top_k + j]`,
/// where `outputs` holds one row per (token, choice) and `shared` (when
/// present) one row per token. A dense FFN's output passes as `shared` with
/// `top_k` 0.
pub fn combine(
    residual: &mut [f32],
    width: usize,
    shared: Option<&[f32]>,
    top_k: usize,
    weights: &[f32],
    outputs: &[f32],
) {
    if width == 0 {
        return;
    }
    let mut acc = vec![0.0f32; width];
    for (t, row) in residual.chunks_exact_mut(width).enumerate() {
        match shared.and_then(|s| s.get(t * width..(t + 1) * width)) {
            Some(s) => acc.copy_from_slice(s),
            None => acc.fill(0.0),
        }
        for j in 0..top_k {
            let slot = t * top_k + j;
            let (Some(&w), Some(out)) = (weights.get(slot), outputs.get(slot * width..(slot + 1) * width)) else {
                continue;
            };
            for (a, o) in acc.iter_mut().zip(out) {
                *a += w * o;
            }
        }
        for (r, a) in row.iter_mut().zip(&acc) {
            *r += a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_shared_and_weighted_outputs_to_the_residual() {
        let mut residual = vec![1.0, 2.0, 3.0, 4.0];
        let shared = [0.5, 0.5, 0.0, 1.0];
        let weights = [0.75, 0.25, 1.0, 0.0];
        let outputs = [4.0, 8.0, 0.0, 4.0, 1.0, 1.0, 9.0, 9.0];
        combine(&mut residual, 2, Some(&shared), 2, &weights, &outputs);
        assert_eq!(
            residual,
            vec![1.0 + 0.5 + 3.0, 2.0 + 0.5 + 6.0 + 1.0, 3.0 + 1.0, 4.0 + 1.0 + 1.0]
        );
        let mut dense = vec![1.0, 1.0];
        combine(&mut dense, 2, Some(&[2.0, 3.0]), 0, &[], &[]);
        assert_eq!(dense, vec![3.0, 4.0]);
    }
}
