//! Row-major f32 matrix multiply, through faer.
//!
//! faer is the fastest f32 GEMM measured on this kind of machine (see
//! `shared/DESIGN.md`). It runs sequentially here: the machine has two cores,
//! tests build and run concurrently, and the numeric step's matrices are
//! small, so threads would mostly add synchronisation.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// `a[m x k] * b[k x n]` as a new row-major `m x n` buffer.
///
/// # Panics
///
/// If `a` or `b` is shorter than its shape says (a caller's bug, never input).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0; m * n];
    matmul_into(&mut c, a, b, m, k, n, false);
    c
}

/// `c[m x n] = a[m x k] * b[k x n]`, or `c += a * b` when `accumulate`.
/// All three are row-major; only the first `m*k`, `k*n` and `m*n` elements
/// are read or written.
///
/// # Panics
///
/// If a buffer is shorter than its shape says (a caller's bug, never input).
pub fn matmul_into(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul: buffers ({}, {}, {}) too short for {m}x{k} * {k}x{n}",
        a.len(),
        b.len(),
        c.len()
    );
    let c = &mut c[..m * n];
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum; faer would agree, but say it without relying on it.
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let lhs = MatRef::from_row_major_slice(&a[..m * k], m, k);
    let rhs = MatRef::from_row_major_slice(&b[..k * n], k, n);
    let dst = MatMut::from_row_major_slice_mut(c, m, n);
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    faer_matmul(dst, beta, lhs, rhs, 1.0f32, Par::Seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
            }
        }
        c
    }

    fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn agrees_with_the_naive_triple_loop_on_awkward_shapes() {
        let mut rng = Rng::new(3);
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 17, 5),
            (7, 3, 1),
            (13, 64, 29),
            (64, 65, 33),
            (3, 200, 130),
        ] {
            let a = random(&mut rng, m * k);
            let b = random(&mut rng, k * n);
            let c = matmul(&a, &b, m, k, n);
            let want = naive(&a, &b, m, k, n);
            for (i, (&got, &want)) in c.iter().zip(&want).enumerate() {
                // f32 accumulation over k terms of unit size.
                let tol = 1e-5 * (k as f64).sqrt() * 4.0;
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "{m}x{k}x{n} element {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn accumulate_adds_and_replace_overwrites() {
        let mut rng = Rng::new(4);
        let (m, k, n) = (5, 6, 7);
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let once = matmul(&a, &b, m, k, n);
        let mut c = vec![1.0; m * n];
        matmul_into(&mut c, &a, &b, m, k, n, true);
        for (x, y) in c.iter().zip(&once) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
        matmul_into(&mut c, &a, &b, m, k, n, false);
        assert_eq!(c, once);
        // Empty inner dimension: the product is zero.
        let mut z = vec![3.0; 4];
        matmul_into(&mut z, &[], &[], 2, 0, 2, false);
        assert_eq!(z, vec![0.0; 4]);
    }
}
