//! Inclusion probabilities of successive sampling, and the weights that give
//! wanted ones.
//!
//! Routing sources draw a token's `top_k` choices one after another, each in
//! proportion to weight among the experts it has not chosen yet (successive
//! sampling without replacement, so choice j is its j-th best). Expert e's
//! *inclusion probability* π_e, the chance that it is among the k, is not
//! proportional to its weight: a heavy expert cannot be chosen twice, so its
//! π saturates below 1 and the light experts gain what it loses. Count data
//! record inclusion frequencies (every top-k selection is counted once), so a
//! source that wants its loads to follow recorded counts needs the weights
//! whose π are the recorded shares. This file computes π exactly for given
//! weights ([`inclusion_probabilities`]) and solves for the weights
//! ([`weights_for_inclusion`]).
//!
//! **Exact π.** Successive sampling is exponential order sampling: give each
//! expert an arrival time X_e ~ Exp(rate w_e); the k earliest arrivals,
//! in order, are the choices (the first arrival is e with probability
//! w_e / Σw, and memorylessness makes the rest a fresh race). Hence
//!
//! ```text
//! π_e = ∫_0^∞ w_e e^(-w_e t) P(at most k-1 of the others arrived by t) dt
//! ```
//!
//! The probability is a Poisson-binomial tail over the other experts, each
//! arrived by t with p_i(t) = 1 - e^(-w_i t). Prefix and suffix tables over
//! the experts, truncated at k-1 arrivals, give it for every e at once in
//! O(experts x k) per t. The integral is 16-point Gauss-Legendre over
//! [0, t1] and then doubling intervals [2^m t1, 2^(m+1) t1], t1 a quarter of
//! the mean arrival time of the first choice, until every expert's remaining
//! tail is below 1e-15: on each interval every exponential changes by a
//! bounded factor, where Gauss-Legendre is accurate to rounding.
//!
//! **Solving.** Rosén's approximation π_e ≈ 1 - e^(-w_e τ) says the weights
//! `-ln(1 - π_e)` are nearly right; the fixed point
//! `w_e <- w_e ln(1 - π*_e) / ln(1 - π_e(w))` corrects what remains and
//! converges in a handful of exact evaluations.

/// Largest inclusion probability aimed at: an expert every token chooses
/// would need an infinite weight, so certainty is approximated this closely.
pub const MAX_INCLUSION: f64 = 1.0 - 1e-9;

/// Gauss-Legendre nodes on [-1, 1] per interval.
const NODES: usize = 16;

/// Doubling intervals at most (t reaches 2^200 t1: far past any tail).
const MAX_INTERVALS: usize = 200;

/// A tail below this (per expert) ends the integration.
const TAIL: f64 = 1e-15;

/// Fixed-point iterations at most, and the largest |π - π*| accepted.
const MAX_ITERATIONS: usize = 60;
const TOLERANCE: f64 = 1e-10;

/// Inclusion probabilities of successive sampling of `k` distinct items in
/// proportion to `weights` (non-negative; a zero weight is never chosen).
/// They sum to `min(k, items with positive weight)`.
pub fn inclusion_probabilities(weights: &[f64], k: usize) -> Vec<f64> {
    let positive: Vec<usize> = (0..weights.len()).filter(|&i| is_positive(weights[i])).collect();
    let mut pi = vec![0.0; weights.len()];
    if k == 0 || positive.is_empty() {
        return pi;
    }
    if k >= positive.len() {
        for &i in &positive {
            pi[i] = 1.0;
        }
        return pi;
    }
    let w: Vec<f64> = positive.iter().map(|&i| weights[i]).collect();
    let total: f64 = w.iter().sum();
    let (nodes, node_weights) = gauss_legendre();
    let mut tables = Tables::new(w.len(), k);
    let mut acc = vec![0.0; w.len()];
    let t1 = 0.25 / total;
    let (mut a, mut b) = (0.0, t1);
    for _ in 0..MAX_INTERVALS {
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        for (x, nw) in nodes.iter().zip(&node_weights) {
            let t = mid + half * x;
            tables.fill(&w, t);
            for (e, acc) in acc.iter_mut().enumerate() {
                *acc += half * nw * w[e] * (-w[e] * t).exp() * tables.others_below_k(e);
            }
        }
        // ∫_b^∞ w e^(-w s) S(s) ds <= e^(-w b) S(b): both factors fall.
        tables.fill(&w, b);
        let done = (0..w.len()).all(|e| (-w[e] * b).exp() * tables.others_below_k(e) < TAIL);
        if done {
            break;
        }
        (a, b) = (b, 2.0 * b);
    }
    for (&i, p) in positive.iter().zip(acc) {
        pi[i] = p.clamp(0.0, 1.0);
    }
    pi
}

/// Weights whose successive sampling of `k` items has inclusion
/// probabilities `target` (each in 0 ..= 1, summing to k; values above
/// [`MAX_INCLUSION`] are aimed at that). Errors when fewer than k targets
/// are positive (a token could not make k distinct choices) or the targets
/// do not sum to k.
pub fn weights_for_inclusion(target: &[f64], k: usize) -> Result<Vec<f64>, String> {
    let positive = target.iter().filter(|&&p| is_positive(p)).count();
    if positive < k {
        return Err(format!(
            "only {positive} items have a positive share, fewer than the {k} distinct choices a token makes"
        ));
    }
    if let Some(p) = target.iter().find(|&&p| !(0.0..=1.0 + 1e-9).contains(&p)) {
        return Err(format!("inclusion probability {p} is outside 0 ..= 1"));
    }
    let sum: f64 = target.iter().sum();
    if (sum - k as f64).abs() > 1e-6 * k as f64 {
        return Err(format!("inclusion probabilities sum to {sum}, not to k = {k}"));
    }
    // One choice, or as many choices as candidates: the weights need no
    // correction (π is w / Σw, or 1 for every candidate).
    if k == 1 || positive == k {
        return Ok(target.to_vec());
    }
    let aim: Vec<f64> = target.iter().map(|&p| p.min(MAX_INCLUSION)).collect();
    let mut w: Vec<f64> = aim.iter().map(|&p| if p > 0.0 { -(-p).ln_1p() } else { 0.0 }).collect();
    for _ in 0..MAX_ITERATIONS {
        let pi = inclusion_probabilities(&w, k);
        let worst = pi.iter().zip(&aim).map(|(p, a)| (p - a).abs()).fold(0.0, f64::max);
        if worst < TOLERANCE {
            break;
        }
        for ((w, &p), &a) in w.iter_mut().zip(&pi).zip(&aim) {
            if *w > 0.0 {
                let now = -(-p.clamp(1e-300, MAX_INCLUSION)).ln_1p();
                *w *= -(-a).ln_1p() / now;
            }
        }
        // Only ratios matter; keep the scale near 1.
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= total);
    }
    Ok(w)
}

fn is_positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Prefix and suffix Poisson-binomial tables at one t, truncated at k-1
/// arrivals: `pre[i * k + m]` is the chance that exactly m of items
/// `0..i` arrived, `suf[i * k + m]` the chance that at most m of items
/// `i..` did.
struct Tables {
    k: usize,
    pre: Vec<f64>,
    suf: Vec<f64>,
}

impl Tables {
    fn new(n: usize, k: usize) -> Tables {
        Tables {
            k,
            pre: vec![0.0; (n + 1) * k],
            suf: vec![0.0; (n + 1) * k],
        }
    }

    fn fill(&mut self, w: &[f64], t: f64) {
        let (n, k) = (w.len(), self.k);
        self.pre[..k].fill(0.0);
        self.pre[0] = 1.0;
        for (i, &wi) in w.iter().enumerate() {
            let p = -(-wi * t).exp_m1();
            let (done, rest) = self.pre.split_at_mut((i + 1) * k);
            let (from, to) = (&done[i * k..], &mut rest[..k]);
            to[0] = from[0] * (1.0 - p);
            for m in 1..k {
                to[m] = from[m] * (1.0 - p) + from[m - 1] * p;
            }
        }
        // Suffix as exact counts first, then cumulated per row.
        self.suf[n * k..].fill(0.0);
        self.suf[n * k] = 1.0;
        for i in (0..n).rev() {
            let p = -(-w[i] * t).exp_m1();
            let (to, from) = self.suf.split_at_mut((i + 1) * k);
            let (to, from) = (&mut to[i * k..], &from[..k]);
            to[0] = from[0] * (1.0 - p);
            for m in 1..k {
                to[m] = from[m] * (1.0 - p) + from[m - 1] * p;
            }
        }
        // Cumulated only now: the recursion above needs exact counts.
        for row in self.suf.chunks_mut(k) {
            for m in 1..k {
                row[m] += row[m - 1];
            }
        }
    }

    /// The chance that at most k-1 items other than `e` arrived.
    fn others_below_k(&self, e: usize) -> f64 {
        let k = self.k;
        let pre = &self.pre[e * k..(e + 1) * k];
        let suf = &self.suf[(e + 1) * k..(e + 2) * k];
        (0..k).map(|a| pre[a] * suf[k - 1 - a]).sum()
    }
}

/// The 16 Gauss-Legendre nodes and weights on [-1, 1] (Newton's method on
/// the Legendre polynomial from the usual cosine guesses).
fn gauss_legendre() -> ([f64; NODES], [f64; NODES]) {
    let n = NODES;
    let (mut x, mut w) = ([0.0; NODES], [0.0; NODES]);
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // P_n(z) and its derivative by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, z);
            for j in 2..=n {
                let p2 = ((2 * j - 1) as f64 * z * p1 - (j - 1) as f64 * p0) / j as f64;
                p0 = p1;
                p1 = p2;
            }
            dp = n as f64 * (z * p1 - p0) / (z * z - 1.0);
            let dz = p1 / dp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * dp * dp);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Inclusion frequencies of successive sampling, by brute force.
    fn simulate(weights: &[f64], k: usize, draws: usize) -> Vec<f64> {
        let mut rng = Rng::new(5);
        let mut hits = vec![0u64; weights.len()];
        for _ in 0..draws {
            let mut left = weights.to_vec();
            for _ in 0..k {
                let total: f64 = left.iter().sum();
                let mut u = rng.next_f64() * total;
                let mut pick = 0;
                for (i, &x) in left.iter().enumerate() {
                    if x > 0.0 {
                        pick = i;
                        if u < x {
                            break;
                        }
                        u -= x;
                    }
                }
                hits[pick] += 1;
                left[pick] = 0.0;
            }
        }
        hits.iter().map(|&h| h as f64 / draws as f64).collect()
    }

    #[test]
    fn quadrature_is_exact_on_polynomials() {
        let (x, w) = gauss_legendre();
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-13);
        let x30: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(30)).sum();
        assert!((x30 - 2.0 / 31.0).abs() < 1e-13, "{x30}");
    }

    #[test]
    fn two_of_three_matches_the_closed_form() {
        // π_0 = 1 - P(0 is last) = 1 - Σ_{i != 0} w_i/W * w_j/(W - w_i) with j the third.
        let w = [0.5, 0.3, 0.2];
        let pi = inclusion_probabilities(&w, 2);
        let last = |e: usize| {
            let (a, b) = match e {
                0 => (1, 2),
                1 => (0, 2),
                _ => (0, 1),
            };
            w[a] * w[b] / (1.0 - w[a]) + w[b] * w[a] / (1.0 - w[b])
        };
        for (e, p) in pi.iter().enumerate() {
            assert!((p - (1.0 - last(e))).abs() < 1e-12, "{e}: {p} vs {}", 1.0 - last(e));
        }
    }

    #[test]
    fn probabilities_sum_to_k_and_match_simulation() {
        let w: Vec<f64> = (1..=12).map(|r| (r as f64).powf(-1.3)).collect();
        let pi = inclusion_probabilities(&w, 4);
        assert!((pi.iter().sum::<f64>() - 4.0).abs() < 1e-10);
        let sim = simulate(&w, 4, 200_000);
        for (p, s) in pi.iter().zip(&sim) {
            assert!((p - s).abs() < 0.004, "{pi:?}\n{sim:?}");
        }
        // Zero weights are never chosen; k covering every candidate takes all.
        let pi = inclusion_probabilities(&[1.0, 0.0, 2.0], 2);
        assert_eq!(pi, [1.0, 0.0, 1.0]);
    }

    #[test]
    fn solved_weights_give_the_target_probabilities() {
        // OLMoE-like: 64 experts, top-8, the hottest chosen by 97% of tokens.
        let mut target: Vec<f64> = (1..=64).map(|r| (r as f64).powf(-0.9)).collect();
        let total: f64 = target.iter().sum();
        target.iter_mut().for_each(|p| *p *= 8.0 / total);
        target[0] = 0.97;
        let rest: f64 = target[1..].iter().sum();
        target[1..].iter_mut().for_each(|p| *p *= (8.0 - 0.97) / rest);
        let w = weights_for_inclusion(&target, 8).unwrap();
        let pi = inclusion_probabilities(&w, 8);
        for (p, t) in pi.iter().zip(&target) {
            assert!((p - t).abs() < 1e-8, "{p} vs {t}");
        }
        // Proportional weights would miss: the hottest gets far less.
        let naive = inclusion_probabilities(&target, 8);
        assert!(naive[0] < 0.9, "{}", naive[0]);
        // And the solved weights draw the target in simulation too.
        let sim = simulate(&w, 8, 100_000);
        for (s, t) in sim.iter().zip(&target) {
            assert!((s - t).abs() < 0.006, "{s} vs {t}");
        }
    }

    #[test]
    fn impossible_targets_are_refused() {
        let e = weights_for_inclusion(&[1.0, 1.0, 0.0], 3).unwrap_err();
        assert!(e.contains("only 2 items"), "{e}");
        let e = weights_for_inclusion(&[0.5, 0.5, 0.5], 2).unwrap_err();
        assert!(e.contains("sum to 1.5"), "{e}");
        let e = weights_for_inclusion(&[1.5, 0.5, 0.0], 2).unwrap_err();
        assert!(e.contains("outside"), "{e}");
    }
}
