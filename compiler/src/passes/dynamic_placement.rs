//! HD-MoE's DynamicPlacement: before each MoE layer, broadcast its k
//! hottest predicted experts to every die, during the layer's attention,
//! and send their tokens to the least-loaded holder.
//!
//! Every `every` steps, for each MoE layer, the experts are ranked by the
//! load predicted over the last `window` steps, and k is the largest count
//! whose broadcast fits under the layer's non-MoE time (the attention
//! window, measured on the simulator by [`PhaseLinks`]). A broadcast goes
//! down a spanning tree of the machine's die-to-die links from the expert's
//! holder, in pipelined pieces (chunked mesh broadcast), so its time is the
//! busiest tree link's bytes over the bandwidth attention's own traffic
//! leaves it (measured per link) plus the pipeline's fill;
//! k broadcasts of one layer share links, so their bytes add on the links
//! their trees share. The copies live for the layer only: nothing stays in
//! memory after it, and nothing is added to a die's permanent load.
//!
//! An expert chosen in consecutive periods keeps one broadcast node whose
//! range of steps grows, so the IR stays small on a long run.

use super::load_history::LoadHistory;
use super::migrate::{Decision, ExpertHolders, MovePlan};
use super::phase_links::PhaseLinks;
use super::PassContext;
use crate::ir::{ExpertId, Ir, Phase, Timing, Travel, WeightMove};
use moec_runtime::machine::{DieId, Machine};
use std::collections::{BTreeMap, VecDeque};

/// Pieces a broadcast is cut into per level of its tree: the pipeline's
/// fill (one piece a level) then costs a quarter of one whole transfer.
const PIECES_PER_LEVEL: u32 = 4;

/// Plans the run's broadcasts.
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
    // Per (layer, expert): the decision of its broadcast still running.
    let mut running: BTreeMap<(usize, u32), usize> = BTreeMap::new();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut chosen_total = 0u64;
    let mut periods = 0u64;
    for s in (1..steps).step_by(every as usize) {
        let until = (s + every).min(steps);
        periods += 1;
        for (i, layer) in holders.dies.iter().enumerate() {
            let Some(loads) = history.predict(s, window, i) else {
                continue;
            };
            let mut order: Vec<usize> = (0..loads.len()).collect();
            order.sort_by(|&a, &b| loads[b].total_cmp(&loads[a]).then(a.cmp(&b)));
            // The largest k whose broadcasts fit the attention window together.
            let mut link_bytes: BTreeMap<(DieId, DieId), f64> = BTreeMap::new();
            let mut chosen = Vec::new();
            for &e in &order {
                let source = layer[e][0];
                let tree = trees
                    .entry(source)
                    .or_insert_with(|| Tree::spanning(machine, source, &alive));
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
                chosen.push(e);
            }
            chosen_total += chosen.len() as u64;
            for e in chosen {
                let key = (i, e as u32);
                // Still on from the last period: keep it on longer.
                if let Some(&d) = running.get(&key) {
                    if let Decision::Replicate { weights, .. } = &mut decisions[d] {
                        if weights.timing.until == Some(s) {
                            weights.timing.until = Some(until);
                            continue;
                        }
                    }
                }
                let source = layer[e][0];
                let tree = &trees[&source];
                running.insert(key, decisions.len());
                decisions.push(Decision::Replicate {
                    layer: i,
                    weights: WeightMove {
                        expert: ExpertId(e as u32),
                        from: source,
                        to: tree.edges.iter().map(|&(_, c)| c).collect(),
                        bytes,
                        timing: Timing {
                            start: s,
                            effective: s,
                            until: Some(until),
                        },
                        travel: Travel::Tree {
                            edges: tree.edges.clone(),
                            pieces: tree.pieces(),
                        },
                    },
                });
            }
        }
    }
    let layers = holders.layers.len() as f64;
    let nodes = decisions.len();
    Ok(MovePlan {
        decisions,
        shadow_slots: 0,
        notes: vec![format!(
            "dynamic_placement: every {every} steps, window {window}; attention window {:.1} us; {:.2} experts broadcast per layer on average ({} broadcast nodes)",
            budget * 1e6,
            chosen_total as f64 / (layers * periods.max(1) as f64),
            nodes,
        )],
    })
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
}

impl Tree {
    /// Pieces its broadcasts are cut into.
    fn pieces(&self) -> u32 {
        PIECES_PER_LEVEL * self.depth.max(1)
    }

    /// Breadth-first over direct die-to-die links (a mesh's neighbours);
    /// dies no such link reaches (through a switch) hang off the source.
    fn spanning(machine: &Machine, source: DieId, alive: &[DieId]) -> Tree {
        let n = machine.die_count() as usize;
        let mut neighbours: Vec<Vec<DieId>> = vec![Vec::new(); n];
        for l in machine.links().iter().filter(|l| l.alive) {
            let (a, b) = (l.from.0 as usize, l.to.0 as usize);
            if a < n && b < n {
                neighbours[a].push(DieId(b as u32));
            }
        }
        neighbours.iter_mut().for_each(|v| {
            v.sort_unstable();
            v.dedup();
        });
        let mut level = vec![u32::MAX; n];
        level[source.index()] = 0;
        let mut edges = Vec::new();
        let mut queue = VecDeque::from([source]);
        while let Some(d) = queue.pop_front() {
            for &c in &neighbours[d.index()] {
                if level[c.index()] == u32::MAX && machine.is_alive(c) {
                    level[c.index()] = level[d.index()] + 1;
                    edges.push((d, c));
                    queue.push_back(c);
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
        Tree { edges, depth }
    }
}
