//! The `skewed(hot, boost, seed)` routing source: MoEShard's skewed router.
//!
//! MoEShard ("perfect balance by sharding every expert") evaluates under a
//! router where "experts i < 10% of |E| get probability 1/|E| + 0.6". moec
//! reads it per expert: start from the uniform 1/|E|, add `boost` (0.6) to
//! each of the first `n = ceil(hot x |E|)` experts (ids 0 .. n-1; `hot` =
//! 0.1), and renormalise so the probabilities sum to 1:
//!
//! ```text
//! p_hot = (1/|E| + boost) / (1 + n boost)        p_cold = (1/|E|) / (1 + n boost)
//! ```
//!
//! On Switch-Base-128 that is 13 hot experts at 6.91% each and 115 cold
//! ones at 0.089%: 89.8% of the tokens go to the hot 10%. (The other
//! reading, 0.6 as the extra mass the hot experts share, gives 43.8%;
//! docs/TRACES.md compares the two.) The same experts are hot in every MoE
//! layer, as in the paper; layers are independent and nothing moves
//! between steps.
//!
//! A token's `top_k` choices are `top_k` distinct experts drawn without
//! replacement, one after another, each in proportion to `p` among the
//! experts it has not chosen yet. The synthetic generator does the drawing
//! ([`Synthetic::with_popularity`]: its alias tables, exact fallback scan,
//! group limiting, per-token seeded streams and threads), so this file only
//! says what the distribution is. With `top_k > 1` a hot expert cannot be
//! chosen twice by one token, so the hot experts' share of the choices is
//! below `n p_hot`; [`SkewedParams::hot_share`] gives it from the exact
//! inclusion probabilities (`inclusion.rs`).

use super::inclusion::inclusion_probabilities;
use super::synthetic::{RoutingShape, Synthetic};
use crate::model::ModelSpec;

/// The knobs of the `skewed(...)` routing source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkewedParams {
    /// The fraction of the experts that are hot, in (0, 1]: the first
    /// `ceil(hot x experts)` ids (at least one).
    pub hot: f64,
    /// Probability added to each hot expert's uniform 1/experts before
    /// renormalising (>= 0; 0 is uniform routing).
    pub boost: f64,
}

impl SkewedParams {
    /// MoEShard's evaluation router: the first 10% of the experts get 0.6
    /// extra each. The defaults of `skewed(...)`.
    pub const MOESHARD: SkewedParams = SkewedParams { hot: 0.1, boost: 0.6 };

    /// Refuses a `hot` outside (0, 1] and a `boost` that is negative or not finite.
    pub fn check(&self) -> Result<(), String> {
        if !(self.hot > 0.0 && self.hot <= 1.0) {
            return Err(format!("skewed: hot = {} must lie in (0, 1]", self.hot));
        }
        if !(self.boost.is_finite() && self.boost >= 0.0) {
            return Err(format!("skewed: boost = {} must be a finite number >= 0", self.boost));
        }
        Ok(())
    }

    /// How many of `experts` are hot: `ceil(hot x experts)`, at least 1 and
    /// at most `experts`. The product loses a relative 1e-12 first, so a
    /// decimal fraction that lands a rounding error above a whole number
    /// (0.1 x 30 is 3.0000000000000004 in floating point) gains no expert.
    pub fn hot_experts(&self, experts: usize) -> usize {
        let x = self.hot * experts as f64;
        ((x - x * 1e-12).ceil() as usize).clamp(1, experts.max(1))
    }

    /// Every expert's probability (sums to 1): the first
    /// [`hot_experts`](Self::hot_experts) get `(1/experts + boost) / (1 + n
    /// boost)`, the others `(1/experts) / (1 + n boost)`.
    pub fn popularity(&self, experts: usize) -> Vec<f64> {
        let n = self.hot_experts(experts);
        let uniform = 1.0 / experts as f64;
        let total = 1.0 + n as f64 * self.boost;
        (0..experts)
            .map(|e| (if e < n { uniform + self.boost } else { uniform }) / total)
            .collect()
    }

    /// The expected fraction of a layer's expert choices (every token's
    /// `top_k`) that land on the hot experts, without group limiting:
    /// `Σ_hot π_e / top_k`, with `π_e` the exact inclusion probabilities of
    /// successive sampling. For `top_k = 1` it is `n p_hot`.
    pub fn hot_share(&self, experts: usize, top_k: usize) -> f64 {
        let n = self.hot_experts(experts);
        let p = self.popularity(experts);
        if top_k <= 1 {
            return p[..n].iter().sum();
        }
        let pi = inclusion_probabilities(&p, top_k);
        pi[..n].iter().sum::<f64>() / top_k as f64
    }
}

/// The generator of `skewed(hot, boost, seed)` for steps of `tokens` tokens
/// over every MoE layer of `model`.
pub fn generator(model: &ModelSpec, tokens: usize, params: SkewedParams, seed: u64) -> Result<Synthetic, String> {
    params.check()?;
    let experts = RoutingShape::of(model)?.experts;
    Synthetic::with_popularity(model, tokens, &params.popularity(experts), seed)
}

#[cfg(test)]
mod tests {
    use super::super::count_sampler::tests::chi_square;
    use super::super::synthetic::tests::{deepseek_v3, model};
    use super::*;

    const MOESHARD: SkewedParams = SkewedParams::MOESHARD;

    #[test]
    fn popularity_is_the_renormalised_per_expert_boost() {
        // Switch-Base-128: ceil(12.8) = 13 hot experts, total mass 1 + 13 x 0.6 = 8.8.
        let p = MOESHARD.popularity(128);
        assert_eq!(MOESHARD.hot_experts(128), 13);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (hot, cold) = ((1.0 / 128.0 + 0.6) / 8.8, (1.0 / 128.0) / 8.8);
        assert!(p[..13].iter().all(|&x| (x - hot).abs() < 1e-15), "{p:?}");
        assert!(p[13..].iter().all(|&x| (x - cold).abs() < 1e-15), "{p:?}");
        assert!((MOESHARD.hot_share(128, 1) - 0.897_904_829_5).abs() < 1e-9);
        // The count of hot experts: rounding up, at least one, no rounding-error gain.
        assert_eq!(MOESHARD.hot_experts(30), 3);
        assert_eq!(MOESHARD.hot_experts(8), 1);
        assert_eq!(MOESHARD.hot_experts(256), 26);
        assert_eq!(SkewedParams { hot: 1e-9, boost: 0.6 }.hot_experts(64), 1);
        assert_eq!(SkewedParams { hot: 1.0, boost: 0.6 }.hot_experts(64), 64);
        // Every expert hot, or no boost: uniform.
        for params in [
            SkewedParams { hot: 1.0, boost: 0.6 },
            SkewedParams { hot: 0.1, boost: 0.0 },
        ] {
            assert!(params.popularity(64).iter().all(|&x| (x - 1.0 / 64.0).abs() < 1e-15));
        }
    }

    #[test]
    fn top1_loads_follow_the_renormalised_distribution() {
        let tokens = 200_000;
        let m = model(128, 1, 1, 1, 0, 2);
        let step = generator(&m, tokens, MOESHARD, 7).unwrap().step(0);
        let expected: Vec<f64> = MOESHARD.popularity(128).iter().map(|p| p * tokens as f64).collect();
        let share = MOESHARD.hot_share(128, 1);
        for l in 0..2 {
            let loads = step.expert_loads(l, 128);
            // 127 degrees of freedom: 182 is the 0.999 quantile (Wilson-Hilferty).
            let chi = chi_square(&loads, &expected);
            assert!(chi < 182.0, "layer {l}: chi-square {chi}\n{loads:?}");
            // The hot 13's share: a Bernoulli(share) mean over the tokens,
            // within 5 standard deviations.
            let got = loads[..13].iter().sum::<u64>() as f64 / tokens as f64;
            let sd = (share * (1.0 - share) / tokens as f64).sqrt();
            assert!(
                (got - share).abs() < 5.0 * sd,
                "layer {l}: hot share {got}, expected {share}"
            );
        }
    }

    #[test]
    fn top2_choices_are_distinct_and_hot_share_is_the_inclusion_probabilities() {
        let (tokens, layers) = (100_000, 3);
        let m = model(128, 2, 1, 1, 0, layers);
        let step = generator(&m, tokens, MOESHARD, 7).unwrap().step(0);
        let p = MOESHARD.popularity(128);
        // Successive sampling of two: e is first with p_e, or second after
        // some j != e with p_j p_e / (1 - p_j). So
        // π_e = p_e (1 + Σ_j p_j / (1 - p_j) - p_e / (1 - p_e)).
        let s: f64 = p.iter().map(|&x| x / (1.0 - x)).sum();
        let closed: Vec<f64> = p.iter().map(|&x| x * (1.0 + s - x / (1.0 - x))).collect();
        let pi = inclusion_probabilities(&p, 2);
        for (a, b) in pi.iter().zip(&closed) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        let share = MOESHARD.hot_share(128, 2);
        assert!((share - closed[..13].iter().sum::<f64>() / 2.0).abs() < 1e-9);
        // Below top-1's 0.898: a token's second choice is hot less often.
        assert!((share - 0.894_54).abs() < 1e-4, "{share}");
        let mut hot = 0u64;
        for l in &step.layers {
            assert_eq!(l.experts.len(), 2 * tokens);
            assert!(l.experts.chunks(2).all(|c| c[0] != c[1] && c.iter().all(|&e| e < 128)));
            hot += l.experts.iter().filter(|&&e| e < 13).count() as u64;
            // Every expert's load against its inclusion probability (a
            // load is binomial, below Pearson's variance: conservative).
            let expected: Vec<f64> = pi.iter().map(|x| x * tokens as f64).collect();
            let chi = chi_square(&step.expert_loads(l.layer, 128), &expected);
            assert!(chi < 182.0, "layer {}: chi-square {chi}", l.layer);
        }
        // A token's hot fraction (0, 1/2 or 1) lies in [0, 1], so its variance
        // is at most share (1 - share): 5 standard deviations over every token.
        let n = (tokens * layers as usize) as f64;
        let got = hot as f64 / (2.0 * n);
        let sd = (share * (1.0 - share) / n).sqrt();
        assert!((got - share).abs() < 5.0 * sd, "hot share {got}, expected {share}");
    }

    #[test]
    fn steps_are_seeded_and_deterministic() {
        let m = model(128, 2, 1, 1, 0, 3);
        let mut a = generator(&m, 512, MOESHARD, 7).unwrap();
        let mut b = generator(&m, 512, MOESHARD, 7).unwrap();
        let s3 = a.step(3);
        assert_eq!(b.step(3), s3);
        assert_eq!(a.step(0), b.step(0));
        assert_eq!(a.step(3), s3, "asked again after an earlier step");
        assert_ne!(a.step(0), s3, "steps draw fresh tokens");
        assert_ne!(generator(&m, 512, MOESHARD, 8).unwrap().step(3), s3, "another seed");
        // Layers draw independently from the same distribution.
        assert_ne!(s3.layers[0].experts, s3.layers[1].experts);
        // A step of 256 tokens is the prefix of one of 512.
        let short = generator(&m, 256, MOESHARD, 7).unwrap().step(3);
        for (x, y) in short.layers.iter().zip(&s3.layers) {
            assert_eq!(x.experts[..], y.experts[..512]);
        }
    }

    #[test]
    fn group_limited_models_route_and_bad_params_are_refused() {
        // DeepSeek-V3's group limiting applies as for the other synthetic sources.
        let step = generator(&deepseek_v3(), 64, MOESHARD, 1).unwrap().step(0);
        assert_eq!((step.layers.len(), step.top_k), (58, 8));
        for c in step.layers[0].experts.chunks(8) {
            let mut groups: Vec<u32> = c.iter().map(|&e| e / 32).collect();
            groups.sort_unstable();
            groups.dedup();
            assert!(groups.len() <= 4, "{c:?}");
        }
        let m = model(128, 1, 1, 1, 0, 2);
        for (hot, boost, what) in [
            (0.0, 0.6, "hot = 0"),
            (1.5, 0.6, "hot = 1.5"),
            (f64::NAN, 0.6, "hot = NaN"),
            (0.1, -1.0, "boost = -1"),
            (0.1, f64::INFINITY, "boost = inf"),
        ] {
            let e = generator(&m, 8, SkewedParams { hot, boost }, 0).unwrap_err();
            assert!(e.starts_with(&format!("skewed: {what}")), "{e}");
        }
    }
}
