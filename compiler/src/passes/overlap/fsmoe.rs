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
//! The fit: the step is simulated with every layer in 1, 2, 4 and 8
//! chunks; per layer, `t_a2a` is the busiest die's dispatch span and
//! `t_exp` its experts span, each averaged over the chunks; `alpha` and
//! `beta` are their least-squares fit over the four (FSMoE regresses each
//! task's profile over workload sizes the same way). The combine carries the dispatch's bytes back, so
//! FSMoE gives both one task model; its span is not used, because a die's
//! combine also waits for the slowest expert die, which is imbalance, not
//! the all-to-all. Each layer then
//! takes the `d` of 1, 2, 4 and 8 whose `T(d)` is least (FSMoE snaps its
//! continuous optimum to these; `T` is convex in `d` in each regime, so
//! the least of the four is the snapped optimum), ties to the smaller.
//! The check, in a note: the chosen plan is simulated and the model's
//! layer times set against the simulator's; and every candidate is
//! simulated for every layer, so the note says on how many layers the
//! model picked the simulator's best `d`, and what those would take.

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
    /// The least-squares fit of `t = alpha + beta / d` to `(d, t)` points,
    /// as FSMoE regresses each task's profile over workload sizes; `alpha`
    /// and `beta` kept non-negative (a negative one is noise: the fit is
    /// redone without it).
    pub fn fit(points: &[(u32, f64)]) -> Task {
        let n = points.len().max(1) as f64;
        let x = |d: u32| 1.0 / f64::from(d.max(1));
        let (sx, st) = points.iter().fold((0.0, 0.0), |(a, b), &(d, t)| (a + x(d), b + t));
        let (sxx, sxt) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), &(d, t)| (a + x(d) * x(d), b + x(d) * t));
        let det = n * sxx - sx * sx;
        let (alpha, beta) = if det.abs() > 0.0 {
            ((st * sxx - sx * sxt) / det, (n * sxt - sx * st) / det)
        } else {
            (st / n, 0.0)
        };
        match (alpha < 0.0, beta < 0.0) {
            (true, _) if sxx > 0.0 => Task {
                alpha: 0.0,
                beta: sxt / sxx,
            },
            (_, true) | (true, _) => Task {
                alpha: st / n,
                beta: 0.0,
            },
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
/// layers); the fit and its check against the simulator go in a note.
pub fn chunks(ir: &mut Ir, cx: &PassContext) -> Result<Vec<u32>, String> {
    let layers = cx.model.layers;
    let moe: Vec<usize> = (0..layers as usize)
        .filter(|&l| cx.model.layer_kind(l as u64) == LayerKind::Moe)
        .collect();
    let uniform = |d: u32| super::on_moe_layers(cx, d);
    let probe = |d: Vec<u32>| -> Result<StepResult, String> {
        let mut trial = ir.clone();
        trial.overlap = Overlap::Chunked(d);
        traced_step(&trial, cx)
    };
    // Every candidate simulated whole: the model is fitted on all four
    // (FSMoE's profile over workload sizes), and checked on them.
    let runs = CANDIDATES
        .iter()
        .map(|&d| probe(uniform(d)))
        .collect::<Result<Vec<_>, _>>()?;
    let profiles: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| tasks(r, layers)).collect();
    let simulated: Vec<Vec<f64>> = runs.iter().map(|r| layer_spans(r, layers)).collect();
    let mut chosen = uniform(0);
    let (mut model_total, mut agree, mut best_total) = (0.0, 0, 0.0);
    let mut modelled = vec![0.0; layers as usize];
    for &l in &moe {
        let points = |of: fn(&(f64, f64)) -> f64| -> Vec<(u32, f64)> {
            CANDIDATES.iter().zip(&profiles).map(|(&d, p)| (d, of(&p[l]))).collect()
        };
        let all_to_all = Task::fit(&points(|p| p.0));
        let experts = Task::fit(&points(|p| p.1));
        chosen[l] = best_chunks(all_to_all, experts);
        modelled[l] = pipeline_time(all_to_all, experts, chosen[l]);
        model_total += modelled[l];
        let (k, t) = (0..CANDIDATES.len())
            .map(|k| (k, simulated[k][l]))
            .fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
        best_total += t;
        agree += usize::from(CANDIDATES[k] == chosen[l]);
    }
    // The chosen plan itself, simulated: the model's layer times checked.
    let checked = layer_spans(&probe(chosen.clone())?, layers);
    let (mut sim_total, mut worst) = (0.0, 0.0f64);
    for &l in &moe {
        sim_total += checked[l];
        if checked[l] > 0.0 {
            worst = worst.max((modelled[l] - checked[l]).abs() / checked[l]);
        }
    }
    let count = |d: u32| moe.iter().filter(|&&l| chosen[l] == d).count();
    let summary: Vec<String> = CANDIDATES
        .iter()
        .filter(|&&d| count(d) > 0)
        .map(|&d| format!("d = {d} on {} layers", count(d)))
        .collect();
    ir.header.notes.push(format!(
        "overlap(chunked(auto)): FSMoE's model, fitted on simulated steps of 1, 2, 4 and 8 chunks, chose {}; its MoE layers take {:.3} ms by the model and {:.3} ms simulated (worst layer off by {:.0}%); the simulator's best d of 1, 2, 4, 8 is the model's on {agree} of {} layers and would take {:.3} ms",
        summary.join(", "),
        model_total * 1e3,
        sim_total * 1e3,
        worst * 100.0,
        moe.len(),
        best_total * 1e3
    ));
    Ok(chosen)
}

/// Per layer: (the all-to-all's time, the experts' time) of one chunk,
/// the busiest die's dispatch and experts spans averaged over the layer's
/// chunks.
fn tasks(step: &StepResult, layers: u64) -> Vec<(f64, f64)> {
    // Per layer, per (kind, chunk): the longest span over the dies.
    let mut longest: Vec<std::collections::BTreeMap<(u8, u32), f64>> = vec![Default::default(); layers as usize];
    for s in &step.spans {
        let kind = match s.op {
            Op::Dispatch { .. } => 0,
            Op::Experts { .. } => 1,
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
            (mean(0), mean(1))
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
    fn a_fit_of_points_on_the_model_gives_them_back() {
        let t = Task::fit(&[(1, 3.0), (2, 2.0), (4, 1.5), (8, 1.25)]);
        assert!((t.alpha - 1.0).abs() < 1e-12 && (t.beta - 2.0).abs() < 1e-12, "{t:?}");
        assert_eq!((t.at(1), t.at(2), t.at(4)), (3.0, 2.0, 1.5));
        // Points that would make alpha negative: refitted through the origin.
        let t = Task::fit(&[(1, 2.0), (2, 0.5)]);
        assert_eq!(t.alpha, 0.0);
        assert!((t.beta - 1.8).abs() < 1e-12, "{t:?}");
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
