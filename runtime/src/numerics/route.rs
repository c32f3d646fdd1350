//! Each token's experts in the numeric step: from a routing the step was
//! given (synthetic, trace, or the executor's own gate decisions handed to
//! the reference), or from the real gate; and the record of what was used.
//!
//! Given choices are used as they are; their weights are always the gate's
//! own scores of those experts, normalised ([`weights_for`]): a trace's
//! recorded weights came from the full-size model's activations, which the
//! numeric model does not have. A token whose given choices are unusable
//! (routing too short, another `top_k`, an unknown or repeated expert, a
//! layer missing) is routed by the gate instead, and counted.

use super::batch::TokenLayout;
use crate::kernels::{weights_for, Router};
use crate::routing::{LayerRouting, StepRouting};
use std::collections::BTreeMap;

/// A routing the step was given, and how numeric tokens index it.
#[derive(Clone, Copy, Debug)]
pub struct GivenRouting<'a> {
    pub routing: &'a StepRouting,
    /// `Some`: the routing covers the workload's tokens, laid out as
    /// `TokenLayout::workload_token` says; `None`: it covers exactly the
    /// numeric tokens, in order.
    pub layout: Option<TokenLayout>,
}

impl GivenRouting<'_> {
    /// The given choices of numeric token `t` in `layer`, if usable.
    fn choices(&self, router: &Router, layer: u32, t: usize) -> Option<Vec<u32>> {
        if self.routing.top_k != router.top_k {
            return None;
        }
        let index = self.layout.map_or(t as u64, |l| l.workload_token(t));
        let k = router.top_k as u64;
        let from = usize::try_from(index.checked_mul(k)?).ok()?;
        let chosen = self
            .routing
            .layer(layer)?
            .experts
            .get(from..from.checked_add(router.top_k)?)?;
        let usable = chosen
            .iter()
            .enumerate()
            .all(|(j, &e)| (e as usize) < router.experts && !chosen[..j].contains(&e));
        usable.then(|| chosen.to_vec())
    }
}

/// One token's experts and weights in one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
    /// A routing was given but this token's choices in it were unusable.
    pub fallback: bool,
}

/// Numeric token `t`'s experts in `layer`, given its gate `scores`.
pub fn choose(router: &Router, given: Option<&GivenRouting<'_>>, layer: u32, t: usize, scores: &[f32]) -> Choice {
    match given.map(|g| g.choices(router, layer, t)) {
        Some(Some(experts)) => Choice {
            weights: weights_for(&experts, scores),
            experts,
            fallback: false,
        },
        other => {
            let experts = router.select(scores);
            Choice {
                weights: weights_for(&experts, scores),
                experts,
                fallback: other.is_some(),
            }
        }
    }
}

/// The routing a step used, filled in token by token.
#[derive(Clone, Debug)]
pub struct RoutingRecord {
    tokens: usize,
    top_k: usize,
    layers: BTreeMap<u32, LayerRouting>,
    /// Tokens (per layer) routed by the gate although a routing was given.
    pub fallbacks: u64,
}

impl RoutingRecord {
    /// An empty record for `tokens` tokens choosing `top_k` experts in each
    /// of `moe_layers`.
    pub fn new(tokens: usize, top_k: usize, moe_layers: &[u32]) -> RoutingRecord {
        let layers = moe_layers
            .iter()
            .map(|&layer| {
                let empty = LayerRouting {
                    layer,
                    experts: vec![0; tokens * top_k],
                    weights: vec![0.0; tokens * top_k],
                };
                (layer, empty)
            })
            .collect();
        RoutingRecord {
            tokens,
            top_k,
            layers,
            fallbacks: 0,
        }
    }

    /// Records token `t`'s choice in `layer`.
    pub fn set(&mut self, layer: u32, t: usize, choice: &Choice) {
        self.fallbacks += u64::from(choice.fallback);
        let (k, from) = (self.top_k, t * self.top_k);
        if let Some(l) = self.layers.get_mut(&layer) {
            let slots = l.experts.iter_mut().zip(l.weights.iter_mut()).skip(from).take(k);
            for ((e, w), (&ce, &cw)) in slots.zip(choice.experts.iter().zip(&choice.weights)) {
                (*e, *w) = (ce, cw);
            }
        }
    }

    /// The record as a [`StepRouting`] over the numeric tokens.
    pub fn into_step_routing(self) -> StepRouting {
        StepRouting {
            tokens: self.tokens,
            top_k: self.top_k,
            layers: self.layers.into_values().collect(),
        }
    }
}
