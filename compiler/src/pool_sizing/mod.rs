//! Sizing disaggregated pools (`moec pools`): how many dies attention gets
//! and how many the experts, by MegaScale-Infer's plan search on the
//! simulator (`megascale.rs`) or DisagMoE's roofline split (`disagmoe.rs`);
//! on a wafer, which region shapes the pools take (`wafer.rs`).

pub mod disagmoe;
pub mod megascale;
pub mod wafer;

use crate::ir::{Form, FormKind, Pools};
use crate::passes::{MigrationPolicy, OverlapChoice, PlainOverlap};
use crate::sema::{AttentionParallel, ParallelChoice, PlacementChoice, Plan};
use moec_runtime::workload::{Slo, SloMetric};

/// A target no step misses: for probes that are only timed.
pub(crate) const TIMED: Slo = Slo {
    metric: SloMetric::Tpot,
    target_s: f64::MAX,
};

/// The shape of a disaggregated candidate: the placement of its experts,
/// attention's and the experts' tensor-parallel sizes, its micro-batches.
pub(crate) struct Shape {
    pub placement: PlacementChoice,
    pub tp_attention: u32,
    pub tp_experts: u32,
    pub micro_batches: u32,
}

/// `base` (its model, machine, workload and transfers) disaggregated on
/// `pools` in `shape`, named `name`, without migration.
pub(crate) fn disaggregated(base: &Plan, name: String, pools: Pools, shape: Shape) -> Plan {
    let Shape {
        placement,
        tp_attention,
        tp_experts,
        micro_batches,
    } = shape;
    Plan {
        name,
        placement,
        redundant_experts: None,
        attention: if tp_attention > 1 {
            AttentionParallel::TensorParallel(tp_attention)
        } else {
            AttentionParallel::DataParallel
        },
        parallel: ParallelChoice::Fixed(if tp_experts > 1 {
            Form {
                kind: FormKind::Tp(tp_experts),
                fused: true,
            }
        } else {
            Form::EP
        }),
        migration: MigrationPolicy::None,
        overlap: if micro_batches > 1 {
            OverlapChoice::MicroBatches(micro_batches)
        } else {
            OverlapChoice::Fixed(PlainOverlap::None)
        },
        pools: Some(pools),
        ..base.clone()
    }
}
