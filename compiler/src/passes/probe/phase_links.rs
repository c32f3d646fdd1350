//! Which links each phase of a step leaves cold, measured on the
//! simulator, and the legs a non-invasive migration takes over them.
//!
//! MoEntwine's observation: under ER-Mapping the links that attention's
//! rings load and the links that the MoE all-to-all loads are
//! complementary, so weights can travel in one phase over the links only
//! the other phase uses, and never sit on the critical path. This file
//! measures that instead of assuming it: one step of the placed plan runs
//! on the simulator with every transfer recorded, each transfer is routed
//! over the machine's links, and a link's utilisation in a phase is the
//! time it was busy with that phase's traffic over the time the dies spent
//! in that phase. A link is cold in a phase below [`COLD`].
//!
//! The same step gives the windows' lengths (the median time a die spends
//! in one layer's attention and in one layer's MoE phase), which size the
//! chunks so that a chunk crosses its leg within its window.

use crate::ir::{Ir, Leg, Phase};
use crate::lower;
use moec_runtime::machine::{DieId, LinkId, Machine};
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::schedule::Op;
use moec_runtime::sim::engine::{simulate_step_with, SimOptions};
use moec_runtime::units::Bytes;
use std::collections::BTreeMap;

use crate::passes::PassContext;

/// A link whose utilisation by a phase's traffic is below this is cold in
/// that phase.
pub const COLD: f64 = 0.02;

/// The share of a window a chunk may take on its link at full bandwidth:
/// half, so a chunk that shares a link or starts late still lands in its
/// window.
const WINDOW_SHARE: f64 = 0.5;

/// Per-link utilisation by phase, and the phases' window lengths.
#[derive(Clone, Debug)]
pub struct PhaseLinks {
    /// `[attention, moe][link]`: busy time with that phase's traffic over
    /// the phase's time.
    utilisation: [Vec<f64>; 2],
    /// `[attention, moe]`: the median length of one layer's window.
    window_s: [f64; 2],
    /// Die-to-die bandwidth of the slowest alive link (chunk sizing).
    link_bandwidth: f64,
    /// `[attention, moe][src * dies + dst]`: the route's hops and its
    /// hottest link's utilisation in that phase, when every link on it is
    /// cold (what the legs search asks, once per pair).
    cold_routes: [Vec<Option<(u32, f64)>>; 2],
    dies: usize,
}

fn slot(p: Phase) -> usize {
    match p {
        Phase::Attention => 0,
        Phase::Moe => 1,
    }
}

impl PhaseLinks {
    /// Simulates step 0 of the plan as `ir` places it and measures.
    pub fn measure(ir: &Ir, cx: &PassContext) -> Result<PhaseLinks, String> {
        let schedule = lower::lower(ir, cx.model, cx.machine, cx.workload)?;
        let routing = RoutingGenerator::new(cx.model, cx.workload)?
            .step(0)
            .ok_or("routing = gate: no routing to measure links with before the run")?;
        let options = SimOptions {
            record_flows: true,
            // Exact: the windows are a measurement the migration plan is
            // sized by, and one step costs little beside the pass's search.
            network_quantum: 0.0,
            ..SimOptions::default()
        };
        let step = simulate_step_with(&schedule, cx.machine, &routing, options, Vec::new())?;
        let machine = cx.machine;
        let links = machine.links().len();
        let mut busy = [vec![0.0f64; links], vec![0.0f64; links]];
        for f in step.flows.iter().filter(|f| !f.migration) {
            let Some(phase) = f.phase else { continue };
            let route = machine.route(f.src, f.dst).map_err(|e| e.to_string())?;
            for l in route.links {
                busy[slot(phase)][l.index()] += f.bytes as f64 / machine.link(l).spec.bandwidth.0;
            }
        }
        // Window lengths per die and layer: a window runs from the
        // instruction that opens it to the one that opens the next.
        let mut opened: BTreeMap<DieId, Vec<(f64, Phase)>> = BTreeMap::new();
        for s in &step.spans {
            let phase = match s.op {
                Op::AllGather { .. } | Op::Attention { .. } => Phase::Attention,
                Op::TokenAllGather { .. } | Op::Dispatch { .. } => Phase::Moe,
                _ => continue,
            };
            let list = opened.entry(s.die).or_default();
            // An attention's ring all-gather opened its window already.
            if list.last().is_none_or(|&(_, p)| p != phase) {
                list.push((s.start_s, phase));
            }
        }
        let mut lengths: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut total = [0.0f64; 2];
        let dies = opened.len().max(1) as f64;
        for list in opened.values_mut() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            for w in list.windows(2) {
                let length = w[1].0 - w[0].0;
                lengths[slot(w[0].1)].push(length);
                total[slot(w[0].1)] += length / dies;
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let window_s = [median(&mut lengths[0]), median(&mut lengths[1])];
        let utilisation = [0, 1].map(|p| {
            busy[p]
                .iter()
                .map(|&b| if total[p] > 0.0 { b / total[p] } else { 0.0 })
                .collect()
        });
        let link_bandwidth = machine
            .links()
            .iter()
            .filter(|l| l.alive)
            .map(|l| l.spec.bandwidth.0)
            .fold(f64::INFINITY, f64::min);
        let dies = machine.die_count() as usize;
        let cold_routes = [0, 1].map(|p: usize| {
            let mut table = vec![None; dies * dies];
            for a in machine.alive_dies() {
                for b in machine.alive_dies() {
                    let Ok(route) = machine.route(a, b) else { continue };
                    let u: &Vec<f64> = &utilisation[p];
                    let hottest = route.links.iter().map(|l| u[l.index()]).fold(0.0, f64::max);
                    if a != b && hottest < COLD {
                        table[a.index() * dies + b.index()] = Some((route.hops(), hottest));
                    }
                }
            }
            table
        });
        Ok(PhaseLinks {
            utilisation,
            window_s,
            link_bandwidth: if link_bandwidth.is_finite() {
                link_bandwidth
            } else {
                0.0
            },
            cold_routes,
            dies,
        })
    }

    /// A link's utilisation by `phase`'s traffic.
    pub fn utilisation(&self, link: LinkId, phase: Phase) -> f64 {
        self.utilisation[slot(phase)].get(link.index()).copied().unwrap_or(0.0)
    }

    /// The median length of one layer's window of `phase`.
    pub fn window_s(&self, phase: Phase) -> f64 {
        self.window_s[slot(phase)]
    }

    /// How many links are cold in each phase, for the notes.
    pub fn cold_counts(&self, machine: &Machine) -> [usize; 2] {
        [0, 1].map(|p| {
            machine
                .links()
                .iter()
                .filter(|l| l.alive && self.utilisation[p][l.id.index()] < COLD)
                .count()
        })
    }

    /// The bytes a chunk on legs of `phases` carries: what crosses a link
    /// in a share of the shortest of their windows.
    pub fn chunk_bytes(&self, phases: impl Iterator<Item = Phase>) -> Bytes {
        let window = phases.map(|p| self.window_s(p)).fold(f64::INFINITY, f64::min);
        let window = if window.is_finite() { window } else { 0.0 };
        // At least a megabyte: a smaller piece costs more in latency than it saves.
        Bytes(((window * WINDOW_SHARE * self.link_bandwidth) as u64).max(1 << 20))
    }

    /// The legs that carry an expert from `from` to `to`, each over links
    /// cold in its phase: the fewest legs (at most three, MoEntwine's
    /// local / global / local), then the fewest hops, then the coolest
    /// hottest link. `None` when no such legs exist.
    pub fn legs(&self, machine: &Machine, from: DieId, to: DieId) -> Option<Vec<Leg>> {
        let alive = machine.alive_dies();
        let cold = |a: DieId, b: DieId, p: Phase| -> Option<(u32, f64)> {
            self.cold_routes[slot(p)]
                .get(a.index() * self.dies + b.index())
                .copied()
                .flatten()
        };
        let phases = [Phase::Attention, Phase::Moe];
        let mut best: Option<((u32, f64), Vec<Leg>)> = None;
        let consider = |legs: Vec<Leg>, cost: (u32, f64), best: &mut Option<((u32, f64), Vec<Leg>)>| {
            if best
                .as_ref()
                .is_none_or(|(c, _)| cost.0 < c.0 || (cost.0 == c.0 && cost.1 < c.1))
            {
                *best = Some((cost, legs));
            }
        };
        let leg = |from, to, phase| Leg { from, to, phase };
        let join = |a: (u32, f64), b: (u32, f64)| (a.0 + b.0, a.1.max(b.1));
        for p in phases {
            if let Some(c) = cold(from, to, p) {
                consider(vec![leg(from, to, p)], c, &mut best);
            }
        }
        if best.is_some() {
            return best.map(|(_, l)| l);
        }
        for &r in alive.iter().filter(|&&r| r != from && r != to) {
            for p in phases {
                for q in phases {
                    if let (Some(a), Some(b)) = (cold(from, r, p), cold(r, to, q)) {
                        consider(vec![leg(from, r, p), leg(r, to, q)], join(a, b), &mut best);
                    }
                }
            }
        }
        if best.is_some() {
            return best.map(|(_, l)| l);
        }
        // Three legs: MoEntwine's local, global, local.
        for &r in alive.iter().filter(|&&r| r != from && r != to) {
            for p in phases {
                let Some(a) = cold(from, r, p) else { continue };
                for &s in alive.iter().filter(|&&s| s != from && s != to && s != r) {
                    for q in phases {
                        let Some(b) = cold(r, s, q) else { continue };
                        for o in phases {
                            if let Some(c) = cold(s, to, o) {
                                let legs = vec![leg(from, r, p), leg(r, s, q), leg(s, to, o)];
                                consider(legs, join(join(a, b), c), &mut best);
                            }
                        }
                    }
                }
            }
        }
        best.map(|(_, l)| l)
    }

    /// The direct route in the phase whose hottest link on it is coolest:
    /// where no cold legs exist, the least harmful way.
    pub fn fallback(&self, machine: &Machine, from: DieId, to: DieId) -> Leg {
        let hottest = |p: Phase| {
            machine
                .route(from, to)
                .map(|r| r.links.iter().map(|&l| self.utilisation(l, p)).fold(0.0, f64::max))
                .unwrap_or(f64::INFINITY)
        };
        let phase = if hottest(Phase::Moe) < hottest(Phase::Attention) {
            Phase::Moe
        } else {
            Phase::Attention
        };
        Leg { from, to, phase }
    }
}
