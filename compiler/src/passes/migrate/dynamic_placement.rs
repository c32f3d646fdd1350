//! HD-MoE's DynamicPlacement: before each MoE layer, broadcast its k
//! hottest predicted experts to every die, during the layer's attention,
//! and send their tokens to the least-loaded holder.
//!
//! Every `every` steps, for each MoE layer, the experts are ranked by the
//! load predicted over the last `window` steps, and k is the largest count
//! whose broadcast fits under the layer's non-MoE time (the attention
//! window, measured on the simulator by [`PhaseLinks`]). A broadcast goes
//! down a spanning tree of the machine's die-to-die links from the expert's
//! holder, in pipelined pieces (chunked mesh broadcast). The tree is grown
//! over the links attention leaves cold first: a link attention's rings
//! use is busy in bursts at the rings' full bandwidth, so any byte a
//! broadcast puts on it lengthens the all-reduce, whatever its mean
//! utilisation says. Only dies no cold link reaches hang off a hot link.
//! A broadcast's time is the busiest tree link's bytes over the bandwidth
//! attention leaves it, plus the pipeline's fill; k broadcasts of one
//! layer share links, so their bytes add on the links their trees share.
//! The copies live for the layer only: nothing stays in memory after it,
//! and nothing is added to a die's permanent load.
//!
//! The estimate cannot see what the simulator sees (dies that lag their
//! peers still send MoE traffic over the links attention leaves cold), so
//! the first period's broadcasts are run on the simulator and k is capped
//! where they stop fitting: HD-MoE's condition, measured.
//!
//! An expert chosen in consecutive periods keeps one broadcast node whose
//! range of steps grows, so the IR stays small on a long run.

use super::load_history::LoadHistory;
use super::{insert, Decision, ExpertHolders, MovePlan};
use crate::ir::{ExpertId, Ir, Phase, Timing, Travel, WeightMove};
use crate::lower;
use crate::passes::probe::phase_links::{PhaseLinks, COLD};
use crate::passes::PassContext;
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::schedule::Broadcast;
use moec_runtime::sim::engine::{simulate_step_with, SimOptions};
use moec_runtime::sim::moves::step_chunks;
use moec_runtime::units::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Pieces a broadcast is cut into per level of its tree: the pipeline's
/// fill (one piece a level) then costs a quarter of one whole transfer.
const PIECES_PER_LEVEL: u32 = 4;

/// A broadcast adds no more than this share of the step, measured on the
/// simulator, or it does not fit under the attention window.
const FIT: f64 = 0.01;

/// The experts one layer broadcasts for one period, hottest first.
struct Choice {
    layer: usize,
    start: u64,
    until: u64,
    experts: Vec<usize>,
}

/// Plans the run's broadcasts.
///
/// The budget estimate (bytes on the busiest tree link against the
/// median attention window) chooses each layer's k; the estimate cannot
/// see dies that lag their peers, whose MoE traffic still holds the links
/// attention leaves cold, so the first period's broadcasts are then run on
/// the simulator and every layer's k is capped at the largest count whose
/// broadcasts add at most [`FIT`] of the step.
pub fn plan(
    ir: &Ir,
    holders: &ExpertHolders,
    history: &LoadHistory,
    cx: &PassContext,
    every: u64,
    window: u64,
) -> Result<MovePlan, String> {
    let machine = cx.machine;
    let links = PhaseLinks::measure(ir, cx)?;
    let budget = links.window_s(Phase::Attention);
    let bytes = cx.model.expert_bytes();
    let steps = history.steps();
    let every = every.max(1);
    let alive = machine.alive_dies();
    let mut trees: BTreeMap<DieId, Tree> = BTreeMap::new();
    let mut choices: Vec<Choice> = Vec::new();
    for s in (1..steps).step_by(every as usize) {
        let until = (s + every).min(steps);
        for (i, layer) in holders.dies.iter().enumerate() {
            let Some(loads) = history.predict(s, window, i) else {
                continue;
            };
            let mut order: Vec<usize> = (0..loads.len()).collect();
            order.sort_by(|&a, &b| loads[b].total_cmp(&loads[a]).then(a.cmp(&b)));
            // The largest k whose broadcasts fit the attention window together.
            let mut link_bytes: BTreeMap<(DieId, DieId), f64> = BTreeMap::new();
            let mut experts = Vec::new();
            for &e in &order {
                let source = layer[e][0];
                let tree = trees
                    .entry(source)
                    .or_insert_with(|| Tree::spanning(machine, &links, source, &alive));
                if tree.edges.is_empty() {
                    break;
                }
                let mut trial = link_bytes.clone();
                for &edge in &tree.edges {
                    *trial.entry(edge).or_insert(0.0) += bytes.0 as f64;
                }
                let piece = bytes.0 as f64 / f64::from(tree.pieces());
                let time = broadcast_time(machine, &links, &trial, tree.depth, piece);
                if time > budget {
                    break;
                }
                link_bytes = trial;
                experts.push(e);
            }
            choices.push(Choice {
                layer: i,
                start: s,
                until,
                experts,
            });
        }
    }
    let estimated = choices.iter().map(|c| c.experts.len()).max().unwrap_or(0);
    let cap = fitting_cap(ir, holders, cx, &choices, &trees, estimated)?;
    let decisions = decide(&choices, cap, holders, &trees, bytes);
    let periods = (1..steps).step_by(every as usize).count().max(1) as f64;
    let chosen: usize = choices.iter().map(|c| c.experts.len().min(cap)).sum();
    let layers = holders.layers.len() as f64;
    let nodes = decisions.len();
    let (hot, depth) = trees.values().fold((0, 0), |(h, d), t| (h + t.hot, d.max(t.depth)));
    let edges: usize = trees.values().map(|t| t.edges.len()).sum();
    Ok(MovePlan {
        decisions,
        shadow_slots: 0,
        notes: vec![format!(
            "dynamic_placement: every {every} steps, window {window}; attention window {:.1} us; the estimate fits up to {estimated} experts a layer, the simulator {cap}; {:.2} experts broadcast per layer on average ({nodes} broadcast nodes); trees up to {depth} levels deep, {hot} of their {edges} edges on links attention uses",
            budget * 1e6,
            chosen as f64 / (layers * periods),
        )],
    })
}

/// The broadcast nodes for `choices`, each layer's list cut to `cap`. An
/// expert chosen in consecutive periods keeps one node whose range grows.
fn decide<'a>(
    choices: impl IntoIterator<Item = &'a Choice>,
    cap: usize,
    holders: &ExpertHolders,
    trees: &BTreeMap<DieId, Tree>,
    bytes: Bytes,
) -> Vec<Decision> {
    // Per (layer, expert): the decision of its broadcast still running.
    let mut running: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut decisions: Vec<Decision> = Vec::new();
    for c in choices {
        for &e in c.experts.iter().take(cap) {
            // Still on from the last period: keep it on longer.
            if let Some(&d) = running.get(&(c.layer, e)) {
                if let Decision::Replicate { weights, .. } = &mut decisions[d] {
                    if weights.timing.until == Some(c.start) {
                        weights.timing.until = Some(c.until);
                        continue;
                    }
                }
            }
            let source = holders.dies[c.layer][e][0];
            let tree = &trees[&source];
            running.insert((c.layer, e), decisions.len());
            decisions.push(Decision::Replicate {
                layer: c.layer,
                weights: WeightMove {
                    expert: ExpertId(e as u32),
                    from: source,
                    to: tree.edges.iter().map(|&(_, c)| c).collect(),
                    bytes,
                    timing: Timing {
                        start: c.start,
                        effective: c.start,
                        until: Some(c.until),
                    },
                    travel: Travel::Tree {
                        edges: tree.edges.clone(),
                        pieces: tree.pieces(),
                    },
                },
            });
        }
    }
    decisions
}

/// The largest cap in `0..=most` whose first-period broadcasts fit, by
/// bisection (more broadcasts never cost less link time).
fn fitting_cap(
    ir: &Ir,
    holders: &ExpertHolders,
    cx: &PassContext,
    choices: &[Choice],
    trees: &BTreeMap<DieId, Tree>,
    most: usize,
) -> Result<usize, String> {
    let Some(step) = choices.first().map(|c| c.start) else {
        return Ok(0);
    };
    let routing = RoutingGenerator::new(cx.model, cx.workload)?
        .step(step)
        .ok_or("routing = gate: no routing to measure broadcasts with before the run")?;
    let fits = |cap: usize| -> Result<bool, String> {
        let mut probe = ir.clone();
        let period = choices.iter().filter(|c| c.start == step);
        insert(
            &mut probe,
            holders,
            decide(period, cap, holders, trees, cx.model.expert_bytes()),
        )?;
        let schedule = lower::lower(&probe, cx.model, cx.machine, cx.workload)?;
        let on: Vec<&Broadcast> = schedule.broadcasts.iter().filter(|b| b.steps.contains(&step)).collect();
        let mut view = schedule.clone();
        view.placement = schedule.placement.with_broadcasts(&on);
        // Exact: the test is a difference of two steps at 1%, finer than
        // the default quantum's error (`Network::with_quantum`).
        let options = SimOptions {
            network_quantum: 0.0,
            ..SimOptions::default()
        };
        let with = simulate_step_with(&view, cx.machine, &routing, options, step_chunks(&[], &on, step))?;
        let without = simulate_step_with(&view, cx.machine, &routing, options, Vec::new())?;
        Ok(with.latency_s - without.latency_s <= FIT * without.latency_s)
    };
    let (mut lo, mut hi) = (0, most);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Seconds for broadcasts whose tree edges carry `link_bytes`: the busiest
/// link's bytes at the bandwidth attention's own traffic leaves it, plus
/// the pipeline's fill (one piece a level).
fn broadcast_time(
    machine: &Machine,
    links: &PhaseLinks,
    link_bytes: &BTreeMap<(DieId, DieId), f64>,
    depth: u32,
    piece: f64,
) -> f64 {
    // What is left of a link once attention's rings have used their share
    // (at least a twentieth, so a busy link is slow, not impossible).
    let spare = |l| machine.link(l).spec.bandwidth.0 * (1.0 - links.utilisation(l, Phase::Attention)).max(0.05);
    let bandwidth = |a: DieId, b: DieId| {
        machine
            .route(a, b)
            .ok()
            .and_then(|r| r.links.iter().map(|&l| spare(l)).reduce(f64::min))
            .unwrap_or(f64::INFINITY)
    };
    let busiest = link_bytes
        .iter()
        .map(|(&(a, b), &x)| x / bandwidth(a, b))
        .fold(0.0, f64::max);
    let slowest = link_bytes
        .keys()
        .map(|&(a, b)| bandwidth(a, b))
        .fold(f64::INFINITY, f64::min);
    busiest + f64::from(depth.saturating_sub(1)) * piece / slowest
}

/// A spanning tree of the alive dies from one source.
struct Tree {
    /// `(parent, child)`, parents before children.
    edges: Vec<(DieId, DieId)>,
    /// Levels below the source.
    depth: u32,
    /// Edges on links attention's traffic uses.
    hot: usize,
}

impl Tree {
    /// Pieces its broadcasts are cut into.
    fn pieces(&self) -> u32 {
        PIECES_PER_LEVEL * self.depth.max(1)
    }

    /// Breadth-first over direct die-to-die links (a mesh's neighbours):
    /// first over the links attention leaves cold, then, from every die
    /// reached, over the hot ones for the dies that are left; dies no
    /// direct link reaches (through a switch) hang off the source.
    fn spanning(machine: &Machine, links: &PhaseLinks, source: DieId, alive: &[DieId]) -> Tree {
        let n = machine.die_count() as usize;
        // [cold, any] neighbours of each die.
        let mut neighbours: [Vec<Vec<DieId>>; 2] = [vec![Vec::new(); n], vec![Vec::new(); n]];
        for l in machine.links().iter().filter(|l| l.alive) {
            let (a, b) = (l.from.0 as usize, l.to.0 as usize);
            if a < n && b < n {
                if links.utilisation(l.id, Phase::Attention) < COLD {
                    neighbours[0][a].push(DieId(b as u32));
                }
                neighbours[1][a].push(DieId(b as u32));
            }
        }
        for v in neighbours.iter_mut().flatten() {
            v.sort_unstable();
            v.dedup();
        }
        let mut level = vec![u32::MAX; n];
        level[source.index()] = 0;
        let mut edges = Vec::new();
        let mut reached = vec![source];
        let mut hot = 0;
        for (pass, graph) in neighbours.iter().enumerate() {
            let mut queue: VecDeque<DieId> = reached.iter().copied().collect();
            while let Some(d) = queue.pop_front() {
                for &c in &graph[d.index()] {
                    if level[c.index()] == u32::MAX && machine.is_alive(c) {
                        level[c.index()] = level[d.index()] + 1;
                        edges.push((d, c));
                        queue.push_back(c);
                        reached.push(c);
                        hot += pass;
                    }
                }
            }
        }
        for &d in alive {
            if level[d.index()] == u32::MAX {
                level[d.index()] = 1;
                edges.push((source, d));
            }
        }
        let depth = alive.iter().map(|d| level[d.index()]).max().unwrap_or(0);
        Tree { edges, depth, hot }
    }
}
