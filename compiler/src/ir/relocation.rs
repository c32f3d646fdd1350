//! Expert weights that move while the run goes on: what the migration
//! passes insert as `Migrate` and `Replicate` nodes.
//!
//! A node of either kind takes its layer's expert node as input (the edge
//! carries the expert's weights) and says where the weights go, how many
//! bytes, when (its [`Timing`], in steps of the run) and how they travel
//! ([`Travel`]): all at once with every die stopped, in legs over the links
//! a phase leaves cold, or down a broadcast tree during attention. Lowering
//! cuts them into the schedule's chunks (`moec_runtime::schedule::migration`).
//! The node holds no memory of its own: a replica lives in a shadow slot
//! the pass reserved (`Ir::shadow_slots`) or in a slot its move freed.

use super::ExpertId;
use moec_runtime::machine::DieId;
pub use moec_runtime::schedule::Phase;
use moec_runtime::units::Bytes;
use serde::Serialize;

/// One expert's weights moving.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightMove {
    pub expert: ExpertId,
    /// The die whose copy is sent.
    pub from: DieId,
    /// Where copies land: one die, or every die a broadcast reaches.
    pub to: Vec<DieId>,
    pub bytes: Bytes,
    pub timing: Timing,
    pub travel: Travel,
}

/// An expert's copy dropped at a step (invasive rebalancing hands its slot
/// to another expert). Nothing travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Eviction {
    pub expert: ExpertId,
    /// The die whose copy is dropped.
    pub die: DieId,
    /// The first step the copy no longer serves.
    pub step: u64,
}

/// When a move happens, in steps of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Timing {
    /// The first step whose windows carry its bytes.
    pub start: u64,
    /// The first step served from the new copy (for a stop-the-world move
    /// the step it stops, so `start`).
    pub effective: u64,
    /// The first step no longer served by it (a shadow replica evicted, a
    /// broadcast over); `None`: kept to the end.
    pub until: Option<u64>,
}

/// One leg of a move: from one die to another along the machine's route,
/// in windows of one phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub from: DieId,
    pub to: DieId,
    pub phase: Phase,
}

/// How the bytes travel.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "travel")]
pub enum Travel {
    /// All at once before the step, with every die stopped.
    StopTheWorld,
    /// In `chunk`-byte pieces, each crossing the legs in order, one window
    /// per leg (MoEntwine's local / global / local steps).
    Legs { legs: Vec<Leg>, chunk: Bytes },
    /// Down a tree of `(parent, child)` edges in `pieces` pipelined pieces,
    /// during the layer's attention of every step it is on.
    Tree { edges: Vec<(DieId, DieId)>, pieces: u32 },
}
