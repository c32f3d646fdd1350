//! Lowering: the placed IR to a [`Schedule`] the runtime executes.
//!
//! The IR says where each operation lives; lowering turns that into one
//! program per die. Experts take their dies from their `Expert` nodes;
//! sequences are spread over the dies of the attention nodes in contiguous
//! blocks. Under tensor-parallel attention (`Sharding::Tp(k)` on the
//! attention nodes) those dies are the groups one after another, each in
//! ring order, so each group serves a contiguous block of sequences spread
//! over its members. Each alive die's program walks the layers: attention
//! (between an all-gather and a reduce-scatter in its group, under TP),
//! then the gate, the dispatch all-to-all, the shared experts (which
//! overlap the dispatch, since they depend only on attention), the die's
//! experts, and the combine all-to-all; or the dense FFN (`program.rs`,
//! which also splits the step into micro-batches under an overlap form).
//! Under token
//! domains (`Sharding::Domains` on the dispatch nodes), the gate is
//! followed by an all-gather of the routed rows in the attention group and
//! the combine by a reduce-scatter of the members' partial outputs. Dead
//! dies get empty programs. `Migrate` and `Replicate` nodes become the
//! schedule's migrations and broadcasts (`moves.rs`).

mod moves;
mod program;

use crate::ir::{Ir, Op, Sharding};
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::model::{LayerKind, ModelSpec};
use moec_runtime::schedule::{DieProgram, Placement, Schedule, SCHEDULE_VERSION};
use moec_runtime::workload::WorkloadSpec;
use program::program;

/// Lowers a fully placed IR. Fails (with a message naming the node) if
/// something the schedule needs is not placed.
pub fn lower(ir: &Ir, model: &ModelSpec, machine: &Machine, workload: &WorkloadSpec) -> Result<Schedule, String> {
    let (placement, unfused) = placement(ir, model, workload)?;
    let (migrations, broadcasts) = moves::lower_moves(ir, model)?;
    let tp = !placement.attention_groups.is_empty();
    let domains = !placement.token_domains.is_empty();
    let programs = (0..machine.die_count())
        .map(|d| {
            let die = DieId(d);
            let instrs = if machine.is_alive(die) {
                program(model, tp, domains, &unfused, &ir.overlap)
            } else {
                Vec::new()
            };
            DieProgram { die, instrs }
        })
        .collect();
    let schedule = Schedule {
        version: SCHEDULE_VERSION,
        plan: ir.header.plan.clone(),
        passes: ir.header.passes.clone(),
        machine: machine.spec().clone(),
        model: model.clone(),
        workload: workload.clone(),
        placement,
        programs,
        migrations,
        broadcasts,
        micro_batches: ir.overlap.micro_batches(),
        // The IR marks dense layers 0; a schedule counts them one chunk.
        chunks: ir.overlap.chunks().iter().map(|&d| d.max(1)).collect(),
        transport: ir.transport,
        capacity_factor: ir.capacity_factor,
    };
    schedule
        .validate()
        .map_err(|e| format!("lowering produced an invalid schedule: {e}"))?;
    Ok(schedule)
}

/// Expert replicas (or split copies) per layer from the `Expert` nodes;
/// sequence homes from the attention nodes' dies; per layer, whether its
/// experts launch one kernel per part (any of its experts unfused).
fn placement(ir: &Ir, model: &ModelSpec, workload: &WorkloadSpec) -> Result<(Placement, Vec<bool>), String> {
    let experts_per_layer = model.moe.as_ref().map_or(0, |m| m.experts as usize);
    let mut experts: Vec<Vec<Vec<DieId>>> = (0..model.layers)
        .map(|l| {
            if model.layer_kind(l) == LayerKind::Moe {
                vec![Vec::new(); experts_per_layer]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut expert_columns: Vec<Vec<Vec<u64>>> = vec![Vec::new(); model.layers as usize];
    let mut unfused = vec![false; model.layers as usize];
    let mut attention: Option<(Vec<DieId>, Sharding)> = None;
    let mut token_domains: Vec<Vec<DieId>> = Vec::new();
    for (i, n) in ir.nodes() {
        match (&n.op, n.layer) {
            (Op::Expert { expert, .. }, Some(layer)) => {
                let slot = experts
                    .get_mut(layer.0 as usize)
                    .and_then(|l| l.get_mut(expert.0 as usize))
                    .ok_or_else(|| {
                        format!(
                            "%{} is expert e{} of layer {}, which the model does not have",
                            i.index(),
                            expert.0,
                            layer.0
                        )
                    })?;
                if n.ann.dies.is_empty() {
                    return Err(format!(
                        "%{} (expert e{} of layer {}) is not placed",
                        i.index(),
                        expert.0,
                        layer.0
                    ));
                }
                *slot = n.ann.dies.clone();
                if !n.ann.columns.is_empty() {
                    let columns = &mut expert_columns[layer.0 as usize];
                    columns.resize(experts_per_layer, Vec::new());
                    columns[expert.0 as usize] = n.ann.columns.clone();
                }
                if n.ann.unfused {
                    unfused[layer.0 as usize] = true;
                }
            }
            (Op::Attention { .. }, _) if attention.is_none() => attention = Some((n.ann.dies.clone(), n.ann.sharding)),
            (Op::Dispatch { .. }, _) if token_domains.is_empty() => {
                if let Sharding::Domains(k) = n.ann.sharding {
                    token_domains = n.ann.dies.chunks(k.max(1) as usize).map(<[DieId]>::to_vec).collect();
                }
            }
            _ => {}
        }
    }
    let (homes, sharding) = attention
        .filter(|(d, _)| !d.is_empty())
        .ok_or("attention is not placed")?;
    let attention_groups = match sharding {
        Sharding::Tp(k) if k > 1 => homes.chunks(k as usize).map(<[DieId]>::to_vec).collect(),
        Sharding::Whole | Sharding::Tp(_) => Vec::new(),
        other => return Err(format!("attention cannot be lowered with sharding {other:?}")),
    };
    // Contiguous blocks: sequence s on the (s * n / batch)-th attention die.
    let n = homes.len() as u64;
    let sequences = (0..workload.batch)
        .map(|s| homes[(s * n / workload.batch.max(1)) as usize])
        .collect();
    if expert_columns.iter().all(Vec::is_empty) {
        expert_columns.clear();
    }
    let placement = Placement {
        experts,
        expert_columns,
        sequences,
        attention_groups,
        token_domains,
        balanced: Vec::new(),
        relay_parts: ir.overlap.relays(),
    };
    Ok((placement, unfused))
}
