//! The physical limit of one step on a machine: the least time any
//! execution of the step's work could take, from the machine's peak rates
//! alone (docs/RUNTIME.md, "The lower bound").
//!
//! Every term is a resource that must do a known amount of work and cannot
//! go faster than its rate, so each is a lower bound and so is their
//! maximum; terms are not added, since compute, memory and the network may
//! all run at once. Two terms hold for every placement (`machine_*`): the
//! step's FLOPs over the alive dies' summed peak, and every weight and KV
//! cache the step touches, read once, over their summed memory bandwidth.
//! The others take the placement as given: per die its FLOPs over its peak
//! and its resident bytes (the weights of what it runs, the KV cache of its
//! sequences) over its memory bandwidth; per die the bytes it sends or
//! receives over its links (or router port); and per cut of the network
//! (each straight cut of a mesh, the bisection among them, and each
//! wafer's or cluster node's boundary) the bytes that must cross it over
//! the bandwidth of the links crossing it.
//!
//! The terms use the simulator's own accounting of the step's work
//! (`engine::compute_cost` on the step's traffic), minus what a better
//! kernel or schedule could avoid: activations in and out of kernels,
//! launch overheads, link latencies, router overheads and migrations. So
//! no simulated step can come in under its bound (tested on the examples),
//! and the ratio of the two says how much of the step is the plan's,
//! not the machine's.

use super::cost::{CostModel, PartLoad};
use super::engine::compute_cost;
use super::traffic::{step_traffic, StepTraffic};
use crate::machine::{DieId, Machine, Node, NodeId};
use crate::model::LayerKind;
use crate::routing::StepRouting;
use crate::schedule::Schedule;
use serde::Serialize;

/// One step's bound, term by term, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepBound {
    /// The busiest alive die's FLOPs over its peak (this placement).
    pub die_compute_s: f64,
    /// The busiest alive die's resident bytes (weights of the kernels it
    /// runs, the KV cache of its sequences, embedding rows) over its memory
    /// bandwidth (this placement).
    pub die_memory_s: f64,
    /// The busiest die port: the bytes a die sends over its outgoing links'
    /// bandwidth, or receives over its incoming links' (capped by the
    /// router's port), at the router's efficiency (this placement).
    pub die_links_s: f64,
    /// The busiest cut of the network: the bytes that must cross it in one
    /// direction over the bandwidth of its links in that direction (this
    /// placement). 0 on a single switch, which has no cut but its ports.
    pub cut_s: f64,
    /// The step's FLOPs over the alive dies' summed peak (any placement).
    pub machine_compute_s: f64,
    /// Every weight and KV cache the step touches, read once, over the
    /// alive dies' summed memory bandwidth (any placement).
    pub machine_memory_s: f64,
}

/// A term of the bound, for saying which one binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundTerm {
    DieCompute,
    DieMemory,
    DieLinks,
    Cut,
    MachineCompute,
    MachineMemory,
}

impl BoundTerm {
    /// Every term, in the order ties are broken (placement terms first:
    /// they are never below the machine terms they refine).
    pub const ALL: [BoundTerm; 6] = [
        BoundTerm::DieCompute,
        BoundTerm::DieMemory,
        BoundTerm::DieLinks,
        BoundTerm::Cut,
        BoundTerm::MachineCompute,
        BoundTerm::MachineMemory,
    ];

    /// Its name in reports (`die_compute`, `cut`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BoundTerm::DieCompute => "die_compute",
            BoundTerm::DieMemory => "die_memory",
            BoundTerm::DieLinks => "die_links",
            BoundTerm::Cut => "cut",
            BoundTerm::MachineCompute => "machine_compute",
            BoundTerm::MachineMemory => "machine_memory",
        }
    }
}

impl StepBound {
    /// The value of `term`.
    pub fn term(&self, term: BoundTerm) -> f64 {
        match term {
            BoundTerm::DieCompute => self.die_compute_s,
            BoundTerm::DieMemory => self.die_memory_s,
            BoundTerm::DieLinks => self.die_links_s,
            BoundTerm::Cut => self.cut_s,
            BoundTerm::MachineCompute => self.machine_compute_s,
            BoundTerm::MachineMemory => self.machine_memory_s,
        }
    }

    /// The bound: the largest term.
    pub fn bound_s(&self) -> f64 {
        BoundTerm::ALL.iter().map(|&t| self.term(t)).fold(0.0, f64::max)
    }

    /// The plan-independent part: the largest machine term.
    pub fn machine_s(&self) -> f64 {
        self.machine_compute_s.max(self.machine_memory_s)
    }

    /// The term that binds (the first of the largest, in `BoundTerm::ALL`'s order).
    pub fn binding(&self) -> BoundTerm {
        let mut best = BoundTerm::DieCompute;
        for t in BoundTerm::ALL {
            if self.term(t) > self.term(best) {
                best = t;
            }
        }
        best
    }
}

/// The bound of one step of `schedule` on `machine` under `routing`.
pub fn step_bound(schedule: &Schedule, machine: &Machine, routing: &StepRouting) -> StepBound {
    let traffic = step_traffic(schedule, machine, routing);
    step_bound_with(schedule, machine, routing, &traffic)
}

/// [`step_bound`] on a step's traffic already worked out.
pub fn step_bound_with(
    schedule: &Schedule,
    machine: &Machine,
    routing: &StepRouting,
    traffic: &StepTraffic,
) -> StepBound {
    let alive = machine.alive_dies();
    let costs = CostModel::new(&schedule.model, &schedule.workload);
    // Per die: what the simulator charges its compute unit, less the
    // activations (`Cost::resident`) and launches.
    let (mut die_compute_s, mut die_memory_s) = (0.0f64, 0.0f64);
    for &d in &alive {
        let Some(program) = schedule.programs.get(d.index()) else {
            continue;
        };
        let (mut flops, mut resident) = (0.0, 0u64);
        // Micro-batch 0's chunk 0 instructions are each of the step's ops
        // once; the whole step's traffic gives them the whole step's work
        // (a split step's bound is the unsplit step's).
        for instr in program
            .instrs
            .iter()
            .filter(|i| i.op.is_compute() && i.micro_batch == 0 && i.chunk == 0)
        {
            let layer = instr
                .op
                .layer()
                .and_then(|l| traffic.layers.get(l as usize))
                .and_then(Option::as_ref);
            let c = compute_cost(&instr.op, traffic, layer, &costs, d.index());
            flops += c.flops.0;
            resident = resident.saturating_add(c.resident.0);
        }
        let die = machine.die_spec(d);
        die_compute_s = die_compute_s.max(flops / die.compute.0);
        die_memory_s = die_memory_s.max(resident as f64 / die.memory_bw.0);
    }
    let (flops, resident) = machine_work(schedule, routing, traffic);
    // The alive dies' peaks together (kinds may differ).
    let peak: f64 = alive.iter().map(|&d| machine.die_spec(d).compute.0).sum();
    let memory_bw: f64 = alive.iter().map(|&d| machine.die_spec(d).memory_bw.0).sum();
    let transfers = transfers(schedule, traffic);
    StepBound {
        die_compute_s,
        die_memory_s,
        die_links_s: die_links(machine, &transfers),
        cut_s: mesh_cuts(machine, &transfers).max(node_cuts(machine, &transfers)),
        machine_compute_s: flops / peak.max(f64::MIN_POSITIVE),
        machine_memory_s: resident / memory_bw.max(f64::MIN_POSITIVE),
    }
}

/// The step's work however it is placed: the whole step as if on one die
/// (attention data-parallel, each used expert whole, each weight read
/// once): its FLOPs and its resident bytes.
fn machine_work(schedule: &Schedule, routing: &StepRouting, traffic: &StepTraffic) -> (f64, f64) {
    let model = &schedule.model;
    let costs = CostModel::new(model, &schedule.workload);
    let tokens: u64 = traffic.home_tokens.iter().sum();
    let sequences: u64 = traffic.home_sequences.iter().sum();
    let (experts, ffn) = model
        .moe
        .as_ref()
        .map_or((0, 0), |m| (m.experts as usize, m.expert_ffn));
    let mut total = vec![costs.embed(tokens), costs.lm_head(tokens)];
    for l in 0..model.layers {
        total.push(costs.attention(tokens, sequences, 1));
        match model.layer_kind(l) {
            LayerKind::Dense => total.push(costs.dense_ffn(tokens)),
            LayerKind::Moe => {
                let mut loads = vec![0u64; experts];
                for lr in routing.layers.iter().filter(|lr| u64::from(lr.layer) == l) {
                    for &e in &lr.experts {
                        if let Some(n) = loads.get_mut(e as usize) {
                            *n += 1;
                        }
                    }
                }
                let loads: Vec<PartLoad> = loads
                    .into_iter()
                    .filter(|&n| n > 0)
                    .map(|tokens| PartLoad { tokens, columns: ffn })
                    .collect();
                total.push(costs.gate(tokens));
                total.push(costs.experts(&loads));
                total.push(costs.shared_experts(tokens));
            }
        }
    }
    let flops = total.iter().map(|c| c.flops.0).sum();
    let resident = total.iter().map(|c| c.resident.0 as f64).sum();
    (flops, resident)
}

/// Every transfer of the step's own traffic as (source, destination,
/// bytes): dispatch, combine (the same bytes back), and the ring steps of
/// the attention groups' collectives, one chunk per step to the next member.
fn transfers(schedule: &Schedule, traffic: &StepTraffic) -> Vec<(DieId, DieId, u64)> {
    let mut out = Vec::new();
    for t in traffic.layers.iter().flatten() {
        for &(src, dst, bytes) in &t.dispatch {
            out.push((src, dst, bytes));
            out.push((dst, src, bytes));
        }
    }
    for (d, program) in schedule.programs.iter().enumerate() {
        let Some(share) = traffic.attention.get(d) else {
            continue;
        };
        if share.tp < 2 || share.ring_next.index() == d {
            continue;
        }
        let rings = program
            .instrs
            .iter()
            .filter(|i| i.op.is_ring() && i.micro_batch == 0)
            .count() as u64;
        let bytes = rings * (share.tp - 1) * share.ring_chunk_bytes;
        if bytes > 0 {
            out.push((DieId(d as u32), share.ring_next, bytes));
        }
    }
    out
}

/// Bytes over a capacity, 0 when nothing crosses (and a missing capacity,
/// which the router would have refused, bounds nothing).
fn over(bytes: f64, capacity: f64) -> f64 {
    if bytes > 0.0 && capacity > 0.0 {
        bytes / capacity
    } else {
        0.0
    }
}

/// The busiest die port: what each die sends over its alive outgoing
/// links (at most its injection port), and receives over its incoming
/// ones (at most its ejection port), at the router's efficiency.
fn die_links(machine: &Machine, transfers: &[(DieId, DieId, u64)]) -> f64 {
    let dies = machine.die_count() as usize;
    let router = &machine.spec().router;
    let (mut out_bw, mut in_bw) = (vec![0.0f64; dies], vec![0.0f64; dies]);
    for l in machine.links().iter().filter(|l| l.alive) {
        if let Some(x) = out_bw.get_mut(l.from.index()) {
            *x += l.spec.bandwidth.0;
        }
        if let Some(x) = in_bw.get_mut(l.to.index()) {
            *x += l.spec.bandwidth.0;
        }
    }
    let cap = |bw: f64| router.port.map_or(bw, |p| bw.min(p.0)) * router.efficiency;
    let (mut sent, mut received) = (vec![0.0f64; dies], vec![0.0f64; dies]);
    for &(src, dst, bytes) in transfers {
        sent[src.index()] += bytes as f64;
        received[dst.index()] += bytes as f64;
    }
    (0..dies)
        .map(|d| over(sent[d], cap(out_bw[d])).max(over(received[d], cap(in_bw[d]))))
        .fold(0.0, f64::max)
}

/// The busiest straight cut of a mesh (between two neighbouring columns,
/// or rows, of the global grid), each direction apart: a transfer from one
/// side to the other crosses it at least once whatever its route.
fn mesh_cuts(machine: &Machine, transfers: &[(DieId, DieId, u64)]) -> f64 {
    let Some(grid) = machine.grid() else {
        return 0.0;
    };
    let efficiency = machine.spec().router.efficiency;
    let mut worst = 0.0f64;
    for vertical in [true, false] {
        let size = if vertical { grid.width } else { grid.height } as usize;
        if size < 2 {
            continue;
        }
        let along = |d: NodeId| {
            machine
                .coord(DieId(d.0))
                .filter(|_| d.index() < machine.die_count() as usize)
                .map(|c| if vertical { (c.x, c.y) } else { (c.y, c.x) })
        };
        // Capacity of cut `c` (between positions c and c + 1), each way.
        let (mut up, mut down) = (vec![0.0f64; size], vec![0.0f64; size]);
        for l in machine.links().iter().filter(|l| l.alive) {
            let (Some((a, a_other)), Some((b, b_other))) = (along(l.from), along(l.to)) else {
                continue;
            };
            if a_other != b_other {
                continue;
            }
            if b == a + 1 {
                up[a as usize] += l.spec.bandwidth.0 * efficiency;
            } else if a == b + 1 {
                down[b as usize] += l.spec.bandwidth.0 * efficiency;
            }
        }
        // Bytes over each cut, by difference arrays over the positions.
        let (mut up_bytes, mut down_bytes) = (vec![0.0f64; size + 1], vec![0.0f64; size + 1]);
        for &(src, dst, bytes) in transfers {
            let (Some((a, _)), Some((b, _))) = (along(NodeId(src.0)), along(NodeId(dst.0))) else {
                continue;
            };
            let (a, b) = (a as usize, b as usize);
            if b > a {
                up_bytes[a] += bytes as f64;
                up_bytes[b] -= bytes as f64;
            } else if a > b {
                down_bytes[b] += bytes as f64;
                down_bytes[a] -= bytes as f64;
            }
        }
        let (mut u, mut w) = (0.0, 0.0);
        for c in 0..size - 1 {
            u += up_bytes[c];
            w += down_bytes[c];
            worst = worst.max(over(u, up[c])).max(over(w, down[c]));
        }
    }
    worst
}

/// The busiest boundary of a serving node (a cluster's node, a
/// multi-wafer mesh's wafer), each direction apart: the bytes its dies
/// send out of it (receive into it) over the links leaving (entering) it.
fn node_cuts(machine: &Machine, transfers: &[(DieId, DieId, u64)]) -> f64 {
    let nodes = machine.node_count() as usize;
    if nodes < 2 {
        return 0.0;
    }
    let dies = machine.die_count();
    let side = |v: NodeId| -> Option<usize> {
        if v.0 < dies {
            return Some(machine.node_of(DieId(v.0)) as usize);
        }
        match machine.nodes().get(v.index()) {
            Some(Node::NodeSwitch(n)) => Some(*n as usize),
            _ => None,
        }
    };
    let efficiency = machine.spec().router.efficiency;
    let (mut out_bw, mut in_bw) = (vec![0.0f64; nodes], vec![0.0f64; nodes]);
    for l in machine.links().iter().filter(|l| l.alive) {
        let (from, to) = (side(l.from), side(l.to));
        if from == to {
            continue;
        }
        if let Some(x) = from.and_then(|n| out_bw.get_mut(n)) {
            *x += l.spec.bandwidth.0 * efficiency;
        }
        if let Some(x) = to.and_then(|n| in_bw.get_mut(n)) {
            *x += l.spec.bandwidth.0 * efficiency;
        }
    }
    let (mut sent, mut received) = (vec![0.0f64; nodes], vec![0.0f64; nodes]);
    for &(src, dst, bytes) in transfers {
        let (a, b) = (machine.node_of(src) as usize, machine.node_of(dst) as usize);
        if a != b && a < nodes && b < nodes {
            sent[a] += bytes as f64;
            received[b] += bytes as f64;
        }
    }
    (0..nodes)
        .map(|n| over(sent[n], out_bw[n]).max(over(received[n], in_bw[n])))
        .fold(0.0, f64::max)
}
