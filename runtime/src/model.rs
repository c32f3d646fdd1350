//! The model description: dimensions of an MoE transformer and the figures
//! derived from them (parameter bytes per expert, FLOPs per token per layer,
//! KV-cache bytes).
//!
//! The compiler fills it from a `model` item; the schedule carries it so the
//! runtime can build weights and check numerics without the source file.

use crate::units::{Bytes, Flops};
use serde::{Deserialize, Serialize};

/// Number storage format of weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Fp32,
    Bf16,
    Fp16,
    Fp8,
}

impl DType {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            DType::Fp32 => 4,
            DType::Bf16 | DType::Fp16 => 2,
            DType::Fp8 => 1,
        }
    }

    /// The spelling in the language.
    pub fn name(self) -> &'static str {
        match self {
            DType::Fp32 => "fp32",
            DType::Bf16 => "bf16",
            DType::Fp16 => "fp16",
            DType::Fp8 => "fp8",
        }
    }
}

/// The attention forms the language knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AttentionSpec {
    /// Multi-head attention: as many key/value heads as query heads.
    Mha { heads: u64, head_dim: u64 },
    /// Grouped-query attention: `kv_heads` key/value heads shared by groups of query heads.
    Gqa { heads: u64, kv_heads: u64, head_dim: u64 },
    /// DeepSeek's multi-head latent attention: keys and values compressed to a
    /// `kv_lora_rank` latent plus a shared `rope_dim` rotary key.
    Mla {
        heads: u64,
        q_lora_rank: u64,
        kv_lora_rank: u64,
        head_dim: u64,
        rope_dim: u64,
        v_head_dim: u64,
    },
}

impl AttentionSpec {
    /// The short name (`mha`, `gqa`, `mla`).
    pub fn kind(&self) -> &'static str {
        match self {
            AttentionSpec::Mha { .. } => "mha",
            AttentionSpec::Gqa { .. } => "gqa",
            AttentionSpec::Mla { .. } => "mla",
        }
    }

    /// Query heads.
    pub fn heads(&self) -> u64 {
        match *self {
            AttentionSpec::Mha { heads, .. } | AttentionSpec::Gqa { heads, .. } | AttentionSpec::Mla { heads, .. } => {
                heads
            }
        }
    }
}

/// Expert activation; SwiGLU has a gate projection besides up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Swiglu,
    Gelu,
    Relu,
}

impl Activation {
    /// Weight matrices of one FFN: 3 for gated (SwiGLU), 2 otherwise.
    pub fn matrices(self) -> u64 {
        match self {
            Activation::Swiglu => 3,
            Activation::Gelu | Activation::Relu => 2,
        }
    }

    /// The spelling in the language.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Swiglu => "swiglu",
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        }
    }
}

/// How the router scores experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateKind {
    Softmax,
    Sigmoid,
}

impl GateKind {
    /// The spelling in the language.
    pub fn name(self) -> &'static str {
        match self {
            GateKind::Softmax => "softmax",
            GateKind::Sigmoid => "sigmoid",
        }
    }
}

/// The MoE block of every MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeSpec {
    pub experts: u64,
    pub shared_experts: u64,
    /// Intermediate size of one shared expert.
    pub shared_ffn: u64,
    pub top_k: u64,
    /// Intermediate size of one routed expert.
    pub expert_ffn: u64,
    pub activation: Activation,
    pub gate: GateKind,
    /// Group-limited routing: experts split into `groups`, the best
    /// `topk_groups` kept (1 and 1 when unused).
    pub groups: u64,
    pub topk_groups: u64,
}

/// Whether a layer's FFN is dense or a mixture of experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    Dense,
    Moe,
}

/// A whole model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub layers: u64,
    /// The first `dense_layers` layers have a dense FFN.
    pub dense_layers: u64,
    /// After the dense layers, every `moe_every`-th layer is MoE, the others dense
    /// (Switch Transformer alternates: 2).
    pub moe_every: u64,
    pub hidden: u64,
    pub vocab: u64,
    pub dtype: DType,
    pub attention: AttentionSpec,
    /// Intermediate size of the dense FFN layers (0 when there are none).
    pub dense_ffn: u64,
    pub moe: Option<MoeSpec>,
}

impl ModelSpec {
    /// Whether layer `i` (0-based) is dense or MoE.
    pub fn layer_kind(&self, i: u64) -> LayerKind {
        match &self.moe {
            Some(_) if i >= self.dense_layers && (i - self.dense_layers) % self.moe_every == self.moe_every - 1 => {
                LayerKind::Moe
            }
            _ => LayerKind::Dense,
        }
    }

    /// Number of MoE layers.
    pub fn moe_layers(&self) -> u64 {
        (0..self.layers)
            .filter(|&i| self.layer_kind(i) == LayerKind::Moe)
            .count() as u64
    }

    fn bytes(&self, params: u64) -> Bytes {
        Bytes(params.saturating_mul(self.dtype.bytes()))
    }

    /// Parameters of one routed expert.
    pub fn expert_params(&self) -> u64 {
        self.moe
            .as_ref()
            .map_or(0, |m| m.activation.matrices() * self.hidden * m.expert_ffn)
    }

    /// Weight bytes of one routed expert.
    pub fn expert_bytes(&self) -> Bytes {
        self.bytes(self.expert_params())
    }

    /// Parameters of all shared experts of one layer.
    pub fn shared_params(&self) -> u64 {
        self.moe.as_ref().map_or(0, |m| {
            m.shared_experts * m.activation.matrices() * self.hidden * m.shared_ffn
        })
    }

    /// Weight bytes of all shared experts of one layer.
    pub fn shared_bytes(&self) -> Bytes {
        self.bytes(self.shared_params())
    }

    /// Parameters of one dense FFN layer.
    pub fn dense_ffn_params(&self) -> u64 {
        let matrices = self.moe.as_ref().map_or(3, |m| m.activation.matrices());
        matrices * self.hidden * self.dense_ffn
    }

    /// Weight bytes of one dense FFN layer.
    pub fn dense_ffn_bytes(&self) -> Bytes {
        self.bytes(self.dense_ffn_params())
    }

    /// Parameters of the router of one MoE layer.
    pub fn gate_params(&self) -> u64 {
        self.moe.as_ref().map_or(0, |m| self.hidden * m.experts)
    }

    /// Parameters of one attention layer (projections only).
    pub fn attention_params(&self) -> u64 {
        self.attention_params_per_die(1)
    }

    /// Parameters one die holds of an attention layer split tensor-parallel
    /// over `tp` dies by heads (Megatron's split: query, key/value and
    /// output projections by heads). What cannot be split by heads is held
    /// by every die: GQA's key/value heads when there are fewer than `tp`
    /// (each die keeps the one its query heads read), and MLA's down
    /// projections (`W_dq`, `W_dkv`), which every head shares. `tp` divides
    /// the heads (the language checks it).
    pub fn attention_params_per_die(&self, tp: u64) -> u64 {
        let h = self.hidden;
        let tp = tp.max(1);
        match self.attention {
            AttentionSpec::Mha { heads, head_dim } => 4 * h * (heads / tp) * head_dim,
            AttentionSpec::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => 2 * h * (heads / tp) * head_dim + 2 * h * kv_heads.div_ceil(tp) * head_dim,
            AttentionSpec::Mla {
                heads,
                q_lora_rank,
                kv_lora_rank,
                head_dim,
                rope_dim,
                v_head_dim,
            } => {
                let heads = heads / tp;
                let q = if q_lora_rank > 0 {
                    h * q_lora_rank + q_lora_rank * heads * (head_dim + rope_dim)
                } else {
                    h * heads * (head_dim + rope_dim)
                };
                let kv_down = h * (kv_lora_rank + rope_dim);
                let kv_up = kv_lora_rank * heads * (head_dim + v_head_dim);
                let out = heads * v_head_dim * h;
                q + kv_down + kv_up + out
            }
        }
    }

    /// Weight bytes of one attention layer.
    pub fn attention_bytes(&self) -> Bytes {
        self.bytes(self.attention_params())
    }

    /// Weight bytes of one attention layer held by each of `tp` dies.
    pub fn attention_bytes_per_die(&self, tp: u64) -> Bytes {
        self.bytes(self.attention_params_per_die(tp))
    }

    /// Parameters of the embedding and the (untied) output head.
    pub fn embedding_params(&self) -> u64 {
        2 * self.vocab * self.hidden
    }

    /// KV-cache bytes one token occupies in one layer (MLA caches the latent
    /// and the rotary key only).
    pub fn kv_bytes_per_token(&self) -> Bytes {
        self.kv_bytes_per_token_per_die(1)
    }

    /// KV-cache bytes one token occupies on each of the `tp` dies its
    /// attention is split over: its share of the key/value heads (at least
    /// one GQA head), or, for MLA, the whole latent, since every head reads
    /// it. This is why DeepSeek serves MLA data-parallel.
    pub fn kv_bytes_per_token_per_die(&self, tp: u64) -> Bytes {
        self.bytes(self.kv_values_per_token_per_die(tp))
    }

    /// Values (not bytes) behind [`ModelSpec::kv_bytes_per_token_per_die`]:
    /// the width of one position in a die's KV cache.
    pub fn kv_values_per_token_per_die(&self, tp: u64) -> u64 {
        let tp = tp.max(1);
        match self.attention {
            AttentionSpec::Mha { heads, head_dim } => 2 * (heads / tp) * head_dim,
            AttentionSpec::Gqa { kv_heads, head_dim, .. } => 2 * kv_heads.div_ceil(tp) * head_dim,
            AttentionSpec::Mla {
                kv_lora_rank, rope_dim, ..
            } => kv_lora_rank + rope_dim,
        }
    }

    /// Attention FLOPs for one token attending over `context` tokens:
    /// projections plus scores and weighted values (MLA in absorbed form,
    /// scoring against the latent).
    pub fn attention_flops(&self, context: u64) -> Flops {
        self.attention_flops_per_die(context, 1)
    }

    /// One die's share of [`ModelSpec::attention_flops`] under `tp`-way
    /// tensor parallelism: its heads, and the projections it holds.
    pub fn attention_flops_per_die(&self, context: u64, tp: u64) -> Flops {
        let per_head = match self.attention {
            AttentionSpec::Mha { head_dim, .. } | AttentionSpec::Gqa { head_dim, .. } => 2 * head_dim,
            AttentionSpec::Mla {
                kv_lora_rank, rope_dim, ..
            } => 2 * kv_lora_rank + rope_dim,
        };
        let heads = self.attention.heads() / tp.max(1);
        Flops(2.0 * self.attention_params_per_die(tp) as f64 + 2.0 * (heads * context * per_head) as f64)
    }

    /// MoE FLOPs per token of one MoE layer: router, `top_k` experts, shared experts.
    pub fn moe_flops(&self) -> Flops {
        let top_k = self.moe.as_ref().map_or(0, |m| m.top_k);
        Flops(2.0 * (self.gate_params() + top_k * self.expert_params() + self.shared_params()) as f64)
    }

    /// FLOPs per token of layer `i` at `context`.
    pub fn layer_flops(&self, i: u64, context: u64) -> Flops {
        let ffn = match self.layer_kind(i) {
            LayerKind::Moe => self.moe_flops(),
            LayerKind::Dense => Flops(2.0 * self.dense_ffn_params() as f64),
        };
        self.attention_flops(context) + ffn
    }

    /// All parameters.
    pub fn total_params(&self) -> u64 {
        let moe_layers = self.moe_layers();
        let dense = self.layers - moe_layers;
        let experts = self.moe.as_ref().map_or(0, |m| m.experts);
        self.embedding_params()
            + self.layers * self.attention_params()
            + dense * self.dense_ffn_params()
            + moe_layers * (experts * self.expert_params() + self.shared_params() + self.gate_params())
    }

    /// Parameters touched per token.
    pub fn active_params(&self) -> u64 {
        let moe_layers = self.moe_layers();
        let dense = self.layers - moe_layers;
        let top_k = self.moe.as_ref().map_or(0, |m| m.top_k);
        self.embedding_params()
            + self.layers * self.attention_params()
            + dense * self.dense_ffn_params()
            + moe_layers * (top_k * self.expert_params() + self.shared_params() + self.gate_params())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// DeepSeek-V3 from its public config (shared with other tests).
    pub(crate) fn deepseek_v3() -> ModelSpec {
        ModelSpec {
            name: "deepseek_v3".into(),
            layers: 61,
            dense_layers: 3,
            moe_every: 1,
            hidden: 7168,
            vocab: 129280,
            dtype: DType::Bf16,
            attention: AttentionSpec::Mla {
                heads: 128,
                q_lora_rank: 1536,
                kv_lora_rank: 512,
                head_dim: 128,
                rope_dim: 64,
                v_head_dim: 128,
            },
            dense_ffn: 18432,
            moe: Some(MoeSpec {
                experts: 256,
                shared_experts: 1,
                shared_ffn: 2048,
                top_k: 8,
                expert_ffn: 2048,
                activation: Activation::Swiglu,
                gate: GateKind::Sigmoid,
                groups: 8,
                topk_groups: 4,
            }),
        }
    }

    #[test]
    fn deepseek_v3_has_its_published_size() {
        let m = deepseek_v3();
        assert_eq!(m.moe_layers(), 58);
        assert_eq!(m.expert_params(), 3 * 7168 * 2048);
        // 671B total and 37B active, as published (the MTP module excluded).
        let total = m.total_params() as f64 / 1e9;
        let active = m.active_params() as f64 / 1e9;
        assert!((total - 671.0).abs() < 2.0, "total {total}B");
        assert!((active - 37.5).abs() < 1.5, "active {active}B");
    }

    #[test]
    fn switch_transformer_alternates_dense_and_moe_layers() {
        let mut m = deepseek_v3();
        m.layers = 12;
        m.dense_layers = 0;
        m.moe_every = 2;
        let kinds: Vec<_> = (0..12).map(|i| m.layer_kind(i)).collect();
        assert_eq!(kinds.iter().filter(|k| **k == LayerKind::Moe).count(), 6);
        assert_eq!(kinds[0], LayerKind::Dense);
        assert_eq!(kinds[1], LayerKind::Moe);
    }
}
