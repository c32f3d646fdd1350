//! The schedule: what the compiler hands the runtime, as versioned JSON.
//!
//! A schedule is self-contained: the machine, model and workload
//! descriptions, where every expert and every sequence lives
//! ([`Placement`]), and for every die an ordered program of instructions
//! with explicit dependencies ([`DieProgram`]). `moec run plan.json` needs
//! nothing else.
//!
//! Execution model (what the simulator and the numeric executor both obey):
//! a die issues each of its streams' instructions in program order (one
//! stream unless the step is split into micro-batches); an instruction
//! issues once every instruction in its `deps` (on the same die) has
//! completed.
//! Compute instructions occupy the die's compute unit until done, so they
//! run one at a time; communication instructions only start their transfers
//! and let the next instruction issue, so compute and communication overlap
//! where the dependencies allow. `Dispatch` and `Combine` are collective:
//! their transfers follow the step's routing, so their volume is what the
//! tokens really send.

mod copies;
mod instr;
mod migration;
mod transport;

pub use copies::{ExpertCopy, ExpertPart};
pub use instr::{Instr, InstrId, Op};
pub use migration::{plan_legs, step_windows, Broadcast, Chunk, Migration, MigrationKind, Phase, WeightSource, Window};
pub use transport::Transport;

use crate::machine::{DieId, MachineSpec};
use crate::model::ModelSpec;
use crate::workload::WorkloadSpec;
use serde::{Deserialize, Serialize};

/// Version of the schedule format; bumped when a field changes meaning.
pub const SCHEDULE_VERSION: u32 = 1;

/// A compiled plan, ready to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub version: u32,
    /// The plan it was compiled from.
    pub plan: String,
    /// The passes that produced it, in order.
    pub passes: Vec<String>,
    pub machine: MachineSpec,
    pub model: ModelSpec,
    pub workload: WorkloadSpec,
    pub placement: Placement,
    /// One program per die of the machine, in die order (dead dies: empty).
    pub programs: Vec<DieProgram>,
    /// Expert copies added, moved and dropped during the run, in order of
    /// the step they take effect (see `migration.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
    /// Experts broadcast for one layer of every step in a range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broadcasts: Vec<Broadcast>,
    /// Micro-batches the step's sequences are split into
    /// ([`Placement::micro_batch_of`]); each instruction works on one of
    /// them (`Instr::micro_batch`). 1: the step is one batch.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub micro_batches: u32,
    /// `chunks[layer]`: the chunks an MoE layer's tokens are dispatched,
    /// computed and combined in (FSMoE's pipeline; [`Placement::chunk_of`]);
    /// each of that layer's `Dispatch`, `Experts` and `Combine` works on
    /// one of them (`Instr::chunk`). Empty, or 1 for a layer: one chunk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<u32>,
    /// How the all-to-alls move their messages (`transport.rs`).
    #[serde(default, skip_serializing_if = "Transport::is_direct")]
    pub transport: Transport,
    /// DeepSpeed-MoE's fixed expert capacity (`capacity_factor = F`): each
    /// die sends every expert a buffer of `max(ceil(k T F / E), 4)` token
    /// rows for its `T` tokens, full or padded, and the expert computes
    /// every row it receives (`sim/traffic.rs`). `None`: experts get and
    /// compute the tokens routed to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f64>,
}

fn one() -> u32 {
    1
}

fn is_one(x: &u32) -> bool {
    *x == 1
}

/// The most micro-batches a step may be split into, chunks an MoE layer
/// may be split into, and streams a die may have.
pub const MAX_MICRO_BATCHES: u32 = 64;
pub const MAX_CHUNKS: u32 = 64;
pub const MAX_STREAMS: u8 = 8;

/// Where things live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// `experts[layer][expert]`: the dies holding a replica of that expert
    /// (empty for dense layers). A token is sent to one replica.
    pub experts: Vec<Vec<Vec<DieId>>>,
    /// `expert_columns[layer][expert]`, parallel to `experts[layer][expert]`:
    /// the FFN columns each of those dies holds when the expert is split
    /// (expert tensor parallelism, MoEShard, HD-MoE's hybrid); consecutive
    /// dies whose columns add up to the expert's `expert_ffn` form one copy
    /// (see `copies.rs`). Empty (for all layers, a layer or an expert):
    /// every die holds a whole replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expert_columns: Vec<Vec<Vec<u64>>>,
    /// `sequences[s]`: the die that is home to sequence `s`'s tokens: it
    /// holds their hidden states between layers, routes them, and runs
    /// their attention (with its attention group, under tensor parallelism).
    pub sequences: Vec<DieId>,
    /// Tensor-parallel attention: groups of dies that split every attention
    /// layer by heads, each group listed in its ring order (the order the
    /// all-gather and reduce-scatter pass chunks in). Each group runs the
    /// attention of the sequences homed on its members. Empty: data-parallel
    /// attention, every die on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention_groups: Vec<Vec<DieId>>,
    /// Token domains (MoEntwine's Full Token Domains): each takes one die
    /// from every attention group, so after the group's all-gather a domain
    /// holds every token. A token bound for an expert on a die of domain `f`
    /// is sent by the member of its group that lies in `f`, and its output
    /// returns there: dispatch and combine stay inside domains, and the
    /// members' partial outputs are summed by a reduce-scatter in the group.
    /// Empty: each token is sent from its home die.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_domains: Vec<Vec<DieId>>,
    /// `balanced[layer]`: experts (ascending) whose tokens go to the
    /// least-loaded die holding them instead of the copy rule
    /// (`Placement::copy_for`): the broadcast experts of HD-MoE's
    /// DynamicPlacement. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balanced: Vec<Vec<u32>>,
    /// MoNTA's relay: a token bound for an expert copy split over several
    /// dies is sent once, to the part at its sender's position in its
    /// attention group (modulo the parts), which forwards it to the other
    /// parts (`Op::ExpertAllGather`) and sums their partial outputs
    /// (`Op::ExpertReduceScatter`) before returning one row. False: the
    /// token goes to every part, and every part's output comes back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay_parts: bool,
}

impl Placement {
    /// Per sequence: its micro-batch when the step is split into `m`. Each
    /// die splits the sequences homed on it, in order, into `m` contiguous
    /// runs as equal as they can be (the `k`-th of `n` goes to `k * m /
    /// n`), so every die (and every attention group) holds its share of
    /// each micro-batch and the micro-batches are as alike as the batch
    /// allows.
    pub fn micro_batch_of(&self, m: u32) -> Vec<u32> {
        // A sequence is one item here, as a token is for a chunk.
        self.chunk_of(1, m)
    }

    /// Per token (`s * tokens_per_sequence + i` for token `i` of sequence
    /// `s`): its chunk when an MoE layer is split into `d`. Each die splits
    /// the tokens homed on it, in sequence order, into `d` contiguous runs
    /// as equal as they can be (the `k`-th of `n` goes to `k * d / n`), so
    /// every die dispatches its share of each chunk. Token-granular, unlike
    /// micro-batches: attention has run on whole sequences by then, and an
    /// expert computes each token on its own.
    pub fn chunk_of(&self, tokens_per_sequence: u64, d: u32) -> Vec<u32> {
        let d = u64::from(d.max(1));
        let tps = tokens_per_sequence.max(1);
        let dies = self.sequences.iter().map(|x| x.index() + 1).max().unwrap_or(0);
        let mut homed = vec![0u64; dies];
        for x in &self.sequences {
            homed[x.index()] += tps;
        }
        let mut seen = vec![0u64; dies];
        let mut of = Vec::with_capacity(self.sequences.len() * tps as usize);
        for x in &self.sequences {
            for _ in 0..tps {
                let k = seen[x.index()];
                seen[x.index()] += 1;
                of.push((k * d / homed[x.index()].max(1)) as u32);
            }
        }
        of
    }

    /// Per die: its attention group (ring order) and its position in it; a
    /// die in no group is a group of one.
    pub fn attention_group_of(&self, dies: usize) -> Vec<(Vec<DieId>, usize)> {
        let mut of: Vec<(Vec<DieId>, usize)> = (0..dies).map(|d| (vec![DieId(d as u32)], 0)).collect();
        for g in &self.attention_groups {
            for (i, d) in g.iter().enumerate() {
                if let Some(slot) = of.get_mut(d.index()) {
                    *slot = (g.clone(), i);
                }
            }
        }
        of
    }

    /// Per die: the token domain it lies in, if any.
    pub fn token_domain_of(&self, dies: usize) -> Vec<Option<usize>> {
        let mut of = vec![None; dies];
        for (f, domain) in self.token_domains.iter().enumerate() {
            for d in domain {
                if let Some(slot) = of.get_mut(d.index()) {
                    *slot = Some(f);
                }
            }
        }
        of
    }

    /// Who sends each token to each expert die (see [`Senders`]).
    pub fn senders(&self, dies: usize) -> Senders {
        let domain_of = self.token_domain_of(dies);
        if self.token_domains.is_empty() {
            return Senders {
                member_in: Vec::new(),
                domain_of,
            };
        }
        let mut member_in = vec![vec![None; self.token_domains.len()]; dies];
        for g in &self.attention_groups {
            for m in g {
                let Some(f) = domain_of.get(m.index()).copied().flatten() else {
                    continue;
                };
                for d in g {
                    if let Some(row) = member_in.get_mut(d.index()) {
                        row[f] = Some(*m);
                    }
                }
            }
        }
        Senders { member_in, domain_of }
    }
}

/// Which die sends a token to an expert: the token's home, or under token
/// domains the member of its home's attention group in the expert die's
/// domain. The simulator's traffic and the numeric executor both ask here.
#[derive(Clone, Debug, PartialEq)]
pub struct Senders {
    /// `member_in[d][f]`: the member of die `d`'s group in domain `f`;
    /// empty without token domains.
    member_in: Vec<Vec<Option<DieId>>>,
    /// Per die: its token domain, if any.
    domain_of: Vec<Option<usize>>,
}

impl Senders {
    /// Whether tokens are dispatched from token domains.
    pub fn from_domains(&self) -> bool {
        !self.member_in.is_empty()
    }

    /// The die that sends a token homed on `home` to expert die `to`
    /// (`home` itself without domains or when `to` is in none).
    pub fn sender(&self, home: DieId, to: DieId) -> DieId {
        self.domain_of
            .get(to.index())
            .copied()
            .flatten()
            .and_then(|f| self.member_in.get(home.index()).and_then(|row| row[f]))
            .unwrap_or(home)
    }
}

/// One die's program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DieProgram {
    pub die: DieId,
    pub instrs: Vec<Instr>,
}

/// Why a schedule's JSON could not be read, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleJsonError {
    pub message: String,
    /// serde_json's position of the problem: 1-based line, 1-based column.
    pub line_column: Option<(usize, usize)>,
}

impl ScheduleJsonError {
    fn at(e: &serde_json::Error, message: String) -> ScheduleJsonError {
        ScheduleJsonError {
            message,
            line_column: (e.line() > 0).then(|| (e.line(), e.column())),
        }
    }
}

impl std::fmt::Display for ScheduleJsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Schedule {
    /// The chunks `layer`'s MoE work is split into (1: one).
    pub fn chunks_of(&self, layer: u32) -> u32 {
        self.chunks.get(layer as usize).copied().unwrap_or(1).max(1)
    }

    /// Reads a schedule from JSON, refusing other versions. (Whether what
    /// it reads holds together is `validate`'s to say.)
    pub fn from_json(text: &str) -> Result<Schedule, ScheduleJsonError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_str(text).map_err(|e| ScheduleJsonError::at(&e, format!("not a moec schedule: {e}")))?;
        if v.version != SCHEDULE_VERSION {
            return Err(ScheduleJsonError {
                message: format!(
                    "schedule version {} is not supported (this moec reads {SCHEDULE_VERSION})",
                    v.version
                ),
                line_column: None,
            });
        }
        serde_json::from_str(text).map_err(|e| ScheduleJsonError::at(&e, format!("malformed schedule: {e}")))
    }

    /// The same bounds the language puts on sizes, so that a hand-edited
    /// schedule cannot overflow the arithmetic of the cost model.
    fn check_sizes(&self) -> Result<(), String> {
        const DIM: u64 = 1 << 24;
        let m = &self.model;
        let mut dims = vec![
            ("hidden", m.hidden),
            ("vocab", m.vocab),
            ("dense_ffn", m.dense_ffn),
            ("attention heads", m.attention.heads()),
        ];
        if let Some(moe) = &m.moe {
            dims.extend([
                ("expert_ffn", moe.expert_ffn),
                ("shared_ffn", moe.shared_ffn),
                ("experts", moe.experts.min(DIM + 1)),
                ("top_k", moe.top_k),
            ]);
            if moe.top_k == 0
                || moe.top_k > moe.experts
                || moe.groups == 0
                || moe.experts % moe.groups != 0
                || moe.topk_groups > moe.groups
            {
                return Err("the model's MoE block is inconsistent (top_k, experts, groups)".into());
            }
        }
        let w = &self.workload;
        dims.extend([("batch", w.batch), ("seq_len", w.seq_len)]);
        if let Some((name, v)) = dims.iter().find(|(_, v)| *v > DIM) {
            return Err(format!("{name} = {v} is larger than moec handles ({DIM})"));
        }
        if m.layers == 0 || m.layers > 100_000 || m.moe_every == 0 || m.dense_layers > m.layers || m.hidden == 0 {
            return Err("the model's layer counts are out of range".into());
        }
        Ok(())
    }

    /// Attention groups are disjoint, non-empty, of one size that divides
    /// the heads; every sequence is homed in a group.
    fn check_attention_groups(&self, dies: u32) -> Result<(), String> {
        let groups = &self.placement.attention_groups;
        let Some(first) = groups.first() else {
            return Ok(());
        };
        let k = first.len() as u64;
        let heads = self.model.attention.heads();
        if k == 0 || heads % k != 0 {
            return Err(format!(
                "attention groups of {k} dies cannot split {heads} heads evenly"
            ));
        }
        if let crate::model::AttentionSpec::Gqa { kv_heads, .. } = self.model.attention {
            if kv_heads == 0 || (kv_heads % k != 0 && k % kv_heads != 0) {
                return Err(format!(
                    "attention groups of {k} dies cannot split {kv_heads} key/value heads into whole groups"
                ));
            }
        }
        let mut member = vec![false; dies as usize];
        for g in groups {
            if g.len() as u64 != k {
                return Err(format!(
                    "attention groups of {} and {k} dies: all must be one size",
                    g.len()
                ));
            }
            for d in g {
                if std::mem::replace(&mut member[d.index()], true) {
                    return Err(format!("{d} is in two attention groups"));
                }
            }
        }
        if let Some(s) = self.placement.sequences.iter().position(|d| !member[d.index()]) {
            return Err(format!("sequence {s} is homed on a die in no attention group"));
        }
        Ok(())
    }

    /// Token domains are disjoint and each holds exactly one member of
    /// every attention group.
    fn check_token_domains(&self, dies: u32) -> Result<(), String> {
        let domains = &self.placement.token_domains;
        if domains.is_empty() {
            return Ok(());
        }
        let groups = &self.placement.attention_groups;
        if groups.is_empty() {
            return Err("token domains need tensor-parallel attention groups".into());
        }
        let group_of = self.placement.attention_group_of(dies as usize);
        let mut seen = vec![false; dies as usize];
        for (f, domain) in domains.iter().enumerate() {
            let mut members = std::collections::BTreeSet::new();
            for d in domain {
                if std::mem::replace(&mut seen[d.index()], true) {
                    return Err(format!("{d} is in two token domains"));
                }
                let (group, _) = &group_of[d.index()];
                if group.len() < 2 || !members.insert(group[0]) {
                    return Err(format!(
                        "token domain {f} holds {d}, which is in no attention group or shares one with another die of the domain"
                    ));
                }
            }
            if members.len() != groups.len() {
                return Err(format!(
                    "token domain {f} holds members of {} attention groups of {}: a domain needs one die of every group",
                    members.len(),
                    groups.len()
                ));
            }
        }
        Ok(())
    }

    /// Migrations come in order of their effective step, name real dies,
    /// layers and experts, and send every chunk before they take effect,
    /// each forwarding only an earlier chunk; they apply in order to the
    /// placement. Broadcasts name real dies and MoE layers.
    fn check_migrations(&self, dies: u32) -> Result<(), String> {
        let bad = |d: DieId| d.0 >= dies;
        let layers = self.model.layers;
        let experts = self.model.moe.as_ref().map_or(0, |m| m.experts);
        let window_ok = |w: Window| w.layer().is_none_or(|l| u64::from(l) < layers);
        let mut placement = self.placement.clone();
        let mut last = 0;
        for (i, m) in self.migrations.iter().enumerate() {
            let what = format!("migration {i} (expert {} of layer {})", m.expert, m.layer);
            if m.effective_step < last {
                return Err(format!("{what} takes effect before the migration listed ahead of it"));
            }
            last = m.effective_step;
            if u64::from(m.layer) >= layers || u64::from(m.expert) >= experts {
                return Err(format!("{what} names a layer or expert the model lacks"));
            }
            if bad(m.to) || matches!(m.source, WeightSource::Die(d) if bad(d)) {
                return Err(format!("{what} names a die the machine does not have"));
            }
            for (k, c) in m.chunks.iter().enumerate() {
                if (c.step >= m.effective_step && !(c.window == Window::StopTheWorld && c.step == m.effective_step))
                    || bad(c.from)
                    || bad(c.to)
                    || !window_ok(c.window)
                {
                    return Err(format!(
                        "{what}: chunk {k} travels at step {} (the migration takes effect at {}), or names a die or layer that does not exist",
                        c.step, m.effective_step
                    ));
                }
                if c.after.is_some_and(|a| a as usize >= k) {
                    return Err(format!("{what}: chunk {k} forwards a chunk that is not before it"));
                }
            }
            placement.apply(m).map_err(|e| format!("{what}: {e}"))?;
        }
        for (i, b) in self.broadcasts.iter().enumerate() {
            let layer = u64::from(b.layer);
            let moe = layer < layers && self.model.layer_kind(layer) == crate::model::LayerKind::Moe;
            if !moe || u64::from(b.expert) >= experts || b.holders().into_iter().any(bad) || b.pieces == 0 {
                return Err(format!(
                    "broadcast {i} (expert {} of layer {}) names a die, layer or expert that does not exist, or has no pieces",
                    b.expert, b.layer
                ));
            }
        }
        Ok(())
    }

    /// The schedule as pretty JSON (stable key order).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Checks what the executors rely on: one program per die in order,
    /// dependencies pointing backwards within their die, placements naming
    /// real dies, every sequence homed. Returns the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(f) = self.capacity_factor {
            if !(f.is_finite() && f >= 1.0) {
                return Err(format!("capacity_factor {f} is not a number of at least 1"));
            }
        }
        self.check_sizes()?;
        let dies = self.machine.topology.die_count().map_err(|e| e.to_string())?;
        if self.programs.len() != dies as usize {
            return Err(format!("{} programs for {dies} dies", self.programs.len()));
        }
        if let Some(c) = self.chunks.iter().find(|&&c| c == 0 || c > MAX_CHUNKS) {
            return Err(format!("{c} chunks: an MoE layer is split into 1 to {MAX_CHUNKS}"));
        }
        if self.chunks.len() > self.model.layers as usize {
            return Err(format!(
                "chunks are given for {} layers, but the model has {}",
                self.chunks.len(),
                self.model.layers
            ));
        }
        if self.micro_batches > 1 && self.chunks.iter().any(|&c| c > 1) {
            return Err("a step is split into micro-batches or its MoE layers into chunks, not both".into());
        }
        if self.micro_batches == 0 || self.micro_batches > MAX_MICRO_BATCHES {
            return Err(format!(
                "{} micro-batches: a step is split into 1 to {MAX_MICRO_BATCHES}",
                self.micro_batches
            ));
        }
        for (i, p) in self.programs.iter().enumerate() {
            if p.die.0 as usize != i {
                return Err(format!("program {i} is for die {}", p.die.0));
            }
            if let Some((k, instr)) = p
                .instrs
                .iter()
                .enumerate()
                .find(|(_, x)| x.micro_batch >= self.micro_batches || x.stream >= MAX_STREAMS)
            {
                return Err(format!(
                    "die {i}: instruction {k} is of micro-batch {} on stream {} (the step has {} micro-batches, a die at most {MAX_STREAMS} streams)",
                    instr.micro_batch, instr.stream, self.micro_batches
                ));
            }
            if let Some((k, instr)) = p.instrs.iter().enumerate().find(|(_, x)| {
                let chunked = x.op.is_chunked();
                let of = x.op.layer().map_or(1, |l| self.chunks_of(l));
                x.chunk > 0 && (!chunked || x.chunk >= of)
            }) {
                return Err(format!(
                    "die {i}: instruction {k} ({}) is of chunk {}, but only an MoE layer's dispatch, experts, combine and expert collectives are chunked, into the layer's `chunks`",
                    instr.op.name(),
                    instr.chunk
                ));
            }
            for (k, instr) in p.instrs.iter().enumerate() {
                if instr.id.0 as usize != k {
                    return Err(format!("die {i}: instruction {k} has id {}", instr.id.0));
                }
                if let Some(d) = instr.deps.iter().find(|d| d.0 as usize >= k) {
                    return Err(format!("die {i}: instruction {k} depends on a later one ({})", d.0));
                }
                // The simulator and the numeric executor index by layer.
                if let Some(l) = instr.op.layer().filter(|&l| u64::from(l) >= self.model.layers) {
                    return Err(format!(
                        "die {i}: instruction {k} ({}) names layer {l}, but the model has {} layers",
                        instr.op.name(),
                        self.model.layers
                    ));
                }
            }
        }
        let bad = |d: &DieId| d.0 >= dies;
        if self.placement.experts.iter().flatten().flatten().any(bad)
            || self.placement.sequences.iter().any(bad)
            || self.placement.attention_groups.iter().flatten().any(bad)
            || self.placement.token_domains.iter().flatten().any(bad)
        {
            return Err("placement names a die the machine does not have".into());
        }
        self.check_attention_groups(dies)?;
        self.check_token_domains(dies)?;
        self.placement
            .check_expert_columns(self.model.moe.as_ref().map_or(0, |m| m.expert_ffn))?;
        let moe_layers = (0..self.model.layers).filter(|&l| self.model.layer_kind(l) == crate::model::LayerKind::Moe);
        let experts = self.model.moe.as_ref().map_or(0, |m| m.experts as usize);
        for l in moe_layers {
            let Some(layer) = self
                .placement
                .experts
                .get(l as usize)
                .filter(|layer| layer.len() == experts)
            else {
                return Err(format!(
                    "layer {l} places {} experts of {experts}",
                    self.placement.experts.get(l as usize).map_or(0, Vec::len)
                ));
            };
            if let Some(e) = layer.iter().position(Vec::is_empty) {
                return Err(format!("expert {e} of layer {l} is placed on no die"));
            }
        }
        self.check_migrations(dies)?;
        if self.placement.sequences.len() as u64 != self.workload.batch {
            return Err(format!(
                "{} sequences homed for a batch of {}",
                self.placement.sequences.len(),
                self.workload.batch
            ));
        }
        Ok(())
    }
}
