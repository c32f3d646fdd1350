//! The graph IR: one step of the model as a graph of operations.
//!
//! Nodes are operations ([`Op`]: embed, attention, gate, dispatch, expert,
//! shared expert, combine, dense FFN, LM head), one set per layer; edges are
//! the tensors between them ([`Tensor`], with shape and bytes). Passes fill in
//! each node's [`Annotation`] (which dies hold and run it, and in what
//! sharding); the IR is built with none. `verify` checks the invariants
//! after every pass; `text`, `json` and `dot` print it.
//!
//! Invariants (checked by `verify`): the graph is acyclic; every edge's bytes
//! equal its shape times its dtype; every MoE layer has one gate, one
//! dispatch, one combine and exactly one expert node per expert id, wired
//! dispatch -> expert -> combine; annotations name alive dies, each once,
//! with a shard count dividing their number; when placed, every die's memory
//! holds what is placed on it.

mod build;
pub mod dot;
mod form;
pub mod json;
pub mod memory;
mod overlap;
mod pools;
mod relocation;
pub mod text;
mod verify;

pub use build::build;
pub use form::{Form, FormKind};
pub use overlap::Overlap;
pub use pools::Pools;
pub use relocation::{Eviction, Leg, Phase, Timing, Travel, WeightMove};
pub use verify::{verify, verify_placed, verify_shape, VerifyError};

use moec_runtime::machine::DieId;
use moec_runtime::model::{Activation, DType, GateKind};
use moec_runtime::units::Bytes;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use serde::Serialize;

/// An expert's index within its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ExpertId(pub u32);

/// A layer's index in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct LayerId(pub u32);

/// What a node computes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Token ids to hidden states.
    Embed { vocab: u64 },
    /// Self-attention of one layer (`kind` is mha, gqa or mla).
    Attention { kind: &'static str, heads: u64 },
    /// The router: scores every expert, keeps `top_k` (within `topk_groups`
    /// of `groups` when group-limited).
    Gate {
        experts: u64,
        top_k: u64,
        scoring: GateKind,
        groups: u64,
        topk_groups: u64,
    },
    /// Sends each token to the dies of its chosen experts (all-to-all).
    Dispatch { experts: u64, top_k: u64 },
    /// One routed expert's FFN.
    Expert {
        expert: ExpertId,
        ffn: u64,
        activation: Activation,
    },
    /// The shared experts of a layer, which every token visits.
    SharedExpert {
        count: u64,
        ffn: u64,
        activation: Activation,
    },
    /// Brings expert outputs back and sums them with the gate weights.
    Combine { top_k: u64 },
    /// The FFN of a dense layer.
    DenseFfn { ffn: u64, activation: Activation },
    /// Hidden states to logits.
    LmHead { vocab: u64 },
    /// An expert's copy moves to another die during the run (input: the
    /// expert node).
    Migrate(Box<WeightMove>),
    /// An expert gains copies during the run (input: the expert node).
    Replicate(Box<WeightMove>),
    /// An expert's copy is dropped during the run, its slot freed for
    /// another expert (input: the expert node).
    Evict(Eviction),
}

impl Op {
    /// Short name used by the printers (`expert`, `attention.mla` ...).
    pub fn mnemonic(&self) -> String {
        match self {
            Op::Embed { .. } => "embed".into(),
            Op::Attention { kind, .. } => format!("attention.{kind}"),
            Op::Gate { scoring, .. } => format!("gate.{}", scoring.name()),
            Op::Dispatch { .. } => "dispatch".into(),
            Op::Expert { .. } => "expert".into(),
            Op::SharedExpert { .. } => "shared_expert".into(),
            Op::Combine { .. } => "combine".into(),
            Op::DenseFfn { .. } => "dense_ffn".into(),
            Op::LmHead { .. } => "lm_head".into(),
            Op::Migrate(_) => "migrate".into(),
            Op::Replicate(_) => "replicate".into(),
            Op::Evict(_) => "evict".into(),
        }
    }

    /// The weights a `Migrate` or `Replicate` node moves.
    pub fn weight_move(&self) -> Option<&WeightMove> {
        match self {
            Op::Migrate(m) | Op::Replicate(m) => Some(m),
            _ => None,
        }
    }
}

/// How a node's weights (or, for dispatch and combine, its all-to-all) are
/// split over the dies it is placed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "ways", rename_all = "snake_case")]
pub enum Sharding {
    /// Every die holds all the weights (one die: a single copy; more: replicas).
    #[default]
    Whole,
    /// Split by rows over groups of this many dies.
    Rows(u32),
    /// Split by columns over groups of this many dies.
    Cols(u32),
    /// Tensor-parallel over groups of this many dies.
    Tp(u32),
    /// Dispatch and combine inside token domains (MoEntwine's FTDs) of
    /// this many dies each, listed one domain after another: a token is
    /// sent to an expert by its attention group's member in the expert's
    /// domain.
    Domains(u32),
}

impl Sharding {
    /// Dies that together hold one copy.
    pub fn ways(self) -> u32 {
        match self {
            Sharding::Whole => 1,
            Sharding::Rows(k) | Sharding::Cols(k) | Sharding::Tp(k) | Sharding::Domains(k) => k,
        }
    }
}

/// What passes decide about a node. Empty until a placement pass runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Annotation {
    /// The dies that hold this node's weights (or a shard of them) and run it.
    pub dies: Vec<DieId>,
    pub sharding: Sharding,
    /// A split expert (`Sharding::Cols(k)`): the FFN columns each die of
    /// `dies` holds, parallel to it; each run of `k` dies covers the
    /// expert's FFN once (one copy). Empty for everything else.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<u64>,
    /// An expert that runs as its own kernel launch (one per part) instead
    /// of inside its die's grouped kernel.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unfused: bool,
}

impl Annotation {
    /// Placed on `dies` with `sharding` (no split columns, fused).
    pub fn new(dies: Vec<DieId>, sharding: Sharding) -> Annotation {
        Annotation {
            dies,
            sharding,
            ..Annotation::default()
        }
    }

    /// True once a pass has placed the node.
    pub fn is_placed(&self) -> bool {
        !self.dies.is_empty()
    }

    /// Full copies of the weights: dies over shard ways.
    pub fn replicas(&self) -> u32 {
        self.dies.len() as u32 / self.sharding.ways().max(1)
    }

    /// The share of the node's weights die `dies[i]` holds, as a fraction
    /// `(numerator, denominator)`: its columns of `ffn` for a split expert,
    /// else one over the shard ways.
    pub fn share(&self, i: usize, ffn: u64) -> (u64, u64) {
        match self.columns.get(i) {
            Some(&c) => (c, ffn.max(1)),
            None => (1, u64::from(self.sharding.ways().max(1))),
        }
    }
}

/// A tensor flowing along an edge (and produced by a node).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tensor {
    pub shape: Vec<u64>,
    pub dtype: TensorType,
    pub bytes: Bytes,
}

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorType {
    /// Activations in the model's dtype.
    Data(DType),
    /// Token ids (4 bytes each).
    TokenId,
    /// A routing choice: expert id and gate weight (8 bytes each).
    Route,
}

impl TensorType {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            TensorType::Data(d) => d.bytes(),
            TensorType::TokenId => 4,
            TensorType::Route => 8,
        }
    }

    /// The printed name.
    pub fn name(self) -> &'static str {
        match self {
            TensorType::Data(d) => d.name(),
            TensorType::TokenId => "token",
            TensorType::Route => "route",
        }
    }
}

impl Tensor {
    /// A tensor of `shape` and element type `dtype`, its bytes computed.
    pub fn new(shape: Vec<u64>, dtype: TensorType) -> Tensor {
        let elems = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        Tensor {
            bytes: Bytes(elems.saturating_mul(dtype.bytes())),
            shape,
            dtype,
        }
    }
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub op: Op,
    /// The layer it belongs to (`None` for embed and LM head).
    pub layer: Option<LayerId>,
    /// Weight bytes of the whole operation (all shards together).
    pub weights: Bytes,
    /// Per-sequence state it keeps between steps (the KV cache), for the whole batch.
    pub state: Bytes,
    /// What it produces.
    pub out: Tensor,
    pub ann: Annotation,
}

/// Facts about the compilation the IR belongs to, printed in its header.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Header {
    pub plan: String,
    pub model: String,
    pub machine: String,
    pub workload: String,
    pub tokens_per_step: u64,
    pub dies: u32,
    pub alive_dies: u32,
    /// Passes run so far, in order.
    pub passes: Vec<String>,
    /// What passes want a reader to know about how they decided (a
    /// solver's status and gap), one line each.
    pub notes: Vec<String>,
}

/// The IR of one step.
#[derive(Clone, Debug)]
pub struct Ir {
    pub header: Header,
    pub graph: StableDiGraph<Node, Tensor>,
    /// The model it was built from: what a node's weights are made of, for
    /// the shares a split gives each die (see `memory`).
    pub model: moec_runtime::model::ModelSpec,
    /// Expert slots every alive die keeps free in each MoE layer for
    /// replicas added during the run (NI-Balancer's shadow slots);
    /// counted in each die's memory.
    pub shadow_slots: u32,
    /// How the step's work overlaps (`overlap(...)`): one batch, or
    /// micro-batches; the lowering realises it.
    pub overlap: Overlap,
    /// Attention and experts on separate dies (`disaggregate { ... }`):
    /// the placement keeps each on its pool, the verifier checks it.
    pub pools: Option<Pools>,
    /// How the all-to-alls move their messages (the plan's `transfers`);
    /// the lowering writes it into the schedule.
    pub transport: moec_runtime::schedule::Transport,
    /// DeepSpeed-MoE's fixed expert capacity (the plan's `capacity_factor`;
    /// `Schedule::capacity_factor` says what it does).
    pub capacity_factor: Option<f64>,
}

impl Ir {
    /// Nodes in index order (the order they were built: layer by layer).
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.graph.node_indices().map(move |i| (i, &self.graph[i]))
    }

    /// Inputs of a node, in edge order.
    pub fn inputs(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(n, petgraph::Direction::Incoming)
            .collect();
        v.sort();
        v
    }

    /// Count of nodes per mnemonic, for summaries.
    pub fn count(&self, pred: impl Fn(&Op) -> bool) -> usize {
        self.graph.node_weights().filter(|n| pred(&n.op)).count()
    }
}
