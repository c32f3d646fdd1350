//! What one step's routing means for each die: which tokens it holds,
//! how many tokens each of its experts receives, and the bytes every
//! dispatch and combine transfer carries.
//!
//! This is where imbalance becomes real: the volumes come from the step's
//! actual token-to-expert choices, not from averages.

use super::cost::{CostModel, PartLoad};
use crate::machine::{DieId, Machine};
use crate::routing::StepRouting;
use crate::schedule::{ExpertCopy, Placement, Schedule};
use crate::workload::Phase;
use rustc_hash::FxHashMap;
use std::ops::Range;

/// One MoE layer's traffic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTraffic {
    /// Per die: tokens received by each expert replica or expert part it
    /// holds (one entry per replica or part with at least one token).
    pub expert_loads: Vec<Vec<PartLoad>>,
    /// Per die: token-expert(-part) pairs it computes (the sum of its loads).
    pub expert_tokens: Vec<u64>,
    /// Dispatch transfers (source, destination, bytes), source != destination,
    /// sorted; the source is the token's home die, or under token domains
    /// the member of its group that sends it. Combine sends the same bytes
    /// back the other way.
    pub dispatch: Vec<(DieId, DieId, u64)>,
    /// Per die: dispatch transfers that arrive at it.
    pub dispatch_in: Vec<u32>,
    /// Per die: combine transfers that arrive at it (one per die it dispatched to).
    pub combine_in: Vec<u32>,
    /// MoNTA's relay (`Placement::relay_parts`): forwarding transfers
    /// (relay part, other part, bytes), sorted; the expert reduce-scatter
    /// sends the same bytes back. Empty without the relay.
    pub relay: Vec<(DieId, DieId, u64)>,
    /// Per die: forwarded transfers that arrive at it (empty without the relay).
    pub relay_in: Vec<u32>,
    /// Per die: partial outputs that arrive at it as a relay (one per part
    /// it forwarded to; empty without the relay).
    pub reduce_in: Vec<u32>,
}

/// What one die's attention covers: with data-parallel attention its own
/// tokens whole; in a tensor-parallel group of `tp` dies, all the group's
/// tokens for `1 / tp` of the heads, with ring collectives around it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionShare {
    pub tokens: u64,
    pub sequences: u64,
    pub tp: u64,
    /// The next die of its ring (itself when alone).
    pub ring_next: DieId,
    /// Bytes of one ring step: the group's activations over `tp`, rounded up.
    pub ring_chunk_bytes: u64,
}

/// One step's traffic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepTraffic {
    /// Per die: tokens of the sequences it is home to.
    pub home_tokens: Vec<u64>,
    /// Per die: sequences it is home to.
    pub home_sequences: Vec<u64>,
    /// Per die: the attention it runs (its group's tokens, split by heads).
    pub attention: Vec<AttentionShare>,
    /// Indexed by model layer; `None` for dense layers.
    pub layers: Vec<Option<LayerTraffic>>,
}

/// Works out a step's traffic from its routing and the schedule's placement.
/// A token uses one copy of each chosen expert ([`Placement::copy_for`]:
/// its home die's, else spread by token) and is sent to every part of that
/// copy (one part for a whole replica); each part's output comes back.
/// Under token domains the sender is the member of the token's attention
/// group in the part die's domain.
pub fn step_traffic(schedule: &Schedule, machine: &Machine, routing: &StepRouting) -> StepTraffic {
    traffic_of(schedule, machine, routing, Part::Whole)
}

/// The traffic of each of the schedule's micro-batches (one entry, the
/// whole step, when it has one): [`step_traffic`] over the tokens of that
/// micro-batch's sequences only (`Placement::micro_batch_of`).
pub fn micro_batch_traffic(schedule: &Schedule, machine: &Machine, routing: &StepRouting) -> Vec<StepTraffic> {
    let m = schedule.micro_batches.max(1);
    if m == 1 {
        return vec![step_traffic(schedule, machine, routing)];
    }
    let of = schedule.placement.micro_batch_of(m);
    (0..m)
        .map(|j| traffic_of(schedule, machine, routing, Part::Sequences(&of, j)))
        .collect()
}

/// `chunks[layer]`: per chunk of that layer (`Schedule::chunks`), its
/// traffic over the tokens of that chunk only (`Placement::chunk_of`);
/// empty for a layer of one chunk. The routing is walked once per chunk
/// of each distinct chunk count.
pub fn chunk_traffic(schedule: &Schedule, machine: &Machine, routing: &StepRouting) -> Vec<Vec<LayerTraffic>> {
    let layers = schedule.model.layers as usize;
    let mut out = vec![Vec::new(); layers];
    let mut counts: Vec<u32> = schedule.chunks.iter().copied().filter(|&d| d > 1).collect();
    counts.sort_unstable();
    counts.dedup();
    let tps = tokens_per_sequence(&schedule.workload);
    for d in counts {
        let of = schedule.placement.chunk_of(tps, d);
        let layers_of: Vec<bool> = (0..layers).map(|l| schedule.chunks.get(l) == Some(&d)).collect();
        for c in 0..d {
            let t = traffic_of(schedule, machine, routing, Part::Tokens(&of, c, &layers_of));
            for (l, layer) in t.layers.into_iter().enumerate() {
                if let (true, Some(layer)) = (layers_of[l], layer) {
                    out[l].push(layer);
                }
            }
        }
    }
    out
}

/// A step's traffic as the engine reads it: per micro-batch, and per
/// chunk of each chunked layer. Every collective of a step has a slot:
/// `(layer * micro_batches + micro_batch) * chunk_slots + chunk`.
#[derive(Clone, Debug, Default)]
pub struct StepParts {
    /// Per micro-batch (one entry when the step is one batch).
    pub micro_batches: Vec<StepTraffic>,
    /// Per layer: per chunk, its traffic (empty for a layer of one chunk).
    pub chunks: Vec<Vec<LayerTraffic>>,
    /// The most chunks any layer has (1 when none is chunked).
    pub chunk_slots: usize,
}

impl StepParts {
    /// The traffic of `schedule`'s micro-batches and chunks.
    pub fn of(schedule: &Schedule, machine: &Machine, routing: &StepRouting) -> StepParts {
        let chunks = chunk_traffic(schedule, machine, routing);
        let chunk_slots = chunks.iter().map(Vec::len).max().unwrap_or(0).max(1);
        StepParts {
            micro_batches: micro_batch_traffic(schedule, machine, routing),
            chunks,
            chunk_slots,
        }
    }

    /// The traffic of `layer` for micro-batch `j`'s chunk `c`.
    pub fn layer(&self, layer: u32, j: u32, c: u32) -> Option<&LayerTraffic> {
        match self.chunks.get(layer as usize) {
            Some(chunks) if !chunks.is_empty() => chunks.get(c as usize),
            _ => (self.micro_batches.get(j as usize)?.layers.get(layer as usize)?).as_ref(),
        }
    }

    /// The collective slot of `layer`, micro-batch `j`, chunk `c`.
    pub fn slot(&self, layer: u32, j: u32, c: u32) -> usize {
        (layer as usize * self.micro_batches.len().max(1) + j as usize) * self.chunk_slots + c as usize
    }

    /// The micro-batch of a slot.
    pub fn micro_batch_of_slot(&self, slot: usize) -> usize {
        (slot / self.chunk_slots) % self.micro_batches.len().max(1)
    }

    /// Collective slots per die and kind.
    pub fn slots(&self, layers: usize) -> usize {
        layers * self.micro_batches.len().max(1) * self.chunk_slots
    }
}

/// The part of a step a traffic covers.
#[derive(Clone, Copy)]
enum Part<'a> {
    Whole,
    /// The sequences `s` with `of[s] == j` (a micro-batch).
    Sequences(&'a [u32], u32),
    /// The tokens `t` with `of[t] == c` (a chunk), in the layers marked.
    Tokens(&'a [u32], u32, &'a [bool]),
}

fn tokens_per_sequence(w: &crate::workload::WorkloadSpec) -> u64 {
    match w.phase {
        Phase::Decode => 1,
        Phase::Prefill => w.seq_len.max(1),
    }
}

/// The traffic of `part` of the step.
fn traffic_of(schedule: &Schedule, machine: &Machine, routing: &StepRouting, part: Part<'_>) -> StepTraffic {
    let dies = machine.die_count() as usize;
    let kept = |s: usize| match part {
        Part::Sequences(of, j) => of.get(s).is_none_or(|&x| x == j),
        _ => true,
    };
    let w = &schedule.workload;
    let tokens_per_sequence = tokens_per_sequence(w);
    let sequence_of = |token: usize| (token as u64 / tokens_per_sequence) as usize;
    let home_of = |token: usize| -> DieId {
        let s = sequence_of(token);
        schedule
            .placement
            .sequences
            .get(s % schedule.placement.sequences.len().max(1))
            .copied()
            .unwrap_or(DieId(0))
    };
    let mut home_tokens = vec![0u64; dies];
    let mut home_sequences = vec![0u64; dies];
    for (s, &d) in schedule.placement.sequences.iter().enumerate() {
        if kept(s) {
            home_sequences[d.0 as usize] += 1;
            home_tokens[d.0 as usize] += tokens_per_sequence;
        }
    }
    let token_bytes = CostModel::new(&schedule.model, w).token_bytes();
    let attention = schedule
        .placement
        .attention_group_of(dies)
        .into_iter()
        .map(|(group, at)| {
            let tokens: u64 = group.iter().map(|g| home_tokens[g.index()]).sum();
            let tp = group.len() as u64;
            AttentionShare {
                tokens,
                sequences: group.iter().map(|g| home_sequences[g.index()]).sum(),
                tp,
                ring_next: group[(at + 1) % group.len()],
                ring_chunk_bytes: (tokens * token_bytes).div_ceil(tp),
            }
        })
        .collect();
    let senders = schedule.placement.senders(dies);
    let ffn = schedule.model.moe.as_ref().map_or(0, |m| m.expert_ffn);
    let mut layers = vec![None; schedule.model.layers as usize];
    let mut pairs = PairTokens::new(dies);
    let mut relayed = PairTokens::new(dies);
    let capacity = schedule.capacity_factor;
    let relay = schedule.placement.relay_parts;
    let position: Vec<usize> = match relay {
        true => schedule
            .placement
            .attention_group_of(dies)
            .into_iter()
            .map(|(_, at)| at)
            .collect(),
        false => Vec::new(),
    };
    for lr in &routing.layers {
        let l = lr.layer as usize;
        if schedule.placement.experts.get(l).is_none_or(|e| e.is_empty()) {
            continue;
        }
        if let Part::Tokens(_, _, marked) = part {
            if !marked.get(l).copied().unwrap_or(false) {
                continue;
            }
        }
        let copies: Vec<Vec<ExpertCopy>> = (0..schedule.placement.experts[l].len())
            .map(|e| schedule.placement.expert_copies(l, e, ffn))
            .collect();
        // Every part of every copy gets a counter, numbered expert by
        // expert, copy by copy: counting a token is an index, not a lookup.
        let mut copy_slot: Vec<Vec<usize>> = Vec::with_capacity(copies.len());
        let mut slots: Vec<(DieId, u32, Range<u64>)> = Vec::new();
        for (e, of_expert) in copies.iter().enumerate() {
            copy_slot.push(
                of_expert
                    .iter()
                    .map(|c| {
                        let first = slots.len();
                        slots.extend(c.iter().map(|p| (p.die, e as u32, p.columns.clone())));
                        first
                    })
                    .collect(),
            );
        }
        let mut slot_tokens = vec![0u64; slots.len()];
        pairs.clear();
        relayed.clear();
        // Tokens of balanced (broadcast) experts go last, each to the
        // holder with the fewest token-expert pairs so far.
        let mut die_load = vec![0u64; dies];
        let balanced = |e: u32| schedule.placement.is_balanced(l, e);
        let order = (lr.experts.iter().enumerate().filter(|&(_, &e)| !balanced(e)))
            .chain(lr.experts.iter().enumerate().filter(|&(_, &e)| balanced(e)));
        // Tokens each die sends into this layer (for a fixed capacity).
        let mut sent = vec![0u64; if capacity.is_some() { dies } else { 0 }];
        for (i, &e) in order {
            let token = i / routing.top_k.max(1);
            let in_part = match part {
                Part::Whole => true,
                Part::Sequences(..) => kept(sequence_of(token) % schedule.placement.sequences.len().max(1)),
                // A token past the placement's sequences wraps onto them, as its home does.
                Part::Tokens(of, c, _) => of.get(token % of.len().max(1)).is_none_or(|&x| x == c),
            };
            if !in_part {
                continue;
            }
            let home = home_of(token);
            if let Some(n) = sent.get_mut(home.index()).filter(|_| i % routing.top_k.max(1) == 0) {
                *n += 1;
            }
            let Some(of_expert) = copies.get(e as usize) else {
                continue;
            };
            let copy = if balanced(e) {
                least_loaded(of_expert, &die_load, home)
            } else {
                Placement::copy_for(of_expert, token, home, &senders)
            };
            let Some(copy) = copy else {
                continue;
            };
            let first = copy_slot[e as usize][position_of(of_expert, copy)];
            // Under the relay, one part of a split copy receives the token
            // (the one at its sender's position) and forwards it.
            let relay_die = (relay && copy.len() > 1).then(|| {
                let sender = senders.sender(home, copy[0].die);
                let at = position.get(sender.index()).copied().unwrap_or(0) % copy.len();
                (sender, copy[at].die)
            });
            if let Some((sender, to)) = relay_die {
                if to != sender {
                    pairs.add(sender.index(), to.index());
                }
            }
            for (p, part) in copy.iter().enumerate() {
                die_load[part.die.index()] += 1;
                slot_tokens[first + p] += 1;
                match relay_die {
                    Some((_, to)) if part.die != to => relayed.add(to.index(), part.die.index()),
                    Some(_) => {}
                    None => {
                        let sender = senders.sender(home, part.die);
                        if part.die != sender {
                            pairs.add(sender.index(), part.die.index());
                        }
                    }
                }
            }
        }
        if let Some(factor) = capacity {
            let top_k = routing.top_k as u32;
            pad_to_capacity(
                (factor, top_k),
                &sent,
                (&copies, &copy_slot),
                &mut slot_tokens,
                &mut pairs,
            );
        }
        // Per die, its parts with tokens by (expert, first column). Two
        // slots of one expert on one die are two weight copies, each read
        // for its own tokens, as an engine runs them.
        let mut expert_loads: Vec<Vec<(u32, u64, PartLoad)>> = vec![Vec::new(); dies];
        for ((die, e, columns), &tokens) in slots.iter().zip(&slot_tokens) {
            if tokens > 0 {
                let load = PartLoad {
                    tokens,
                    columns: columns.end - columns.start,
                };
                expert_loads[die.index()].push((*e, columns.start, load));
            }
        }
        for loads in &mut expert_loads {
            // Already by expert; within one, by column.
            loads.sort_by_key(|&(e, start, _)| (e, start));
        }
        let mut t = LayerTraffic {
            expert_tokens: expert_loads
                .iter()
                .map(|m| m.iter().map(|p| p.2.tokens).sum())
                .collect(),
            expert_loads: expert_loads
                .into_iter()
                .map(|m| m.into_iter().map(|p| p.2).collect())
                .collect(),
            dispatch: Vec::new(),
            dispatch_in: vec![0; dies],
            combine_in: vec![0; dies],
            relay: Vec::new(),
            relay_in: vec![0; if relay { dies } else { 0 }],
            reduce_in: vec![0; if relay { dies } else { 0 }],
        };
        for (src, dst, n) in pairs.sorted() {
            t.dispatch.push((DieId(src as u32), DieId(dst as u32), n * token_bytes));
            t.dispatch_in[dst] += 1;
            t.combine_in[src] += 1;
        }
        for (src, dst, n) in relayed.sorted() {
            t.relay.push((DieId(src as u32), DieId(dst as u32), n * token_bytes));
            t.relay_in[dst] += 1;
            t.reduce_in[src] += 1;
        }
        layers[l] = Some(t);
    }
    StepTraffic {
        home_tokens,
        home_sequences,
        attention,
        layers,
    }
}

/// HD-MoE's rule for a broadcast expert: the copy whose busiest die has
/// computed the fewest token-expert pairs so far; ties go to the copy on
/// the token's home die, then to the first.
fn least_loaded<'c>(copies: &'c [ExpertCopy], die_load: &[u64], home: DieId) -> Option<&'c ExpertCopy> {
    copies.iter().min_by_key(|c| {
        let load = c.iter().map(|p| die_load[p.die.index()]).max().unwrap_or(0);
        (load, !c.iter().any(|p| p.die == home))
    })
}

/// Where `item` (a reference into `items`) sits in it.
fn position_of<T>(items: &[T], item: &T) -> usize {
    // Plain address arithmetic: `item` is an element of `items`.
    (item as *const T as usize - items.as_ptr() as usize) / std::mem::size_of::<T>().max(1)
}

/// Tokens sent from each die to each other die in one layer: a dense
/// table on machines small enough for one (dies^2 counters), a map of the
/// pairs that occur above that, so a machine of 65,536 dies costs what
/// its traffic does, not 34 GB.
/// DeepSpeed-MoE's smallest capacity (`MoE(min_capacity = 4)`).
const MIN_CAPACITY: u64 = 4;

/// DeepSpeed-MoE's expert capacity for a die sending `tokens` tokens with
/// `top_k` choices each over `experts` experts: `ceil(k T F / E)`, at least
/// [`MIN_CAPACITY`] (its `_capacity`, with top-2's doubled factor).
pub fn expert_capacity(tokens: u64, top_k: u32, experts: u32, factor: f64) -> u64 {
    let c = (tokens as f64 * f64::from(top_k) * factor / f64::from(experts.max(1))).ceil();
    (c as u64).max(MIN_CAPACITY)
}

/// The all-to-all as DeepSpeed-MoE runs it with a fixed capacity: every
/// die with tokens (`sent[die]`) sends each expert a buffer of its capacity,
/// full or padded, so each expert's part computes every row of every
/// buffer. Replaces the routed counts in `slot_tokens` and `pairs`. Tokens
/// past a buffer's capacity are not dropped (DeepSpeed would pass them on
/// unchanged); under MoEShard's factor, `min(E, 50)`, none are.
fn pad_to_capacity(
    (factor, top_k): (f64, u32),
    sent: &[u64],
    (copies, copy_slot): (&[Vec<ExpertCopy>], &[Vec<usize>]),
    slot_tokens: &mut [u64],
    pairs: &mut PairTokens,
) {
    let experts = copies.len() as u32;
    pairs.clear();
    slot_tokens.iter_mut().for_each(|x| *x = 0);
    for (e, of_expert) in copies.iter().enumerate() {
        // One copy, whole: sema refuses a capacity for anything else.
        let (Some(copy), Some(&first)) = (of_expert.first(), copy_slot[e].first()) else {
            continue;
        };
        for (src, &n) in sent.iter().enumerate().filter(|(_, &n)| n > 0) {
            let rows = expert_capacity(n, top_k, experts, factor);
            for (p, part) in copy.iter().enumerate() {
                slot_tokens[first + p] += rows;
                if part.die.index() != src {
                    pairs.add_n(src, part.die.index(), rows);
                }
            }
        }
    }
}

enum PairTokens {
    /// Counters by `src x dies + dst`, and the pairs counted since the
    /// last `sorted`, so clearing costs the traffic, not the table.
    Dense {
        dies: usize,
        count: Vec<u64>,
        touched: Vec<usize>,
    },
    Sparse {
        dies: usize,
        count: FxHashMap<usize, u64>,
    },
}

/// Dies up to which the pair table is dense (8 MB of counters at 1,024).
const DENSE_PAIR_DIES: usize = 1024;

impl PairTokens {
    fn new(dies: usize) -> PairTokens {
        if dies <= DENSE_PAIR_DIES {
            PairTokens::Dense {
                dies,
                count: vec![0; dies * dies],
                touched: Vec::new(),
            }
        } else {
            PairTokens::Sparse {
                dies,
                count: FxHashMap::default(),
            }
        }
    }

    /// One more token from `src` to `dst`.
    fn add(&mut self, src: usize, dst: usize) {
        self.add_n(src, dst, 1);
    }

    /// `n` more tokens from `src` to `dst`.
    fn add_n(&mut self, src: usize, dst: usize, n: u64) {
        match self {
            PairTokens::Dense { dies, count, touched } => {
                let k = src * *dies + dst;
                if count[k] == 0 {
                    touched.push(k);
                }
                count[k] += n;
            }
            PairTokens::Sparse { dies, count } => *count.entry(src * *dies + dst).or_insert(0) += n,
        }
    }

    fn clear(&mut self) {
        match self {
            PairTokens::Dense { count, touched, .. } => {
                for k in touched.drain(..) {
                    count[k] = 0;
                }
            }
            PairTokens::Sparse { count, .. } => count.clear(),
        }
    }

    /// The pairs with tokens as (source, destination, tokens), by source
    /// then destination.
    fn sorted(&self) -> Vec<(usize, usize, u64)> {
        let (dies, mut pairs) = match self {
            PairTokens::Dense { dies, count, touched } => {
                (*dies, touched.iter().map(|&k| (k, count[k])).collect::<Vec<_>>())
            }
            PairTokens::Sparse { dies, count } => (*dies, count.iter().map(|(&k, &n)| (k, n)).collect()),
        };
        pairs.sort_unstable();
        pairs.into_iter().map(|(k, n)| (k / dies, k % dies, n)).collect()
    }
}
