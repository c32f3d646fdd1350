//! The router: scores every expert for every token, chooses each token's
//! `top_k` experts (group-limited, as DeepSeek does) and their weights.
//!
//! Scores are `softmax` or `sigmoid` of `x W_g`, per token over the experts.
//! Group-limited routing splits the experts into `groups` equal groups of
//! consecutive ids, scores each group (sigmoid gates, DeepSeek-V3: the sum of
//! the group's two best scores; softmax gates, DeepSeek-V2: the group's best
//! score), keeps the best `topk_groups` groups and takes the `top_k` best
//! experts inside them. Every ranking breaks ties by the lower id, so routing
//! is deterministic. With `groups = topk_groups = 1` it is plain top-k.
//!
//! Weights: the chosen experts' scores normalised to sum to 1, for both gate
//! kinds. For sigmoid gates that is DeepSeek-V3's rule; for softmax gates it
//! is the renormalised top-k probabilities (Mixtral, Qwen-MoE; DeepSeek-V2
//! leaves them unnormalised, a constant factor per token that would not
//! change what the numerics check). DeepSeek-V3's score-correction bias and
//! routed scaling factor are training-time details left out.

use super::gemm::matmul;
use crate::model::{GateKind, MoeSpec};
use std::cmp::Ordering;

/// A router's configuration, checked to be routable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    pub kind: GateKind,
    pub experts: usize,
    pub top_k: usize,
    pub groups: usize,
    pub topk_groups: usize,
}

/// Each token's choices and weights, `tokens x top_k`, best first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routed {
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Router {
    /// The router of an MoE block, refusing shapes no token can be routed
    /// in: zero experts or `top_k`, groups not dividing the experts, more
    /// kept groups than groups, or fewer experts in the kept groups than
    /// `top_k`.
    pub fn from_spec(moe: &MoeSpec) -> Result<Router, String> {
        let to_usize = |v: u64, what: &str| usize::try_from(v).map_err(|_| format!("{what} {v} is too large"));
        let r = Router {
            kind: moe.gate,
            experts: to_usize(moe.experts, "experts")?,
            top_k: to_usize(moe.top_k, "top_k")?,
            groups: to_usize(moe.groups.max(1), "groups")?,
            topk_groups: to_usize(moe.topk_groups.max(1), "topk_groups")?,
        };
        if r.experts == 0 || r.top_k == 0 {
            return Err(format!("cannot route {} experts top-{}", r.experts, r.top_k));
        }
        if r.experts % r.groups != 0 {
            return Err(format!(
                "{} experts do not split into {} equal groups",
                r.experts, r.groups
            ));
        }
        if r.topk_groups > r.groups {
            return Err(format!("topk_groups {} exceeds groups {}", r.topk_groups, r.groups));
        }
        if r.top_k > r.topk_groups * (r.experts / r.groups) {
            return Err(format!(
                "top_k {} exceeds the {} experts of the {} kept groups",
                r.top_k,
                r.topk_groups * (r.experts / r.groups),
                r.topk_groups
            ));
        }
        Ok(r)
    }

    /// Scores of `tokens` rows `h` (`tokens x hidden`) against the router
    /// weights `w_g` (`hidden x experts`): `tokens x experts`, each row a
    /// softmax (sums to 1) or element-wise sigmoid.
    pub fn scores(&self, h: &[f32], w_g: &[f32], tokens: usize, hidden: usize) -> Vec<f32> {
        let mut s = matmul(h, w_g, tokens, hidden, self.experts);
        for row in s.chunks_exact_mut(self.experts.max(1)) {
            match self.kind {
                GateKind::Sigmoid => row.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
                GateKind::Softmax => {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for x in row.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    row.iter_mut().for_each(|x| *x /= sum);
                }
            }
        }
        s
    }

    /// The score of group `g` of one token's scores.
    fn group_score(&self, row: &[f32], g: usize) -> f32 {
        let size = self.experts / self.groups;
        let members = &row[g * size..(g + 1) * size];
        match self.kind {
            GateKind::Softmax => members.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            GateKind::Sigmoid => {
                // The two largest (NaN counting as -inf); which of equal
                // members is "first" does not change the sum.
                let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                for &s in members.iter().filter(|s| !s.is_nan()) {
                    if s > first {
                        (first, second) = (s, first);
                    } else if s > second {
                        second = s;
                    }
                }
                match members.len() {
                    0 => 0.0,
                    1 => first,
                    _ => first + second,
                }
            }
        }
    }

    /// One token's `top_k` experts from its scores (`experts` long), best
    /// first, group-limited.
    pub fn select(&self, row: &[f32]) -> Vec<u32> {
        let size = self.experts / self.groups;
        let kept: Vec<u32> = if self.topk_groups < self.groups {
            best(
                (0..self.groups).map(|g| (g as u32, self.group_score(row, g))).collect(),
                self.topk_groups,
            )
        } else {
            (0..self.groups as u32).collect()
        };
        let candidates: Vec<(u32, f32)> = kept
            .iter()
            .flat_map(|&g| (g as usize * size..(g as usize + 1) * size).map(|e| (e as u32, row[e])))
            .collect();
        best(candidates, self.top_k)
    }

    /// Every token's choices and weights from `scores` (`tokens x experts`).
    pub fn route(&self, scores: &[f32]) -> Routed {
        let mut out = Routed::default();
        for row in scores.chunks_exact(self.experts) {
            let chosen = self.select(row);
            out.weights.extend(weights_for(&chosen, row));
            out.experts.extend(chosen);
        }
        out
    }
}

/// The `k` best `(id, score)` pairs' ids, best first; equal scores rank the
/// lower id first (and NaN below everything, so a broken score cannot win).
fn best(mut items: Vec<(u32, f32)>, k: usize) -> Vec<u32> {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    // A total order (ids are distinct), so partial selection and sorting
    // give the same answer as a full sort.
    let order = |a: &(u32, f32), b: &(u32, f32)| match key(b.1).total_cmp(&key(a.1)) {
        Ordering::Equal => a.0.cmp(&b.0),
        o => o,
    };
    if k == 0 {
        return Vec::new();
    }
    if k < items.len() {
        items.select_nth_unstable_by(k - 1, order);
        items.truncate(k);
    }
    items.sort_by(order);
    items.into_iter().map(|(id, _)| id).collect()
}

/// Weights for `choices` (expert ids, from this gate or from elsewhere: a
/// synthetic source or a trace): the gate's scores of those experts,
/// normalised to sum to 1; equal weights when they sum to 0 (or are not
/// finite). Ids beyond `scores` count as score 0.
pub fn weights_for(choices: &[u32], scores: &[f32]) -> Vec<f32> {
    let chosen: Vec<f32> = choices
        .iter()
        .map(|&e| scores.get(e as usize).copied().unwrap_or(0.0))
        .collect();
    let sum: f32 = chosen.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        chosen.iter().map(|s| s / sum).collect()
    } else {
        vec![1.0 / choices.len().max(1) as f32; choices.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn router(kind: GateKind, experts: usize, top_k: usize, groups: usize, topk_groups: usize) -> Router {
        Router {
            kind,
            experts,
            top_k,
            groups,
            topk_groups,
        }
    }

    /// Brute force by counting, with no sorting: an item (group or expert)
    /// is kept when fewer than the number wanted beat it, where beating is a
    /// better score or an equal score and a lower id.
    fn brute_force(r: &Router, row: &[f32]) -> Vec<u32> {
        let size = r.experts / r.groups;
        let group_score = |g: usize| -> f32 {
            let mut m: Vec<f32> = row[g * size..(g + 1) * size].to_vec();
            m.sort_by(|a, b| b.total_cmp(a));
            match r.kind {
                GateKind::Softmax => m[0],
                GateKind::Sigmoid => m.iter().take(2).sum(),
            }
        };
        // A group is kept when fewer than topk_groups groups beat it (a
        // better score, or an equal score and a lower id).
        let kept = |g: usize| {
            let beaten_by = (0..r.groups)
                .filter(|&o| group_score(o) > group_score(g) || (group_score(o) == group_score(g) && o < g))
                .count();
            beaten_by < r.topk_groups
        };
        let eligible: Vec<usize> = (0..r.experts).filter(|&e| kept(e / size)).collect();
        // Same counting rule for experts among the eligible ones.
        let rank = |e: usize| {
            eligible
                .iter()
                .filter(|&&o| row[o] > row[e] || (row[o] == row[e] && o < e))
                .count()
        };
        let mut chosen: Vec<usize> = eligible.iter().copied().filter(|&e| rank(e) < r.top_k).collect();
        chosen.sort_by_key(|&e| rank(e));
        chosen.into_iter().map(|e| e as u32).collect()
    }

    #[test]
    fn group_limiting_picks_only_from_kept_groups_and_equals_brute_force() {
        let mut rng = Rng::new(11);
        for kind in [GateKind::Sigmoid, GateKind::Softmax] {
            let r = router(kind, 32, 4, 8, 3);
            let size = 4;
            for _ in 0..200 {
                let logits: Vec<f32> = (0..32).map(|_| rng.normal() as f32).collect();
                let w_identity: Vec<f32> = (0..32 * 32).map(|i| if i / 32 == i % 32 { 1.0 } else { 0.0 }).collect();
                let scores = r.scores(&logits, &w_identity, 1, 32);
                let chosen = r.select(&scores);
                assert_eq!(chosen, brute_force(&r, &scores), "{kind:?}");
                let groups: std::collections::BTreeSet<u32> = chosen.iter().map(|e| e / size as u32).collect();
                assert!(groups.len() <= 3, "{chosen:?} spans {groups:?}");
                let routed = r.route(&scores);
                let sum: f32 = routed.weights.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5);
            }
            // A case where group-limiting changes the answer: the single best
            // expert sits in a group whose other members are poor.
            let mut row = vec![0.1f32; 32];
            row[0] = 0.99; // group 0: 0.99 + 0.1
            for g in 1..8 {
                row[g * 4] = 0.6;
                row[g * 4 + 1] = 0.6; // groups 1..7: 1.2
            }
            let r = router(GateKind::Sigmoid, 32, 2, 8, 3);
            assert!(!r.select(&row).contains(&0), "expert 0's group is not among the best 3");
            assert_eq!(r.select(&row), brute_force(&r, &row));
        }
    }

    #[test]
    fn ties_break_by_lower_expert_id() {
        let r = router(GateKind::Sigmoid, 8, 3, 1, 1);
        let row = [0.5f32; 8];
        assert_eq!(r.select(&row), vec![0, 1, 2]);
        let row = [0.2, 0.7, 0.7, 0.1, 0.7, 0.9, 0.0, 0.7];
        assert_eq!(r.select(&row), vec![5, 1, 2]);
        // Tied groups: the lower group wins.
        let r = router(GateKind::Softmax, 8, 2, 4, 1);
        let row = [0.1, 0.3, 0.3, 0.1, 0.0, 0.0, 0.2, 0.1];
        assert_eq!(r.select(&row), vec![1, 0]);
        // NaN never wins.
        let r = router(GateKind::Sigmoid, 4, 1, 1, 1);
        assert_eq!(r.select(&[f32::NAN, 0.1, 0.2, 0.0]), vec![2]);
    }

    #[test]
    fn weights_normalise_the_chosen_scores() {
        assert_eq!(weights_for(&[2, 0], &[0.1, 0.5, 0.3]), vec![0.75, 0.25]);
        assert_eq!(weights_for(&[1, 9], &[0.0, 0.0]), vec![0.5, 0.5]);
        let r = router(GateKind::Softmax, 4, 2, 1, 1);
        let routed = r.route(&[0.1, 0.4, 0.2, 0.3]);
        assert_eq!(routed.experts, vec![1, 3]);
        assert!((routed.weights[0] - 4.0 / 7.0).abs() < 1e-6);
    }

    #[test]
    fn unroutable_shapes_are_refused() {
        let mut moe = MoeSpec {
            experts: 8,
            shared_experts: 0,
            shared_ffn: 0,
            top_k: 2,
            expert_ffn: 4,
            activation: crate::model::Activation::Swiglu,
            gate: GateKind::Sigmoid,
            groups: 2,
            topk_groups: 1,
        };
        assert!(Router::from_spec(&moe).is_ok());
        moe.groups = 3;
        assert!(Router::from_spec(&moe).is_err());
        moe.groups = 4;
        moe.topk_groups = 1;
        moe.top_k = 3;
        assert!(Router::from_spec(&moe).is_err());
        moe.top_k = 0;
        assert!(Router::from_spec(&moe).is_err());
    }
}
