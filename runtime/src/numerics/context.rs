//! What the dense reference and the distributed executor share for a step:
//! the numeric model, its router, the seed every draw is keyed by, and the
//! token layout.

use super::batch::TokenLayout;
use crate::kernels::{Router, SyntheticKvCache};
use crate::model::{LayerKind, ModelSpec};

/// The numeric model and its step layout.
#[derive(Clone, Debug)]
pub struct NumericContext {
    /// The model at numeric width.
    pub model: ModelSpec,
    /// Its router (MoE models).
    pub router: Option<Router>,
    /// Keys weights, token ids and the KV cache.
    pub seed: u64,
    pub layout: TokenLayout,
}

impl NumericContext {
    /// Row width (the numeric hidden size).
    pub fn width(&self) -> usize {
        self.model.hidden as usize
    }

    /// Experts each token chooses (0 without MoE).
    pub fn top_k(&self) -> usize {
        self.router.map_or(0, |r| r.top_k)
    }

    /// Whether `layer` is an MoE layer.
    pub fn is_moe(&self, layer: u32) -> bool {
        self.router.is_some() && self.model.layer_kind(u64::from(layer)) == LayerKind::Moe
    }

    /// The MoE layers, ascending.
    pub fn moe_layers(&self) -> Vec<u32> {
        (0..self.model.layers as u32).filter(|&l| self.is_moe(l)).collect()
    }

    /// Layer `layer`'s synthetic KV cache.
    pub fn cache(&self, layer: u32) -> SyntheticKvCache {
        let width = self.model.kv_values_per_token_per_die(1) as usize;
        SyntheticKvCache::new(self.seed, layer, width, self.model.dtype)
    }
}
