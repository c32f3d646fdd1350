//! The order the distributed executor runs a schedule in, worked out once
//! per schedule, and the checks that the schedule computes what it claims.
//!
//! The walk follows the execution model of `crate::schedule`: each die
//! issues its instructions in program order, an instruction once all its
//! `deps` have completed. Compute instructions complete when issued (the
//! numerics have no clock; compute runs one at a time anyway). `Dispatch` of
//! a layer completes on every die once every die holding numeric tokens has
//! issued its `Dispatch` of that layer; `Combine` once every die serving an
//! expert of the layer has issued its `Combine`. `Send` completes when
//! issued, `Recv` once a matching `Send` (same sender, receiver and tag) has
//! been issued. `AllGather` and `ReduceScatter` of a layer complete on every
//! member of an attention group once every member has issued its own; when
//! a reduce-scatter completes, each member's attention output is summed
//! (the walk's `Reduce`). Under token domains, `TokenAllGather` and
//! `MoeReduceScatter` are ring collectives of the group too; every member
//! with group tokens dispatches, and a member's MoE output is complete once
//! the MoE reduce-scatter has brought it every member's partial. A chunked
//! layer (`Schedule::chunks`) has a `Dispatch`, `Experts` and `Combine`
//! per chunk, each chunk's collectives their own; a die's layer is
//! combined once every chunk's combine has completed. MoNTA's
//! `ExpertAllGather` and `ExpertReduceScatter` complete when issued (the
//! executor treats them as transport), after the chunk's dispatch and its
//! experts; under the relay, experts wait for the first and combine for
//! the second. Dies take turns in id order, each issuing all it can, until
//! every program ends; no progress before that is a deadlock.
//!
//! Since none of this depends on the routing, the walk is planned once and
//! replayed every step. Planning also checks that every instruction finds
//! its inputs: attention after the previous layer's residual is complete,
//! the router after attention, `Experts` only after its layer's dispatch
//! has completed, and so on. A schedule that would compute on data that has
//! not arrived is refused with the die and instruction named.

use super::holdings::Holdings;
use crate::model::{LayerKind, ModelSpec};
use crate::schedule::{Op, Schedule};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One step of the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `die` issues instruction `instr` of its program.
    Issue { die: usize, instr: usize },
    /// Every member of `die`'s attention group has sent its partial
    /// attention output of `layer`: `die` sums its rows' partials.
    Reduce { die: usize, layer: u32 },
    /// `die` now has every part of `layer`'s FFN output for its tokens
    /// (routed outputs combined, shared experts, or the dense FFN): its
    /// residual can take them.
    Finalize { die: usize, layer: u32 },
    /// The events that follow, up to the next `MicroBatch`, are micro-batch
    /// `index`'s: its sequences are `Walk::micro_batches[index]`.
    MicroBatch { index: usize },
}

/// The planned order of one step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub events: Vec<Event>,
    /// When the step is split into micro-batches: per micro-batch, per die,
    /// the numeric sequences of that micro-batch homed there. Empty: one
    /// batch, the holdings' sequences.
    pub micro_batches: Vec<Vec<Vec<usize>>>,
}

/// How an op is named in messages.
fn describe(op: &Op) -> String {
    match op.layer() {
        Some(layer) => format!("{} of layer {layer}", op.name()),
        None => op.name().to_string(),
    }
}

/// Per die, per layer: which parts of the step have happened.
#[derive(Clone, Debug, Default)]
struct Progress {
    embedded: bool,
    /// Layers whose attention input this die has gathered (TP groups).
    gathered: BTreeSet<u32>,
    /// Layers whose (partial) attention this die has run.
    attended: BTreeSet<u32>,
    /// Layers whose attention output is complete on this die.
    attention: BTreeSet<u32>,
    gated: BTreeSet<u32>,
    /// Token domains: layers whose routed rows the group has gathered, and
    /// whose expert outputs have come back to this die.
    token_gathered: BTreeSet<u32>,
    returned: BTreeSet<u32>,
    shared: BTreeSet<u32>,
    dense: BTreeSet<u32>,
    /// (layer, chunk) whose experts this die has run.
    experts: BTreeSet<(u32, u32)>,
    /// MoNTA's relay: (layer, chunk) whose expert all-gather and expert
    /// reduce-scatter this die has issued.
    relayed: BTreeSet<(u32, u32)>,
    reduced: BTreeSet<(u32, u32)>,
    /// Per layer: chunks whose combine (or, under token domains, whose
    /// return) has completed on this die.
    chunks_back: BTreeMap<u32, u32>,
    combined: BTreeSet<u32>,
    finalized: BTreeSet<u32>,
}

/// Plans the walk of `schedule` for `holdings`, or says why the schedule
/// cannot compute the step.
///
/// A step split into micro-batches is walked one micro-batch after
/// another: micro-batches share no data (a token's attention reads only
/// its sequence, its expert rows are computed row by row, and its sums run
/// in a fixed order), so the order they interleave in on the dies cannot
/// change a number; what can go wrong is within one, and each is checked
/// as a schedule of its own: its instructions, with the dependencies among
/// them, over the tokens of its sequences.
pub fn plan(schedule: &Schedule, holdings: &Holdings) -> Result<Walk, String> {
    let model = &schedule.model;
    let m = schedule.micro_batches.max(1);
    if m == 1 {
        check_instructions(schedule, holdings)?;
        return Planner::new(schedule, holdings).run(model);
    }
    let of = schedule.placement.micro_batch_of(m);
    let mut walk = Walk::default();
    for j in 0..m {
        let (part, index) = micro_batch(schedule, j);
        let held = holdings.of_sequences(|s| of.get(s) == Some(&j));
        let in_part = |e: String| format!("micro-batch {j}: {e}");
        check_instructions(&part, &held).map_err(in_part)?;
        let events = Planner::new(&part, &held).run(model).map_err(in_part)?.events;
        walk.events.push(Event::MicroBatch { index: j as usize });
        walk.events.extend(events.into_iter().map(|e| match e {
            Event::Issue { die, instr } => Event::Issue {
                die,
                instr: index[die][instr],
            },
            other => other,
        }));
        walk.micro_batches.push(held.sequences);
    }
    Ok(walk)
}

/// Micro-batch `j`'s part of `schedule`: each die's instructions of that
/// micro-batch, numbered afresh, with their dependencies on one another
/// (those on other micro-batches only order the die's work); and per die,
/// each new number's instruction in the whole program.
fn micro_batch(schedule: &Schedule, j: u32) -> (Schedule, Vec<Vec<usize>>) {
    let mut part = schedule.clone();
    part.micro_batches = 1;
    let mut index = Vec::with_capacity(schedule.programs.len());
    for program in &mut part.programs {
        let mut renumber = vec![None; program.instrs.len()];
        let mut kept = Vec::new();
        let mut at = Vec::new();
        for (i, instr) in program.instrs.iter().enumerate() {
            if instr.micro_batch != j {
                continue;
            }
            let id = crate::schedule::InstrId(kept.len() as u32);
            renumber[i] = Some(id);
            let deps = instr
                .deps
                .iter()
                .filter_map(|d| renumber.get(d.0 as usize).copied().flatten())
                .collect();
            kept.push(crate::schedule::Instr::new(id, instr.op.clone(), deps));
            at.push(i);
        }
        program.instrs = kept;
        index.push(at);
    }
    (part, index)
}

/// Every op names a layer of the right kind; every die runs each op of
/// each layer at most once; token-holding dies run the whole forward;
/// expert dies run `Experts` and `Combine` of their layers.
fn check_instructions(schedule: &Schedule, holdings: &Holdings) -> Result<(), String> {
    let model = &schedule.model;
    let shared = model.moe.as_ref().map_or(0, |m| m.shared_experts);
    for (die, program) in schedule.programs.iter().enumerate() {
        let mut seen: BTreeMap<(&'static str, Option<u32>, u32), usize> = BTreeMap::new();
        for (i, instr) in program.instrs.iter().enumerate() {
            let op = &instr.op;
            if let Some(layer) = op.layer() {
                if u64::from(layer) >= model.layers {
                    return Err(format!(
                        "die {die}: instruction {i} ({}) names a layer the model lacks",
                        describe(op)
                    ));
                }
                let moe = model.layer_kind(u64::from(layer)) == LayerKind::Moe;
                let moe_op = matches!(
                    op,
                    Op::Gate { .. }
                        | Op::Dispatch { .. }
                        | Op::Experts { .. }
                        | Op::SharedExperts { .. }
                        | Op::Combine { .. }
                        | Op::ExpertAllGather { .. }
                        | Op::ExpertReduceScatter { .. }
                        | Op::TokenAllGather { .. }
                        | Op::MoeReduceScatter { .. }
                );
                if (moe_op && !moe) || (matches!(op, Op::DenseFfn { .. }) && moe) {
                    let what = if moe { "an MoE" } else { "a dense" };
                    return Err(format!(
                        "die {die}: instruction {i} ({}) is in {what} layer",
                        describe(op)
                    ));
                }
            }
            if !matches!(op, Op::Send { .. } | Op::Recv { .. }) {
                if let Some(first) = seen.insert((op.name(), op.layer(), instr.chunk), i) {
                    return Err(format!("die {die}: {} at instructions {first} and {i}", describe(op)));
                }
            }
        }
        // A chunked layer's dispatch, experts and combine: every chunk's.
        let has = |op: Op| {
            let chunks = match (op.is_chunked(), op.layer()) {
                (true, Some(l)) => schedule.chunks_of(l),
                _ => 1,
            };
            (0..chunks).all(|c| seen.contains_key(&(op.name(), op.layer(), c)))
        };
        let mut needed = Vec::new();
        if holdings.runs_attention(die) {
            for layer in 0..model.layers as u32 {
                needed.push(Op::Attention { layer });
                if holdings.in_tp_group(die) {
                    needed.extend([Op::AllGather { layer }, Op::ReduceScatter { layer }]);
                }
                let moe = model.layer_kind(u64::from(layer)) == LayerKind::Moe;
                if moe && holdings.dispatches(die) && holdings.has_token_domains() {
                    needed.extend([
                        Op::TokenAllGather { layer },
                        Op::Dispatch { layer },
                        Op::Combine { layer },
                        Op::MoeReduceScatter { layer },
                    ]);
                }
            }
        }
        if holdings.holds_tokens(die) {
            needed.extend([Op::Embed, Op::LmHead]);
            for layer in 0..model.layers as u32 {
                if model.layer_kind(u64::from(layer)) == LayerKind::Moe {
                    needed.extend([Op::Gate { layer }, Op::Dispatch { layer }, Op::Combine { layer }]);
                    if shared > 0 {
                        needed.push(Op::SharedExperts { layer });
                    }
                } else {
                    needed.push(Op::DenseFfn { layer });
                }
            }
        }
        for layer in 0..model.layers as u32 {
            if holdings.expert_dies(layer).contains(&die) {
                needed.extend([Op::Experts { layer, unfused: false }, Op::Combine { layer }]);
                if schedule.placement.relay_parts {
                    needed.extend([Op::ExpertAllGather { layer }, Op::ExpertReduceScatter { layer }]);
                }
            }
        }
        if let Some(missing) = needed.into_iter().find(|op| !has(op.clone())) {
            let why = match missing {
                Op::Experts { .. } | Op::Combine { .. } if !holdings.holds_tokens(die) => {
                    "serves experts of that layer"
                }
                Op::Experts { .. } => "serves experts of that layer",
                Op::Attention { .. }
                | Op::AllGather { .. }
                | Op::ReduceScatter { .. }
                | Op::TokenAllGather { .. }
                | Op::Dispatch { .. }
                | Op::Combine { .. }
                | Op::MoeReduceScatter { .. }
                    if !holdings.holds_tokens(die) =>
                {
                    "is in an attention group with numeric tokens"
                }
                _ => "holds numeric tokens",
            };
            return Err(format!("die {die} {why} but never runs {}", describe(&missing)));
        }
    }
    Ok(())
}

/// A ring collective of one group and layer: (op name, the group's first die, layer).
type RingKey = (&'static str, usize, u32);

/// The walk's state.
struct Planner<'a> {
    schedule: &'a Schedule,
    holdings: &'a Holdings,
    shared_experts: u64,
    pc: Vec<usize>,
    done: Vec<Vec<bool>>,
    progress: Vec<Progress>,
    /// Per MoE layer and chunk: token-holding dies yet to issue `Dispatch`.
    dispatch_left: BTreeMap<(u32, u32), usize>,
    /// Per MoE layer and chunk: expert dies yet to issue `Combine`.
    combine_left: BTreeMap<(u32, u32), usize>,
    /// Issued `Dispatch`/`Combine` instructions waiting for their collective.
    waiting: BTreeMap<(&'static str, u32, u32), Vec<(usize, usize)>>,
    /// Per (op, attention group's first die, layer): members yet to issue
    /// their `AllGather`/`ReduceScatter`, and the issued ones waiting.
    rings: BTreeMap<RingKey, (usize, Vec<(usize, usize)>)>,
    /// Sends not yet received, per (from, to, tag).
    sent: BTreeMap<(usize, usize, u32), usize>,
    /// Receives waiting for a send, per (from, to, tag).
    receiving: BTreeMap<(usize, usize, u32), VecDeque<(usize, usize)>>,
    events: Vec<Event>,
}

impl<'a> Planner<'a> {
    fn new(schedule: &'a Schedule, holdings: &'a Holdings) -> Planner<'a> {
        let model = &schedule.model;
        let dispatchers = (0..schedule.programs.len()).filter(|&d| holdings.dispatches(d)).count();
        let moe_layers: Vec<u32> = (0..model.layers as u32)
            .filter(|&l| model.layer_kind(u64::from(l)) == LayerKind::Moe)
            .collect();
        Planner {
            schedule,
            holdings,
            shared_experts: model.moe.as_ref().map_or(0, |m| m.shared_experts),
            pc: vec![0; schedule.programs.len()],
            done: schedule.programs.iter().map(|p| vec![false; p.instrs.len()]).collect(),
            progress: vec![Progress::default(); schedule.programs.len()],
            dispatch_left: moe_layers
                .iter()
                .flat_map(|&l| (0..schedule.chunks_of(l)).map(move |c| ((l, c), dispatchers)))
                .collect(),
            combine_left: moe_layers
                .iter()
                .flat_map(|&l| (0..schedule.chunks_of(l)).map(move |c| ((l, c), holdings.expert_dies(l).len())))
                .collect(),
            waiting: BTreeMap::new(),
            rings: BTreeMap::new(),
            sent: BTreeMap::new(),
            receiving: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn run(mut self, model: &ModelSpec) -> Result<Walk, String> {
        let programs = &self.schedule.programs;
        loop {
            let mut moved = false;
            for (die, program) in programs.iter().enumerate() {
                while let Some(instr) = program.instrs.get(self.pc[die]) {
                    let ready = instr
                        .deps
                        .iter()
                        .all(|d| self.done[die].get(d.0 as usize).copied().unwrap_or(false));
                    if !ready {
                        break;
                    }
                    let i = self.pc[die];
                    self.issue(die, i, (&instr.op, instr.chunk), model)?;
                    self.pc[die] += 1;
                    moved = true;
                }
            }
            let finished = (0..programs.len()).all(|d| self.pc[d] == programs[d].instrs.len());
            if finished {
                break;
            }
            if !moved {
                let stuck: Vec<String> = (0..programs.len())
                    .filter_map(|d| {
                        let instr = programs[d].instrs.get(self.pc[d])?;
                        Some(format!(
                            "die {d} at instruction {} ({})",
                            self.pc[d],
                            describe(&instr.op)
                        ))
                    })
                    .take(4)
                    .collect();
                return Err(format!("the schedule deadlocks: {}", stuck.join(", ")));
            }
        }
        // Everything issued; an instruction still incomplete waits forever.
        for (d, done) in self.done.iter().enumerate() {
            if let Some(i) = done.iter().position(|&x| !x) {
                let op = describe(&programs[d].instrs[i].op);
                return Err(format!(
                    "the schedule deadlocks: die {d}'s instruction {i} ({op}) never completes"
                ));
            }
        }
        Ok(Walk {
            events: self.events,
            micro_batches: Vec::new(),
        })
    }

    /// Checks `op`'s (of chunk `chunk` of its layer) inputs on `die`,
    /// records it, and completes what it completes.
    fn issue(&mut self, die: usize, i: usize, (op, chunk): (&Op, u32), model: &ModelSpec) -> Result<(), String> {
        let holder = self.holdings.holds_tokens(die);
        let p = &self.progress[die];
        let hazard = |needs: &str| {
            Err(format!(
                "die {die}: {} (instruction {i}) runs before {needs}",
                describe(op)
            ))
        };
        let tp = self.holdings.in_tp_group(die);
        let domains = self.holdings.has_token_domains();
        let relay = self.schedule.placement.relay_parts;
        match *op {
            Op::Attention { layer } | Op::AllGather { layer }
                if holder && (tp == matches!(op, Op::AllGather { .. })) =>
            {
                if layer == 0 && !p.embedded {
                    return hazard("its embed");
                }
                if layer > 0 && !p.finalized.contains(&(layer - 1)) {
                    return hazard("the previous layer's output is complete on it");
                }
            }
            Op::Attention { layer } if tp && self.holdings.runs_attention(die) && !p.gathered.contains(&layer) => {
                return hazard("its all_gather of that layer has completed");
            }
            Op::ReduceScatter { layer } if !p.attended.contains(&layer) && self.holdings.runs_attention(die) => {
                return hazard("its attention of that layer");
            }
            Op::Gate { layer } | Op::SharedExperts { layer } | Op::DenseFfn { layer }
                if holder && !p.attention.contains(&layer) =>
            {
                return hazard("its attention of that layer has completed");
            }
            Op::TokenAllGather { layer } if holder && !p.gated.contains(&layer) => {
                return hazard("its gate of that layer")
            }
            Op::Dispatch { layer }
                if domains && self.holdings.dispatches(die) && !p.token_gathered.contains(&layer) =>
            {
                return hazard("its token_all_gather of that layer has completed")
            }
            Op::Dispatch { layer } if holder && !p.gated.contains(&layer) => return hazard("its gate of that layer"),
            Op::MoeReduceScatter { layer } if self.holdings.dispatches(die) && !p.returned.contains(&layer) => {
                return hazard("its combine of that layer has completed")
            }
            Op::Experts { layer, .. } | Op::ExpertAllGather { layer }
                if self.serves(die, layer) && self.dispatch_left.get(&(layer, chunk)) != Some(&0) =>
            {
                return hazard("every token of that layer (and chunk) has been dispatched");
            }
            Op::Experts { layer, .. } if relay && self.serves(die, layer) && !p.relayed.contains(&(layer, chunk)) => {
                return hazard("its expert_all_gather of that layer (and chunk)");
            }
            Op::Combine { layer } | Op::ExpertReduceScatter { layer }
                if self.serves(die, layer) && !p.experts.contains(&(layer, chunk)) =>
            {
                return hazard("its experts of that layer (and chunk)");
            }
            Op::Combine { layer } if relay && self.serves(die, layer) && !p.reduced.contains(&(layer, chunk)) => {
                return hazard("its expert_reduce_scatter of that layer (and chunk)");
            }
            Op::LmHead
                if holder && !p.finalized.contains(&(model.layers as u32).saturating_sub(1)) && model.layers > 0 =>
            {
                return hazard("the last layer's output is complete on it");
            }
            _ => {}
        }
        self.events.push(Event::Issue { die, instr: i });
        let p = &mut self.progress[die];
        match *op {
            Op::Embed => p.embedded = true,
            Op::Attention { layer } => {
                p.attended.insert(layer);
                if !tp {
                    p.attention.insert(layer);
                }
            }
            Op::Gate { layer } => _ = p.gated.insert(layer),
            Op::SharedExperts { layer } => _ = p.shared.insert(layer),
            Op::DenseFfn { layer } => _ = p.dense.insert(layer),
            Op::Experts { layer, .. } => _ = p.experts.insert((layer, chunk)),
            Op::ExpertAllGather { layer } => _ = p.relayed.insert((layer, chunk)),
            Op::ExpertReduceScatter { layer } => _ = p.reduced.insert((layer, chunk)),
            _ => {}
        }
        match *op {
            Op::Dispatch { layer } => {
                self.waiting
                    .entry(("Dispatch", layer, chunk))
                    .or_default()
                    .push((die, i));
                if self.holdings.dispatches(die) {
                    self.count_down(true, (layer, chunk));
                }
                self.release("Dispatch", (layer, chunk));
            }
            Op::Combine { layer } => {
                self.waiting
                    .entry(("Combine", layer, chunk))
                    .or_default()
                    .push((die, i));
                if self.serves(die, layer) {
                    self.count_down(false, (layer, chunk));
                }
                self.release("Combine", (layer, chunk));
            }
            Op::AllGather { layer } => self.ring_issue("all_gather", die, i, layer),
            Op::ReduceScatter { layer } => self.ring_issue("reduce_scatter", die, i, layer),
            Op::TokenAllGather { layer } => self.ring_issue("token_all_gather", die, i, layer),
            Op::MoeReduceScatter { layer } => self.ring_issue("moe_reduce_scatter", die, i, layer),
            Op::Send { to, tag, .. } => {
                self.done[die][i] = true;
                let key = (die, to.index(), tag);
                match self.receiving.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some((d, r)) => self.done[d][r] = true,
                    None => *self.sent.entry(key).or_default() += 1,
                }
            }
            Op::Recv { from, tag } => {
                let key = (from.index(), die, tag);
                match self.sent.get_mut(&key) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        self.done[die][i] = true;
                    }
                    _ => self.receiving.entry(key).or_default().push_back((die, i)),
                }
            }
            _ => self.done[die][i] = true,
        }
        self.finalize(die, op.layer());
        Ok(())
    }

    /// Records `die`'s ring collective `which` (instruction `i`) and, once
    /// every member of its group has issued it, completes it on all.
    fn ring_issue(&mut self, which: &'static str, die: usize, i: usize, layer: u32) {
        let group = self.holdings.attention_group[die].0.clone();
        let key = (which, group[0], layer);
        let (left, waiting) = self.rings.entry(key).or_insert((group.len(), Vec::new()));
        *left = left.saturating_sub(1);
        waiting.push((die, i));
        if *left > 0 {
            return;
        }
        let waiting = self.rings.remove(&key).map(|(_, w)| w).unwrap_or_default();
        for (d, instr) in waiting {
            self.done[d][instr] = true;
            let p = &mut self.progress[d];
            match which {
                "all_gather" => _ = p.gathered.insert(layer),
                "token_all_gather" => _ = p.token_gathered.insert(layer),
                "moe_reduce_scatter" => {
                    // The partials are summed when the layer finalizes.
                    p.combined.insert(layer);
                    self.finalize(d, Some(layer));
                }
                _ => {
                    p.attention.insert(layer);
                    self.events.push(Event::Reduce { die: d, layer });
                }
            }
        }
    }

    /// Whether `die` serves an expert of `layer`.
    fn serves(&self, die: usize, layer: u32) -> bool {
        self.holdings.expert_dies(layer).contains(&die)
    }

    fn count_down(&mut self, dispatch: bool, key: (u32, u32)) {
        let left = if dispatch {
            &mut self.dispatch_left
        } else {
            &mut self.combine_left
        };
        if let Some(n) = left.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
    }

    /// Completes the waiting `Dispatch`/`Combine` instructions of a layer's
    /// chunk once their collective has; a die's layer is combined once
    /// every chunk's has.
    fn release(&mut self, which: &'static str, (layer, chunk): (u32, u32)) {
        let left = if which == "Dispatch" {
            &self.dispatch_left
        } else {
            &self.combine_left
        };
        if left.get(&(layer, chunk)).copied().unwrap_or(0) > 0 {
            return;
        }
        let chunks = self.schedule.chunks_of(layer);
        for (d, i) in self.waiting.remove(&(which, layer, chunk)).unwrap_or_default() {
            self.done[d][i] = true;
            if which == "Combine" {
                let back = self.progress[d].chunks_back.entry(layer).or_default();
                *back += 1;
                if *back < chunks {
                    continue;
                }
                if self.holdings.has_token_domains() {
                    // The members' partials are summed by the MoE reduce-scatter.
                    self.progress[d].returned.insert(layer);
                } else {
                    self.progress[d].combined.insert(layer);
                    self.finalize(d, Some(layer));
                }
            }
        }
    }

    /// Records that `die`'s `layer` output is complete, the first time it is.
    fn finalize(&mut self, die: usize, layer: Option<u32>) {
        let Some(layer) = layer else { return };
        if !self.holdings.holds_tokens(die) {
            return;
        }
        let model = &self.schedule.model;
        let p = &self.progress[die];
        if p.finalized.contains(&layer) || !p.attention.contains(&layer) {
            return;
        }
        let complete = match model.layer_kind(u64::from(layer)) {
            LayerKind::Moe => p.combined.contains(&layer) && (self.shared_experts == 0 || p.shared.contains(&layer)),
            LayerKind::Dense => p.dense.contains(&layer),
        };
        if complete {
            self.progress[die].finalized.insert(layer);
            self.events.push(Event::Finalize { die, layer });
        }
    }
}
