//! Die identity: the dense number every die gets, and how it maps to nodes.
//!
//! Dies are numbered before any switch so a die's id doubles as its node id
//! and per-die tables are plain vectors.

use super::node::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A die (or GPU). On meshes `y * global_width + x`; on a switch the port
/// `0..ports`; on a cluster `node * per_node + local`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DieId(pub u32);

impl DieId {
    /// The node this die is in the link graph (dies are nodes `0..die_count`).
    pub fn node(self) -> NodeId {
        NodeId(self.0)
    }

    /// Position in per-die tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for DieId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "die {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_die_is_the_node_with_the_same_number() {
        assert_eq!(DieId(42).node(), NodeId(42));
        assert_eq!(DieId(42).index(), 42);
        assert_eq!(DieId(7).to_string(), "die 7");
    }
}
