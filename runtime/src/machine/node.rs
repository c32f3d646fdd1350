//! Nodes of the link graph: every die, then the switches that only forward.

use super::die::DieId;
use serde::{Deserialize, Serialize};

/// A vertex of the link graph. Dies are `0..die_count`; switches follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl NodeId {
    /// Position in per-node tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What sits at a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// A die that computes.
    Die(DieId),
    /// The one switch of a switch rack.
    RackSwitch,
    /// The switch inside cluster node `n`.
    NodeSwitch(u32),
    /// The cluster's spine, joining every GPU's NIC.
    Spine,
}
