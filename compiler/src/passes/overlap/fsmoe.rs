//! FSMoE's choice of the chunk count of each MoE layer (`chunked(auto)`),
//! from its alpha-beta task model fitted on the simulated machine.
//!
//! FSMoE models every task of an MoE layer as `t = alpha + beta a` for a
//! workload `a`, so a chunk of `a / d` costs `t(d) = alpha + beta a / d`.
//! Its pipeline (`lower/program.rs`: every chunk's dispatch, then every
//! chunk's combine, one at a time on the communication stream; chunk `c`'s
//! experts as soon as its dispatch lands) takes
//!
//! - `T(d) = 2 d t_a2a(d)` when communication dominates, `2 (d - 1)
//!   t_a2a(d) >= d t_exp(d)`: the communication stream never idles;
//! - `T(d) = 2 t_a2a(d) + d t_exp(d)` otherwise: the first dispatch, every
//!   chunk's experts back to back, the last combine.
//!
//! (FSMoE's intra-node all-gather and reduce-scatter of sliced experts
//! have no task here: moec's dispatch sends a token to every part of a
//! split expert directly, so their bytes are in the dispatch's.)
//!
//! The fit: the step is simulated with every layer in one chunk and in
//! two; per layer, `t_a2a` is the mean of the busiest die's dispatch and
//! combine spans, `t_exp` the busiest die's experts span, each averaged
//! over the chunks; two points give `alpha` and `beta`. Each layer then
//! takes the `d` of 1, 2, 4 and 8 whose `T(d)` is least (FSMoE snaps its
//! continuous optimum to these; `T` is convex in `d` in each regime, so
//! the least of the four is the snapped optimum), ties to the smaller.
//! The chosen plan is simulated once more and the model's layer times are
//! checked against the simulator's, in a note.

use crate::ir::{Ir, Overlap};
use crate::passes::probe::step_time::traced_step;
use crate::passes::PassContext;
use moec_runtime::model::LayerKind;
use moec_runtime::schedule::Op;
use moec_runtime::sim::engine::StepResult;

/// The chunk counts FSMoE chooses among.
pub const CANDIDATES: [u32; 4] = [1, 2, 4, 8];

/// One task's cost model: `t(d) = alpha + beta / d` (seconds, the layer's
/// whole workload folded into `beta`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Task {
    pub alpha: f64,
    pub beta: f64,
}

impl Task {
    /// Through `(1, t1)` and `(2, t2)`, with `alpha` and `beta` kept
    /// non-negative (a negative one is noise: the other takes all of `t1`).
    pub fn fit(t1: f64, t2: f64) -> Task {
        let (alpha, beta) = (2.0 * t2 - t1, 2.0 * (t1 - t2));
        match (alpha < 0.0, beta < 0.0) {
            (true, _) => Task { alpha: 0.0, beta: t1 },
            (_, true) => Task { alpha: t1, beta: 0.0 },
            _ => Task { alpha, beta },
        }
    }

    /// One chunk's time when the work is split in `d`.
    pub fn at(&self, d: u32) -> f64 {
        self.alpha + self.beta / f64::from(d.max(1))
    }
}

/// FSMoE's pipeline time of one MoE layer in `d` chunks (the module doc).
pub fn pipeline_time(all_to_all: Task, experts: Task, d: u32) -> f64 {
    let (a2a, exp, n) = (all_to_all.at(d), experts.at(d), f64::from(d.max(1)));
    if 2.0 * (n - 1.0) * a2a >= n * exp {
        2.0 * n * a2a
    } else {
        2.0 * a2a + n * exp
    }
}

/// The `d` of `CANDIDATES` whose pipeline time is least, ties to the smaller.
pub fn best_chunks(all_to_all: Task, experts: Task) -> u32 {
    let mut best = (f64::INFINITY, 1);
    for d in CANDIDATES {
        let t = pipeline_time(all_to_all, experts, d);
        if t < best.0 {
            best = (t, d);
        }
    }
    best.1
}

/// Per model layer, the chunks FSMoE's model chooses (0 for dense
/// layers); the fit and its check against the simulator go in notes.
pub fn chunks(ir: &mut Ir, cx: &PassContext) -> Result<Vec<u32>, String> {
    let layers = cx.model.layers;
    let moe: Vec<bool> = (0..layers).map(|l| cx.model.layer_kind(l) == LayerKind::Moe).collect();
    let uniform = |d: u32| moe.iter().map(|&m| if m { d } else { 0 }).collect::<Vec<u32>>();
    let probe = |d: Vec<u32>| -> Result<StepResult, String> {
        let mut trial = ir.clone();
        trial.overlap = Overlap::Chunked(d);
        traced_step(&trial, cx)
    };
    let (one, two) = (tasks(&probe(uniform(1))?, layers), tasks(&probe(uniform(2))?, layers));
    let mut chosen = vec![0u32; layers as usize];
    let mut model_s = vec![0.0; layers as usize];
    for l in (0..layers as usize).filter(|&l| moe[l]) {
        let all_to_all = Task::fit(one[l].0, two[l].0);
        let experts = Task::fit(one[l].1, two[l].1);
        chosen[l] = best_chunks(all_to_all, experts);
        model_s[l] = pipeline_time(all_to_all, experts, chosen[l]);
    }
    // The check: the chosen plan's simulated layer times against the model's.
    let checked = layer_spans(&probe(chosen.clone())?, layers);
    let (mut sim_total, mut model_total, mut worst) = (0.0, 0.0, 0.0f64);
    for l in (0..layers as usize).filter(|&l| moe[l]) {
        sim_total += checked[l];
        model_total += model_s[l];
        if checked[l] > 0.0 {
            worst = worst.max((model_s[l] - checked[l]).abs() / checked[l]);
        }
    }
    let count = |d: u32| chosen.iter().zip(&moe).filter(|&(&c, &m)| m && c == d).count();
    let summary: Vec<String> = CANDIDATES
        .iter()
        .filter(|&&d| count(d) > 0)
        .map(|&d| format!("d = {d} on {} layers", count(d)))
        .collect();
    ir.header.notes.push(format!(
        "overlap(chunked(auto)): FSMoE's model, fitted on simulated steps of 1 and 2 chunks, chose {}; its MoE layers take {:.3} ms by the model and {:.3} ms simulated (worst layer off by {:.0}%)",
        summary.join(", "),
        model_total * 1e3,
        sim_total * 1e3,
        worst * 100.0
    ));
    Ok(chosen)
}

/// Per layer: (the all-to-all's time, the experts' time) of one chunk,
/// each the busiest die's span averaged over the layer's chunks (the
/// all-to-all the mean of dispatch and combine).
fn tasks(step: &StepResult, layers: u64) -> Vec<(f64, f64)> {
    // Per layer, per (kind, chunk): the longest span over the dies.
    let mut longest: Vec<std::collections::BTreeMap<(u8, u32), f64>> = vec![Default::default(); layers as usize];
    for s in &step.spans {
        let kind = match s.op {
            Op::Dispatch { .. } => 0,
            Op::Combine { .. } => 1,
            Op::Experts { .. } => 2,
            _ => continue,
        };
        let Some(of) = s.op.layer().and_then(|l| longest.get_mut(l as usize)) else {
            continue;
        };
        let x = of.entry((kind, s.chunk)).or_insert(0.0);
        *x = x.max(s.end_s - s.start_s);
    }
    longest
        .iter()
        .map(|of| {
            let mean = |kind: u8| {
                let v: Vec<f64> = of.iter().filter(|((k, _), _)| *k == kind).map(|(_, &t)| t).collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            ((mean(0) + mean(1)) / 2.0, mean(2))
        })
        .collect()
}

/// Per layer: from its first dispatch's start to its last combine's end,
/// over all dies (0 for a layer without them).
fn layer_spans(step: &StepResult, layers: u64) -> Vec<f64> {
    let mut first_last = vec![(f64::INFINITY, 0.0f64); layers as usize];
    for s in &step.spans {
        let Some(at) = s.op.layer().and_then(|l| first_last.get_mut(l as usize)) else {
            continue;
        };
        match s.op {
            Op::Dispatch { .. } => at.0 = at.0.min(s.start_s),
            Op::Combine { .. } => at.1 = at.1.max(s.end_s),
            _ => {}
        }
    }
    first_last
        .iter()
        .map(|&(a, b)| if a.is_finite() { (b - a).max(0.0) } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fit_through_two_points_gives_them_back() {
        let t = Task::fit(3.0, 2.0);
        assert_eq!((t.alpha, t.beta), (1.0, 2.0));
        assert_eq!((t.at(1), t.at(2), t.at(4)), (3.0, 2.0, 1.5));
        // Noise that would make alpha negative gives beta all of it.
        assert_eq!(Task::fit(2.0, 0.5), Task { alpha: 0.0, beta: 2.0 });
    }

    #[test]
    fn the_pipeline_time_follows_fsmoe_in_both_regimes() {
        // Communication dominates: 2 d t_a2a(d).
        let (a2a, exp) = (Task { alpha: 0.1, beta: 4.0 }, Task { alpha: 0.0, beta: 1.0 });
        assert!((pipeline_time(a2a, exp, 4) - 2.0 * 4.0 * (0.1 + 1.0)).abs() < 1e-12);
        // Compute dominates: 2 t_a2a(d) + d t_exp(d).
        let (a2a, exp) = (Task { alpha: 0.0, beta: 1.0 }, Task { alpha: 0.5, beta: 8.0 });
        assert!((pipeline_time(a2a, exp, 4) - (2.0 * 0.25 + 4.0 * (0.5 + 2.0))).abs() < 1e-12);
        // One chunk: dispatch, experts, combine.
        assert!((pipeline_time(a2a, exp, 1) - (2.0 + 8.5)).abs() < 1e-12);
    }

    #[test]
    fn a_fixed_cost_per_chunk_limits_the_chunks() {
        let a2a = Task { alpha: 0.0, beta: 1.0 };
        // No cost per chunk and compute the longer: more chunks hide more.
        assert_eq!(best_chunks(a2a, Task { alpha: 0.0, beta: 2.0 }), 8);
        // Re-reading the weights per chunk costs as much as the work: one.
        assert_eq!(best_chunks(a2a, Task { alpha: 10.0, beta: 1.0 }), 1);
    }
}
