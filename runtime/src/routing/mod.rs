//! Routing at run time: which experts each token of a step chooses.
//!
//! A [`StepRouting`] holds, for every MoE layer of the model, each token's
//! `top_k` expert choices (and, when the source knows them, the gate weights).
//! Sources: the synthetic generator (`synthetic.rs`: uniform, or Zipf-skewed
//! with cross-layer correlation and drift; `skewed.rs`: MoEShard's skewed
//! router), a recorded trace (`trace.rs`), recorded counts
//! (`count_sampler.rs`), or the real gate over real activations (the numeric
//! executor fills one in).

mod alias;
pub mod calibrate;
pub mod count_sampler;
pub mod counts;
pub mod inclusion;
pub mod skewed;
mod source;
pub mod stats;
pub mod synthetic;
pub mod trace;

pub use source::RoutingGenerator;
pub use stats::RoutingStats;
pub use synthetic::{RoutingShape, Synthetic, ZipfParams};
pub use trace::{parse_trace, read_trace, write_trace, Trace, TraceReplay};

use serde::{Deserialize, Serialize};

/// One MoE layer's routing for one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    /// The model layer (0-based, counting dense layers too).
    pub layer: u32,
    /// `experts[t * top_k + j]`: the j-th choice of token t; each token's
    /// choices are distinct.
    pub experts: Vec<u32>,
    /// Gate weights in the same layout, when the source has them (the real
    /// gate does; synthetic sources leave this empty and the numeric executor
    /// uses the gate's own normalised scores for the chosen experts).
    pub weights: Vec<f32>,
}

/// Every MoE layer's routing for one step, in layer order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRouting {
    pub tokens: usize,
    pub top_k: usize,
    pub layers: Vec<LayerRouting>,
}

impl StepRouting {
    /// The routing of model layer `layer`, if it is an MoE layer.
    pub fn layer(&self, layer: u32) -> Option<&LayerRouting> {
        self.layers.iter().find(|l| l.layer == layer)
    }

    /// Tokens each expert of `layer` receives.
    pub fn expert_loads(&self, layer: u32, experts: usize) -> Vec<u64> {
        let mut loads = vec![0u64; experts];
        if let Some(l) = self.layer(layer) {
            for &e in &l.experts {
                if let Some(x) = loads.get_mut(e as usize) {
                    *x += 1;
                }
            }
        }
        loads
    }
}
