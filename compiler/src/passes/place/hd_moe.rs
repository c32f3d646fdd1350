//! `place(hd_moe)`: HD-MoE's static placement, NodeBalance then LinkBalance,
//! and how its fractional placement becomes replicas in today's runtime.
//!
//! 1. **gamma**: fitted once per plan on the first MoE layer
//!    ([`node_balance::fit_gamma`] over [`node_balance::fit_placements`],
//!    each timed by [`LayerAllToAll`]); 1 when the routing is only known at
//!    run time (`routing = gate`).
//! 2. **NodeBalance** per MoE layer ([`node_balance::solve`]) over the
//!    alive dies as logical nodes: `P[i][c]`.
//! 3. **Replicas**: the runtime is expert-parallel (expert tensor
//!    parallelism comes later), so an expert spread over several nodes is
//!    placed as a whole replica on every node with a real share of it
//!    ([`node_balance::replica_nodes`]); the runtime spreads the expert's
//!    tokens evenly over its replicas (a token's home replica first). `P`
//!    itself is kept in [`HdMoe::node_balance`].
//! 4. **LinkBalance** per MoE layer on meshes ([`link_balance::search`]):
//!    which die each logical node is, by the simulated dispatch + combine
//!    time of the layer. Skipped, with a note, on switches and clusters
//!    (every die is one port away from every other) and without routing.
//! 5. **Memory**: a replica is a whole copy of the weights, so where the
//!    copies do not fit a die's memory beside what is placed data-parallel,
//!    fewer are kept ([`keep_within_memory`]: every expert one copy first,
//!    then more in rounds, largest shares first); the notes say how many
//!    were dropped.

use super::link_balance;
use super::node_balance::{self, LayerProblem, NodeBalance, Status};
use super::{GroupLayout, Place};
use crate::ir::{self, Ir};
use crate::lower;
use crate::passes::probe::layer_all_to_all::{LayerAllToAll, LayerLayout};
use crate::passes::PassContext;
use moec_runtime::machine::DieId;
use moec_runtime::model::LayerKind;
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::units::Seconds;

/// `layouts[layer][expert]`: the dies of each expert (empty for dense layers).
pub type Layouts = Vec<Vec<Vec<DieId>>>;

/// Simulated transfers (dispatch and combine, every evaluation of every
/// layer) LinkBalance may spend; beyond it a layer gets fewer than
/// HD-MoE's 70 evaluations, down to [`MIN_EVALUATIONS`]. A simulated
/// transfer costs about 5 us (optimised build): this keeps LinkBalance
/// near 1.5 s (Mixtral on the 8x8 NMP mesh gets 21 evaluations a layer,
/// DeepSeekMoE on 4x8 9; DeepSeek-V3 on an 8x8 wafer, 58 layers of about
/// 1600 transfers each way, gets the minimum, about 3.5 s).
const TRANSFER_BUDGET: usize = 300_000;
const MIN_EVALUATIONS: usize = 4;

/// The seed of every layer's LinkBalance search (salted with the layer).
const LINK_BALANCE_SEED: u64 = 0x0048_444d_6f45;

/// What HD-MoE's fractional placement becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// `place(hd_moe)`: whole replicas on every node with a real share.
    Replicas,
    /// `parallel = hybrid`: each expert split by FFN columns in
    /// proportion to NodeBalance's fractions (expert tensor parallelism
    /// where it is spread, whole where it is not).
    Hybrid,
    /// `parallel = compute_balanced`: the baseline HD-MoE compares with,
    /// EPLB's compute-balanced split ([`node_balance::compute_balanced`])
    /// in place of NodeBalance and dies in order (no LinkBalance).
    ComputeBalanced,
}

/// HD-MoE's placement of a plan.
#[derive(Clone, Debug)]
pub struct HdMoe {
    /// Per model layer, NodeBalance's fractional placement over the logical
    /// nodes (`None` for dense layers): what expert tensor parallelism will use.
    pub node_balance: Vec<Option<NodeBalance>>,
    /// Per model layer, the die each logical node was mapped to by LinkBalance
    /// (the alive dies in order where it did not run; empty for dense layers).
    pub node_die: Vec<Vec<DieId>>,
    /// The replicas the runtime gets, or the dies of the split experts' parts.
    pub layouts: Layouts,
    /// Split modes: `columns[layer][expert]`, the FFN columns each die of
    /// `layouts[layer][expert]` holds (empty for replicas).
    pub columns: Vec<Vec<Vec<u64>>>,
    /// The gamma NodeBalance used.
    pub gamma: f64,
    /// One line per step on how it went, for the IR's notes.
    pub notes: Vec<String>,
}

/// HD-MoE's placement of the experts of every layer over the alive `dies`.
pub fn place(ir: &Ir, cx: &PassContext, dies: &[DieId], mode: Mode) -> Result<HdMoe, String> {
    let layers = cx.model.layers as usize;
    let experts = cx.model.moe.as_ref().map_or(0, |m| m.experts) as usize;
    let moe_layers: Vec<usize> = (0..cx.model.layers)
        .filter(|&l| cx.model.layer_kind(l) == LayerKind::Moe)
        .map(|l| l as usize)
        .collect();
    let mut out = HdMoe {
        node_balance: vec![None; layers],
        node_die: vec![Vec::new(); layers],
        layouts: vec![Vec::new(); layers],
        columns: vec![Vec::new(); layers],
        gamma: 1.0,
        notes: Vec::new(),
    };
    if experts == 0 || moe_layers.is_empty() || dies.is_empty() {
        return Ok(out);
    }
    let stats = cx.stats()?;
    let problems: Vec<Option<LayerProblem>> = (0..layers)
        .map(|l| {
            moe_layers.contains(&l).then(|| {
                layer_problem(
                    cx,
                    &stats.loads[l],
                    &stats.coactivation[l],
                    dies.len(),
                    mode == Mode::Replicas,
                )
            })
        })
        .collect();

    // The plan placed with any expert layout, for what the simulator and
    // the memory check need besides the experts.
    let mut placed = ir.clone();
    let spread: Layouts = (0..layers)
        .map(|l| {
            if problems[l].is_some() {
                (0..experts).map(|e| vec![dies[e % dies.len()]]).collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    Place::apply(&mut placed, cx, &spread, GroupLayout::Compact)?;
    let mut probe = match RoutingGenerator::new(cx.model, cx.workload)?.step(0) {
        Some(step) => {
            let schedule = lower::lower(&placed, cx.model, cx.machine, cx.workload)?;
            Some(LayerAllToAll::new(cx.machine, schedule, &step))
        }
        None => None,
    };

    // 1. gamma, on the first MoE layer.
    let first = moe_layers[0];
    match (&mut probe, &problems[first]) {
        (Some(probe), Some(problem)) => {
            let (gamma, note) = fit_gamma(probe, problem, first, dies)?;
            out.gamma = gamma;
            out.notes.push(note);
        }
        _ => out
            .notes
            .push("hd_moe gamma 1: routing = gate is only known at run time, nothing to fit".into()),
    }

    // 2. NodeBalance (or the compute-balanced split), 3. the holders of
    // each expert on logical nodes: replicas, or every node with a part.
    let ffn = cx.model.moe.as_ref().map_or(0, |m| m.expert_ffn);
    let mut replicas: Vec<Vec<Vec<(usize, f64)>>> = vec![Vec::new(); layers];
    for &l in &moe_layers {
        let Some(problem) = &problems[l] else { continue };
        if mode == Mode::ComputeBalanced {
            replicas[l] = parts_of(&node_balance::compute_balanced(problem), ffn);
            continue;
        }
        let solved = node_balance::solve(problem, out.gamma);
        replicas[l] = match mode {
            Mode::Replicas => replicas_of(&solved.fractions),
            _ => parts_of(&solved.fractions, ffn),
        };
        out.node_balance[l] = Some(solved);
    }
    let split = mode != Mode::Replicas;
    if mode == Mode::ComputeBalanced {
        out.notes.push(format!(
            "compute_balanced: EPLB's replication of each layer's {experts} experts over {} nodes read as a split, \
             communication not considered",
            dies.len()
        ));
    } else {
        out.notes
            .push(node_balance_note(&out.node_balance, experts, dies.len(), out.gamma));
    }

    // 4. LinkBalance.
    let positions: Option<Vec<(f64, f64)>> = dies
        .iter()
        .map(|&d| cx.machine.coord(d).map(|c| (f64::from(c.x), f64::from(c.y))))
        .collect();
    for &l in &moe_layers {
        out.node_die[l] = dies.to_vec();
    }
    let note = match (&mut probe, positions) {
        _ if mode == Mode::ComputeBalanced => "compute_balanced: nodes on the dies in order (no LinkBalance)".into(),
        (Some(probe), Some(positions)) => link_balance_layers(
            probe,
            &positions,
            &replicas,
            &moe_layers,
            dies,
            &mut out.node_die,
            split,
        )?,
        (None, _) => "hd_moe LinkBalance skipped: routing = gate is only known at run time".into(),
        (_, None) => format!(
            "hd_moe LinkBalance skipped: `{}` is not a mesh (every die is one port from every other)",
            cx.machine.spec().name
        ),
    };
    out.notes.push(note);

    // The replicas on their dies, with the share each stands for.
    let mut candidates: Vec<Vec<Vec<(DieId, f64)>>> = vec![Vec::new(); layers];
    for &l in &moe_layers {
        let node_die = &out.node_die[l];
        candidates[l] = replicas[l]
            .iter()
            .map(|holders| {
                holders
                    .iter()
                    .filter_map(|&(c, share)| node_die.get(c).map(|&d| (d, share)))
                    .collect()
            })
            .collect();
    }

    if split {
        // A split copy is one copy of the weights: nothing to drop.
        for &l in &moe_layers {
            let identity: Vec<usize> = (0..dies.len()).collect();
            let position: Vec<usize> = out.node_die[l]
                .iter()
                .filter_map(|d| dies.iter().position(|x| x == d))
                .collect();
            let position = if position.len() == dies.len() {
                position
            } else {
                identity
            };
            let layout = physical(&replicas[l], &position, dies, split);
            out.layouts[l] = layout.dies;
            out.columns[l] = layout.columns;
        }
        let parts: usize = out.layouts.iter().flatten().map(Vec::len).sum();
        let split_experts = out.layouts.iter().flatten().filter(|d| d.len() > 1).count();
        out.notes.push(format!(
            "{} parts: {split_experts} of {} experts split over several dies, {:.2} dies an expert on average",
            if mode == Mode::Hybrid {
                "hybrid"
            } else {
                "compute_balanced"
            },
            moe_layers.len() * experts,
            parts as f64 / (moe_layers.len() * experts).max(1) as f64
        ));
        return Ok(out);
    }

    // 5. Memory.
    let slots = expert_slots(cx, &placed);
    let wanted: usize = candidates.iter().flatten().map(Vec::len).sum();
    let (layouts, dropped) = keep_within_memory(&candidates, &slots);
    out.layouts = layouts;
    let expert_layers = moe_layers.len() * experts;
    out.notes.push(format!(
        "hd_moe replicas (each expert on every node with P >= 1/(10 N), the runtime spreading its tokens evenly): \
         {:.2} dies an expert on average; {dropped} of {wanted} replicas dropped to fit memory",
        (wanted - dropped) as f64 / expert_layers.max(1) as f64
    ));
    Ok(out)
}

/// Gamma fitted on `layer`'s [`node_balance::fit_placements`], each timed
/// by the simulator with node `c` on `dies[c]`; 1 when the fit fails. And
/// the note saying which.
fn fit_gamma(
    probe: &mut LayerAllToAll,
    problem: &LayerProblem,
    layer: usize,
    dies: &[DieId],
) -> Result<(f64, String), String> {
    let identity: Vec<usize> = (0..dies.len()).collect();
    let mut samples = Vec::new();
    for fractions in node_balance::fit_placements(problem) {
        let layout = physical(&replicas_of(&fractions), &identity, dies, false);
        samples.push((problem.comm_estimate(&fractions), probe.time(layer, &layout)?));
    }
    Ok(match node_balance::fit_gamma(&samples) {
        Some(fit) => (
            fit.gamma,
            format!(
                "hd_moe gamma {:.3}: least squares of the all-to-all estimate against the simulated dispatch + \
                 combine of {} expert-parallel placements of layer {layer} (R^2 {:.2})",
                fit.gamma,
                samples.len(),
                fit.r_squared
            ),
        ),
        None => (
            1.0,
            format!(
                "hd_moe gamma 1: the {} placements of layer {layer} it would be fitted on estimate no all-to-all",
                samples.len()
            ),
        ),
    })
}

/// LinkBalance on every MoE layer: `node_die[layer]` set to the dies the
/// logical nodes are mapped to. The budget is HD-MoE's 70 evaluations a
/// layer, fewer when all layers' searches would simulate more than
/// [`TRANSFER_BUDGET`] transfers (counted on the first layer in die order).
/// Returns the note.
fn link_balance_layers(
    probe: &mut LayerAllToAll,
    positions: &[(f64, f64)],
    replicas: &[Vec<Vec<(usize, f64)>>],
    moe_layers: &[usize],
    dies: &[DieId],
    node_die: &mut [Vec<DieId>],
    split: bool,
) -> Result<String, String> {
    let Some(&first) = moe_layers.first() else {
        return Ok(String::new());
    };
    let identity: Vec<usize> = (0..dies.len()).collect();
    let transfers = probe.transfers(first, &physical(&replicas[first], &identity, dies, split));
    let per_layer = 2 * transfers.max(1) * moe_layers.len();
    let budget = (TRANSFER_BUDGET / per_layer).clamp(MIN_EVALUATIONS, link_balance::EVALUATIONS);
    let (mut before, mut after, mut evaluations) = (0.0, 0.0, 0);
    for &l in moe_layers {
        let seed = LINK_BALANCE_SEED ^ (l as u64).wrapping_mul(0x9E37_79B9);
        let mapping = link_balance::search(positions, budget, seed, |position| {
            probe.time(l, &physical(&replicas[l], position, dies, split))
        })?;
        before += mapping.identity;
        after += mapping.best;
        evaluations += mapping.evaluations;
        node_die[l] = mapping.position.iter().filter_map(|&p| dies.get(p).copied()).collect();
    }
    Ok(if before > 0.0 {
        format!(
            "hd_moe LinkBalance ({} layers, simulated annealing snapped by the Hungarian algorithm, at most {budget} \
             evaluations a layer for about {transfers} transfers each way, {evaluations} made): simulated dispatch \
             + combine summed over the layers {} with nodes in die order, {} mapped",
            moe_layers.len(),
            Seconds(before),
            Seconds(after)
        )
    } else {
        "hd_moe LinkBalance: nothing to map, every token finds its experts on its home die".to_string()
    })
}

/// Per die, how many experts fit beside what `placed` puts there besides
/// experts (the data-parallel weights and the KV cache).
fn expert_slots(cx: &PassContext, placed: &Ir) -> Vec<usize> {
    let expert_bytes = cx.model.expert_bytes().0.max(1);
    let mut slots = vec![0usize; cx.machine.die_count() as usize];
    for load in ir::memory::die_loads(placed, cx.machine) {
        let memory = cx.machine.die_spec(load.die).memory.0;
        if let Some(s) = slots.get_mut(load.die.index()) {
            let free = memory.saturating_sub(load.other_bytes.0 + load.state_bytes.0);
            *s = usize::try_from(free / expert_bytes).unwrap_or(usize::MAX);
        }
    }
    slots
}

/// NodeBalance's input for one layer, from the stats and the plan's figures.
fn layer_problem(
    cx: &PassContext,
    loads: &[f64],
    sets: &[(Vec<u32>, f64)],
    nodes: usize,
    whole_reads: bool,
) -> LayerProblem {
    let tokens = cx.workload.tokens_per_step().max(1) as f64;
    let spec = cx.machine.spec();
    let per_second = |x: f64, rate: f64| if rate > 0.0 { x / rate } else { 0.0 };
    let expert_flops = 2.0 * cx.model.expert_params() as f64;
    let step_bytes = 2.0 * (cx.model.dtype.bytes() * cx.model.hidden) as f64 * tokens;
    LayerProblem::new(
        loads.iter().map(|x| x / tokens).collect(),
        sets.iter().map(|(g, f)| (g.clone(), f / tokens)).collect(),
        nodes,
        per_second(tokens * expert_flops, spec.die.compute.0),
        per_second(step_bytes, spec.link.bandwidth.0),
    )
    .with_weight_reads(
        per_second(cx.model.expert_bytes().0 as f64, spec.die.memory_bw.0),
        whole_reads,
    )
}

/// Each expert's replicas on logical nodes, with the fraction each stands for.
fn replicas_of(fractions: &[Vec<f64>]) -> Vec<Vec<(usize, f64)>> {
    fractions.iter().map(|row| node_balance::replica_nodes(row)).collect()
}

/// Each expert's parts on logical nodes, with the FFN columns each holds
/// (as a count in the `f64`): NodeBalance's fractions of `ffn` columns by
/// largest remainders, parts that round to no column dropped.
fn parts_of(fractions: &[Vec<f64>], ffn: u64) -> Vec<Vec<(usize, f64)>> {
    fractions
        .iter()
        .map(|row| {
            columns_by_largest_remainder(row, ffn)
                .into_iter()
                .enumerate()
                .filter(|&(_, c)| c > 0)
                .map(|(node, c)| (node, c as f64))
                .collect()
        })
        .collect()
}

/// `ffn` columns shared in proportion to `weights` (largest remainders;
/// ties to the lower index), summing to `ffn` exactly.
fn columns_by_largest_remainder(weights: &[f64], ffn: u64) -> Vec<u64> {
    let total: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    if total <= 0.0 || weights.is_empty() {
        let mut c = vec![0; weights.len()];
        if let Some(first) = c.first_mut() {
            *first = ffn;
        }
        return c;
    }
    let exact: Vec<f64> = weights.iter().map(|w| w.max(0.0) / total * ffn as f64).collect();
    let mut columns: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let short = ffn.saturating_sub(columns.iter().sum());
    for &i in order.iter().cycle().take(short as usize) {
        columns[i] += 1;
    }
    columns
}

/// Each expert's layout with logical node `c` at `dies[position[c]]`:
/// whole replicas (dies sorted), or with `split` one copy of parts whose
/// columns the holders' counts give, in die order.
fn physical(replicas: &[Vec<(usize, f64)>], position: &[usize], dies: &[DieId], split: bool) -> LayerLayout {
    let mut layout = LayerLayout::default();
    for holders in replicas {
        let mut parts: Vec<(DieId, u64)> = holders
            .iter()
            .filter_map(|&(c, share)| {
                let die = position.get(c).and_then(|&p| dies.get(p)).copied()?;
                Some((die, share.round() as u64))
            })
            .collect();
        parts.sort();
        layout.dies.push(parts.iter().map(|p| p.0).collect());
        if split {
            layout.columns.push(if parts.len() > 1 {
                parts.iter().map(|p| p.1).collect()
            } else {
                Vec::new()
            });
        }
    }
    if split && layout.columns.iter().all(Vec::is_empty) {
        layout.columns.clear();
    }
    layout
}

/// The replicas kept within memory: `candidates[layer][expert]` the dies
/// that would hold a copy with the share of the expert each stands for,
/// `slots[die]` the experts a die has room for. Every expert first keeps
/// one copy (its largest share on a die with room), then in rounds each
/// expert gets its next copy where there is room, so the copies memory
/// allows are spread over all experts and layers, largest shares first;
/// among equal shares the die with the fewest copies of that layer's
/// experts, so each layer's copies spread over the dies. An expert whose
/// candidate dies are all full takes a die with room elsewhere, and where
/// no die has room its largest share anyway, for the verifier to refuse
/// with the sizes.
/// Returns the layouts and how many candidates were dropped.
fn keep_within_memory(candidates: &[Vec<Vec<(DieId, f64)>>], slots: &[usize]) -> (Layouts, usize) {
    let dies = slots.len();
    let mut used = vec![0usize; dies];
    // Copies of each layer's experts on each die: the runtime balances a
    // layer only over the dies its experts are on.
    let mut in_layer = vec![vec![0usize; dies]; candidates.len()];
    let mut kept: Layouts = candidates.iter().map(|layer| vec![Vec::new(); layer.len()]).collect();
    // The next copy of expert `e` of layer `l`: the largest share on a die
    // with room (ties: the die with the fewest copies of this layer, then
    // the emptier, then the lower); with `forced`, the largest share anyway.
    let mut next = |l: usize, e: usize, forced: bool, used: &mut Vec<usize>, kept: &mut Layouts| -> bool {
        let key = |&(d, share): &(DieId, f64)| {
            let i = d.index();
            (
                std::cmp::Reverse((share * 1e9).round() as i64),
                in_layer[l].get(i).copied().unwrap_or(0),
                used.get(i).copied().unwrap_or(0),
                d,
            )
        };
        let open = |&&(d, _): &&(DieId, f64)| !kept[l][e].contains(&d);
        let room = |&&(d, _): &&(DieId, f64)| used.get(d.index()) < slots.get(d.index());
        let c = &candidates[l][e];
        let pick = c.iter().filter(open).filter(room).min_by_key(|x| key(x));
        let pick = pick.copied();
        // An expert's first copy must go somewhere: on a die with room
        // outside its candidates (fewest of this layer's copies, then the
        // emptier), else on its largest share anyway.
        let pick = if forced {
            pick.or_else(|| {
                (0..dies)
                    .map(|i| DieId(i as u32))
                    .filter(|d| !kept[l][e].contains(d) && used.get(d.index()) < slots.get(d.index()))
                    .min_by_key(|d| (in_layer[l][d.index()], used[d.index()], *d))
                    .map(|d| (d, 0.0))
            })
            .or_else(|| {
                c.iter()
                    .filter(open)
                    .min_by_key(|x| (std::cmp::Reverse((x.1 * 1e9).round() as i64), x.0))
                    .copied()
            })
        } else {
            pick
        };
        let Some((d, _)) = pick else { return false };
        if let Some(u) = used.get_mut(d.index()) {
            *u += 1;
        }
        if let Some(n) = in_layer[l].get_mut(d.index()) {
            *n += 1;
        }
        kept[l][e].push(d);
        true
    };
    for (l, layer) in candidates.iter().enumerate() {
        for e in 0..layer.len() {
            next(l, e, true, &mut used, &mut kept);
        }
    }
    loop {
        let mut progress = false;
        for (l, layer) in candidates.iter().enumerate() {
            for e in 0..layer.len() {
                progress |= next(l, e, false, &mut used, &mut kept);
            }
        }
        if !progress {
            break;
        }
    }
    let wanted: usize = candidates.iter().flatten().map(Vec::len).sum();
    let placed: usize = kept.iter().flatten().map(Vec::len).sum();
    for d in kept.iter_mut().flatten() {
        d.sort();
    }
    (kept, wanted.saturating_sub(placed))
}

/// One line on how every layer's program went: totals, and the layer with
/// the widest gap.
fn node_balance_note(solved: &[Option<NodeBalance>], experts: usize, nodes: usize, gamma: f64) -> String {
    let layers: Vec<(usize, &NodeBalance)> = solved
        .iter()
        .enumerate()
        .filter_map(|(l, s)| s.as_ref().map(|s| (l, s)))
        .collect();
    let count = |f: fn(&Status) -> bool| layers.iter().filter(|(_, s)| f(&s.solved.status)).count();
    let optimal = count(|s| *s == Status::Optimal);
    let node_limit = count(|s| matches!(s, Status::NodeLimit(_)));
    let time_limit = count(|s| matches!(s, Status::TimeLimit(_)));
    let greedy = count(|s| matches!(s, Status::Greedy(_)));
    let total: f64 = layers.iter().map(|(_, s)| s.solved.objective).sum();
    let widest = layers
        .iter()
        .max_by(|a, b| {
            let gap = |s: &NodeBalance| s.solved.gap().unwrap_or(1.0);
            gap(a.1).total_cmp(&gap(b.1)).then(b.0.cmp(&a.0))
        })
        .map(|(l, s)| {
            let gap = s.solved.gap().map_or(String::new(), |g| {
                format!(", gap {:.1}% to the proven bound", 100.0 * g)
            });
            format!(
                "; layer with the widest gap {l}: t_comp {}, t_comm {}, {}{gap}",
                Seconds(s.t_comp),
                Seconds(s.t_comm),
                s.solved.status
            )
        })
        .unwrap_or_default();
    format!(
        "hd_moe NodeBalance ({} layers, {experts} experts on {nodes} nodes, gamma {gamma:.3}): t_comp + 2 t_comm \
         summed {}; {optimal} optimal, {node_limit} at the node limit, {time_limit} at the time limit, {greedy} \
         greedy{widest}",
        layers.len(),
        Seconds(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{self, CompileOptions};
    use crate::ir::Op;
    use crate::source::MemoryReader;
    use std::path::Path;

    /// A small MoE model compiled with `place(hd_moe)` on `topology` with
    /// dies of `compute` and `memory` and links of `bandwidth`.
    fn compiled(topology: &str, compute: &str, memory: &str, bandwidth: &str) -> Ir {
        let src = format!(
            "model m {{ layers = 3; hidden = 64; vocab = 50; attention mha {{ heads = 4; head_dim = 16 }}
                      moe {{ experts = 8; top_k = 2; expert_ffn = 256 }} }}
             machine x {{ topology = {topology}; die {{ compute = {compute}; memory = {memory}; memory_bw = 1 TB/s }}
                         link {{ bandwidth = {bandwidth}; latency = 10 ns }} }}
             workload d {{ phase = decode; batch = 64; context = 32;
                           routing = zipf(s = 1.0, layer_corr = 0.5, seed = 3) }}
             plan default {{ model = m; machine = x; workload = d }}"
        );
        let mut reader = MemoryReader::default();
        reader.0.insert("t.moe".into(), src.into_bytes());
        let session = driver::check(&reader, Path::new("t.moe")).unwrap();
        let options = CompileOptions {
            passes: Some("place(hd_moe)".into()),
            ..Default::default()
        };
        session.compile(&options, &mut |_, _| {}).unwrap()
    }

    fn note<'a>(ir: &'a Ir, prefix: &str) -> &'a str {
        ir.header.notes.iter().find(|n| n.starts_with(prefix)).unwrap()
    }

    #[test]
    fn a_mesh_gets_every_step_and_every_expert_a_die() {
        // Slow links: experts mostly whole, so there is traffic to map.
        let ir = compiled("mesh(4, 2)", "100 TFLOPS", "1 GB", "1 GB/s");
        assert!(
            note(&ir, "hd_moe gamma ").contains("least squares"),
            "{:?}",
            ir.header.notes
        );
        assert!(note(&ir, "hd_moe NodeBalance").contains("3 layers, 8 experts on 8 nodes"));
        assert!(
            note(&ir, "hd_moe LinkBalance").contains("evaluations"),
            "{:#?}",
            ir.header.notes
        );
        assert!(note(&ir, "hd_moe replicas").contains("0 of"));
        for (_, n) in ir.nodes() {
            if let Op::Expert { .. } = n.op {
                assert!(!n.ann.dies.is_empty());
            }
        }
    }

    #[test]
    fn a_switch_skips_link_balance_and_tight_memory_keeps_fewer_copies() {
        let ir = compiled("switch(8)", "100 TFLOPS", "1 GB", "1 GB/s");
        assert!(note(&ir, "hd_moe LinkBalance skipped").contains("not a mesh"));
        // Fast links and slow compute: every expert split over every die,
        // but a die has room for only a few copies beside the rest (the
        // verifier, run after the pass, checks they fit).
        let tight = compiled("mesh(4, 2)", "1 TFLOPS", "700 KB", "10 GB/s");
        let replicas = note(&tight, "hd_moe replicas");
        assert!(!replicas.contains("; 0 of"), "{replicas}");
    }

    #[test]
    fn memory_keeps_copies_spread_over_every_expert_and_never_the_last_one() {
        // Four layers of four experts, each split evenly over four dies,
        // with room for six experts a die: 24 copies for 16 experts.
        let dies: Vec<DieId> = (0..4).map(DieId).collect();
        let everywhere: Vec<(DieId, f64)> = dies.iter().map(|&d| (d, 0.25)).collect();
        let candidates = vec![vec![everywhere; 4]; 4];
        let (kept, dropped) = keep_within_memory(&candidates, &[6; 4]);
        assert_eq!(dropped, 64 - 24);
        let mut per_die = [0; 4];
        for d in kept.iter().flatten().flatten() {
            per_die[d.index()] += 1;
        }
        assert_eq!(per_die, [6; 4]);
        for holders in kept.iter().flatten() {
            // One or two copies each, never none: no layer is left to one die.
            assert!((1..=2).contains(&holders.len()), "{kept:?}");
        }
        // Each layer's six copies spread over the four dies.
        for layer in &kept {
            let mut count = [0; 4];
            for d in layer.iter().flatten() {
                count[d.index()] += 1;
            }
            assert!(
                count.iter().max().unwrap() - count.iter().min().unwrap() <= 1,
                "{layer:?}"
            );
        }
        // Larger shares are kept first.
        let uneven = vec![vec![vec![(DieId(0), 0.2), (DieId(1), 0.8)]]];
        assert_eq!(keep_within_memory(&uneven, &[0, 1]).0, vec![vec![vec![DieId(1)]]]);
        // No room at all: the largest share stays, for the verifier to refuse.
        assert_eq!(keep_within_memory(&uneven, &[0, 0]), (vec![vec![vec![DieId(1)]]], 1));
    }
}
