//! The program every alive die runs: the same shape on each (what differs
//! is which tokens and experts each die holds, which the placement says),
//! as one batch or as micro-batches under an overlap form.
//!
//! One batch (`overlap = none`) is one stream: the die issues in program
//! order, a communication instruction only starts its transfers, so what
//! overlaps is what the dependencies allow (the shared experts under the
//! dispatch).
//!
//! Micro-batches (`two_batch`: two) split each die's sequences
//! (`Placement::micro_batch_of`) and give the die two streams, the usual
//! model of a GPU or a die with a DMA engine: compute kernels on stream 0,
//! one at a time; collectives on stream 1, issued in order as their inputs
//! are ready. Each MoE layer runs in two phases: first every micro-batch's
//! attention, gate and dispatch (its shared experts under its dispatch),
//! then every micro-batch's experts and combine. So micro-batch 1's
//! attention runs while micro-batch 0's tokens are dispatched, and 0's
//! combine returns while 1's experts run: SGLang's two-batch overlap.
//! Communication takes no compute here (a dedicated engine, or DeepEP's
//! SM-free RDMA path), so overlapped transfers cost nothing on the compute
//! stream; each micro-batch pays its own kernel launches and reads the
//! weights again, which is what a split batch costs.

use crate::ir::Overlap;
use moec_runtime::model::{LayerKind, ModelSpec};
use moec_runtime::schedule::{Instr, InstrId, Op as SOp};

/// The program of an alive die. `tp`: attention runs in groups, between an
/// all-gather and a reduce-scatter. `domains`: tokens are dispatched from
/// token domains. `unfused[layer]`: that layer's experts launch one kernel
/// per part.
pub fn program(model: &ModelSpec, tp: bool, domains: bool, unfused: &[bool], overlap: Overlap) -> Vec<Instr> {
    let m = overlap.micro_batches();
    let mut p = Program {
        instrs: Vec::new(),
        streams: m > 1,
    };
    let shared = model.moe.as_ref().is_some_and(|m| m.shared_experts > 0);
    let mut prev: Vec<InstrId> = (0..m).map(|j| p.push(SOp::Embed, &[], j)).collect();
    for l in 0..model.layers {
        let layer = l as u32;
        match model.layer_kind(l) {
            LayerKind::Moe => {
                // Phase 1: attention, gate and dispatch of each micro-batch.
                let mut dispatched = Vec::with_capacity(m as usize);
                for j in 0..m {
                    let attention = p.attention(layer, prev[j as usize], tp, j);
                    let mut gate = p.push(SOp::Gate { layer }, &[attention], j);
                    if domains {
                        gate = p.push(SOp::TokenAllGather { layer }, &[gate], j);
                    }
                    let dispatch = p.push(SOp::Dispatch { layer }, &[gate], j);
                    let shared_experts = shared.then(|| p.push(SOp::SharedExperts { layer }, &[attention], j));
                    dispatched.push((dispatch, shared_experts));
                }
                // Phase 2: experts and combine of each micro-batch.
                let unfused = unfused.get(l as usize).copied().unwrap_or(false);
                for (j, (dispatch, shared_experts)) in (0..m).zip(dispatched) {
                    let experts = p.push(SOp::Experts { layer, unfused }, &[dispatch], j);
                    let mut combine_deps = vec![experts];
                    combine_deps.extend(shared_experts);
                    let combine = p.push(SOp::Combine { layer }, &combine_deps, j);
                    prev[j as usize] = if domains {
                        p.push(SOp::MoeReduceScatter { layer }, &[combine], j)
                    } else {
                        combine
                    };
                }
            }
            LayerKind::Dense => {
                for j in 0..m {
                    let attention = p.attention(layer, prev[j as usize], tp, j);
                    prev[j as usize] = p.push(SOp::DenseFfn { layer }, &[attention], j);
                }
            }
        }
    }
    for j in 0..m {
        p.push(SOp::LmHead, &[prev[j as usize]], j);
    }
    p.instrs
}

/// A program being built: each instruction gets the next id.
struct Program {
    instrs: Vec<Instr>,
    /// Whether the die has a compute and a communication stream (else one).
    streams: bool,
}

impl Program {
    fn push(&mut self, op: SOp, deps: &[InstrId], micro_batch: u32) -> InstrId {
        let id = InstrId(self.instrs.len() as u32);
        let stream = u8::from(self.streams && !op.is_compute());
        self.instrs.push(Instr {
            micro_batch,
            stream,
            ..Instr::new(id, op, deps.to_vec())
        });
        id
    }

    /// A layer's attention after `prev`: alone, or between the all-gather
    /// and the reduce-scatter of the die's group under TP; returns the
    /// instruction that completes it.
    fn attention(&mut self, layer: u32, prev: InstrId, tp: bool, j: u32) -> InstrId {
        if tp {
            let gather = self.push(SOp::AllGather { layer }, &[prev], j);
            let partial = self.push(SOp::Attention { layer }, &[gather], j);
            self.push(SOp::ReduceScatter { layer }, &[partial], j)
        } else {
            self.push(SOp::Attention { layer }, &[prev], j)
        }
    }
}
