//! The event engine: runs every die's program for one step on the machine
//! model and says when each instruction started and ended.
//!
//! Dies issue instructions in program order, stream by stream
//! (`Instr::stream`), once their dependencies are complete. A compute instruction holds the die's compute unit for its
//! roofline time; `Dispatch` and `Combine` start their transfers on the
//! network (flows sharing links by max-min fairness) and let the next
//! instruction issue, so computation overlaps communication where the
//! dependencies allow. A `Dispatch` completes on a die once it has issued
//! its own and every transfer into it has arrived; `Combine` likewise, and
//! MoNTA's `ExpertAllGather` (relay part -> the other parts of a split
//! expert) and `ExpertReduceScatter` (back) the same way. Each collective
//! is one slot (`StepParts::slot`): of a layer, a micro-batch and, for a
//! chunked layer, a chunk, whose traffic is that part's alone.
//!
//! `AllGather` and `ReduceScatter` (and, under token domains,
//! `TokenAllGather` and `MoeReduceScatter`) run the ring algorithm in the die's
//! attention group of `k`: `k - 1` steps, in each of which every member
//! sends one chunk (the group's activations over `k`) to the next member of
//! the ring. A member sends step `j > 0` once it has received step `j - 1`
//! (it forwards, or adds to, what arrived), and completes when it has
//! received all `k - 1`. The reduction's additions are not charged: they
//! are `k - 1` passes over a few kilobytes, far below a launch overhead.

use super::cost::{Cost, CostModel};
use super::moves::{opens, Moves, StepChunk, MIGRATION};
use super::network::{Network, Traffic};
use super::posts::{Post, Posts};
use super::time::Time;
use super::traffic::{LayerTraffic, StepParts, StepTraffic};
use crate::machine::{DieId, DieSpec, Machine};
use crate::routing::StepRouting;
use crate::schedule::{Op, Phase, Schedule, Window};
use crate::units::Seconds;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Where a step's time went, on its critical die (the one that finished last).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Breakdown {
    pub attention_s: f64,
    pub allreduce_s: f64,
    pub dispatch_s: f64,
    pub expert_s: f64,
    pub combine_s: f64,
    pub migration_s: f64,
    /// Embedding, gates, shared experts, dense FFNs, LM head.
    pub other_s: f64,
}

/// One instruction's execution.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub die: DieId,
    pub op: Op,
    /// The micro-batch it worked on (0 when the step is one batch).
    pub micro_batch: u32,
    /// The chunk of its layer it worked on (0 when the layer is one chunk).
    pub chunk: u32,
    /// The die's stream it issued on (0 when the die has one).
    pub stream: u8,
    pub start_s: f64,
    pub end_s: f64,
}

/// What one simulated step measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepResult {
    pub latency_s: f64,
    pub breakdown: Breakdown,
    /// Per die: seconds its compute unit was busy.
    pub die_busy_s: Vec<f64>,
    /// Per MoE layer and die (`layer * dies + die`): seconds of its expert
    /// kernels, the work expert placement balances.
    pub expert_busy_s: Vec<f64>,
    /// Per directional link (LinkId order): bytes carried and seconds busy.
    pub link_bytes: Vec<f64>,
    pub link_busy_s: Vec<f64>,
    pub traffic: Traffic,
    /// Byte-hops of dispatch and combine (the all-to-all), and of the ring
    /// collectives of attention groups.
    pub all_to_all_byte_hops: u64,
    pub collective_byte_hops: u64,
    /// Tokens the step pushed through the model.
    pub tokens: u64,
    /// Every instruction's span (for the Chrome trace).
    pub spans: Vec<Span>,
    /// Every transfer, when asked for (`record_flows`): for link timelines.
    pub flows: Vec<FlowSpan>,
    /// Events the simulation processed: instructions completed and
    /// transfers arrived (the simulator's unit of work, for benchmarks).
    pub events: u64,
    /// The network's rate recomputes and the flows they rated in all
    /// (`Network::work`).
    pub rate_recomputes: u64,
    pub flows_rated: u64,
    /// Bytes of expert weights sent (migration chunks and broadcast
    /// pieces, per leg), and the time some were in flight.
    pub migration_bytes: u64,
    pub migration_transfer_s: f64,
    /// Byte-hops of those weights.
    pub migration_byte_hops: u64,
}

impl StepResult {
    /// How far the MoE layers' expert work is from balanced over `alive`
    /// dies: the sum over layers of the busiest die's expert time (what
    /// the step waits for, as each layer's all-to-all synchronises the
    /// dies) over the sum of the mean die's. 1 is perfect balance.
    pub fn expert_imbalance(&self, alive: &[DieId]) -> f64 {
        let dies = self.die_busy_s.len().max(1);
        let (mut critical, mut mean) = (0.0, 0.0);
        for layer in self.expert_busy_s.chunks(dies) {
            let times = alive.iter().map(|d| layer.get(d.index()).copied().unwrap_or(0.0));
            critical += times.clone().fold(0.0, f64::max);
            mean += times.sum::<f64>() / alive.len().max(1) as f64;
        }
        if mean > 0.0 {
            critical / mean
        } else {
            1.0
        }
    }
}

/// One transfer's life, recorded for link timelines.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpan {
    pub src: DieId,
    pub dst: DieId,
    pub bytes: u64,
    pub start_s: f64,
    pub end_s: f64,
    /// Expert weights in flight (a migration chunk or broadcast piece)
    /// rather than the step's own traffic.
    pub migration: bool,
    /// The layer the flow belongs to (its collective's layer; a
    /// migration's window layer), if any.
    pub layer: Option<u32>,
    /// The phase the flow belongs to: for the step's own traffic,
    /// attention (its ring all-gather and reduce-scatter) or MoE (token
    /// all-gather, dispatch, combine, MoE reduce-scatter); for weights in
    /// flight, the phase of the window they travel in (`None`:
    /// stop-the-world).
    pub phase: Option<Phase>,
}

/// Transfers in flight while recording: flow id -> (source, destination, bytes, start).
type OpenFlows = std::collections::BTreeMap<u64, (DieId, DieId, u64, Time)>;

const DISPATCH: u64 = 0;
const COMBINE: u64 = 1;
const ALL_GATHER: u64 = 2;
const REDUCE_SCATTER: u64 = 3;
const TOKEN_ALL_GATHER: u64 = 4;
const MOE_REDUCE_SCATTER: u64 = 5;
// 6 is `moves::MIGRATION`.
const EXPERT_ALL_GATHER: u64 = 7;
const EXPERT_REDUCE_SCATTER: u64 = 8;
const KINDS: usize = 9;

fn is_ring(kind: u64) -> bool {
    (ALL_GATHER..=MOE_REDUCE_SCATTER).contains(&kind)
}

/// The collective kind of a ring op.
fn ring_kind(op: &Op) -> Option<u64> {
    match op {
        Op::AllGather { .. } => Some(ALL_GATHER),
        Op::ReduceScatter { .. } => Some(REDUCE_SCATTER),
        Op::TokenAllGather { .. } => Some(TOKEN_ALL_GATHER),
        Op::MoeReduceScatter { .. } => Some(MOE_REDUCE_SCATTER),
        _ => None,
    }
}

/// The collectives' bookkeeping, per (kind, slot, die) at `[kind][slot *
/// dies + die]`, slots as [`StepParts::slot`] numbers them (layer,
/// micro-batch, chunk).
struct Collectives {
    dies: usize,
    /// Transfers still to arrive.
    pending: Vec<Vec<u32>>,
    /// When the last transfer arrived.
    arrived: Vec<Vec<Time>>,
    /// Whether the die issued its own instruction.
    issued: Vec<Vec<bool>>,
    /// Ring steps the die has sent.
    ring_sent: Vec<Vec<u32>>,
}

impl Collectives {
    fn new(parts: &StepParts, dies: usize, layers: usize) -> Collectives {
        let size = parts.slots(layers) * dies;
        let mut pending = vec![vec![0u32; size]; KINDS];
        for (j, traffic) in parts.micro_batches.iter().enumerate() {
            let j = j as u32;
            for l in 0..layers as u32 {
                let chunks = parts.chunks.get(l as usize).map_or(0, Vec::len).max(1) as u32;
                for c in 0..chunks {
                    let Some(t) = parts.layer(l, j, c) else { continue };
                    let at = parts.slot(l, j, c) * dies;
                    for d in 0..dies {
                        pending[DISPATCH as usize][at + d] = t.dispatch_in[d];
                        pending[COMBINE as usize][at + d] = t.combine_in[d];
                        pending[EXPERT_ALL_GATHER as usize][at + d] = t.relay_in.get(d).copied().unwrap_or(0);
                        pending[EXPERT_REDUCE_SCATTER as usize][at + d] = t.reduce_in.get(d).copied().unwrap_or(0);
                    }
                }
            }
            for (d, a) in traffic.attention.iter().enumerate() {
                let steps = a.tp.saturating_sub(1) as u32;
                for l in 0..layers as u32 {
                    for kind in [ALL_GATHER, REDUCE_SCATTER, TOKEN_ALL_GATHER, MOE_REDUCE_SCATTER] {
                        pending[kind as usize][parts.slot(l, j, 0) * dies + d] = steps;
                    }
                }
            }
        }
        Collectives {
            dies,
            pending,
            arrived: vec![vec![Time::ZERO; size]; KINDS],
            issued: vec![vec![false; size]; KINDS],
            ring_sent: vec![vec![0; size]; KINDS],
        }
    }

    /// Sends the ring steps die `d` may send now: step 0 once issued, step
    /// `j` once step `j - 1` has arrived.
    fn advance_ring(
        &mut self,
        (kind, slot, d): (u64, usize, usize),
        now: Time,
        parts: &StepParts,
        net: &mut Network,
        mut open_flows: Option<&mut OpenFlows>,
    ) -> Result<(), String> {
        let k = kind as usize;
        let at = slot * self.dies + d;
        let j = parts.micro_batch_of_slot(slot);
        let Some(share) = parts.micro_batches.get(j).and_then(|t| t.attention.get(d)) else {
            return Ok(());
        };
        let steps = share.tp.saturating_sub(1) as u32;
        if !self.issued[k][at] {
            return Ok(());
        }
        let received = steps - self.pending[k][at].min(steps);
        while self.ring_sent[k][at] < steps && self.ring_sent[k][at] <= received {
            let (from, to, bytes) = (DieId(d as u32), share.ring_next, share.ring_chunk_bytes);
            let id = net
                .start(now, from, to, bytes, tag(kind, slot as u32, to))
                .map_err(|e| e.to_string())?;
            if let Some(open) = open_flows.as_deref_mut() {
                open.insert(id.0, (from, to, bytes, now));
            }
            self.ring_sent[k][at] += 1;
        }
        Ok(())
    }
}

/// A transfer's tag: its collective kind, slot (layer and micro-batch) and destination.
fn tag(kind: u64, slot: u32, dst: DieId) -> u64 {
    (kind << 56) | (u64::from(slot) << 28) | u64::from(dst.0)
}

fn untag(tag: u64) -> (u64, usize, usize) {
    (
        tag >> 56,
        ((tag >> 28) & 0x0FFF_FFFF) as usize,
        (tag & 0x0FFF_FFFF) as usize,
    )
}

/// Per-die execution state.
struct DieState {
    /// Per stream: its instructions in program order, and how many of them
    /// have issued.
    streams: Vec<Vec<usize>>,
    pcs: Vec<usize>,
    done: Vec<bool>,
    issued_at: Vec<Time>,
    /// The compute instruction running and when it ends.
    running: Option<(usize, Time)>,
    /// Since when the next instruction (an expert kernel) has been ready
    /// but for broadcast weights still on the way.
    gated_since: Option<Time>,
    /// Collectives issued and not yet complete: (instruction, kind, slot).
    open: Vec<(usize, u64, usize)>,
}

/// How exactly to simulate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimOptions {
    /// Keep every transfer's span (costly on big machines: only for traces).
    pub record_flows: bool,
    /// The network's rate-recompute quantum ([`Network::with_quantum`]):
    /// 0 is exact; 0.02 bounds the error near 2% and makes an all-to-all
    /// with thousands of distinct flow sizes cheap.
    pub network_quantum: f64,
    /// When the step starts on the simulated clock. Every figure the step
    /// reports is relative to it, and none depends on it (`sim::time`).
    pub start: Time,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            record_flows: false,
            network_quantum: DEFAULT_NETWORK_QUANTUM,
            start: Time::ZERO,
        }
    }
}

/// The quantum `moec run` uses unless told otherwise.
pub const DEFAULT_NETWORK_QUANTUM: f64 = 0.02;

/// Simulates one step of `schedule` under `routing`.
pub fn simulate_step(
    schedule: &Schedule,
    machine: &Machine,
    routing: &StepRouting,
    options: SimOptions,
) -> Result<StepResult, String> {
    simulate_step_with(schedule, machine, routing, options, Vec::new())
}

/// [`simulate_step`] with expert weights in flight (`sim/moves.rs`).
pub fn simulate_step_with(
    schedule: &Schedule,
    machine: &Machine,
    routing: &StepRouting,
    options: SimOptions,
    chunks: Vec<StepChunk>,
) -> Result<StepResult, String> {
    let record_flows = options.record_flows;
    let io = machine.spec().io.as_ref().map(|io| io.bandwidth.0);
    let mut moves = Moves::new(chunks).with_io(io);
    let traffic = StepParts::of(schedule, machine, routing);
    let costs = CostModel::new(&schedule.model, &schedule.workload);
    let dies = machine.die_count() as usize;
    let layers = schedule.model.layers as usize;
    let mut net = Network::new(machine).with_quantum(options.network_quantum);
    let mut state: Vec<DieState> = schedule
        .programs
        .iter()
        .map(|p| DieState {
            streams: streams_of(&p.instrs),
            pcs: Vec::new(),
            done: vec![false; p.instrs.len()],
            issued_at: vec![Time::ZERO; p.instrs.len()],
            running: None,
            gated_since: None,
            open: Vec::new(),
        })
        .collect();
    for s in &mut state {
        s.pcs = vec![0; s.streams.len()];
    }
    let mut coll = Collectives::new(&traffic, dies, layers);
    // Every die with a program runs every collective.
    let members = schedule.programs.iter().filter(|p| !p.instrs.is_empty()).count() as u32;
    let mut posts = Posts::new(schedule.transport, &machine.spec().messages, members);
    if posts.synchronises() {
        // Each member's release from its group counts as one more arrival.
        for kind in [DISPATCH, COMBINE] {
            for (at, pending) in coll.pending[kind as usize].iter_mut().enumerate() {
                if !schedule.programs.get(at % dies).is_none_or(|p| p.instrs.is_empty()) {
                    *pending += 1;
                }
            }
        }
    }
    let mut result = StepResult {
        die_busy_s: vec![0.0; dies],
        expert_busy_s: vec![0.0; dies * layers],
        tokens: routing.tokens as u64,
        ..Default::default()
    };
    let origin = options.start;
    let mut now = origin;
    let mut finished = Vec::new();
    // Flow id -> (src, dst, bytes, start), while recording.
    let mut open_flows = OpenFlows::new();
    let mut gate_wait = vec![0.0f64; dies];
    // The compute kernels running, by when they end (then die): the next
    // compute event without a scan over every die.
    let mut ending: BinaryHeap<Reverse<(Time, usize)>> = BinaryHeap::new();
    // The dies that may be able to issue: every die at first, then those
    // whose state changed since they last tried. A die can only issue once
    // its own program moves on (an instruction of its own completes, its
    // compute unit frees) or weights arrive (stop-the-world chunks, gating
    // broadcasts); issuing on one die never lets another issue, so trying
    // just these, in die order, issues exactly what trying every die would,
    // in the same order.
    let mut wake: Vec<usize> = (0..state.len()).collect();
    // Dies that transfers arrived at in this event (their collectives may complete).
    let mut arrivals: Vec<usize> = Vec::new();
    moves.start_world(now, &mut net)?;
    loop {
        // Issue everything that can issue now.
        wake.sort_unstable();
        wake.dedup();
        for &d in &wake {
            let Some(die_state) = state.get_mut(d) else {
                continue;
            };
            let mut at = Issue {
                d,
                now,
                net: &mut net,
                coll: &mut coll,
                moves: &mut moves,
                posts: &mut posts,
                result: &mut result,
                gate_wait: &mut gate_wait,
                ending: &mut ending,
                open_flows: record_flows.then_some(&mut open_flows),
                origin,
            };
            issue_all(schedule, &traffic, &costs, die_state, &mut at)?;
        }
        wake.clear();
        if record_flows {
            for (id, i) in moves.take_started() {
                if let Some(c) = moves.chunk(i) {
                    open_flows.insert(id, (c.from, c.to, c.bytes, now));
                }
            }
        }
        let compute_next = ending.peek().map_or(Time::NEVER, |e| e.0 .0);
        let net_next = net.next_event().unwrap_or(Time::NEVER);
        let read_next = moves.next_read_done().unwrap_or(Time::NEVER);
        let post_next = posts.next().unwrap_or(Time::NEVER);
        let next = compute_next.min(net_next).min(read_next).min(post_next);
        if next.is_never() {
            // The step's own work is done: weights whose window never
            // opened go now, so none is lost.
            if moves.start_leftovers(now, &mut net)? > 0 {
                wake.extend(0..state.len());
                continue;
            }
            break;
        }
        now = next.max(now);
        finished.clear();
        net.advance_into(now, &mut finished);
        // Weights read from the host go on the network once the io carried them.
        moves.finish_reads(now, &mut net)?;
        result.events += finished.len() as u64;
        arrivals.clear();
        // Messages whose posting cost is paid go on the network; NCCL-style
        // members whose messages are all posted count their release.
        for post in posts.due(now) {
            match post {
                Post::Send { from, to, bytes, tag } => {
                    let id = net.start(now, from, to, bytes, tag).map_err(|e| e.to_string())?;
                    if record_flows {
                        open_flows.insert(id.0, (from, to, bytes, now));
                    }
                }
                Post::Sync { kind, slot, die } => {
                    let k = slot * dies + die;
                    coll.pending[kind as usize][k] = coll.pending[kind as usize][k].saturating_sub(1);
                    coll.arrived[kind as usize][k] = coll.arrived[kind as usize][k].max(now);
                    arrivals.push(die);
                }
            }
        }
        for &(id, t, end) in &finished {
            let migration = t >> 56 == MIGRATION;
            if let Some((src, dst, bytes, start_s)) = open_flows.remove(&id.0) {
                let layer = if migration {
                    moves
                        .chunk((t & 0x00FF_FFFF_FFFF_FFFF) as usize)
                        .and_then(|c| c.window.layer())
                } else {
                    Some((untag(t).1 / (traffic.micro_batches.len().max(1) * traffic.chunk_slots)) as u32)
                };
                let phase = match untag(t).0 {
                    _ if migration => moves
                        .chunk((t & 0x00FF_FFFF_FFFF_FFFF) as usize)
                        .and_then(|c| match c.window {
                            Window::StopTheWorld => None,
                            Window::Attention { .. } => Some(Phase::Attention),
                            Window::Moe { .. } => Some(Phase::Moe),
                        }),
                    ALL_GATHER | REDUCE_SCATTER => Some(Phase::Attention),
                    _ => Some(Phase::Moe),
                };
                result.flows.push(FlowSpan {
                    src,
                    dst,
                    bytes,
                    start_s: (start_s - origin).secs(),
                    end_s: (end - origin).secs(),
                    migration,
                    layer,
                    phase,
                });
            }
            if migration {
                moves.arrived((t & 0x00FF_FFFF_FFFF_FFFF) as usize, end, now, &mut net)?;
                // The world may restart or an expert kernel be ungated.
                wake.extend(0..state.len());
                continue;
            }
            let (kind, slot, dst) = untag(t);
            arrivals.push(dst);
            let k = slot * dies + dst;
            coll.pending[kind as usize][k] = coll.pending[kind as usize][k].saturating_sub(1);
            coll.arrived[kind as usize][k] = coll.arrived[kind as usize][k].max(end);
            if is_ring(kind) {
                let open = record_flows.then_some(&mut open_flows);
                coll.advance_ring((kind, slot, dst), now, &traffic, &mut net, open)?;
            }
        }
        // Kernels ending now, in die order (as a scan over the dies would).
        while let Some(&Reverse((end, d))) = ending.peek() {
            if end > now {
                break;
            }
            ending.pop();
            let s = &mut state[d];
            if let Some((i, end)) = s.running.take() {
                s.done[i] = true;
                record(&mut result, schedule, (d, i), origin, s.issued_at[i], end);
                wake.push(d);
            }
        }
        // Collectives complete once issued and every transfer has arrived;
        // only arrivals bring a count to 0, so only their dies are looked at
        // (in die order, as every die was before).
        arrivals.sort_unstable();
        arrivals.dedup();
        for &d in &arrivals {
            let Some(s) = state.get_mut(d) else {
                continue;
            };
            let mut k = 0;
            while k < s.open.len() {
                let (i, kind, slot) = s.open[k];
                if coll.pending[kind as usize][slot * dies + d] == 0 {
                    s.done[i] = true;
                    let end = coll.arrived[kind as usize][slot * dies + d].max(s.issued_at[i]);
                    record(&mut result, schedule, (d, i), origin, s.issued_at[i], end);
                    s.open.swap_remove(k);
                    wake.push(d);
                } else {
                    k += 1;
                }
            }
        }
    }
    // Nothing left to happen before the end of the clock, yet transfers or
    // kernels are unfinished: they would end past it, not never.
    if net.active() > 0 || state.iter().any(|s| s.running.is_some()) {
        return Err(format!(
            "the step outlasts the simulated clock ({:.0} days): a rate or latency of the machine is implausible",
            Time::NEVER.secs() / 86_400.0
        ));
    }
    // Report the die that got least far: the others wait on it.
    if let Some((d, s)) = state
        .iter()
        .enumerate()
        .filter(|(_, s)| s.done.iter().any(|x| !x))
        .min_by_key(|(_, s)| s.done.iter().position(|x| !x))
    {
        let waiting = s
            .done
            .iter()
            .position(|x| !x)
            .map(|i| {
                let op = &schedule.programs[d].instrs[i].op;
                let layer = op.layer().map(|l| format!(" of layer {l}")).unwrap_or_default();
                format!(" ({} {}{layer} never completed)", i, op.name())
            })
            .unwrap_or_default();
        return Err(format!(
            "die {} stalled at instruction {} of {}{waiting}: the schedule deadlocks",
            d,
            s.pcs.iter().sum::<usize>(),
            schedule.programs[d].instrs.len()
        ));
    }
    if !moves.all_arrived() {
        return Err("a migration chunk never arrived: its predecessors were never sent".into());
    }
    result.latency_s = result.spans.iter().map(|s| s.end_s).fold(0.0, f64::max);
    (result.migration_bytes, result.migration_transfer_s) = moves.totals();
    // Chunks still in flight after the last instruction lengthen the step.
    let last_arrival = moves.last_arrival().map_or(0.0, |t| (t - origin).secs());
    result.latency_s = result.latency_s.max(last_arrival);
    result.breakdown = critical_breakdown(&result, &gate_wait);
    result.link_bytes = net.link_stats().iter().map(|l| l.bytes).collect();
    result.link_busy_s = net.link_stats().iter().map(|l| l.busy_s).collect();
    result.traffic = net.traffic();
    (result.rate_recomputes, result.flows_rated) = net.work();
    // The tag's top byte is the collective kind (`tag`).
    let by_kind = result.traffic.class_byte_hops;
    result.all_to_all_byte_hops = by_kind[DISPATCH as usize] + by_kind[COMBINE as usize];
    result.collective_byte_hops = [
        ALL_GATHER,
        REDUCE_SCATTER,
        TOKEN_ALL_GATHER,
        MOE_REDUCE_SCATTER,
        EXPERT_ALL_GATHER,
        EXPERT_REDUCE_SCATTER,
    ]
    .iter()
    .map(|&k| by_kind[k as usize])
    .sum();
    result.migration_byte_hops = by_kind[MIGRATION as usize];
    Ok(result)
}

/// What issuing an instruction on die `d` at `now` may touch.
struct Issue<'a, 'm> {
    d: usize,
    now: Time,
    net: &'a mut Network<'m>,
    coll: &'a mut Collectives,
    moves: &'a mut Moves,
    /// Messages waiting for their posting cost or their group.
    posts: &'a mut Posts,
    result: &'a mut StepResult,
    /// Per die: time expert kernels waited for broadcast weights.
    gate_wait: &'a mut [f64],
    /// The running compute kernels by (end, die).
    ending: &'a mut BinaryHeap<Reverse<(Time, usize)>>,
    open_flows: Option<&'a mut OpenFlows>,
    /// The step's start, which spans are measured from.
    origin: Time,
}

/// Per stream (`Instr::stream`), its instructions' indices in program order.
fn streams_of(instrs: &[crate::schedule::Instr]) -> Vec<Vec<usize>> {
    let n = instrs.iter().map(|x| usize::from(x.stream) + 1).max().unwrap_or(1);
    let mut streams = vec![Vec::new(); n];
    for (i, x) in instrs.iter().enumerate() {
        streams[usize::from(x.stream)].push(i);
    }
    streams
}

/// Issues all that die `d` can issue now: each stream's next instruction,
/// stream by stream, until none can go (issuing on one stream may complete
/// an instruction another waits for).
fn issue_all(
    schedule: &Schedule,
    traffic: &StepParts,
    costs: &CostModel,
    s: &mut DieState,
    at: &mut Issue<'_, '_>,
) -> Result<(), String> {
    loop {
        let mut issued = false;
        for stream in 0..s.streams.len() {
            while let Some(&i) = s.streams[stream].get(s.pcs[stream]) {
                if !issue(schedule, traffic, costs, s, at, i)? {
                    break;
                }
                s.pcs[stream] += 1;
                issued = true;
            }
        }
        if !issued || s.streams.len() == 1 {
            return Ok(());
        }
    }
}

/// Tries to issue instruction `i` of die `d`; true if it did.
fn issue(
    schedule: &Schedule,
    parts: &StepParts,
    costs: &CostModel,
    s: &mut DieState,
    at: &mut Issue<'_, '_>,
    i: usize,
) -> Result<bool, String> {
    let (d, now, origin) = (at.d, at.now, at.origin);
    let program = &schedule.programs[d];
    let Some(instr) = program.instrs.get(i) else {
        return Ok(false);
    };
    let (j, c) = (instr.micro_batch, instr.chunk);
    let Some(traffic) = parts.micro_batches.get(j as usize) else {
        return Err(format!(
            "die {d}: instruction {i} is of micro-batch {j}, the step has {}",
            parts.micro_batches.len()
        ));
    };
    let layer_traffic = instr.op.layer().and_then(|l| parts.layer(l, j, c));
    if at.moves.world_stopped()
        || !instr
            .deps
            .iter()
            .all(|dep| s.done.get(dep.0 as usize).copied().unwrap_or(false))
    {
        return Ok(false);
    }
    let dies = at.coll.dies;
    let (net, coll, result) = (&mut *at.net, &mut *at.coll, &mut *at.result);
    let mut open_flows = at.open_flows.as_deref_mut();
    if let Some(w) = opens(&instr.op) {
        at.moves.open_window(DieId(d as u32), w, now, net)?;
    }
    if instr.op.is_compute() {
        if s.running.is_some() {
            return Ok(false);
        }
        if let Op::Experts { layer, .. } = instr.op {
            if at.moves.experts_wait(layer, DieId(d as u32)) {
                s.gated_since.get_or_insert(now);
                return Ok(false);
            }
            if let Some(since) = s.gated_since.take() {
                at.gate_wait[d] += (now - since).secs();
            }
        }
        // Rounded once, to the picosecond, before it meets the clock.
        let time = Time::from_secs(
            compute_time(
                &instr.op,
                traffic,
                layer_traffic,
                costs,
                d,
                schedule.machine.die_of(DieId(d as u32)),
            )
            .0,
        );
        let t = time.secs();
        s.issued_at[i] = now;
        result.die_busy_s[d] += t;
        if let Op::Experts { layer, .. } = instr.op {
            if let Some(x) = result
                .expert_busy_s
                .get_mut(layer as usize * result.die_busy_s.len() + d)
            {
                *x += t;
            }
        }
        if time == Time::ZERO {
            s.done[i] = true;
            record(result, schedule, (d, i), origin, now, now);
        } else {
            s.running = Some((i, now + time));
            at.ending.push(Reverse((now + time, d)));
        }
    } else {
        s.issued_at[i] = now;
        match instr.op {
            Op::Dispatch { layer }
            | Op::Combine { layer }
            | Op::ExpertAllGather { layer }
            | Op::ExpertReduceScatter { layer } => {
                // Combine and the expert reduce-scatter send their pairs' bytes back.
                let (kind, back) = match instr.op {
                    Op::Dispatch { .. } => (DISPATCH, false),
                    Op::Combine { .. } => (COMBINE, true),
                    Op::ExpertAllGather { .. } => (EXPERT_ALL_GATHER, false),
                    _ => (EXPERT_REDUCE_SCATTER, true),
                };
                let slot = parts.slot(layer, j, c);
                let mut messages = Vec::new();
                if let Some(t) = layer_traffic {
                    let pairs = match kind {
                        DISPATCH | COMBINE => &t.dispatch,
                        _ => &t.relay,
                    };
                    for &(src, dst, bytes) in pairs {
                        let (from, to) = if back { (dst, src) } else { (src, dst) };
                        if from.0 as usize == d {
                            messages.push((from, to, bytes, tag(kind, slot as u32, to)));
                        }
                    }
                }
                // The all-to-alls go by the schedule's transport; MoNTA's
                // relay inside an expert's group is always direct.
                if matches!(kind, DISPATCH | COMBINE) {
                    messages = at.posts.issue(now, (kind, slot, d), messages);
                }
                for (from, to, bytes, tag) in messages {
                    let id = net.start(now, from, to, bytes, tag).map_err(|e| e.to_string())?;
                    if let Some(open) = open_flows.as_deref_mut() {
                        open.insert(id.0, (from, to, bytes, now));
                    }
                }
                coll.issued[kind as usize][slot * dies + d] = true;
                if coll.pending[kind as usize][slot * dies + d] == 0 {
                    s.done[i] = true;
                    record(result, schedule, (d, i), origin, now, now);
                } else {
                    s.open.push((i, kind, slot));
                }
            }
            Op::AllGather { layer }
            | Op::ReduceScatter { layer }
            | Op::TokenAllGather { layer }
            | Op::MoeReduceScatter { layer } => {
                let kind = ring_kind(&instr.op).unwrap_or(ALL_GATHER);
                let slot = parts.slot(layer, j, 0);
                coll.issued[kind as usize][slot * dies + d] = true;
                coll.advance_ring((kind, slot, d), now, parts, net, open_flows)?;
                if coll.pending[kind as usize][slot * dies + d] == 0 {
                    s.done[i] = true;
                    record(result, schedule, (d, i), origin, now, now);
                } else {
                    s.open.push((i, kind, slot));
                }
            }
            // Point-to-point transfers arrive with a later lowering (TP all-reduce rings).
            Op::Send { .. } | Op::Recv { .. } => {
                return Err("this runtime does not execute Send/Recv yet".into());
            }
            _ => {}
        }
    }
    Ok(true)
}

/// How long compute instruction `op` runs on die `d`: one roofline kernel,
/// or for unfused experts one launch per expert part. `layer`: the traffic
/// of its layer (its chunk's, for a chunked layer's experts).
fn compute_time(
    op: &Op,
    traffic: &StepTraffic,
    layer: Option<&LayerTraffic>,
    costs: &CostModel,
    d: usize,
    die: &DieSpec,
) -> Seconds {
    if let Op::Experts { unfused: true, .. } = *op {
        let loads = layer.map_or(&[][..], |t| &t.expert_loads[d][..]);
        return Seconds(loads.iter().map(|p| costs.experts(&[*p]).time(die).0).sum());
    }
    compute_cost(op, traffic, layer, costs, d).time(die)
}

/// The roofline cost of compute instruction `op` on die `d` (one grouped
/// kernel), `layer` the traffic of its layer; the physical bound
/// (`bound.rs`) sums the same costs.
pub(crate) fn compute_cost(
    op: &Op,
    traffic: &StepTraffic,
    layer: Option<&LayerTraffic>,
    costs: &CostModel,
    d: usize,
) -> Cost {
    let tokens = traffic.home_tokens[d];
    match *op {
        Op::Embed => costs.embed(tokens),
        Op::Attention { .. } => {
            let a = &traffic.attention[d];
            costs.attention(a.tokens, a.sequences, a.tp)
        }
        Op::Gate { .. } => costs.gate(tokens),
        Op::Experts { .. } => layer.map_or(Cost::default(), |t| costs.experts(&t.expert_loads[d])),
        Op::SharedExperts { .. } => costs.shared_experts(tokens),
        Op::DenseFfn { .. } => costs.dense_ffn(tokens),
        Op::LmHead => costs.lm_head(tokens),
        _ => Cost::default(),
    }
}

/// Records instruction `i` of die `d` as run from `start` to `end`, in
/// seconds since the step's `origin`.
fn record(result: &mut StepResult, schedule: &Schedule, (d, i): (usize, usize), origin: Time, start: Time, end: Time) {
    result.events += 1;
    let instr = &schedule.programs[d].instrs[i];
    result.spans.push(Span {
        die: DieId(d as u32),
        op: instr.op.clone(),
        micro_batch: instr.micro_batch,
        chunk: instr.chunk,
        stream: instr.stream,
        start_s: (start - origin).secs(),
        end_s: (end - origin).secs(),
    });
}

/// The time the critical die spent in each phase; its migration time is
/// what its expert kernels waited for broadcast weights (the run replaces
/// it with what all of the step's moving weights cost, measured by
/// simulating the step again without them).
fn critical_breakdown(result: &StepResult, gate_wait: &[f64]) -> Breakdown {
    let Some(critical) = result
        .spans
        .iter()
        .max_by(|a, b| a.end_s.total_cmp(&b.end_s).then(b.die.cmp(&a.die)))
        .map(|s| s.die)
    else {
        return Breakdown::default();
    };
    let mut b = Breakdown {
        migration_s: gate_wait.get(critical.index()).copied().unwrap_or(0.0),
        ..Breakdown::default()
    };
    for s in result.spans.iter().filter(|s| s.die == critical) {
        let t = s.end_s - s.start_s;
        match s.op {
            Op::Attention { .. } => b.attention_s += t,
            Op::Dispatch { .. } => b.dispatch_s += t,
            Op::Experts { .. } => b.expert_s += t,
            Op::Combine { .. } => b.combine_s += t,
            ref op if op.is_ring() => b.allreduce_s += t,
            Op::Send { .. } | Op::Recv { .. } => b.allreduce_s += t,
            _ => b.other_s += t,
        }
    }
    b
}
