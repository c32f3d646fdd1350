//! Topology geometry and wiring: how many dies a topology has, where each
//! mesh die sits, how dies are named, and which nodes and links it builds.
//!
//! Everything is emitted in a fixed order (dies by id, then switches; links
//! by their first end's id) so building the same spec twice gives the same
//! machine.

use super::die::DieId;
use super::error::MachineError;
use super::link::{Link, LinkId, LinkKind};
use super::node::{Node, NodeId};
use super::spec::{Coord, Edge, LinkSpec, MachineSpec, Topology};

/// Most dies a machine may have; keeps every table and id within `u32`.
pub const MAX_DIES: u32 = 1 << 20;

/// Where a breadth-first detour looks first, so detours are deterministic.
pub const NEIGHBOUR_ORDER: [Edge; 4] = [Edge::East, Edge::West, Edge::South, Edge::North];

impl Topology {
    /// "mesh", "switch" or "cluster", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Topology::Mesh { .. } => "mesh",
            Topology::Switch { .. } => "switch",
            Topology::Cluster { .. } => "cluster",
        }
    }

    /// Dies the topology describes, checked: no dimension 0 and at most
    /// `MAX_DIES` in all.
    pub fn die_count(&self) -> Result<u32, MachineError> {
        let dimensions: &[(&'static str, u32)] = match *self {
            Topology::Mesh {
                width,
                height,
                wafers_x,
                wafers_y,
            } => &[
                ("width", width),
                ("height", height),
                ("wafers_x", wafers_x),
                ("wafers_y", wafers_y),
            ],
            Topology::Switch { ports } => &[("ports", ports)],
            Topology::Cluster { nodes, per_node } => &[("nodes", nodes), ("per_node", per_node)],
        };
        if let Some((dimension, _)) = dimensions.iter().find(|(_, n)| *n == 0) {
            return Err(MachineError::ZeroDimension {
                topology: self.kind(),
                dimension,
            });
        }
        // Four u32 factors always fit in u128.
        let count: u128 = dimensions.iter().map(|(_, n)| u128::from(*n)).product();
        u32::try_from(count)
            .ok()
            .filter(|&n| n <= MAX_DIES)
            .ok_or(MachineError::TooManyDies { count })
    }
}

/// The global grid of a mesh: its size and the size of one wafer in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// Dies across the whole grid.
    pub width: u32,
    /// Dies down the whole grid.
    pub height: u32,
    /// Dies across one wafer.
    pub wafer_width: u32,
    /// Dies down one wafer.
    pub wafer_height: u32,
}

impl Grid {
    /// The grid of a mesh topology; `None` for switches and clusters. Sizes
    /// saturate, so call it only on a topology whose `die_count` passed.
    pub fn of(topology: &Topology) -> Option<Grid> {
        match *topology {
            Topology::Mesh {
                width,
                height,
                wafers_x,
                wafers_y,
            } => Some(Grid {
                width: width.saturating_mul(wafers_x),
                height: height.saturating_mul(wafers_y),
                wafer_width: width,
                wafer_height: height,
            }),
            _ => None,
        }
    }

    /// Whether `c` is on the grid.
    pub fn contains(&self, c: Coord) -> bool {
        c.x < self.width && c.y < self.height
    }

    /// Where die `die` sits, if it is on the grid.
    pub fn coord(&self, die: DieId) -> Option<Coord> {
        let c = Coord::new(die.0.checked_rem(self.width)?, die.0.checked_div(self.width)?);
        self.contains(c).then_some(c)
    }

    /// The die at `c` (row-major id), if `c` is on the grid.
    pub fn die_at(&self, c: Coord) -> Option<DieId> {
        if !self.contains(c) {
            return None;
        }
        c.y.checked_mul(self.width)?.checked_add(c.x).map(DieId)
    }

    /// Which wafer `c` is on, as (column, row) of wafers.
    pub fn wafer_of(&self, c: Coord) -> (u32, u32) {
        (c.x / self.wafer_width.max(1), c.y / self.wafer_height.max(1))
    }

    /// The neighbour one step toward `edge`, if there is one.
    pub fn step(&self, c: Coord, edge: Edge) -> Option<Coord> {
        let next = match edge {
            Edge::North => Coord::new(c.x, c.y.checked_sub(1)?),
            Edge::South => Coord::new(c.x, c.y.checked_add(1)?),
            Edge::West => Coord::new(c.x.checked_sub(1)?, c.y),
            Edge::East => Coord::new(c.x.checked_add(1)?, c.y),
        };
        self.contains(next).then_some(next)
    }

    /// Whether `c` lies on `edge` of the global grid.
    pub fn on_edge(&self, c: Coord, edge: Edge) -> bool {
        match edge {
            Edge::North => c.y == 0,
            Edge::South => c.y.checked_add(1) == Some(self.height),
            Edge::West => c.x == 0,
            Edge::East => c.x.checked_add(1) == Some(self.width),
        }
    }
}

/// A die's short name: "(3, 4)" on meshes, "gpu17" on a switch, "n1.gpu3" on
/// a cluster.
pub fn die_label(topology: &Topology, die: DieId) -> String {
    match *topology {
        Topology::Mesh { .. } => match Grid::of(topology).and_then(|g| g.coord(die)) {
            Some(c) => c.to_string(),
            None => format!("{die} (not on this machine)"),
        },
        Topology::Switch { .. } => format!("gpu{}", die.0),
        Topology::Cluster { per_node, .. } => match (die.0.checked_div(per_node), die.0.checked_rem(per_node)) {
            (Some(node), Some(local)) => format!("n{node}.gpu{local}"),
            _ => format!("gpu{}", die.0),
        },
    }
}

/// A die as error messages name it: "die (3, 4)" on meshes, the label
/// elsewhere (a GPU label already says what it is).
pub(crate) fn die_phrase(topology: &Topology, die: DieId) -> String {
    match topology {
        Topology::Mesh { .. } => format!("die {}", die_label(topology, die)),
        _ => die_label(topology, die),
    }
}

/// The nodes and links a topology builds, all links alive.
pub(crate) struct Wiring {
    /// Dies `0..die_count`, then switches.
    pub nodes: Vec<Node>,
    /// Both directions of every connection, the pair adjacent.
    pub links: Vec<Link>,
}

impl Wiring {
    /// Adds both directions between `a` and `b`.
    fn connect(&mut self, a: NodeId, b: NodeId, spec: LinkSpec, kind: LinkKind) {
        for (from, to) in [(a, b), (b, a)] {
            // Ids fit: at most 4 links per die and MAX_DIES dies.
            let id = LinkId(self.links.len() as u32);
            self.links.push(Link {
                id,
                from,
                to,
                spec,
                kind,
                alive: true,
            });
        }
    }
}

/// Builds the nodes and links of `spec`'s topology, which has `die_count`
/// dies (already checked).
pub(crate) fn wire(spec: &MachineSpec, die_count: u32) -> Wiring {
    let mut wiring = Wiring {
        nodes: (0..die_count).map(|d| Node::Die(DieId(d))).collect(),
        links: Vec::new(),
    };
    match spec.topology {
        Topology::Mesh { .. } => {
            if let Some(grid) = Grid::of(&spec.topology) {
                wire_mesh(&mut wiring, spec, &grid);
            }
        }
        Topology::Switch { .. } => {
            let switch = NodeId(die_count);
            wiring.nodes.push(Node::RackSwitch);
            for gpu in 0..die_count {
                wiring.connect(
                    DieId(gpu).node(),
                    switch,
                    spec.port_of(DieId(gpu)),
                    LinkKind::SwitchPort,
                );
            }
        }
        Topology::Cluster { nodes, per_node } => {
            wiring.nodes.extend((0..nodes).map(Node::NodeSwitch));
            wiring.nodes.push(Node::Spine);
            let spine = NodeId(die_count + nodes);
            for gpu in 0..die_count {
                let hub = NodeId(die_count + gpu / per_node.max(1));
                let die = DieId(gpu);
                wiring.connect(die.node(), hub, spec.port_of(die), LinkKind::IntraNode);
                wiring.connect(die.node(), spine, spec.nic_of(die), LinkKind::InterNode);
            }
        }
    }
    wiring
}

/// Joins every die to its east and south neighbours; a pair on different
/// wafers gets the inter-wafer link.
fn wire_mesh(wiring: &mut Wiring, spec: &MachineSpec, grid: &Grid) {
    let cross = spec.inter_wafer_link.unwrap_or(spec.link);
    for y in 0..grid.height {
        for x in 0..grid.width {
            let here = Coord::new(x, y);
            for edge in [Edge::East, Edge::South] {
                let Some(there) = grid.step(here, edge) else {
                    continue;
                };
                let (Some(a), Some(b)) = (grid.die_at(here), grid.die_at(there)) else {
                    continue;
                };
                let (link, kind) = if grid.wafer_of(here) == grid.wafer_of(there) {
                    (spec.link, LinkKind::Mesh)
                } else {
                    (cross, LinkKind::InterWafer)
                };
                wiring.connect(a.node(), b.node(), link, kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::{spec, LINK};
    use crate::machine::Machine;
    use crate::units::{BytesPerSec, Seconds};

    #[test]
    fn exactly_the_links_crossing_a_wafer_boundary_are_inter_wafer() {
        let cross = LinkSpec {
            bandwidth: BytesPerSec(2e11),
            latency: Seconds(4e-8),
        };
        let mut s = spec(Topology::Mesh {
            width: 4,
            height: 4,
            wafers_x: 2,
            wafers_y: 2,
        });
        s.inter_wafer_link = Some(cross);
        let m = Machine::build(s).expect("valid mesh");
        let mut inter_wafer = 0;
        for link in m.links() {
            let (a, b) = (
                m.coord(DieId(link.from.0)).expect("die"),
                m.coord(DieId(link.to.0)).expect("die"),
            );
            assert_eq!(a.manhattan(b), 1);
            let crosses = (a.x.min(b.x) == 3 && a.x.max(b.x) == 4) || (a.y.min(b.y) == 3 && a.y.max(b.y) == 4);
            if crosses {
                inter_wafer += 1;
                assert_eq!((link.kind, link.spec), (LinkKind::InterWafer, cross));
            } else {
                assert_eq!((link.kind, link.spec), (LinkKind::Mesh, LINK));
            }
        }
        // 8 rows cross x = 4 and 8 columns cross y = 4, both directions each.
        assert_eq!(inter_wafer, 32);
    }

    #[test]
    fn every_connection_is_two_opposite_links() {
        for topology in [
            Topology::Mesh {
                width: 3,
                height: 2,
                wafers_x: 2,
                wafers_y: 1,
            },
            Topology::Switch { ports: 5 },
            Topology::Cluster { nodes: 3, per_node: 2 },
        ] {
            let m = Machine::build(spec(topology)).expect("valid machine");
            let links = m.links();
            assert_eq!(links.len() % 2, 0);
            for pair in links.chunks(2) {
                assert_eq!((pair[0].from, pair[0].to), (pair[1].to, pair[1].from));
                assert_eq!(pair[0].kind, pair[1].kind);
            }
        }
        let rack = Machine::build(spec(Topology::Switch { ports: 5 })).expect("valid switch");
        assert_eq!((rack.nodes().len(), rack.links().len()), (6, 10));
        let cluster = Machine::build(spec(Topology::Cluster { nodes: 3, per_node: 2 })).expect("valid cluster");
        assert_eq!(
            cluster.nodes()[6..],
            [
                Node::NodeSwitch(0),
                Node::NodeSwitch(1),
                Node::NodeSwitch(2),
                Node::Spine
            ]
        );
        assert_eq!(cluster.links().len(), 6 * 4);
    }

    #[test]
    fn die_count_rejects_empty_and_oversized_topologies() {
        let empty = Topology::Mesh {
            width: 4,
            height: 4,
            wafers_x: 0,
            wafers_y: 1,
        };
        assert_eq!(
            empty.die_count(),
            Err(MachineError::ZeroDimension {
                topology: "mesh",
                dimension: "wafers_x"
            })
        );
        let huge = Topology::Mesh {
            width: u32::MAX,
            height: u32::MAX,
            wafers_x: u32::MAX,
            wafers_y: u32::MAX,
        };
        assert!(matches!(huge.die_count(), Err(MachineError::TooManyDies { count }) if count > u128::from(u64::MAX)));
        assert_eq!(
            Topology::Switch { ports: MAX_DIES + 1 }.die_count(),
            Err(MachineError::TooManyDies { count: 1_048_577 })
        );
        assert_eq!(
            Topology::Cluster {
                nodes: 1024,
                per_node: 1024
            }
            .die_count(),
            Ok(MAX_DIES)
        );
    }

    #[test]
    fn grid_numbers_dies_row_major_over_the_global_grid() {
        let grid = Grid::of(&Topology::Mesh {
            width: 4,
            height: 3,
            wafers_x: 2,
            wafers_y: 2,
        })
        .expect("a mesh has a grid");
        assert_eq!((grid.width, grid.height), (8, 6));
        assert_eq!(grid.die_at(Coord::new(5, 4)), Some(DieId(37)));
        assert_eq!(grid.coord(DieId(37)), Some(Coord::new(5, 4)));
        assert_eq!(grid.coord(DieId(48)), None);
        assert_eq!(grid.die_at(Coord::new(8, 0)), None);
        assert_eq!(grid.wafer_of(Coord::new(5, 4)), (1, 1));
        assert_eq!(grid.step(Coord::new(0, 0), Edge::North), None);
        assert_eq!(grid.step(Coord::new(7, 0), Edge::East), None);
        assert_eq!(grid.step(Coord::new(7, 0), Edge::South), Some(Coord::new(7, 1)));
    }

    #[test]
    fn labels_follow_the_topology() {
        let mesh = Topology::Mesh {
            width: 8,
            height: 8,
            wafers_x: 1,
            wafers_y: 1,
        };
        assert_eq!(die_label(&mesh, DieId(35)), "(3, 4)");
        assert_eq!(die_phrase(&mesh, DieId(35)), "die (3, 4)");
        assert_eq!(die_label(&Topology::Switch { ports: 72 }, DieId(17)), "gpu17");
        let cluster = Topology::Cluster { nodes: 4, per_node: 8 };
        assert_eq!(die_label(&cluster, DieId(11)), "n1.gpu3");
        assert_eq!(die_phrase(&cluster, DieId(11)), "n1.gpu3");
    }
}
