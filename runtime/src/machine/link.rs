//! Links: one direction of a physical connection, with its speed, what kind
//! of wire it is, and whether defects left it working.

use super::node::NodeId;
use super::spec::LinkSpec;
use serde::{Deserialize, Serialize};

/// A link's position in `Machine::links`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkId(pub u32);

impl LinkId {
    /// Position in the link table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which wire a link is, so costs and reports can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LinkKind {
    /// Between neighbouring dies on one wafer.
    Mesh,
    /// Between neighbouring dies on different wafers.
    InterWafer,
    /// Between a GPU and its rack switch.
    SwitchPort,
    /// Between a GPU and its cluster node's switch.
    IntraNode,
    /// Between a GPU's NIC and the cluster spine.
    InterNode,
}

/// One direction of a physical connection; every connection is two links.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// This link's position in the machine's link table.
    pub id: LinkId,
    /// Sending end.
    pub from: NodeId,
    /// Receiving end.
    pub to: NodeId,
    /// Speed of this direction.
    pub spec: LinkSpec,
    /// Which wire it is.
    pub kind: LinkKind,
    /// False when the link, or a die at either end, is dead.
    pub alive: bool,
}
