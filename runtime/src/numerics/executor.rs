//! The distributed functional execution of a step, following the schedule.
//!
//! Each die holds its own buffers: copies of the weights of what is placed
//! on it (see `holdings.rs`) and the hidden states of the tokens of its
//! sequences. The walk (`walk.rs`) says in which order instructions issue;
//! here each one does its work on the die's own buffers:
//!
//! - `Embed`, `Attention`, `Gate`, `SharedExperts`, `DenseFfn`, `LmHead`
//!   compute on the die's tokens with the die's weights;
//! - in a tensor-parallel attention group, `AllGather` copies the die's
//!   normalised rows to every member, `Attention` runs the die's share of
//!   the heads (its slice of the projections, its key/value heads of the
//!   cache) over all the group's rows, `ReduceScatter` sends each member
//!   the partial outputs of its rows, and the walk's `Reduce` sums them in
//!   ring order into the residual;
//! - `Dispatch` copies each token's normalised row to the dies of the copy
//!   of each chosen expert it uses (`Placement::copy_for`, as in the
//!   simulator): the one die of a whole replica, or every part of a split
//!   copy;
//! - `Experts` runs each of the die's experts and expert parts on the rows
//!   it received, sorted by token (one grouped call); a part computes its
//!   columns' partial output (`FfnWeights::part`);
//! - `Combine` copies each output row back to its token's home die, where
//!   the partial outputs of a split expert's parts are summed;
//! - under token domains (MoEntwine's FTDs), `TokenAllGather` copies each
//!   member's normalised rows, choices and gate weights to its whole group;
//!   each member's `Dispatch` sends the group's rows bound for experts in
//!   its own domain, `Combine` returns the outputs to that member, and
//!   `MoeReduceScatter` sends each owner the gate-weighted sum of the
//!   outputs a member collected for the owner's tokens; finalizing sums the
//!   members' partials in ring order;
//! - when a die has all of a layer's parts (the walk's `Finalize`), the
//!   routed outputs, weighted by the gate, the shared experts' output and
//!   the residual are summed in the same fixed order as the reference.
//!
//! Which copy of a replicated expert computes a token does not change its
//! numbers: every whole copy holds the same f32 arrays (drawn once from the
//! seed, or copied from another die's buffer when the copy arrived during
//! the run), and an expert's rows are sorted by token before its kernel
//! runs. So the executor follows the one copy rule (`Placement::copy_for`)
//! for every expert, the broadcast ones of `Placement::balanced` too, whose
//! tokens the simulator gives to the least-loaded holder instead.
//!
//! **Relocation** ([`Executor::relocate`]): when the placement changes
//! between steps (migrations, broadcasts, sequences re-homed off a dead
//! die), every die keeps the buffers of what it still holds; each expert
//! copy that arrives is cloned from the f32 arrays the source die holds (or
//! from the host's copy); the non-expert weights a die newly needs (it
//! became home to sequences, or took another share of its attention group's
//! heads) come from the host; what is no longer placed is dropped. An expert
//! copy that is new without an arrival naming it is refused, so a
//! migration the run loop forgot cannot be papered over with fresh weights.
//!
//! Bytes copied counts rows that cross dies (a copy within a die moves
//! nothing over a link), each `hidden` values of the model's dtype at the
//! numeric width. A simulator sending the numeric tokens to the same
//! copies moves `rows_copied * hidden * dtype bytes` at full width for
//! them: one row out and one back per token choice and part of its copy on
//! another die than the token.

use super::batch::TokenLayout;
use super::context::NumericContext;
use super::holdings::Holdings;
use super::reference::{embed, Forward};
use super::route::{choose, GivenRouting, RoutingRecord};
use super::walk::{Event, Walk};
use super::weights::{LayerFfn, ModelWeights};
use super::Arrival;
use crate::kernels::norm::rms_norm;
use crate::kernels::{attention, combine, ffn, grouped_ffn, matmul, shared_ffn};
use crate::kernels::{AttentionWeights, ExpertBlock, FfnWeights, SequenceRows};
use crate::schedule::{Op, Schedule, WeightSource};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// A deliberate fault in the executor, to show the check catches a wrong
/// one (`moec run --inject-numeric-fault`, and the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The first row a `Dispatch` copies to another die is lost.
    DropDispatchedRow,
}

/// The weights one die materialised.
#[derive(Clone, Debug, Default)]
struct DieWeights {
    embedding: Option<Vec<f32>>,
    lm_head: Option<Vec<f32>>,
    /// Per layer: the attention weights this die holds (all heads, or its
    /// share in a TP group) and the cache columns they read (empty: all).
    attention: BTreeMap<u32, (AttentionWeights, Vec<Range<usize>>)>,
    /// The share of the heads `attention` holds: (position, group size);
    /// (0, 0) before any is materialised.
    attention_share: (usize, usize),
    router: BTreeMap<u32, Vec<f32>>,
    shared: BTreeMap<u32, Vec<FfnWeights>>,
    dense: BTreeMap<u32, FfnWeights>,
    /// Whole experts and expert parts, by (layer, expert, first column of
    /// the part in the model's FFN: 0 for a whole replica).
    experts: BTreeMap<PartKey, FfnWeights>,
}

/// (layer, expert, first column of the part in the model's FFN).
type PartKey = (u32, u32, u64);

/// A row in flight: which token and which of its choices it belongs to.
#[derive(Clone, Debug)]
struct Row {
    token: usize,
    choice: usize,
    values: Vec<f32>,
    /// The die its output returns to: the token's home, or under token
    /// domains the member that dispatched it.
    reply_to: usize,
}

/// Token domains: one member's routed rows of a layer, as its group gathers them.
#[derive(Clone, Debug, Default)]
struct GroupRows {
    tokens: Vec<usize>,
    /// Normalised FFN input, `tokens x hidden`.
    rows: Vec<f32>,
    /// Chosen experts and gate weights, `tokens x top_k`.
    experts: Vec<u32>,
    weights: Vec<f32>,
}

/// One die's activations during a step; per-layer buffers are dropped once
/// the layer is finalized.
#[derive(Clone, Debug, Default)]
struct Activations {
    /// Residual stream, `tokens x hidden`.
    x: Vec<f32>,
    /// TP attention: per layer, the group members' normalised rows by ring
    /// position; this die's partial output over all of them; and the
    /// partials of this die's rows by the sender's ring position.
    gathered: BTreeMap<u32, BTreeMap<usize, Vec<f32>>>,
    partial_out: BTreeMap<u32, Vec<f32>>,
    partials: BTreeMap<u32, BTreeMap<usize, Vec<f32>>>,
    /// Normalised FFN input per layer.
    ffn_in: BTreeMap<u32, Vec<f32>>,
    /// Chosen experts and gate weights per layer, `tokens x top_k`.
    chosen: BTreeMap<u32, (Vec<u32>, Vec<f32>)>,
    shared_out: BTreeMap<u32, Vec<f32>>,
    dense_out: BTreeMap<u32, Vec<f32>>,
    /// Routed outputs arrived from expert dies, `tokens x top_k x hidden`.
    routed: BTreeMap<u32, Vec<f32>>,
    /// Rows received for (layer, expert, part).
    inbox: BTreeMap<PartKey, Vec<Row>>,
    /// Expert outputs waiting for `Combine`, per layer.
    outbox: BTreeMap<u32, Vec<Row>>,
    /// Token domains, per layer: the group's rows by the owner's ring
    /// position; expert outputs returned to this member by (token, choice);
    /// the partial MoE outputs of this die's tokens by the sender's position.
    group_rows: BTreeMap<u32, BTreeMap<usize, GroupRows>>,
    returned: BTreeMap<u32, BTreeMap<(usize, usize), Vec<f32>>>,
    moe_partials: BTreeMap<u32, BTreeMap<usize, Vec<f32>>>,
    logits: Vec<f32>,
}

/// One die.
#[derive(Clone, Debug, Default)]
struct Die {
    weights: DieWeights,
    /// Global numeric ids of its tokens, ascending.
    tokens: Vec<usize>,
    /// Its sequences' rows among its tokens.
    sequences: Vec<SequenceRows>,
    /// Its attention group (ring order), its position there, and the
    /// group's sequences laid out as the gathered rows are.
    group: Vec<usize>,
    position: usize,
    group_sequences: Vec<SequenceRows>,
    act: Activations,
}

/// The distributed executor of one schedule.
#[derive(Clone, Debug)]
pub struct Executor {
    programs: Vec<Vec<Op>>,
    /// Per die, per instruction: the chunk of its layer it works on.
    instr_chunks: Vec<Vec<u32>>,
    /// Per layer: the chunks its MoE work is split into (`Schedule::chunks`).
    layer_chunks: Vec<u32>,
    walk: Walk,
    dies: Vec<Die>,
    holdings: Holdings,
    /// Per numeric token: its home die and its row there.
    home: Vec<(usize, usize)>,
    pub fault: Option<Fault>,
    /// Per layer, the hidden state of every token after it, as the dies
    /// finalise the layer (`tokens x hidden`).
    layer_hidden: Vec<Vec<f32>>,
    /// Rows each (die, layer, expert) computed in the last step, whole
    /// copies and parts together: where an expert really ran.
    #[cfg(test)]
    pub computed: BTreeMap<(usize, u32, u32), usize>,
}

/// What the executor produced, with what it moved.
#[derive(Clone, Debug)]
pub struct Execution {
    pub forward: Forward,
    pub bytes_copied: u64,
    pub rows_copied: u64,
}

impl Executor {
    /// Every die materialises its weights (cloned from `weights`, which are
    /// the same numbers it would draw from the seed) and learns its tokens.
    pub fn new(
        schedule: &Schedule,
        holdings: &Holdings,
        walk: Walk,
        layout: &TokenLayout,
        weights: &ModelWeights,
    ) -> Executor {
        let mut executor = Executor {
            programs: programs_of(schedule),
            instr_chunks: instr_chunks_of(schedule),
            layer_chunks: schedule.chunks.clone(),
            walk,
            dies: vec![Die::default(); schedule.programs.len()],
            holdings: holdings.clone(),
            home: Vec::new(),
            fault: None,
            layer_hidden: Vec::new(),
            #[cfg(test)]
            computed: BTreeMap::new(),
        };
        executor.lay_out(layout);
        for d in 0..executor.dies.len() {
            executor.dies[d].weights = executor.non_expert_weights(d, DieWeights::default(), weights);
        }
        let model_ffn = model_ffn(schedule);
        for (die, parts) in executor
            .dies
            .iter_mut()
            .zip(placed_parts(holdings, schedule.programs.len()))
        {
            for ((layer, e, start), columns) in parts {
                if let Some(expert) = host_expert(weights, layer, e) {
                    let held = part_weights(expert, &columns, model_ffn);
                    die.weights.experts.insert((layer, e, start), held);
                }
            }
        }
        executor
    }

    /// Follows a placement change (see the module doc): `schedule` carries
    /// the new placement, `holdings` and `walk` are worked out from it. Each
    /// of `arrivals`, in order, is cloned from the buffer its source die
    /// holds (an earlier arrival counts: a broadcast tree forwards what its
    /// parent received) or from the host's copy in `weights`. Refused,
    /// leaving the executor as it was: an arrival of an expert the model
    /// lacks, to a die the new placement does not give a whole copy, to a
    /// die already holding one, or from a die holding none; an expert copy
    /// or part new on a die without an arrival.
    pub fn relocate(
        &mut self,
        schedule: &Schedule,
        holdings: &Holdings,
        walk: Walk,
        layout: &TokenLayout,
        weights: &ModelWeights,
        arrivals: &[Arrival],
    ) -> Result<(), String> {
        let dies = self.dies.len();
        if schedule.programs.len() != dies {
            return Err(format!(
                "the new schedule has {} programs; the numerics were built for {dies} dies",
                schedule.programs.len()
            ));
        }
        let model_ffn = model_ffn(schedule);
        let placed = placed_parts(holdings, dies);
        self.check_arrivals(&placed, weights, arrivals, model_ffn)?;
        // Nothing below can fail: the executor changes only from here on.
        for a in arrivals {
            let key = (a.layer, a.expert, 0);
            let copy = match a.source {
                WeightSource::Die(s) => self
                    .dies
                    .get(s.index())
                    .and_then(|d| d.weights.experts.get(&key))
                    .cloned(),
                WeightSource::Host => host_expert(weights, a.layer, a.expert).cloned(),
            };
            if let (Some(copy), Some(die)) = (copy, self.dies.get_mut(a.to.index())) {
                die.weights.experts.insert(key, copy);
            }
        }
        // Dropped only now, so that a moved copy's source could still give it.
        for (die, parts) in self.dies.iter_mut().zip(&placed) {
            die.weights.experts.retain(|key, _| parts.contains_key(key));
        }
        self.programs = programs_of(schedule);
        self.instr_chunks = instr_chunks_of(schedule);
        self.layer_chunks = schedule.chunks.clone();
        self.walk = walk;
        self.holdings = holdings.clone();
        self.lay_out(layout);
        for d in 0..dies {
            let mut old = std::mem::take(&mut self.dies[d].weights);
            let experts = std::mem::take(&mut old.experts);
            let mut w = self.non_expert_weights(d, old, weights);
            w.experts = experts;
            self.dies[d].weights = w;
        }
        Ok(())
    }

    /// Checks `arrivals` against what the dies hold and what `placed` (per
    /// die, each part and its columns of the model's FFN) needs, without
    /// changing anything.
    fn check_arrivals(
        &self,
        placed: &[BTreeMap<PartKey, Range<u64>>],
        weights: &ModelWeights,
        arrivals: &[Arrival],
        model_ffn: u64,
    ) -> Result<(), String> {
        // Whole copies held, as the arrivals add them in order: (die, layer, expert).
        let mut whole: BTreeSet<(usize, u32, u32)> = BTreeSet::new();
        for (d, die) in self.dies.iter().enumerate() {
            for (&(l, e, start), w) in &die.weights.experts {
                if start == 0 && host_expert(weights, l, e).is_some_and(|h| h.ffn == w.ffn) {
                    whole.insert((d, l, e));
                }
            }
        }
        let mut arrived = BTreeSet::new();
        for (i, a) in arrivals.iter().enumerate() {
            let what = format!("arrival {i} (expert {} of layer {} to {})", a.expert, a.layer, a.to);
            if host_expert(weights, a.layer, a.expert).is_none() {
                return Err(format!("{what} names an expert of an MoE layer the model lacks"));
            }
            let (l, e, to) = (a.layer, a.expert, a.to.index());
            let placed_whole = placed
                .get(to)
                .and_then(|p| p.get(&(l, e, 0)))
                .is_some_and(|c| c.end.saturating_sub(c.start) >= model_ffn);
            if !placed_whole {
                return Err(format!("{what}: the new placement has no whole copy of it there"));
            }
            if whole.contains(&(to, l, e)) {
                return Err(format!("{what}: {} already holds it", a.to));
            }
            if let WeightSource::Die(s) = a.source {
                if !whole.contains(&(s.index(), l, e)) {
                    return Err(format!("{what}: its source {s} does not hold it"));
                }
            }
            whole.insert((to, l, e));
            arrived.insert((to, l, e));
        }
        for (d, parts) in placed.iter().enumerate() {
            for (&(l, e, start), columns) in parts {
                if start == 0 && arrived.contains(&(d, l, e)) {
                    continue;
                }
                let kept = self.dies[d]
                    .weights
                    .experts
                    .get(&(l, e, start))
                    .zip(host_expert(weights, l, e))
                    .is_some_and(|(held, host)| held.ffn == numeric_columns(columns, host.ffn, model_ffn).len());
                if !kept {
                    return Err(format!(
                        "expert {e} of layer {l} is new on die {d} (columns {columns:?} of {model_ffn}) but no arrival brings it"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Lays out each die's tokens, sequences and attention group from the
    /// holdings, and where each token lives.
    fn lay_out(&mut self, layout: &TokenLayout) {
        let mut home = vec![(0, 0); layout.tokens()];
        for (d, die) in self.dies.iter_mut().enumerate() {
            let (tokens, sequences) = layout.rows(self.holdings.sequences.get(d).map_or(&[][..], |s| &s[..]));
            for (row, &t) in tokens.iter().enumerate() {
                if let Some(h) = home.get_mut(t) {
                    *h = (d, row);
                }
            }
            let (group, position) = self
                .holdings
                .attention_group
                .get(d)
                .cloned()
                .unwrap_or_else(|| (vec![d], 0));
            (die.tokens, die.sequences, die.group, die.position) = (tokens, sequences, group, position);
        }
        // The group's sequences, rows offset as the members' rows follow
        // one another in ring order.
        for d in 0..self.dies.len() {
            let mut offset = 0;
            let mut seqs = Vec::new();
            for &m in &self.dies[d].group {
                let Some(member) = self.dies.get(m) else { continue };
                seqs.extend(member.sequences.iter().map(|s| SequenceRows {
                    start: s.start + offset,
                    ..*s
                }));
                offset += member.tokens.len();
            }
            self.dies[d].group_sequences = seqs;
        }
        self.home = home;
    }

    /// Die `d`'s non-expert weights for its program and holdings (see
    /// `holdings.rs`): what `old` holds is kept (attention only if it is
    /// the same share of the heads), the rest copied from the host's `all`.
    fn non_expert_weights(&self, d: usize, mut old: DieWeights, all: &ModelWeights) -> DieWeights {
        let die = &self.dies[d];
        let share = (die.position, die.group.len());
        if old.attention_share != share {
            old.attention.clear();
        }
        let mut w = DieWeights {
            attention_share: share,
            ..DieWeights::default()
        };
        for op in self.programs.get(d).map_or(&[][..], |p| &p[..]) {
            let needed = match op {
                Op::Attention { .. } => self.holdings.runs_attention(d),
                _ => !die.tokens.is_empty(),
            };
            if needed && !keep(&mut w, &mut old, op) {
                materialise(&mut w, op, all, share);
            }
        }
        w
    }

    /// Runs one step on `token_ids` (one per numeric token).
    pub fn run(&mut self, ctx: &NumericContext, token_ids: &[u32], given: Option<&GivenRouting<'_>>) -> Execution {
        let tokens = ctx.layout.tokens();
        let mut step = Step {
            ctx,
            token_ids,
            given,
            record: RoutingRecord::new(tokens, ctx.top_k(), &ctx.moe_layers()),
            rows_copied: 0,
        };
        for die in &mut self.dies {
            die.act = Activations::default();
        }
        #[cfg(test)]
        self.computed.clear();
        let (w, vocab) = (ctx.width(), ctx.model.vocab as usize);
        self.layer_hidden = vec![vec![0.0f32; tokens * w]; ctx.model.layers as usize];
        let mut hidden = vec![0.0f32; tokens * w];
        let mut logits = vec![0.0f32; tokens * vocab];
        let events = std::mem::take(&mut self.walk.events);
        let whole = self.holdings.sequences.clone();
        for event in &events {
            match *event {
                Event::Issue { die, instr } => {
                    let Some(op) = self.programs.get(die).and_then(|p| p.get(instr)).cloned() else {
                        continue;
                    };
                    let chunk = self
                        .instr_chunks
                        .get(die)
                        .and_then(|c| c.get(instr))
                        .copied()
                        .unwrap_or(0);
                    self.issue(&mut step, die, &op, chunk);
                }
                Event::Finalize { die, layer } => self.finalize(ctx, die, layer),
                Event::Reduce { die, layer } => self.reduce(ctx, die, layer),
                Event::MicroBatch { index } => {
                    // The previous micro-batch is done: keep its outputs,
                    // then lay out this one's tokens on fresh buffers.
                    self.collect_outputs((&mut hidden, &mut logits), (w, vocab));
                    if let Some(sequences) = self.walk.micro_batches.get(index) {
                        self.holdings.sequences = sequences.clone();
                    }
                    self.lay_out(&ctx.layout);
                    for die in &mut self.dies {
                        die.act = Activations::default();
                    }
                }
            }
        }
        self.collect_outputs((&mut hidden, &mut logits), (w, vocab));
        self.walk.events = events;
        if !self.walk.micro_batches.is_empty() {
            self.holdings.sequences = whole;
            self.lay_out(&ctx.layout);
        }
        let gate_fallbacks = step.record.fallbacks;
        Execution {
            forward: Forward {
                hidden,
                logits,
                layers: std::mem::take(&mut self.layer_hidden),
                routing: step.record.into_step_routing(),
                gate_fallbacks,
                gate_disagreements: 0,
            },
            bytes_copied: step.rows_copied * (w as u64) * ctx.model.dtype.bytes(),
            rows_copied: step.rows_copied,
        }
    }

    /// Copies the final hidden state and logits of every token the dies
    /// hold now into the step's outputs (rows of `w` and `vocab`).
    fn collect_outputs(&self, (hidden, logits): (&mut [f32], &mut [f32]), (w, vocab): (usize, usize)) {
        for die in &self.dies {
            for (row, &t) in die.tokens.iter().enumerate() {
                if let (Some(src), Some(dst)) = (
                    die.act.x.get(row * w..(row + 1) * w),
                    hidden.get_mut(t * w..(t + 1) * w),
                ) {
                    dst.copy_from_slice(src);
                }
                let (from, to) = (row * vocab..(row + 1) * vocab, t * vocab..(t + 1) * vocab);
                if let (Some(src), Some(dst)) = (die.act.logits.get(from), logits.get_mut(to)) {
                    dst.copy_from_slice(src);
                }
            }
        }
    }

    /// Whether numeric token `t` is in chunk `chunk` of `layer`: its home
    /// die's tokens split in order into the layer's chunks, as the
    /// simulator splits them (`Placement::chunk_of`).
    fn in_chunk(&self, layer: u32, chunk: u32, t: usize) -> bool {
        let d = u64::from(self.layer_chunks.get(layer as usize).copied().unwrap_or(1).max(1));
        if d == 1 {
            return true;
        }
        let Some(&(home, row)) = self.home.get(t) else {
            return false;
        };
        let n = self.dies.get(home).map_or(1, |h| h.tokens.len().max(1)) as u64;
        row as u64 * d / n == u64::from(chunk)
    }

    /// Does the work of `op` (of chunk `chunk` of its layer) issued on die `d`.
    fn issue(&mut self, step: &mut Step<'_, '_>, d: usize, op: &Op, chunk: u32) {
        let ctx = step.ctx;
        let w = ctx.width();
        let top_k = ctx.top_k();
        let tp = self.dies[d].group.len() > 1;
        match *op {
            Op::Dispatch { layer } => return self.dispatch(step, d, layer, chunk),
            Op::Experts { layer, .. } => return self.experts(d, layer, w, chunk),
            Op::Combine { layer } => return self.combine_send(step, d, layer, chunk),
            Op::AllGather { layer } => return self.all_gather(d, layer, w),
            Op::Attention { layer } if tp => return self.partial_attention(ctx, d, layer),
            Op::ReduceScatter { layer } => return self.reduce_scatter(d, layer, w),
            Op::TokenAllGather { layer } => return self.token_all_gather(d, layer),
            Op::MoeReduceScatter { layer } => return self.moe_reduce_scatter(d, layer, w, top_k),
            // MoNTA's relay changes which links a split expert's rows take,
            // not what any die computes: `dispatch` hands every part its
            // rows and `combine` sums the parts' partials at the token's
            // home, in part order, as without the relay.
            Op::ExpertAllGather { .. } | Op::ExpertReduceScatter { .. } => return,
            _ => {}
        }
        let die = &mut self.dies[d];
        let n = die.tokens.len();
        if n == 0 {
            return;
        }
        let (weights, act) = (&die.weights, &mut die.act);
        match *op {
            Op::Embed => {
                let ids: Vec<u32> = die
                    .tokens
                    .iter()
                    .map(|&t| step.token_ids.get(t).copied().unwrap_or(0))
                    .collect();
                act.x = embed(weights.embedding.as_deref().unwrap_or(&[]), w, &ids);
            }
            Op::Attention { layer } => {
                let Some((aw, _)) = weights.attention.get(&layer) else {
                    return;
                };
                let a = attention(aw, &rms_norm(&act.x, w), &die.sequences, &ctx.cache(layer));
                act.x.iter_mut().zip(&a).for_each(|(xi, ai)| *xi += ai);
                act.ffn_in.insert(layer, rms_norm(&act.x, w));
            }
            Op::Gate { layer } => {
                let (Some(router), Some(w_g), Some(h)) =
                    (ctx.router.as_ref(), weights.router.get(&layer), act.ffn_in.get(&layer))
                else {
                    return;
                };
                let scores = router.scores(h, w_g, n, w);
                let (mut experts, mut gate_weights) = (Vec::with_capacity(n * top_k), Vec::with_capacity(n * top_k));
                for (row, s) in scores.chunks_exact(router.experts).enumerate() {
                    let t = die.tokens[row];
                    let choice = choose(router, step.given, layer, t, s);
                    step.record.set(layer, t, &choice);
                    experts.extend(choice.experts);
                    gate_weights.extend(choice.weights);
                }
                act.chosen.insert(layer, (experts, gate_weights));
                act.routed.insert(layer, vec![0.0; n * top_k * w]);
            }
            Op::SharedExperts { layer } => {
                let (Some(shared), Some(h)) = (weights.shared.get(&layer), act.ffn_in.get(&layer)) else {
                    return;
                };
                if let Some(out) = shared_ffn(shared, h, n) {
                    act.shared_out.insert(layer, out);
                }
            }
            Op::DenseFfn { layer } => {
                let (Some(f), Some(h)) = (weights.dense.get(&layer), act.ffn_in.get(&layer)) else {
                    return;
                };
                act.dense_out.insert(layer, ffn(f, h, n));
            }
            Op::LmHead => {
                let Some(head) = weights.lm_head.as_deref() else { return };
                act.logits = matmul(&rms_norm(&act.x, w), head, n, w, ctx.model.vocab as usize);
            }
            _ => {}
        }
    }

    /// Copies die `d`'s normalised rows of `layer` to every member of its group.
    fn all_gather(&mut self, d: usize, layer: u32, w: usize) {
        let rows = rms_norm(&self.dies[d].act.x, w);
        let (group, position) = (self.dies[d].group.clone(), self.dies[d].position);
        for m in group {
            let gathered = self.dies[m].act.gathered.entry(layer).or_default();
            gathered.insert(position, rows.clone());
        }
    }

    /// Die `d`'s heads of `layer`'s attention over all its group's rows.
    fn partial_attention(&mut self, ctx: &NumericContext, d: usize, layer: u32) {
        let die = &mut self.dies[d];
        let Some((aw, columns)) = die.weights.attention.get(&layer) else {
            return;
        };
        let gathered = die.act.gathered.remove(&layer).unwrap_or_default();
        let rows: Vec<f32> = gathered.into_values().flatten().collect();
        let cache = ctx.cache(layer).columns(columns.clone());
        let out = attention(aw, &rows, &die.group_sequences, &cache);
        die.act.partial_out.insert(layer, out);
    }

    /// Sends each member of die `d`'s group the rows of its tokens of
    /// `d`'s partial attention output.
    fn reduce_scatter(&mut self, d: usize, layer: u32, w: usize) {
        let out = self.dies[d].act.partial_out.remove(&layer).unwrap_or_default();
        let (group, position) = (self.dies[d].group.clone(), self.dies[d].position);
        let mut offset = 0;
        for m in group {
            let n = self.dies[m].tokens.len();
            let rows = out.get(offset * w..(offset + n) * w).unwrap_or_default().to_vec();
            self.dies[m]
                .act
                .partials
                .entry(layer)
                .or_default()
                .insert(position, rows);
            offset += n;
        }
    }

    /// Sums the partial attention outputs die `d` received (in ring order)
    /// into its residual.
    fn reduce(&mut self, ctx: &NumericContext, d: usize, layer: u32) {
        let w = ctx.width();
        let act = &mut self.dies[d].act;
        let Some(partials) = act.partials.remove(&layer) else {
            return;
        };
        if act.x.is_empty() {
            return;
        }
        let mut sum = vec![0.0f32; act.x.len()];
        for p in partials.values() {
            sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        act.x.iter_mut().zip(&sum).for_each(|(xi, ai)| *xi += ai);
        act.ffn_in.insert(layer, rms_norm(&act.x, w));
    }

    /// Copies each of die `d`'s tokens' rows to the die serving each chosen
    /// expert; under token domains, each of its group's rows bound for an
    /// expert whose die `d` is the sender for; of a chunked layer, the
    /// rows of chunk `chunk` only.
    fn dispatch(&mut self, step: &mut Step<'_, '_>, d: usize, layer: u32, chunk: u32) {
        let (w, top_k) = (step.ctx.width(), step.ctx.top_k());
        let die = &self.dies[d];
        // (tokens, their normalised rows, their chosen experts) per block:
        // the group's gathered blocks, or the die's own tokens.
        let blocks: Vec<(&[usize], &[f32], &[u32])> = if self.holdings.has_token_domains() {
            die.act
                .group_rows
                .get(&layer)
                .map(|g| {
                    g.values()
                        .map(|r| (&r.tokens[..], &r.rows[..], &r.experts[..]))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            let (Some((experts, _)), Some(h)) = (die.act.chosen.get(&layer), die.act.ffn_in.get(&layer)) else {
                return;
            };
            vec![(&die.tokens[..], &h[..], &experts[..])]
        };
        let mut sends = Vec::new();
        for (tokens, rows, experts) in blocks {
            for (row, &t) in tokens.iter().enumerate() {
                if !self.in_chunk(layer, chunk, t) {
                    continue;
                }
                let home = self.home.get(t).map_or(d, |h| h.0);
                for j in 0..top_k {
                    let Some(&e) = experts.get(row * top_k + j) else {
                        continue;
                    };
                    let Some(copy) = self.holdings.copy_for(layer, e, t, home) else {
                        continue;
                    };
                    for part in copy {
                        let to = part.die.index();
                        if self.holdings.sender(home, to) != d {
                            continue;
                        }
                        let values = rows[row * w..(row + 1) * w].to_vec();
                        let row = Row {
                            token: t,
                            choice: j,
                            values,
                            reply_to: d,
                        };
                        sends.push((to, (layer, e, part.columns.start), row));
                    }
                }
            }
        }
        for (to, key, row) in sends {
            if to != d {
                let lost = self.loses_row(step.rows_copied);
                step.rows_copied += 1;
                if lost {
                    continue;
                }
            }
            if let Some(target) = self.dies.get_mut(to) {
                target.act.inbox.entry(key).or_default().push(row);
            }
        }
    }

    /// Whether the injected fault loses this copied row (the first one).
    fn loses_row(&self, rows_copied: u64) -> bool {
        self.fault == Some(Fault::DropDispatchedRow) && rows_copied == 0
    }

    /// The die numeric token `t` is homed on.
    pub fn home_die(&self, t: usize) -> Option<usize> {
        self.home.get(t).map(|h| h.0)
    }

    /// Test hook: corrupts die `die`'s own copy of expert `e` of `layer`
    /// (its down projection doubled), as a fault in that die's memory
    /// would. False if the die holds no such copy.
    #[cfg(test)]
    pub fn corrupt_expert(&mut self, die: usize, layer: u32, e: u32) -> bool {
        let held = self
            .dies
            .get_mut(die)
            .and_then(|d| d.weights.experts.get_mut(&(layer, e, 0)));
        held.map(|w| w.down.iter_mut().for_each(|v| *v *= 2.0)).is_some()
    }

    /// Test hook: whether die `die` holds a copy (or the first part) of expert `e` of `layer`.
    #[cfg(test)]
    pub fn holds_expert(&self, die: usize, layer: u32, e: u32) -> bool {
        self.dies
            .get(die)
            .is_some_and(|d| d.weights.experts.contains_key(&(layer, e, 0)))
    }

    /// Test hook: the numeric tokens homed on die `die`.
    #[cfg(test)]
    pub fn tokens_of(&self, die: usize) -> &[usize] {
        self.dies.get(die).map_or(&[], |d| &d.tokens)
    }

    /// Test hook: whether die `die` holds any non-expert weights.
    #[cfg(test)]
    pub fn holds_dense_weights(&self, die: usize) -> bool {
        self.dies.get(die).is_some_and(|d| {
            let w = &d.weights;
            w.embedding.is_some() || w.lm_head.is_some() || !w.attention.is_empty() || !w.router.is_empty()
        })
    }

    /// Runs die `d`'s experts of `layer` on the rows they received (of
    /// chunk `chunk`, for a chunked layer: a later chunk's rows may have
    /// arrived already, and wait for their own kernel).
    fn experts(&mut self, d: usize, layer: u32, w: usize, chunk: u32) {
        let of_chunk: BTreeSet<usize> = self.dies[d]
            .act
            .inbox
            .range((layer, 0, 0)..=(layer, u32::MAX, u64::MAX))
            .flat_map(|(_, rows)| rows.iter().map(|r| r.token))
            .filter(|&t| self.in_chunk(layer, chunk, t))
            .collect();
        let Die { weights, act, .. } = &mut self.dies[d];
        let keys: Vec<PartKey> = act
            .inbox
            .range((layer, 0, 0)..=(layer, u32::MAX, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut received: Vec<(&FfnWeights, Vec<Row>, Vec<f32>)> = Vec::with_capacity(keys.len());
        for key in keys {
            let (Some(all), Some(expert)) = (act.inbox.remove(&key), weights.experts.get(&key)) else {
                continue;
            };
            let (mut rows, later): (Vec<Row>, Vec<Row>) = all.into_iter().partition(|r| of_chunk.contains(&r.token));
            if !later.is_empty() {
                act.inbox.insert(key, later);
            }
            if rows.is_empty() {
                continue;
            }
            // Arrival order depends on which die dispatched first; token
            // order does not, and matches the reference.
            rows.sort_by_key(|r| (r.token, r.choice));
            #[cfg(test)]
            {
                *self.computed.entry((d, key.0, key.1)).or_default() += rows.len();
            }
            let gathered = rows.iter().flat_map(|r| r.values.iter().copied()).collect();
            received.push((expert, rows, gathered));
        }
        let blocks: Vec<ExpertBlock<'_>> = received
            .iter()
            .map(|(weights, rows, x)| ExpertBlock {
                weights,
                rows: x,
                n: rows.len(),
            })
            .collect();
        let out = grouped_ffn(&blocks);
        let outbox = act.outbox.entry(layer).or_default();
        let rows = received.iter().flat_map(|(_, rows, _)| rows);
        for (r, values) in rows.zip(out.chunks_exact(w.max(1))) {
            outbox.push(Row {
                token: r.token,
                choice: r.choice,
                values: values.to_vec(),
                reply_to: r.reply_to,
            });
        }
    }

    /// Copies die `d`'s expert outputs of `layer` (of chunk `chunk`) back
    /// to the dies that sent their tokens.
    fn combine_send(&mut self, step: &mut Step<'_, '_>, d: usize, layer: u32, chunk: u32) {
        let (w, top_k) = (step.ctx.width(), step.ctx.top_k());
        let all = self.dies[d].act.outbox.remove(&layer).unwrap_or_default();
        let (rows, later): (Vec<Row>, Vec<Row>) = all.into_iter().partition(|r| self.in_chunk(layer, chunk, r.token));
        if !later.is_empty() {
            self.dies[d].act.outbox.insert(layer, later);
        }
        for r in rows {
            if r.reply_to != d {
                step.rows_copied += 1;
            }
            if self.holdings.has_token_domains() {
                if let Some(to) = self.dies.get_mut(r.reply_to) {
                    let returned = to.act.returned.entry(layer).or_default();
                    let sum = returned.entry((r.token, r.choice)).or_insert_with(|| vec![0.0; w]);
                    sum.iter_mut().zip(&r.values).for_each(|(s, v)| *s += v);
                }
                continue;
            }
            let Some(&(home, local)) = self.home.get(r.token) else {
                continue;
            };
            let Some(slots) = self.dies[home].act.routed.get_mut(&layer) else {
                continue;
            };
            let at = (local * top_k + r.choice) * w;
            // A split expert's parts each return a partial output: summed.
            if let Some(dst) = slots.get_mut(at..at + w) {
                dst.iter_mut().zip(&r.values).for_each(|(s, v)| *s += v);
            }
        }
    }

    /// Token domains: sends die `d`'s routed rows, choices and gate weights
    /// of `layer` to every member of its group.
    fn token_all_gather(&mut self, d: usize, layer: u32) {
        let die = &self.dies[d];
        let (experts, weights) = die.act.chosen.get(&layer).cloned().unwrap_or_default();
        let rows = GroupRows {
            tokens: die.tokens.clone(),
            rows: die.act.ffn_in.get(&layer).cloned().unwrap_or_default(),
            experts,
            weights,
        };
        let (group, position) = (die.group.clone(), die.position);
        for m in group {
            let gathered = self.dies[m].act.group_rows.entry(layer).or_default();
            gathered.insert(position, rows.clone());
        }
    }

    /// Token domains: sends each member of die `d`'s group, for each of its
    /// tokens, the gate-weighted sum of the expert outputs `d` collected.
    fn moe_reduce_scatter(&mut self, d: usize, layer: u32, w: usize, top_k: usize) {
        let act = &mut self.dies[d].act;
        let returned = act.returned.remove(&layer).unwrap_or_default();
        let gathered = act.group_rows.remove(&layer).unwrap_or_default();
        let (group, position) = (self.dies[d].group.clone(), self.dies[d].position);
        for (at, &m) in group.iter().enumerate() {
            let Some(g) = gathered.get(&at) else { continue };
            let mut partial = vec![0.0f32; g.tokens.len() * w];
            for (row, &t) in g.tokens.iter().enumerate() {
                for j in 0..top_k {
                    let (Some(out), Some(&weight)) = (returned.get(&(t, j)), g.weights.get(row * top_k + j)) else {
                        continue;
                    };
                    let dst = &mut partial[row * w..(row + 1) * w];
                    dst.iter_mut().zip(out).for_each(|(p, o)| *p += weight * o);
                }
            }
            let partials = self.dies[m].act.moe_partials.entry(layer).or_default();
            partials.insert(position, partial);
        }
    }

    /// Adds `layer`'s FFN output to die `d`'s residual.
    fn finalize(&mut self, ctx: &NumericContext, d: usize, layer: u32) {
        let (w, top_k) = (ctx.width(), ctx.top_k());
        let act = &mut self.dies[d].act;
        if ctx.is_moe(layer) && self.holdings.has_token_domains() {
            // The members' partials, in ring order, as `parts` choices of weight 1.
            act.chosen.remove(&layer);
            act.routed.remove(&layer);
            let partials = act.moe_partials.remove(&layer).unwrap_or_default();
            let parts = partials.len();
            let n = act.x.len() / w.max(1);
            let mut stacked = vec![0.0f32; n * parts * w];
            for (p, rows) in partials.values().enumerate() {
                for t in 0..n {
                    let (src, dst) = (t * w..(t + 1) * w, (t * parts + p) * w);
                    if let Some(src) = rows.get(src) {
                        stacked[dst..dst + w].copy_from_slice(src);
                    }
                }
            }
            let shared = act.shared_out.remove(&layer);
            combine(&mut act.x, w, shared.as_deref(), parts, &vec![1.0; n * parts], &stacked);
        } else if ctx.is_moe(layer) {
            let gate_weights = act.chosen.remove(&layer).map(|c| c.1).unwrap_or_default();
            let routed = act.routed.remove(&layer).unwrap_or_default();
            let shared = act.shared_out.remove(&layer);
            combine(&mut act.x, w, shared.as_deref(), top_k, &gate_weights, &routed);
        } else if let Some(out) = act.dense_out.remove(&layer) {
            combine(&mut act.x, w, Some(&out), 0, &[], &[]);
        }
        act.ffn_in.remove(&layer);
        // The layer's output of the die's tokens, for a failed check to find.
        let die = &self.dies[d];
        if let Some(out) = self.layer_hidden.get_mut(layer as usize) {
            for (row, &t) in die.tokens.iter().enumerate() {
                if let (Some(src), Some(dst)) = (die.act.x.get(row * w..(row + 1) * w), out.get_mut(t * w..(t + 1) * w))
                {
                    dst.copy_from_slice(src);
                }
            }
        }
    }
}

/// One step's inputs and what it accumulates while the walk replays.
struct Step<'a, 'g> {
    ctx: &'a NumericContext,
    token_ids: &'a [u32],
    given: Option<&'a GivenRouting<'g>>,
    record: RoutingRecord,
    /// Rows dispatch and combine copied between dies.
    rows_copied: u64,
}

/// Copies into `w` the weights `op` needs, from the full set; attention
/// only the share of `part` of `parts` (its TP group's split by heads).
fn materialise(w: &mut DieWeights, op: &Op, all: &ModelWeights, (part, parts): (usize, usize)) {
    let layer = |l: u32| all.layers.get(l as usize);
    match *op {
        Op::Embed => w.embedding = Some(all.embedding.clone()),
        Op::LmHead => w.lm_head = Some(all.lm_head.clone()),
        Op::Attention { layer: l } => {
            if let Some(lw) = layer(l) {
                let held = if parts > 1 {
                    lw.attention.head_share(part, parts)
                } else {
                    (lw.attention.clone(), Vec::new())
                };
                w.attention.insert(l, held);
            }
        }
        Op::Gate { layer: l } => {
            if let Some(LayerFfn::Moe { router, .. }) = layer(l).map(|x| &x.ffn) {
                w.router.insert(l, router.clone());
            }
        }
        Op::SharedExperts { layer: l } => {
            if let Some(LayerFfn::Moe { shared, .. }) = layer(l).map(|x| &x.ffn) {
                w.shared.insert(l, shared.clone());
            }
        }
        Op::DenseFfn { layer: l } => {
            if let Some(LayerFfn::Dense(f)) = layer(l).map(|x| &x.ffn) {
                w.dense.insert(l, f.clone());
            }
        }
        _ => {}
    }
}

/// Moves into `w` what `op` needs from `old`, if `old` holds it (its
/// attention already filtered to the right share); false if it does not.
fn keep(w: &mut DieWeights, old: &mut DieWeights, op: &Op) -> bool {
    match *op {
        Op::Embed => old.embedding.take().map(|e| w.embedding = Some(e)).is_some(),
        Op::LmHead => old.lm_head.take().map(|h| w.lm_head = Some(h)).is_some(),
        Op::Attention { layer } => old
            .attention
            .remove(&layer)
            .map(|a| w.attention.insert(layer, a))
            .is_some(),
        Op::Gate { layer } => old.router.remove(&layer).map(|r| w.router.insert(layer, r)).is_some(),
        Op::SharedExperts { layer } => old.shared.remove(&layer).map(|f| w.shared.insert(layer, f)).is_some(),
        Op::DenseFfn { layer } => old.dense.remove(&layer).map(|f| w.dense.insert(layer, f)).is_some(),
        _ => false,
    }
}

/// Each die's ops, in program order.
fn programs_of(schedule: &Schedule) -> Vec<Vec<Op>> {
    schedule
        .programs
        .iter()
        .map(|p| p.instrs.iter().map(|i| i.op.clone()).collect())
        .collect()
}

/// Each die's instructions' chunks, in program order.
fn instr_chunks_of(schedule: &Schedule) -> Vec<Vec<u32>> {
    schedule
        .programs
        .iter()
        .map(|p| p.instrs.iter().map(|i| i.chunk).collect())
        .collect()
}

/// The model's expert FFN width (1 without MoE, so that it divides).
fn model_ffn(schedule: &Schedule) -> u64 {
    schedule.model.moe.as_ref().map_or(1, |m| m.expert_ffn.max(1))
}

/// The host's (the reference's) copy of expert `e` of `layer`.
fn host_expert(weights: &ModelWeights, layer: u32, e: u32) -> Option<&FfnWeights> {
    match weights.layers.get(layer as usize).map(|l| &l.ffn) {
        Some(LayerFfn::Moe { experts, .. }) => experts.get(e as usize),
        _ => None,
    }
}

/// Per die, the expert parts `holdings` place on it, each with its columns
/// of the model's FFN (all of them for a whole replica).
fn placed_parts(holdings: &Holdings, dies: usize) -> Vec<BTreeMap<PartKey, Range<u64>>> {
    let mut placed = vec![BTreeMap::new(); dies];
    for (layer, experts) in holdings.expert_copies.iter().enumerate() {
        for (e, copies) in experts.iter().enumerate() {
            for part in copies.iter().flatten() {
                if let Some(parts) = placed.get_mut(part.die.index()) {
                    parts.insert((layer as u32, e as u32, part.columns.start), part.columns.clone());
                }
            }
        }
    }
    placed
}

/// The numeric-width columns of the part holding `columns` of the model's
/// `model_ffn`, for an expert of `ffn` numeric columns.
fn numeric_columns(columns: &Range<u64>, ffn: usize, model_ffn: u64) -> Range<usize> {
    let at = |c: u64| (u128::from(c) * ffn as u128 / u128::from(model_ffn.max(1))) as usize;
    at(columns.start)..at(columns.end)
}

/// The weights of the part of `expert` holding `columns` of the model's FFN.
fn part_weights(expert: &FfnWeights, columns: &Range<u64>, model_ffn: u64) -> FfnWeights {
    if columns.end.saturating_sub(columns.start) >= model_ffn {
        expert.clone()
    } else {
        expert.part(numeric_columns(columns, expert.ffn, model_ffn))
    }
}
