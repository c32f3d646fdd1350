//! Attention and experts on separate dies (MegaScale-Infer's and
//! DisagMoE's disaggregation): which dies hold the tokens (their
//! attention, KV cache, router and dense layers) and which the routed
//! experts. A plan's `disaggregate { attention = ...; experts = ... }`;
//! the placement keeps each side on its pool, and every layer's dispatch
//! and combine cross between them.

use moec_runtime::machine::DieId;

/// Two disjoint sets of dies, each ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pools {
    /// The dies that hold tokens: attention, KV cache, embedding, router,
    /// shared experts, dense layers, the LM head.
    pub attention: Vec<DieId>,
    /// The dies that hold the routed experts.
    pub experts: Vec<DieId>,
}

impl Pools {
    /// A die both pools name, if any.
    pub fn overlap(&self) -> Option<DieId> {
        self.attention
            .iter()
            .copied()
            .find(|d| self.experts.binary_search(d).is_ok())
    }
}
