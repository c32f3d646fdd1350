//! Instructions of a die's program.

use crate::machine::DieId;
use serde::{Deserialize, Serialize};

/// An instruction's index in its die's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstrId(pub u32);

/// One instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instr {
    pub id: InstrId,
    pub op: Op,
    /// Instructions of the same die that must complete before this issues.
    pub deps: Vec<InstrId>,
    /// The micro-batch whose tokens it works on (`Schedule::micro_batches`;
    /// 0 when the step is one batch).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub micro_batch: u32,
    /// The chunk of its layer's tokens it works on (`Schedule::chunks`;
    /// 0 when the layer is one chunk): only `Dispatch`, `Experts` and
    /// `Combine` are chunked.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk: u32,
    /// The die's stream it issues on: each stream issues its instructions
    /// in program order, independently of the others (0 when the die has
    /// one stream).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub stream: u8,
}

impl Instr {
    /// An instruction of the whole batch on stream 0.
    pub fn new(id: InstrId, op: Op, deps: Vec<InstrId>) -> Instr {
        Instr {
            id,
            op,
            deps,
            micro_batch: 0,
            chunk: 0,
            stream: 0,
        }
    }
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

fn is_zero_u8(x: &u8) -> bool {
    *x == 0
}

/// What an instruction does. Compute ops run the named kernel on the
/// tokens this die holds at that point of the step; their cost comes from
/// the model's dimensions and the step's real token counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Look up the embeddings of this die's tokens.
    Embed,
    /// Attention of `layer` for this die's sequences (reads their KV cache);
    /// in an attention group, this die's heads for every sequence of the
    /// group, leaving a partial output to reduce.
    Attention { layer: u32 },
    /// Ring all-gather in this die's attention group: every member ends with
    /// the normalised input rows of `layer`'s attention for all the group's
    /// tokens. Complete once this die has received from every other member.
    AllGather { layer: u32 },
    /// Ring reduce-scatter in this die's attention group: the members'
    /// partial attention outputs of `layer` are summed, and each member
    /// keeps the rows of the tokens homed on it.
    ReduceScatter { layer: u32 },
    /// Router of `layer` for this die's tokens: scores, top-k.
    Gate { layer: u32 },
    /// Send each of this die's tokens to a die holding each of its chosen
    /// experts; complete when every token routed to this die's experts has
    /// arrived.
    Dispatch { layer: u32 },
    /// Run this die's experts of `layer` (whole, or its parts of split
    /// experts) on the tokens they received: one grouped kernel over all of
    /// them, or with `unfused` one launch per expert part.
    Experts {
        layer: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unfused: bool,
    },
    /// The shared experts of `layer` on this die's tokens.
    SharedExperts { layer: u32 },
    /// MoNTA's relay (`Placement::relay_parts`): the parts of this die's
    /// split expert copies that received tokens forward them to the
    /// copies' other parts, inside the copy's group; complete when every
    /// forwarded token for this die's parts has arrived.
    ExpertAllGather { layer: u32 },
    /// MoNTA's relay: the parts' partial outputs sent to the part that
    /// received the tokens, which sums them; complete when every partial
    /// for the tokens this die relayed has arrived.
    ExpertReduceScatter { layer: u32 },
    /// Send expert outputs back to the tokens' home dies (to the member that
    /// dispatched them, under token domains); complete when all outputs for
    /// this die's tokens have arrived and are summed with the gate weights.
    Combine { layer: u32 },
    /// Token domains (MoEntwine's FTDs): ring all-gather in this die's
    /// attention group of the routed layer's input rows and routing, so
    /// every member holds all the group's tokens and dispatches them to the
    /// experts of its own domain.
    TokenAllGather { layer: u32 },
    /// Token domains: ring reduce-scatter in this die's attention group of
    /// the members' partial MoE outputs (each the gate-weighted sum of the
    /// experts in its domain); each member keeps the rows of its own tokens.
    MoeReduceScatter { layer: u32 },
    /// The dense FFN of `layer` on this die's tokens.
    DenseFfn { layer: u32 },
    /// Logits of this die's tokens.
    LmHead,
    /// Send `bytes` to `to` (a point-to-point transfer, e.g. a ring step).
    Send { to: DieId, bytes: u64, tag: u32 },
    /// Wait for the transfer with `tag` from `from`.
    Recv { from: DieId, tag: u32 },
}

impl Op {
    /// True for the ring collectives of an attention group.
    pub fn is_ring(&self) -> bool {
        matches!(
            self,
            Op::AllGather { .. } | Op::ReduceScatter { .. } | Op::TokenAllGather { .. } | Op::MoeReduceScatter { .. }
        )
    }

    /// True for the ops a chunked MoE layer runs once per chunk
    /// (`Schedule::chunks`).
    pub fn is_chunked(&self) -> bool {
        matches!(
            self,
            Op::Dispatch { .. }
                | Op::Experts { .. }
                | Op::Combine { .. }
                | Op::ExpertAllGather { .. }
                | Op::ExpertReduceScatter { .. }
        )
    }

    /// True for ops that occupy the compute unit.
    pub fn is_compute(&self) -> bool {
        !matches!(
            self,
            Op::Dispatch { .. }
                | Op::Combine { .. }
                | Op::ExpertAllGather { .. }
                | Op::ExpertReduceScatter { .. }
                | Op::AllGather { .. }
                | Op::ReduceScatter { .. }
                | Op::TokenAllGather { .. }
                | Op::MoeReduceScatter { .. }
                | Op::Send { .. }
                | Op::Recv { .. }
        )
    }

    /// Its name, as the schedule's JSON spells it (`all_gather`, `lm_head`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Embed => "embed",
            Op::Attention { .. } => "attention",
            Op::AllGather { .. } => "all_gather",
            Op::ReduceScatter { .. } => "reduce_scatter",
            Op::Gate { .. } => "gate",
            Op::Dispatch { .. } => "dispatch",
            Op::Experts { .. } => "experts",
            Op::SharedExperts { .. } => "shared_experts",
            Op::Combine { .. } => "combine",
            Op::ExpertAllGather { .. } => "expert_all_gather",
            Op::ExpertReduceScatter { .. } => "expert_reduce_scatter",
            Op::TokenAllGather { .. } => "token_all_gather",
            Op::MoeReduceScatter { .. } => "moe_reduce_scatter",
            Op::DenseFfn { .. } => "dense_ffn",
            Op::LmHead => "lm_head",
            Op::Send { .. } => "send",
            Op::Recv { .. } => "recv",
        }
    }

    /// The layer it belongs to, if any.
    pub fn layer(&self) -> Option<u32> {
        match *self {
            Op::Attention { layer }
            | Op::AllGather { layer }
            | Op::ReduceScatter { layer }
            | Op::Gate { layer }
            | Op::Dispatch { layer }
            | Op::Experts { layer, .. }
            | Op::SharedExperts { layer }
            | Op::Combine { layer }
            | Op::ExpertAllGather { layer }
            | Op::ExpertReduceScatter { layer }
            | Op::TokenAllGather { layer }
            | Op::MoeReduceScatter { layer }
            | Op::DenseFfn { layer } => Some(layer),
            _ => None,
        }
    }
}
