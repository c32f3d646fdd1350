//! What each compute instruction costs on a die: FLOPs and memory bytes
//! from the model's dimensions and the step's real token counts, turned
//! into time by the die's roofline.
//!
//! time = max(FLOPs / peak, bytes / memory bandwidth) + launch overhead.
//! Bytes count what must stream from memory: the weights touched (an
//! expert that received no token is not read), the KV cache read by
//! attention, and the activations in and out.

use crate::machine::DieSpec;
use crate::model::ModelSpec;
use crate::units::{Bytes, Flops, Seconds};
use crate::workload::{Phase, WorkloadSpec};

/// The tokens one expert, or one part of a split expert, received on a die.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartLoad {
    pub tokens: u64,
    /// FFN columns the die holds (the expert's whole `expert_ffn` unless split).
    pub columns: u64,
}

/// FLOPs and bytes of one kernel launch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: Flops,
    pub bytes: Bytes,
    /// Of `bytes`, what must come from (or go to) memory however the kernel
    /// is written: weights, embedding rows and the KV cache. The rest are
    /// activations in and out, which a fused kernel could keep on chip, so
    /// the physical bound (`sim/bound.rs`) leaves them out.
    pub resident: Bytes,
}

impl Cost {
    /// Time on `die`; nothing to do costs nothing (no launch).
    pub fn time(self, die: &DieSpec) -> Seconds {
        if self.flops.0 <= 0.0 && self.bytes.0 == 0 {
            return Seconds(0.0);
        }
        let compute = self.flops.over(die.compute).0;
        let memory = self.bytes.over(die.memory_bw).0;
        Seconds(compute.max(memory) + die.launch_overhead.0)
    }
}

/// Costs for one model under one workload.
pub struct CostModel<'a> {
    model: &'a ModelSpec,
    workload: &'a WorkloadSpec,
}

impl<'a> CostModel<'a> {
    /// The cost model of `model` serving `workload`.
    pub fn new(model: &'a ModelSpec, workload: &'a WorkloadSpec) -> CostModel<'a> {
        CostModel { model, workload }
    }

    fn act(&self, tokens: u64) -> Bytes {
        Bytes(tokens * self.model.hidden * self.model.dtype.bytes())
    }

    /// Embedding lookup of `tokens`: a gather of rows.
    pub fn embed(&self, tokens: u64) -> Cost {
        // The rows gathered are the embedding table's: weights.
        Cost {
            flops: Flops(0.0),
            bytes: self.act(tokens),
            resident: self.act(tokens),
        }
    }

    /// Attention of `tokens` belonging to `sequences` sequences, on one of
    /// the `tp` dies its heads are split over (1: data-parallel). Each die
    /// runs its heads for every token of the group and reads its share of
    /// their cache; the activations in and out are the group's.
    pub fn attention(&self, tokens: u64, sequences: u64, tp: u64) -> Cost {
        if tokens == 0 {
            return Cost::default();
        }
        let m = self.model;
        let (context, kv_read) = match self.workload.phase {
            // Each new token attends over its sequence's whole cache.
            Phase::Decode => (self.workload.seq_len, sequences * self.workload.seq_len),
            // Causal prefill: on average half the prompt; the cache is written once.
            Phase::Prefill => (self.workload.seq_len / 2, tokens),
        };
        let flops = Flops(tokens as f64 * m.attention_flops_per_die(context, tp).0);
        let resident = m.attention_bytes_per_die(tp) + m.kv_bytes_per_token_per_die(tp) * kv_read;
        Cost {
            flops,
            bytes: resident + self.act(tokens) * 2,
            resident,
        }
    }

    /// The router over `tokens`.
    pub fn gate(&self, tokens: u64) -> Cost {
        if tokens == 0 {
            return Cost::default();
        }
        let params = self.model.gate_params();
        let resident = Bytes(params * self.model.dtype.bytes());
        Cost {
            flops: Flops(2.0 * (tokens * params) as f64),
            bytes: resident + self.act(tokens),
            resident,
        }
    }

    /// One grouped launch over a die's experts and expert parts; `loads`
    /// are the tokens each received this step. A part of `c` of the
    /// expert's `f` FFN columns does `c / f` of its FLOPs and reads `c / f`
    /// of its weights; every token's row still comes in and a (partial)
    /// row goes out.
    pub fn experts(&self, loads: &[PartLoad]) -> Cost {
        let tokens: u64 = loads.iter().map(|p| p.tokens).sum();
        if tokens == 0 {
            return Cost::default();
        }
        let ffn = self.model.moe.as_ref().map_or(1, |m| m.expert_ffn.max(1)) as f64;
        let (mut flops, mut weights) = (0.0, 0.0);
        for p in loads.iter().filter(|p| p.tokens > 0) {
            let share = p.columns as f64 / ffn;
            flops += 2.0 * (p.tokens * self.model.expert_params()) as f64 * share;
            weights += self.model.expert_bytes().0 as f64 * share;
        }
        let resident = Bytes(weights.round() as u64);
        Cost {
            flops: Flops(flops),
            bytes: resident + self.act(tokens) * 2,
            resident,
        }
    }

    /// The shared experts over `tokens`.
    pub fn shared_experts(&self, tokens: u64) -> Cost {
        if tokens == 0 || self.model.shared_params() == 0 {
            return Cost::default();
        }
        Cost {
            flops: Flops(2.0 * (tokens * self.model.shared_params()) as f64),
            bytes: self.model.shared_bytes() + self.act(tokens) * 2,
            resident: self.model.shared_bytes(),
        }
    }

    /// A dense FFN layer over `tokens`.
    pub fn dense_ffn(&self, tokens: u64) -> Cost {
        if tokens == 0 {
            return Cost::default();
        }
        Cost {
            flops: Flops(2.0 * (tokens * self.model.dense_ffn_params()) as f64),
            bytes: self.model.dense_ffn_bytes() + self.act(tokens) * 2,
            resident: self.model.dense_ffn_bytes(),
        }
    }

    /// The weighted sum of `top_k` expert outputs per token (memory-bound).
    pub fn combine(&self, tokens: u64) -> Cost {
        let k = self.model.moe.as_ref().map_or(1, |m| m.top_k);
        Cost {
            flops: Flops(2.0 * (tokens * k * self.model.hidden) as f64),
            bytes: self.act(tokens * (k + 1)),
            resident: Bytes(0),
        }
    }

    /// The output head over `tokens`.
    pub fn lm_head(&self, tokens: u64) -> Cost {
        if tokens == 0 {
            return Cost::default();
        }
        let params = self.model.vocab * self.model.hidden;
        let resident = Bytes(params * self.model.dtype.bytes());
        Cost {
            flops: Flops(2.0 * (tokens * params) as f64),
            bytes: resident + self.act(tokens),
            resident,
        }
    }

    /// Bytes of one token's hidden state on the wire.
    pub fn token_bytes(&self) -> u64 {
        self.model.hidden * self.model.dtype.bytes()
    }
}
