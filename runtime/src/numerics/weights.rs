//! Deterministic weights of the numeric model.
//!
//! Every matrix is drawn from the runtime's [`Rng`] keyed by (seed, layer,
//! matrix, expert), so any die can materialise exactly the weights of what
//! is placed on it, in any order, and get the same numbers as the dense
//! reference. Projections are normal with variance `1 / fan_in` (the rows
//! they read), the embedding table standard normal; every value is rounded
//! to the model's dtype once, here.

use crate::kernels::attention::{HeadsAttention, LatentAttention};
use crate::kernels::precision::round_all;
use crate::kernels::{AttentionWeights, FfnWeights};
use crate::model::{Activation, AttentionSpec, LayerKind, ModelSpec};
use crate::rng::Rng;

/// Separates the weights' draws from every other use of the seed.
const WEIGHT_SALT: u64 = 0x0077_6569_6768_7473; // "weights"
/// The layer key of the weights outside any layer.
const NO_LAYER: u64 = u64::MAX;

/// Which matrix of a layer (the middle key of a draw).
#[derive(Clone, Copy, Debug)]
enum Matrix {
    Embedding = 1,
    LmHead,
    Wq,
    Wk,
    Wv,
    Wo,
    Wdq,
    Wdkv,
    Wuk,
    Wuv,
    Router,
    ExpertGate,
    ExpertUp,
    ExpertDown,
    SharedGate,
    SharedUp,
    SharedDown,
    DenseGate,
    DenseUp,
    DenseDown,
}

/// Which FFN of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// Routed expert `e`.
    Expert(u32),
    /// Shared expert `s`.
    Shared(u32),
    /// The dense layer's FFN.
    Dense,
}

/// One layer's FFN weights.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerFfn {
    Dense(FfnWeights),
    Moe {
        /// `hidden x experts`.
        router: Vec<f32>,
        experts: Vec<FfnWeights>,
        shared: Vec<FfnWeights>,
    },
}

/// One layer's weights.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub attention: AttentionWeights,
    pub ffn: LayerFfn,
}

/// Every weight of the model: what the dense reference holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWeights {
    /// `vocab x hidden`.
    pub embedding: Vec<f32>,
    /// `hidden x vocab`.
    pub lm_head: Vec<f32>,
    pub layers: Vec<LayerWeights>,
}

/// Draws the weights of one (numeric) model.
#[derive(Clone, Debug)]
pub struct WeightGen {
    root: Rng,
    model: ModelSpec,
}

impl WeightGen {
    /// The generator of `model`'s weights from `seed`.
    pub fn new(seed: u64, model: &ModelSpec) -> WeightGen {
        WeightGen {
            root: Rng::new(seed).fork(WEIGHT_SALT),
            model: model.clone(),
        }
    }

    /// A `rows x cols` matrix keyed by (layer, matrix, index), with standard
    /// deviation `std`.
    fn draw(&self, layer: u64, matrix: Matrix, index: u64, rows: usize, cols: usize, std: f32) -> Vec<f32> {
        let mut rng = self.root.fork(layer).fork(matrix as u64).fork(index);
        let len = rows * cols;
        let mut out = Vec::with_capacity(len);
        // Box-Muller, using both values of each pair (Rng::normal keeps one).
        while out.len() < len {
            let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
            let u2 = rng.next_f64();
            let radius = (-2.0 * u1.ln()).sqrt();
            let angle = std::f64::consts::TAU * u2;
            out.push((radius * angle.cos()) as f32 * std);
            if out.len() < len {
                out.push((radius * angle.sin()) as f32 * std);
            }
        }
        round_all(self.model.dtype, &mut out);
        out
    }

    /// A projection reading `rows` values: variance `1 / rows`.
    fn projection(&self, layer: u64, matrix: Matrix, index: u64, rows: usize, cols: usize) -> Vec<f32> {
        self.draw(layer, matrix, index, rows, cols, 1.0 / (rows.max(1) as f32).sqrt())
    }

    fn hidden(&self) -> usize {
        self.model.hidden as usize
    }

    /// The embedding table, `vocab x hidden`.
    pub fn embedding(&self) -> Vec<f32> {
        self.draw(
            NO_LAYER,
            Matrix::Embedding,
            0,
            self.model.vocab as usize,
            self.hidden(),
            1.0,
        )
    }

    /// The LM head, `hidden x vocab`.
    pub fn lm_head(&self) -> Vec<f32> {
        self.projection(NO_LAYER, Matrix::LmHead, 0, self.hidden(), self.model.vocab as usize)
    }

    /// Layer `layer`'s attention.
    pub fn attention(&self, layer: u32) -> AttentionWeights {
        let (l, h) = (u64::from(layer), self.hidden());
        match self.model.attention {
            AttentionSpec::Mha { heads, head_dim } => self.heads_attention(l, heads, heads, head_dim),
            AttentionSpec::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => self.heads_attention(l, heads, kv_heads, head_dim),
            AttentionSpec::Mla {
                heads,
                q_lora_rank,
                kv_lora_rank,
                head_dim,
                rope_dim,
                v_head_dim,
            } => {
                let (heads, ql, kl) = (heads as usize, q_lora_rank as usize, kv_lora_rank as usize);
                let (d, r, vd) = (head_dim as usize, rope_dim as usize, v_head_dim as usize);
                let q_in = if ql > 0 { ql } else { h };
                AttentionWeights::Latent(LatentAttention {
                    hidden: h,
                    heads,
                    q_lora_rank: ql,
                    kv_lora_rank: kl,
                    head_dim: d,
                    rope_dim: r,
                    v_head_dim: vd,
                    wdq: self.projection(l, Matrix::Wdq, 0, h, ql),
                    wq: self.projection(l, Matrix::Wq, 0, q_in, heads * (d + r)),
                    wdkv: self.projection(l, Matrix::Wdkv, 0, h, kl + r),
                    // Per head, as the absorbed form multiplies; both read
                    // (or produce) the latent, so fan-in is the rank.
                    wuk: self.draw(l, Matrix::Wuk, 0, heads * d, kl, 1.0 / (kl.max(1) as f32).sqrt()),
                    wuv: self.draw(l, Matrix::Wuv, 0, heads * kl, vd, 1.0 / (kl.max(1) as f32).sqrt()),
                    wo: self.projection(l, Matrix::Wo, 0, heads * vd, h),
                })
            }
        }
    }

    fn heads_attention(&self, l: u64, heads: u64, kv_heads: u64, head_dim: u64) -> AttentionWeights {
        let (h, heads, kv_heads, d) = (self.hidden(), heads as usize, kv_heads as usize, head_dim as usize);
        AttentionWeights::Heads(HeadsAttention {
            hidden: h,
            heads,
            kv_heads,
            head_dim: d,
            wq: self.projection(l, Matrix::Wq, 0, h, heads * d),
            wk: self.projection(l, Matrix::Wk, 0, h, kv_heads * d),
            wv: self.projection(l, Matrix::Wv, 0, h, kv_heads * d),
            wo: self.projection(l, Matrix::Wo, 0, heads * d, h),
        })
    }

    /// Layer `layer`'s router, `hidden x experts`.
    pub fn router(&self, layer: u32) -> Vec<f32> {
        let experts = self.model.moe.as_ref().map_or(0, |m| m.experts) as usize;
        self.projection(u64::from(layer), Matrix::Router, 0, self.hidden(), experts)
    }

    /// One FFN of layer `layer`.
    pub fn ffn(&self, layer: u32, kind: FfnKind) -> FfnWeights {
        let moe = self.model.moe.as_ref();
        let activation = moe.map_or(Activation::Swiglu, |m| m.activation);
        let (ffn, [gate, up, down], index) = match kind {
            FfnKind::Expert(e) => (
                moe.map_or(0, |m| m.expert_ffn),
                [Matrix::ExpertGate, Matrix::ExpertUp, Matrix::ExpertDown],
                u64::from(e),
            ),
            FfnKind::Shared(s) => (
                moe.map_or(0, |m| m.shared_ffn),
                [Matrix::SharedGate, Matrix::SharedUp, Matrix::SharedDown],
                u64::from(s),
            ),
            FfnKind::Dense => (
                self.model.dense_ffn,
                [Matrix::DenseGate, Matrix::DenseUp, Matrix::DenseDown],
                0,
            ),
        };
        let (l, h, f) = (u64::from(layer), self.hidden(), ffn as usize);
        FfnWeights {
            hidden: h,
            ffn: f,
            activation,
            gate: if activation == Activation::Swiglu {
                self.projection(l, gate, index, h, f)
            } else {
                Vec::new()
            },
            up: self.projection(l, up, index, h, f),
            down: self.projection(l, down, index, f, h),
        }
    }

    /// Layer `layer`'s FFN weights: its dense FFN, or router, experts and
    /// shared experts.
    pub fn layer_ffn(&self, layer: u32) -> LayerFfn {
        match (self.model.layer_kind(u64::from(layer)), self.model.moe.as_ref()) {
            (LayerKind::Moe, Some(moe)) => LayerFfn::Moe {
                router: self.router(layer),
                experts: (0..moe.experts as u32)
                    .map(|e| self.ffn(layer, FfnKind::Expert(e)))
                    .collect(),
                shared: (0..moe.shared_experts as u32)
                    .map(|s| self.ffn(layer, FfnKind::Shared(s)))
                    .collect(),
            },
            _ => LayerFfn::Dense(self.ffn(layer, FfnKind::Dense)),
        }
    }

    /// Every weight of the model.
    pub fn model_weights(&self) -> ModelWeights {
        ModelWeights {
            embedding: self.embedding(),
            lm_head: self.lm_head(),
            layers: (0..self.model.layers as u32)
                .map(|l| LayerWeights {
                    attention: self.attention(l),
                    ffn: self.layer_ffn(l),
                })
                .collect(),
        }
    }
}
