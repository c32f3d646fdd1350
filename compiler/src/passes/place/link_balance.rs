//! HD-MoE's LinkBalance: which physical mesh position each logical node
//! (each of NodeBalance's nodes) takes, so that the all-to-all's links are
//! evenly loaded.
//!
//! A black-box search over permutations with a fixed budget of objective
//! evaluations ([`EVALUATIONS`], HD-MoE's 70). HD-MoE's code searches with
//! Bayesian optimisation and has a simulated-annealing alternative; moec
//! runs the annealing, seeded, so a compile is reproducible. A candidate is
//! a target point on the mesh for every logical node; the Hungarian
//! algorithm ([`crate::passes::hungarian`]) snaps it to the permutation of dies
//! with the least total Manhattan distance to the targets. A move shifts the
//! targets of a few nodes by a normal step that shrinks as the budget is
//! spent, and is kept by the Metropolis rule at a temperature that cools
//! from 5% of the starting cost to zero. Permutations already tried are not
//! evaluated again. The objective is the caller's (in `hd_moe`, the
//! simulated dispatch + combine time of the layer: `layer_all_to_all`).

use crate::passes::hungarian;
use moec_runtime::rng::Rng;
use std::collections::BTreeMap;

/// Objective evaluations per search (the first is the identity mapping).
pub const EVALUATIONS: usize = 70;

/// Candidates drawn per evaluation budgeted at most: a search whose moves
/// keep snapping to permutations already tried stops instead of spinning.
const DRAWS_PER_EVALUATION: usize = 20;

/// A search's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    /// `position[c]`: the index (into the caller's positions) logical node
    /// `c` is mapped to.
    pub position: Vec<usize>,
    /// The objective of the identity mapping (node `c` at position `c`).
    pub identity: f64,
    /// The objective of `position`.
    pub best: f64,
    /// Objective evaluations made.
    pub evaluations: usize,
}

/// Maps logical nodes to `positions` (mesh coordinates, one per physical
/// die; node `c` starts at `positions[c]`) minimising `objective(position)`
/// within `budget` evaluations, drawing from `seed`.
pub fn search(
    positions: &[(f64, f64)],
    budget: usize,
    seed: u64,
    mut objective: impl FnMut(&[usize]) -> Result<f64, String>,
) -> Result<Mapping, String> {
    let n = positions.len();
    let identity_position: Vec<usize> = (0..n).collect();
    let identity = objective(&identity_position)?;
    let mut best = Mapping {
        position: identity_position.clone(),
        identity,
        best: identity,
        evaluations: 1,
    };
    // Nothing to balance: no traffic, or nowhere else to go.
    if n < 2 || identity <= 0.0 || budget <= 1 {
        return Ok(best);
    }
    let extent = |pick: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = positions
            .iter()
            .map(pick)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        hi - lo
    };
    let span = extent(|p| p.0).max(extent(|p| p.1)).max(1.0);
    let mut rng = Rng::new(seed);
    let mut tried: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
    tried.insert(identity_position.clone(), identity);
    let (mut current, mut current_cost) = (identity_position, identity);
    let mut draws = 0;
    while best.evaluations < budget && draws < budget * DRAWS_PER_EVALUATION {
        draws += 1;
        let progress = best.evaluations as f64 / budget as f64;
        let step = 0.5 + 0.5 * span * (1.0 - progress);
        // Targets: where each node is now, a few of them moved.
        let mut targets: Vec<(f64, f64)> = current.iter().map(|&d| positions[d]).collect();
        let moved = 1 + rng.below((n / 8).max(1) as u64) as usize;
        for _ in 0..moved {
            let c = rng.below(n as u64) as usize;
            targets[c].0 += step * rng.normal();
            targets[c].1 += step * rng.normal();
        }
        let cost: Vec<Vec<f64>> = targets
            .iter()
            .map(|t| {
                positions
                    .iter()
                    .map(|p| (t.0 - p.0).abs() + (t.1 - p.1).abs())
                    .collect()
            })
            .collect();
        let candidate = hungarian::assign(&cost)?;
        let value = match tried.get(&candidate) {
            Some(&v) => v,
            None => {
                let v = objective(&candidate)?;
                best.evaluations += 1;
                tried.insert(candidate.clone(), v);
                v
            }
        };
        let temperature = 0.05 * identity * (1.0 - progress);
        let accept = value <= current_cost
            || (temperature > 0.0 && rng.next_f64() < (-(value - current_cost) / temperature).exp());
        if value < best.best {
            best.best = value;
            best.position = candidate.clone();
        }
        if accept {
            current = candidate;
            current_cost = value;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(w: usize, h: usize) -> Vec<(f64, f64)> {
        (0..w * h).map(|i| ((i % w) as f64, (i / w) as f64)).collect()
    }

    #[test]
    fn finds_a_better_mapping_within_its_budget_and_is_reproducible() {
        // Node 0 talks to every other node: the objective is its total
        // Manhattan distance to them, least with node 0 in the middle.
        let positions = grid(4, 4);
        let objective = |p: &[usize]| -> Result<f64, String> {
            let hub = positions[p[0]];
            Ok(positions
                .iter()
                .map(|q| (q.0 - hub.0).abs() + (q.1 - hub.1).abs())
                .sum())
        };
        let a = search(&positions, EVALUATIONS, 7, objective).unwrap();
        assert!(a.evaluations <= EVALUATIONS);
        assert!(a.best < a.identity, "{a:?}");
        let mut seen = a.position.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..16).collect::<Vec<_>>(), "a permutation");
        // The hub in one of the four central dies (distance sum 32, the least).
        assert_eq!(a.best, 32.0, "{a:?}");
        assert_eq!(search(&positions, EVALUATIONS, 7, objective).unwrap(), a);
    }

    #[test]
    fn no_traffic_keeps_the_identity_after_one_evaluation() {
        let mut calls = 0;
        let m = search(&grid(2, 2), EVALUATIONS, 1, |_| {
            calls += 1;
            Ok(0.0)
        })
        .unwrap();
        assert_eq!((m.position, m.evaluations, calls), (vec![0, 1, 2, 3], 1, 1));
    }
}
