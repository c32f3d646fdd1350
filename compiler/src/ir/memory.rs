//! What each die holds once the IR is placed: expert weights, other
//! weights, and its share of the KV cache.

use super::{Ir, Op, Sharding};
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::units::Bytes;

/// The memory one die needs for what is placed on it.
#[derive(Clone, Debug, PartialEq)]
pub struct DieLoad {
    pub die: DieId,
    /// Routed experts held whole or as shards (a shard counts as one).
    pub experts: u32,
    pub expert_bytes: Bytes,
    /// Attention, gates, shared experts, dense FFNs, embedding, LM head.
    pub other_bytes: Bytes,
    /// KV cache: the sequences this die serves.
    pub state_bytes: Bytes,
    /// Shadow slots kept free for replicas added during the run.
    pub shadow_bytes: Bytes,
}

impl DieLoad {
    /// Everything together.
    pub fn total(&self) -> Bytes {
        self.expert_bytes + self.other_bytes + self.state_bytes + self.shadow_bytes
    }
}

/// The load of every die of `machine` (dead dies included, with nothing).
/// A node's weights are split over its shard ways; its state over its
/// replicas, since each replica serves its own sequences. Attention split
/// tensor-parallel by heads is exact: each die holds the projections of its
/// heads plus what every head shares, and its share of its group's cache
/// (none of it shared for MHA, one key/value head at least for GQA, all of
/// it for MLA's latent).
pub fn die_loads(ir: &Ir, machine: &Machine) -> Vec<DieLoad> {
    let mut loads: Vec<DieLoad> = (0..machine.die_count())
        .map(|d| DieLoad {
            die: DieId(d),
            experts: 0,
            expert_bytes: Bytes(0),
            other_bytes: Bytes(0),
            state_bytes: Bytes(0),
            shadow_bytes: Bytes(0),
        })
        .collect();
    // Shadow slots: room for one more expert of each MoE layer per slot.
    if ir.shadow_slots > 0 {
        let moe_layers = (0..ir.model.layers)
            .filter(|&l| ir.model.layer_kind(l) == moec_runtime::model::LayerKind::Moe)
            .count() as u64;
        let reserved = Bytes(
            ir.model
                .expert_bytes()
                .0
                .saturating_mul(moe_layers)
                .saturating_mul(u64::from(ir.shadow_slots)),
        );
        for d in machine.alive_dies() {
            loads[d.index()].shadow_bytes = reserved;
        }
    }
    for (_, n) in ir.nodes() {
        // A move's bytes land in a shadow slot or a slot it frees; an
        // eviction frees one.
        if !n.ann.is_placed() || n.op.weight_move().is_some() || matches!(n.op, Op::Evict(_)) {
            continue;
        }
        let ways = u64::from(n.ann.sharding.ways().max(1));
        let replicas = u64::from(n.ann.replicas().max(1));
        let (weights, state) = match (&n.op, n.ann.sharding) {
            (Op::Attention { .. }, Sharding::Tp(k)) => {
                let k = u64::from(k);
                let (per_die, whole) = (
                    ir.model.kv_bytes_per_token_per_die(k).0,
                    ir.model.kv_bytes_per_token().0.max(1),
                );
                let group_state = n.state.0.div_ceil(replicas);
                let state = (u128::from(group_state) * u128::from(per_die)).div_ceil(u128::from(whole));
                (ir.model.attention_bytes_per_die(k), Bytes(state as u64))
            }
            _ => (Bytes(n.weights.0.div_ceil(ways)), Bytes(n.state.0.div_ceil(replicas))),
        };
        for (i, d) in n.ann.dies.iter().enumerate() {
            let Some(load) = loads.get_mut(d.0 as usize) else {
                continue;
            };
            if let Op::Expert { ffn, .. } = n.op {
                load.experts += 1;
                load.expert_bytes += if n.ann.columns.is_empty() {
                    weights
                } else {
                    let (part, of) = n.ann.share(i, ffn);
                    Bytes((u128::from(n.weights.0) * u128::from(part)).div_ceil(u128::from(of)) as u64)
                };
            } else {
                load.other_bytes += weights;
            }
            load.state_bytes += state;
        }
    }
    loads
}
