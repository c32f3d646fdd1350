//! The dense reference: the whole numeric step on one device, with every
//! weight in one place and no data movement, to check the distributed
//! executor against.
//!
//! Per layer (pre-norm, as every MoE transformer): `x += attention(rmsnorm(x))`;
//! then with `h = rmsnorm(x)`, an MoE layer scores `h` with the router,
//! routes each token (given choices or the real gate, see `route.rs`), runs
//! each expert on the rows of the tokens that chose it (ascending token
//! order) and its shared experts on every row, and combines; a dense layer
//! adds its FFN of `h`. The final hidden states are `x` after the last
//! layer; the logits are `rmsnorm(x) W_lm`.

use super::context::NumericContext;
use super::route::{choose, GivenRouting, RoutingRecord};
use super::weights::{LayerFfn, ModelWeights};
use crate::kernels::norm::rms_norm;
use crate::kernels::{attention, combine, ffn, matmul, shared_ffn};
use crate::routing::StepRouting;

/// What one forward produced.
#[derive(Clone, Debug)]
pub struct Forward {
    /// `tokens x hidden`, numeric token order.
    pub hidden: Vec<f32>,
    /// `tokens x vocab`.
    pub logits: Vec<f32>,
    /// The hidden state after each layer, `tokens x hidden` a layer: where
    /// a failed check looks for the first layer that differs.
    pub layers: Vec<Vec<f32>>,
    /// The routing used, over the numeric tokens.
    pub routing: StepRouting,
    /// Tokens (per layer) the gate routed although a routing was given.
    pub gate_fallbacks: u64,
    /// With `verify_gate`: tokens (per layer) whose given choices differ
    /// from what this forward's own gate would choose.
    pub gate_disagreements: u64,
}

/// The embedding rows of `token_ids`, `tokens x hidden`.
pub fn embed(embedding: &[f32], width: usize, token_ids: &[u32]) -> Vec<f32> {
    let mut x = Vec::with_capacity(token_ids.len() * width);
    for &id in token_ids {
        let from = id as usize * width;
        match embedding.get(from..from + width) {
            Some(row) => x.extend_from_slice(row),
            None => x.extend(std::iter::repeat_n(0.0, width)),
        }
    }
    x
}

/// The step's forward over all numeric tokens (`token_ids`, one each).
/// `verify_gate` counts where the given routing (the executor's gate
/// decisions) differs from this forward's own gate.
pub fn forward(
    ctx: &NumericContext,
    weights: &ModelWeights,
    token_ids: &[u32],
    given: Option<&GivenRouting<'_>>,
    verify_gate: bool,
) -> Forward {
    let w = ctx.width();
    let tokens = ctx.layout.tokens();
    let top_k = ctx.top_k();
    let all: Vec<usize> = (0..ctx.layout.sequences).collect();
    let (_, seq_rows) = ctx.layout.rows(&all);
    let mut record = RoutingRecord::new(tokens, top_k, &ctx.moe_layers());
    let mut gate_disagreements = 0;

    let mut x = embed(&weights.embedding, w, token_ids);
    let mut layers = Vec::with_capacity(weights.layers.len());
    for (l, layer) in weights.layers.iter().enumerate() {
        let l = l as u32;
        let a = attention(&layer.attention, &rms_norm(&x, w), &seq_rows, &ctx.cache(l));
        x.iter_mut().zip(&a).for_each(|(xi, ai)| *xi += ai);
        let h = rms_norm(&x, w);
        match (&layer.ffn, ctx.router.as_ref()) {
            (
                LayerFfn::Moe {
                    router: w_g,
                    experts,
                    shared,
                },
                Some(router),
            ) => {
                let scores = router.scores(&h, w_g, tokens, w);
                let mut chosen = Vec::with_capacity(tokens * top_k);
                let mut gate_weights = Vec::with_capacity(tokens * top_k);
                for (t, row) in scores.chunks_exact(router.experts).enumerate() {
                    let choice = choose(router, given, l, t, row);
                    if verify_gate && router.select(row) != choice.experts {
                        gate_disagreements += 1;
                    }
                    record.set(l, t, &choice);
                    chosen.extend(choice.experts);
                    gate_weights.extend(choice.weights);
                }
                let shared_out = shared_ffn(shared, &h, tokens);
                let mut outputs = vec![0.0f32; tokens * top_k * w];
                // Each expert's (token, choice) slots, ascending, so its rows
                // are in token order as on the die that serves it.
                let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); experts.len()];
                for (s, &e) in chosen.iter().enumerate() {
                    if let Some(b) = buckets.get_mut(e as usize) {
                        b.push(s);
                    }
                }
                for (expert, slots) in experts.iter().zip(&buckets) {
                    if slots.is_empty() {
                        continue;
                    }
                    let mut rows = Vec::with_capacity(slots.len() * w);
                    for &s in slots {
                        let t = s / top_k;
                        rows.extend_from_slice(&h[t * w..(t + 1) * w]);
                    }
                    let out = ffn(expert, &rows, slots.len());
                    for (i, &s) in slots.iter().enumerate() {
                        outputs[s * w..(s + 1) * w].copy_from_slice(&out[i * w..(i + 1) * w]);
                    }
                }
                combine(&mut x, w, shared_out.as_deref(), top_k, &gate_weights, &outputs);
            }
            (LayerFfn::Dense(f), _) => {
                let out = ffn(f, &h, tokens);
                combine(&mut x, w, Some(&out), 0, &[], &[]);
            }
            // An MoE layer without a router cannot be built (Numerics::new
            // checks); leave the residual as it is.
            (LayerFfn::Moe { .. }, None) => {}
        }
        layers.push(x.clone());
    }
    let logits = matmul(&rms_norm(&x, w), &weights.lm_head, tokens, w, ctx.model.vocab as usize);
    let gate_fallbacks = record.fallbacks;
    Forward {
        hidden: x,
        logits,
        layers,
        routing: record.into_step_routing(),
        gate_fallbacks,
        gate_disagreements,
    }
}
