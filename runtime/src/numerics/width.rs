//! The reduced numeric model: how wide the numerics run, and on how many
//! tokens, when the full-size model does not fit this machine.
//!
//! The timing always uses the full model; the numbers come from a copy that
//! keeps everything that shapes routing and the schedule (layers, dense and
//! MoE layer kinds, experts, `top_k`, groups, `topk_groups`, shared experts,
//! activation, gate kind, attention kind, dtype) and shrinks widths. Width
//! `W` replaces `hidden`; with `r = W / hidden`:
//!
//! - widths that are hidden-like (FFN sizes, LoRA ranks, vocabulary) scale
//!   by `r`;
//! - head counts and per-head dimensions each scale by `sqrt(r)`, so
//!   `heads x head_dim`, and with it attention's share of the work, scales
//!   by `r` like everything else (keeping the head count would leave a wide
//!   attention on a narrow model); query heads stay a multiple of key/value
//!   heads;
//! - every scaled dimension is at least 4 (or its real size, if smaller),
//!   head counts at least 1;
//! - under tensor-parallel attention in groups of `k`, head counts are
//!   rounded so that `k` splits them as it splits the real model's.
//!
//! `W` is the forced `--numeric-width` when given (it must fit the memory
//! budget, which protects the machine, but may exceed the time budget);
//! otherwise the real hidden size if it fits both budgets, else the largest
//! power of two below it that does (down to 8). Weights count every copy:
//! one dense-reference set plus what every die materialises (see
//! `holdings.rs`), 4 bytes each (values are stored rounded to the model's
//! dtype but held as f32). A step's FLOPs are one forward of the numeric
//! tokens (the reference costs as much again).
//!
//! Tokens: decode keeps `min(batch, max_tokens)` sequences with
//! `min(context, max_context)` cached positions each; prefill keeps
//! `min(seq_len, max_context, max_tokens)` tokens of each of the first
//! `max_tokens / that` sequences. Sequence `s` of the numeric batch is
//! sequence `s` of the workload, and its tokens are its first ones.

use super::NumericConfig;
use crate::model::{AttentionSpec, ModelSpec};
use crate::workload::{Phase, WorkloadSpec};

/// The dimensions the numerics run at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumericShape {
    pub hidden: u64,
    pub expert_ffn: u64,
    pub shared_ffn: u64,
    pub dense_ffn: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads (MHA: `heads`; MLA: 0, it caches a latent instead).
    pub kv_heads: u64,
    pub head_dim: u64,
    /// MLA only (0 otherwise), as are the next three.
    pub q_lora_rank: u64,
    pub kv_lora_rank: u64,
    pub rope_dim: u64,
    pub v_head_dim: u64,
    pub vocab: u64,
    /// Cached positions behind each new token (decode); 0 in prefill.
    pub context: u64,
    /// Numeric sequences: the workload's first `batch`.
    pub batch: u64,
    /// New tokens per sequence: 1 in decode.
    pub seq_len: u64,
    /// True when any dimension above is smaller than the model's or the
    /// workload's.
    pub reduced: bool,
}

/// How many copies of each kind of weight the numerics hold across dies
/// (layer-copies for per-layer weights), besides the reference's one set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightCopies {
    pub embedding: u64,
    pub lm_head: u64,
    pub attention: u64,
    pub router: u64,
    /// Layer-copies of all of a layer's shared experts.
    pub shared: u64,
    pub dense: u64,
    pub experts: u64,
}

impl NumericShape {
    /// Numeric tokens in a step.
    pub fn tokens(&self) -> u64 {
        self.batch * self.seq_len
    }

    /// `full` at this shape's widths: the model the numerics really run.
    pub fn model(&self, full: &ModelSpec) -> ModelSpec {
        let mut m = full.clone();
        m.hidden = self.hidden;
        m.vocab = self.vocab;
        m.dense_ffn = self.dense_ffn;
        m.attention = match full.attention {
            AttentionSpec::Mha { .. } => AttentionSpec::Mha {
                heads: self.heads,
                head_dim: self.head_dim,
            },
            AttentionSpec::Gqa { .. } => AttentionSpec::Gqa {
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: self.head_dim,
            },
            AttentionSpec::Mla { .. } => AttentionSpec::Mla {
                heads: self.heads,
                q_lora_rank: self.q_lora_rank,
                kv_lora_rank: self.kv_lora_rank,
                head_dim: self.head_dim,
                rope_dim: self.rope_dim,
                v_head_dim: self.v_head_dim,
            },
        };
        if let Some(moe) = m.moe.as_mut() {
            moe.expert_ffn = self.expert_ffn;
            moe.shared_ffn = self.shared_ffn;
        }
        m
    }

    /// The shape at width `width` (`1..=model.hidden`) for `workload`'s
    /// tokens capped as `config` says.
    pub fn at_width(model: &ModelSpec, workload: &WorkloadSpec, width: u64, config: &NumericConfig) -> NumericShape {
        let hidden = model.hidden.max(1);
        let width = width.clamp(1, hidden);
        let r = width as f64 / hidden as f64;
        let root = r.sqrt();
        let scale_by = |d: u64, f: f64| -> u64 {
            if d == 0 {
                return 0;
            }
            ((d as f64 * f).round() as u64).max(4).min(d)
        };
        let lin = |d: u64| scale_by(d, r);
        let per_head = |d: u64| scale_by(d, root);
        let count = |n: u64| ((n as f64 * root).round() as u64).clamp(1.min(n), n);

        let (heads, kv_heads, head_dim, q_lora, kv_lora, rope, v_head) = match model.attention {
            AttentionSpec::Mha { heads, head_dim } => {
                let h = count(heads);
                (h, h, per_head(head_dim), 0, 0, 0, 0)
            }
            AttentionSpec::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => {
                let kv = count(kv_heads).max(1);
                // Round query heads up to a multiple of the key/value heads.
                let h = count(heads).div_ceil(kv) * kv;
                (h, kv, per_head(head_dim), 0, 0, 0, 0)
            }
            AttentionSpec::Mla {
                heads,
                q_lora_rank,
                kv_lora_rank,
                head_dim,
                rope_dim,
                v_head_dim,
            } => (
                count(heads),
                0,
                per_head(head_dim),
                lin(q_lora_rank),
                lin(kv_lora_rank),
                per_head(rope_dim),
                per_head(v_head_dim),
            ),
        };
        let (expert_ffn, shared_ffn) = model
            .moe
            .as_ref()
            .map_or((0, 0), |m| (lin(m.expert_ffn), lin(m.shared_ffn)));

        let max_tokens = config.max_tokens.max(1);
        let (batch, seq_len, context) = match workload.phase {
            Phase::Decode => (
                workload.batch.min(max_tokens),
                1,
                workload.seq_len.min(config.max_context),
            ),
            Phase::Prefill => {
                let seq_len = workload.seq_len.min(config.max_context.max(1)).min(max_tokens).max(1);
                (workload.batch.min((max_tokens / seq_len).max(1)), seq_len, 0)
            }
        };
        let mut shape = NumericShape {
            hidden: width,
            expert_ffn,
            shared_ffn,
            dense_ffn: lin(model.dense_ffn),
            heads,
            kv_heads,
            head_dim,
            q_lora_rank: q_lora,
            kv_lora_rank: kv_lora,
            rope_dim: rope,
            v_head_dim: v_head,
            vocab: lin(model.vocab),
            context,
            batch,
            seq_len,
            reduced: false,
        };
        let full_tokens = match workload.phase {
            Phase::Decode => (workload.batch, 1, workload.seq_len),
            Phase::Prefill => (workload.batch, workload.seq_len, 0),
        };
        shape.reduced = shape.model(model) != *model || (batch, seq_len, context) != full_tokens;
        shape
    }

    /// Bytes of every weight the numerics hold at this shape: the
    /// reference's set plus `copies` (f32 each).
    pub fn weight_bytes(&self, full: &ModelSpec, copies: &WeightCopies) -> u128 {
        let m = self.model(full);
        let vocab_hidden = u128::from(m.vocab) * u128::from(m.hidden);
        let shared = u128::from(m.shared_params());
        let per_copy = [
            (copies.embedding, vocab_hidden),
            (copies.lm_head, vocab_hidden),
            (copies.attention, u128::from(m.attention_params())),
            (copies.router, u128::from(m.gate_params())),
            (copies.shared, shared),
            (copies.dense, u128::from(m.dense_ffn_params())),
            (copies.experts, u128::from(m.expert_params())),
        ];
        let held: u128 = per_copy.iter().map(|&(n, p)| u128::from(n) * p).sum();
        4 * (u128::from(m.total_params()) + held)
    }

    /// FLOPs of one forward of the numeric tokens: every layer (attention
    /// over the cached and new positions, FFN or MoE with router, `top_k`
    /// experts and shared experts) and the LM head.
    pub fn step_flops(&self, full: &ModelSpec) -> f64 {
        let m = self.model(full);
        // Positions each token attends over, at most.
        let attended = self.context + self.seq_len;
        let per_token: f64 = (0..m.layers).map(|l| m.layer_flops(l, attended).0).sum::<f64>()
            + 2.0 * (m.hidden as f64) * (m.vocab as f64);
        per_token * self.tokens() as f64
    }
}

impl NumericShape {
    /// Rounds the head counts so that `tp` dies split them as they split
    /// `full`'s (the language checked `full`): query heads a multiple of
    /// `tp` and of the key/value heads; GQA's key/value heads a multiple of
    /// `tp` when `full`'s are, else a divisor of `full`'s (which divides `tp`).
    pub fn split_heads(&mut self, full: &ModelSpec, tp: u64) {
        let tp = tp.max(1);
        if tp == 1 {
            return;
        }
        let mut multiple = tp;
        if let AttentionSpec::Gqa { kv_heads, .. } = full.attention {
            self.kv_heads = if kv_heads % tp == 0 {
                self.kv_heads.div_ceil(tp) * tp
            } else {
                (1..=self.kv_heads.min(kv_heads))
                    .rev()
                    .find(|d| kv_heads % d == 0)
                    .unwrap_or(1)
            };
            multiple = lcm(tp, self.kv_heads.max(1));
        }
        self.heads = self.heads.div_ceil(multiple) * multiple;
        if matches!(full.attention, AttentionSpec::Mha { .. }) {
            self.kv_heads = self.heads;
        }
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b).max(1) * b
}

/// The numeric shape for `model` and `workload`, given the weight copies the
/// schedule makes the dies hold. Errors: a forced width of 0, wider than the
/// model, or over the memory budget; a model too large for the budgets even
/// at width 8.
pub fn select(
    model: &ModelSpec,
    workload: &WorkloadSpec,
    copies: &WeightCopies,
    config: &NumericConfig,
) -> Result<NumericShape, String> {
    let fits_memory = |s: &NumericShape| s.weight_bytes(model, copies) <= u128::from(config.memory_budget);
    if let Some(w) = config.width {
        if w == 0 || w > model.hidden {
            return Err(format!(
                "numeric width {w} is not in 1..={} (the model's hidden size)",
                model.hidden
            ));
        }
        let shape = NumericShape::at_width(model, workload, w, config);
        if !fits_memory(&shape) {
            return Err(format!(
                "numeric width {w} needs {} MiB of weights, over the {} MiB memory budget",
                shape.weight_bytes(model, copies) >> 20,
                config.memory_budget >> 20
            ));
        }
        return Ok(shape);
    }
    let mut candidates = vec![model.hidden];
    let mut p = if model.hidden.is_power_of_two() {
        model.hidden / 2
    } else {
        model.hidden.next_power_of_two() / 2
    };
    while p >= 8 {
        candidates.push(p);
        p /= 2;
    }
    for w in candidates {
        let shape = NumericShape::at_width(model, workload, w, config);
        if fits_memory(&shape) && shape.step_flops(model) <= config.flops_budget {
            return Ok(shape);
        }
    }
    Err(format!(
        "{} does not fit the numeric budgets ({} MiB of weights, {:.1e} FLOPs a step) even at width 8",
        model.name,
        config.memory_budget >> 20,
        config.flops_budget
    ))
}
