//! How a step's work overlaps on a die: as one batch, split into
//! micro-batches whose communication runs under one another's compute, or
//! with each MoE layer's tokens pipelined in chunks.
//!
//! This is what `overlap = ...` names in a plan and what the `overlap(...)`
//! pass records on the IR (`passes/overlap/`); the lowering turns it into
//! the order and streams of each die's program (`lower/program.rs`).

use std::fmt;

/// The overlap form of a step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Overlap {
    /// One batch: each layer's dispatch and combine wait for the whole
    /// batch, and only the shared experts run under the dispatch.
    #[default]
    None,
    /// Two-batch overlap (SGLang's TBO, DeepSeek's decode and prefill
    /// overlap): the batch split in two micro-batches; while one's
    /// dispatch or combine is in flight, the die computes the other's
    /// attention or experts.
    TwoBatch,
    /// The two-batch program with `m >= 3` micro-batches: while one
    /// micro-batch's all-to-all is in flight the die computes the others'
    /// (MegaScale-Infer's ping-pong between pools takes 3 or 4).
    MicroBatches(u32),
    /// FSMoE's pipeline: attention runs on the whole batch, then each MoE
    /// layer's tokens are dispatched, computed and combined in chunks, one
    /// chunk's expert compute under the next one's all-to-all. Per model
    /// layer, its chunk count (0 for dense layers).
    Chunked(Vec<u32>),
    /// MoNTA: a token bound for a split expert crosses to one part of it
    /// (the one at its sender's position in its attention group), which
    /// forwards it inside the expert's group and sums the parts' outputs
    /// before one row returns (`Placement::relay_parts`); the all-to-all
    /// and that all-gather pipelined in chunks, per model layer (0 for
    /// dense layers), as `Chunked`.
    Monta(Vec<u32>),
}

impl Overlap {
    /// Micro-batches the step is split into.
    pub fn micro_batches(&self) -> u32 {
        match self {
            Overlap::None | Overlap::Chunked(_) | Overlap::Monta(_) => 1,
            Overlap::TwoBatch => 2,
            Overlap::MicroBatches(m) => *m,
        }
    }

    /// Per model layer, the chunks its MoE work is split into (empty: one;
    /// 0: a dense layer).
    pub fn chunks(&self) -> &[u32] {
        match self {
            Overlap::Chunked(d) | Overlap::Monta(d) => d,
            _ => &[],
        }
    }

    /// Whether split experts' tokens go through MoNTA's relay.
    pub fn relays(&self) -> bool {
        matches!(self, Overlap::Monta(_))
    }

    /// Its name without settings (`none`, `two_batch`, `chunked`, `monta`).
    pub fn name(&self) -> &'static str {
        match self {
            Overlap::None => "none",
            Overlap::TwoBatch => "two_batch",
            Overlap::MicroBatches(_) => "micro_batches",
            Overlap::Chunked(_) => "chunked",
            Overlap::Monta(_) => "monta",
        }
    }
}

/// `none`, `two_batch`; `chunked(d)` (`monta(d)`) when every MoE layer has
/// the same `d`, else `chunked(d0/d1/...)` over the MoE layers.
impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Overlap::Chunked(d) | Overlap::Monta(d)) = self else {
            return match self {
                Overlap::MicroBatches(m) => write!(f, "micro_batches({m})"),
                _ => f.write_str(self.name()),
            };
        };
        let name = self.name();
        let moe: Vec<u32> = d.iter().copied().filter(|&c| c > 0).collect();
        let mut distinct = moe.clone();
        distinct.dedup();
        match distinct.as_slice() {
            [one] => write!(f, "{name}({one})"),
            _ => {
                let text: Vec<String> = moe.iter().map(u32::to_string).collect();
                write!(f, "{name}({})", text.join("/"))
            }
        }
    }
}
