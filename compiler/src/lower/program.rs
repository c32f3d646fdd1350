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
//!
//! Chunks (`chunked`, FSMoE's pipeline) keep the batch whole through
//! attention and the gate, then split each MoE layer's tokens into that
//! layer's `d` chunks (`Placement::chunk_of`), on the same two streams.
//! The collectives go one at a time, in FSMoE's order: every chunk's
//! dispatch, then every chunk's combine, each waiting for the one before
//! (chunks issued together would share the links and arrive together,
//! which pipelines nothing); chunk `c`'s experts run as soon as its
//! dispatch lands, under the next chunk's dispatch, and its combine
//! returns under the next chunk's experts. Each chunk's expert kernel
//! reads its experts' weights again: FSMoE's per-chunk `alpha`.
//!
//! MoNTA (`monta`) chunks the same way and relays split experts' tokens
//! (`Placement::relay_parts`): per chunk, the dispatch (inter-node, on
//! stream 1), then the expert all-gather inside the expert's group (on a
//! third stream, 2, the intra-node one), the experts, the expert
//! reduce-scatter (stream 2), the combine (stream 1). Chunk `c`'s
//! all-gather runs under chunk `c + 1`'s dispatch: MoNTA's pipeline.

use crate::ir::Overlap;
use moec_runtime::model::{LayerKind, ModelSpec};
use moec_runtime::schedule::{Instr, InstrId, Op as SOp};

/// The program of an alive die. `tp`: attention runs in groups, between an
/// all-gather and a reduce-scatter. `domains`: tokens are dispatched from
/// token domains. `unfused[layer]`: that layer's experts launch one kernel
/// per part.
pub fn program(model: &ModelSpec, tp: bool, domains: bool, unfused: &[bool], overlap: &Overlap) -> Vec<Instr> {
    let m = overlap.micro_batches();
    let chunks = overlap.chunks();
    let mut p = Program {
        instrs: Vec::new(),
        streams: m > 1 || !chunks.is_empty(),
    };
    let shared = model.moe.as_ref().is_some_and(|m| m.shared_experts > 0);
    // Per micro-batch: the instructions that complete its previous layer.
    let mut prev: Vec<Vec<InstrId>> = (0..m).map(|j| vec![p.push(SOp::Embed, &[], j)]).collect();
    for l in 0..model.layers {
        let layer = l as u32;
        let unfused = unfused.get(l as usize).copied().unwrap_or(false);
        match model.layer_kind(l) {
            LayerKind::Moe if !chunks.is_empty() => {
                let d = chunks.get(l as usize).copied().unwrap_or(1).max(1);
                let relay = overlap.relays();
                prev[0] = p.chunked_moe(layer, &prev[0], (tp, domains, shared, unfused, relay), d);
            }
            LayerKind::Moe => {
                // Phase 1: attention, gate and dispatch of each micro-batch.
                let mut dispatched = Vec::with_capacity(m as usize);
                for j in 0..m {
                    let attention = p.attention(layer, &prev[j as usize], tp, j);
                    let mut gate = p.push(SOp::Gate { layer }, &[attention], j);
                    if domains {
                        gate = p.push(SOp::TokenAllGather { layer }, &[gate], j);
                    }
                    let dispatch = p.push(SOp::Dispatch { layer }, &[gate], j);
                    let shared_experts = shared.then(|| p.push(SOp::SharedExperts { layer }, &[attention], j));
                    dispatched.push((dispatch, shared_experts));
                }
                // Phase 2: experts and combine of each micro-batch.
                for (j, (dispatch, shared_experts)) in (0..m).zip(dispatched) {
                    let experts = p.push(SOp::Experts { layer, unfused }, &[dispatch], j);
                    let mut combine_deps = vec![experts];
                    combine_deps.extend(shared_experts);
                    let combine = p.push(SOp::Combine { layer }, &combine_deps, j);
                    prev[j as usize] = vec![if domains {
                        p.push(SOp::MoeReduceScatter { layer }, &[combine], j)
                    } else {
                        combine
                    }];
                }
            }
            LayerKind::Dense => {
                for j in 0..m {
                    let attention = p.attention(layer, &prev[j as usize], tp, j);
                    prev[j as usize] = vec![p.push(SOp::DenseFfn { layer }, &[attention], j)];
                }
            }
        }
    }
    for j in 0..m {
        p.push(SOp::LmHead, &prev[j as usize], j);
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
        self.push_chunk(op, deps, micro_batch, 0)
    }

    fn push_chunk(&mut self, op: SOp, deps: &[InstrId], micro_batch: u32, chunk: u32) -> InstrId {
        let id = InstrId(self.instrs.len() as u32);
        let stream = match (&op, self.streams && !op.is_compute()) {
            (_, false) => 0,
            (SOp::ExpertAllGather { .. } | SOp::ExpertReduceScatter { .. }, true) => 2,
            (_, true) => 1,
        };
        self.instrs.push(Instr {
            micro_batch,
            chunk,
            stream,
            ..Instr::new(id, op, deps.to_vec())
        });
        id
    }

    /// An MoE layer after `prev` with its tokens in `d` chunks (the module
    /// doc's pipeline); returns the instructions that complete it.
    fn chunked_moe(
        &mut self,
        layer: u32,
        prev: &[InstrId],
        (tp, domains, shared, unfused, relay): (bool, bool, bool, bool, bool),
        d: u32,
    ) -> Vec<InstrId> {
        let attention = self.attention(layer, prev, tp, 0);
        let mut gate = self.push(SOp::Gate { layer }, &[attention], 0);
        if domains {
            gate = self.push(SOp::TokenAllGather { layer }, &[gate], 0);
        }
        let shared_experts = shared.then(|| self.push(SOp::SharedExperts { layer }, &[attention], 0));
        // The collectives one after another: dispatches, then combines.
        let mut last_collective = gate;
        let mut dispatches = Vec::with_capacity(d as usize);
        for c in 0..d {
            last_collective = self.push_chunk(SOp::Dispatch { layer }, &[last_collective], 0, c);
            dispatches.push(last_collective);
        }
        // Under the relay, each chunk's tokens reach every part of their
        // experts through the expert all-gather, and come back summed.
        let arrived: Vec<InstrId> = (0..d)
            .map(|c| match relay {
                true => self.push_chunk(SOp::ExpertAllGather { layer }, &[dispatches[c as usize]], 0, c),
                false => dispatches[c as usize],
            })
            .collect();
        let experts: Vec<InstrId> = (0..d)
            .map(|c| self.push_chunk(SOp::Experts { layer, unfused }, &[arrived[c as usize]], 0, c))
            .collect();
        let computed: Vec<InstrId> = (0..d)
            .map(|c| match relay {
                true => self.push_chunk(SOp::ExpertReduceScatter { layer }, &[experts[c as usize]], 0, c),
                false => experts[c as usize],
            })
            .collect();
        let mut combines = Vec::with_capacity(d as usize);
        for c in 0..d {
            let combine = self.push_chunk(SOp::Combine { layer }, &[computed[c as usize], last_collective], 0, c);
            last_collective = combine;
            combines.push(combine);
        }
        combines.extend(shared_experts);
        if domains {
            return vec![self.push(SOp::MoeReduceScatter { layer }, &combines, 0)];
        }
        combines
    }

    /// A layer's attention after `prev`: alone, or between the all-gather
    /// and the reduce-scatter of the die's group under TP; returns the
    /// instruction that completes it.
    fn attention(&mut self, layer: u32, prev: &[InstrId], tp: bool, j: u32) -> InstrId {
        if tp {
            let gather = self.push(SOp::AllGather { layer }, prev, j);
            let partial = self.push(SOp::Attention { layer }, &[gather], j);
            self.push(SOp::ReduceScatter { layer }, &[partial], j)
        } else {
            self.push(SOp::Attention { layer }, prev, j)
        }
    }
}
