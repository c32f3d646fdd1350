//! The machine model: a validated machine built from a `MachineSpec`, with
//! its dies, switches, directional links and the defects that killed some of
//! them.
//!
//! `Machine::build` is the only way to get a `Machine`, so everything else
//! may rely on the spec having passed its checks.

mod adjacency;
mod defects;
mod die;
mod error;
mod link;
mod node;
mod routing;
mod spec;
mod topology;

pub use die::DieId;
pub use error::{DefectEntry, MachineError, RouteError};
pub use link::{Link, LinkId, LinkKind};
pub use node::{Node, NodeId};
pub use routing::Route;
pub use spec::{
    Coord, Defects, DieKind, DieRef, DieSpec, Edge, IoSpec, LinkSpec, MachineSpec, MessageCosts, RouterSpec,
    RoutingPolicy, Topology, MAX_MACHINE_TIME_S,
};
pub use topology::{Grid, MAX_DIES, NEIGHBOUR_ORDER};

use crate::units::Bytes;
use adjacency::Adjacency;

/// A machine ready to compile for: every node and link, which are alive, and
/// how they connect.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    spec: MachineSpec,
    die_count: u32,
    grid: Option<Grid>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    adjacency: Adjacency,
    /// Per die, false when the defects list it.
    alive: Vec<bool>,
}

impl Machine {
    /// Checks `spec` and builds the machine it describes, with its defects
    /// applied.
    pub fn build(spec: MachineSpec) -> Result<Machine, MachineError> {
        spec.check_quantities()?;
        let die_count = spec.topology.die_count()?;
        let mut kind_of: std::collections::BTreeMap<u32, &str> = Default::default();
        for k in &spec.kinds {
            for d in &k.dies {
                let bad = |also: Option<&str>| MachineError::BadKindDie {
                    kind: k.name.clone(),
                    die: d.0,
                    dies: die_count,
                    also: also.map(str::to_string),
                };
                if d.0 >= die_count {
                    return Err(bad(None));
                }
                if let Some(other) = kind_of.insert(d.0, &k.name) {
                    return Err(bad(Some(other)));
                }
            }
            // `die_of` looks dies up by bisection.
            if !k.dies.windows(2).all(|w| w[0] < w[1]) {
                return Err(MachineError::KindDiesUnsorted { kind: k.name.clone() });
            }
        }
        let grid = Grid::of(&spec.topology);
        if let Some(io) = &spec.io {
            if grid.is_none() {
                return Err(MachineError::IoOffMesh {
                    topology: spec.topology.kind(),
                });
            }
            if io.edges.is_empty() {
                return Err(MachineError::IoWithoutEdges);
            }
        }
        let dead = defects::resolve(
            &spec.topology,
            die_count,
            &spec.defects.dead_dies,
            &spec.defects.dead_links,
        )?;

        let topology::Wiring { nodes, mut links } = topology::wire(&spec, die_count);
        let mut alive = vec![true; die_count as usize];
        for die in &dead.dies {
            alive[die.index()] = false;
        }
        // Nodes past the dies are switches, which defects cannot name.
        let die_alive = |node: NodeId| alive.get(node.index()).copied().unwrap_or(true);
        for link in &mut links {
            let pair = (DieId(link.from.0.min(link.to.0)), DieId(link.from.0.max(link.to.0)));
            let cut = dead.links.binary_search(&pair).is_ok();
            link.alive = !cut && die_alive(link.from) && die_alive(link.to);
        }
        let adjacency = Adjacency::new(nodes.len(), &links);

        let machine = Machine {
            spec,
            die_count,
            grid,
            nodes,
            links,
            adjacency,
            alive,
        };
        defects::check_usable(&machine)?;
        Ok(machine)
    }

    /// The description the machine was built from.
    pub fn spec(&self) -> &MachineSpec {
        &self.spec
    }

    /// Every die, dead ones included.
    pub fn die_count(&self) -> u32 {
        self.die_count
    }

    /// Alive dies, ascending id.
    pub fn alive_dies(&self) -> Vec<DieId> {
        (0..self.die_count).map(DieId).filter(|&d| self.is_alive(d)).collect()
    }

    /// Whether `die` exists and is alive.
    pub fn is_alive(&self, die: DieId) -> bool {
        self.alive.get(die.index()).copied().unwrap_or(false)
    }

    /// The mesh grid; `None` on switches and clusters.
    pub fn grid(&self) -> Option<Grid> {
        self.grid
    }

    /// Where `die` sits on the global mesh grid (meshes only).
    pub fn coord(&self, die: DieId) -> Option<Coord> {
        self.grid?.coord(die)
    }

    /// The die at `c` on the global mesh grid (meshes only).
    pub fn die_at(&self, c: Coord) -> Option<DieId> {
        self.grid?.die_at(c)
    }

    /// Which wafer `die` is on, as (column, row) of wafers (meshes only).
    pub fn wafer_of(&self, die: DieId) -> Option<(u32, u32)> {
        let grid = self.grid?;
        Some(grid.wafer_of(grid.coord(die)?))
    }

    /// The serving node a die belongs to, in the sense of DeepSeek's
    /// hierarchical EPLB (a level whose inside is much faster than between):
    /// a cluster's node, a multi-wafer mesh's wafer (row-major), else 0.
    pub fn node_of(&self, die: DieId) -> u32 {
        match self.spec.topology {
            Topology::Cluster { per_node, .. } => die.0 / per_node.max(1),
            Topology::Mesh { wafers_x, .. } => self.wafer_of(die).map_or(0, |(x, y)| y * wafers_x + x),
            Topology::Switch { .. } => 0,
        }
    }

    /// The part die `d` is (its kind's, else the machine's `die`).
    pub fn die_spec(&self, d: DieId) -> &DieSpec {
        self.spec.die_of(d)
    }

    /// What the alive dies cost an hour together, in dollars, when every
    /// one of them has a price.
    pub fn price_per_hour(&self) -> Option<f64> {
        self.alive_dies()
            .iter()
            .map(|&d| self.die_spec(d).price.filter(|p| p.is_finite() && *p > 0.0))
            .sum()
    }

    /// What the alive dies draw together, in watts, when every one of them
    /// says.
    pub fn power_w(&self) -> Option<f64> {
        self.alive_dies()
            .iter()
            .map(|&d| self.die_spec(d).power.filter(|p| p.is_finite() && *p > 0.0))
            .sum()
    }

    /// Nodes in the sense of [`Machine::node_of`].
    pub fn node_count(&self) -> u32 {
        match self.spec.topology {
            Topology::Cluster { nodes, .. } => nodes,
            Topology::Mesh { wafers_x, wafers_y, .. } => wafers_x * wafers_y,
            Topology::Switch { .. } => 1,
        }
    }

    /// The die's short name: "(3, 4)" on meshes, "gpu17" on a switch,
    /// "n1.gpu3" on a cluster.
    pub fn die_label(&self, die: DieId) -> String {
        if die.0 >= self.die_count {
            return format!("{die} (not on this machine)");
        }
        topology::die_label(&self.spec.topology, die)
    }

    /// Every node: dies `0..die_count`, then switches.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every directional link, alive or not, in id order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The link with id `id`.
    ///
    /// # Panics
    ///
    /// If `id` did not come from this machine; use `links().get(..)` for ids
    /// of unknown origin.
    pub fn link(&self, id: LinkId) -> &Link {
        &self.links[id.index()]
    }

    /// The link from `from` straight to `to`, alive or not, if one exists.
    pub fn link_between(&self, from: NodeId, to: NodeId) -> Option<LinkId> {
        self.adjacency.between(&self.links, from, to)
    }

    /// Alive dies on the io edges, ascending id; empty without io or off
    /// meshes.
    pub fn io_dies(&self) -> Vec<DieId> {
        let (Some(io), Some(grid)) = (&self.spec.io, self.grid) else {
            return Vec::new();
        };
        self.alive_dies()
            .into_iter()
            .filter(|&d| {
                grid.coord(d)
                    .is_some_and(|c| io.edges.iter().any(|&e| grid.on_edge(c, e)))
            })
            .collect()
    }

    /// Memory over the alive dies.
    pub fn total_memory(&self) -> Bytes {
        self.spec.die.memory * self.alive_dies().len() as u64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::units::{BytesPerSec, FlopsPerSec, Seconds};

    /// The on-wafer link every test mesh uses.
    pub(crate) const LINK: LinkSpec = LinkSpec {
        bandwidth: BytesPerSec(1e12),
        latency: Seconds(5e-9),
    };

    /// A defect-free spec for `topology`, XY routing, no io.
    pub(crate) fn spec(topology: Topology) -> MachineSpec {
        MachineSpec {
            name: "test".into(),
            topology,
            kinds: Vec::new(),
            messages: Default::default(),
            die: DieSpec {
                compute: FlopsPerSec(1e15),
                memory: Bytes(48 << 30),
                memory_bw: BytesPerSec(2e12),
                sram: Bytes(40 << 20),
                launch_overhead: Seconds(2e-6),
                price: None,
                power: None,
            },
            link: LINK,
            inter_wafer_link: None,
            inter_node_link: None,
            routing: RoutingPolicy::Xy,
            router: Default::default(),
            io: None,
            defects: Defects::default(),
        }
    }

    /// One wafer of `width` x `height` dies.
    pub(crate) fn mesh(width: u32, height: u32) -> MachineSpec {
        spec(Topology::Mesh {
            width,
            height,
            wafers_x: 1,
            wafers_y: 1,
        })
    }

    pub(crate) fn at(x: u32, y: u32) -> DieRef {
        DieRef::At(Coord::new(x, y))
    }

    #[test]
    fn building_twice_gives_identical_machines() {
        let mut s = spec(Topology::Mesh {
            width: 4,
            height: 4,
            wafers_x: 2,
            wafers_y: 2,
        });
        s.defects.dead_dies.push(at(5, 5));
        s.defects.dead_links.push((at(0, 0), at(0, 1)));
        let (a, b) = (Machine::build(s.clone()), Machine::build(s));
        let (a, b) = (a.expect("valid mesh"), b.expect("valid mesh"));
        assert_eq!(a.links(), b.links());
        assert_eq!(a, b);
        // 8x8 grid: 2 * 8 * 7 connections, two links each.
        assert_eq!(a.links().len(), 2 * 2 * 8 * 7);
        assert!(a.links().iter().enumerate().all(|(i, l)| l.id == LinkId(i as u32)));
    }

    #[test]
    fn dead_dies_leave_the_alive_set_and_the_memory_total() {
        let mut s = mesh(4, 4);
        s.defects.dead_dies = vec![at(1, 1), at(3, 0)];
        let m = Machine::build(s).expect("valid mesh");
        assert_eq!(m.die_count(), 16);
        assert_eq!(m.alive_dies().len(), 14);
        assert!(!m.alive_dies().contains(&DieId(5)));
        assert!(!m.is_alive(DieId(3)) && m.is_alive(DieId(4)) && !m.is_alive(DieId(16)));
        assert_eq!(m.total_memory(), Bytes(14 * (48 << 30)));
        // Each dead die takes its links in both directions with it.
        let five = DieId(5).node();
        for l in m.links() {
            assert_eq!(
                l.alive,
                l.from != five && l.to != five && l.from != NodeId(3) && l.to != NodeId(3)
            );
        }
    }

    #[test]
    fn coordinates_wafers_and_labels() {
        let m = Machine::build(spec(Topology::Mesh {
            width: 4,
            height: 4,
            wafers_x: 2,
            wafers_y: 2,
        }))
        .expect("valid mesh");
        let d = m.die_at(Coord::new(5, 2)).expect("on the grid");
        assert_eq!(d, DieId(2 * 8 + 5));
        assert_eq!(m.coord(d), Some(Coord::new(5, 2)));
        assert_eq!(m.wafer_of(d), Some((1, 0)));
        assert_eq!(m.die_label(DieId(3 + 4 * 8)), "(3, 4)");
        assert_eq!(m.die_at(Coord::new(8, 0)), None);

        let rack = Machine::build(spec(Topology::Switch { ports: 72 })).expect("valid switch");
        assert_eq!(rack.die_label(DieId(17)), "gpu17");
        assert_eq!(rack.coord(DieId(17)), None);
        assert_eq!(rack.wafer_of(DieId(17)), None);
        let cluster = Machine::build(spec(Topology::Cluster { nodes: 4, per_node: 8 })).expect("valid cluster");
        assert_eq!(cluster.die_label(DieId(11)), "n1.gpu3");
        assert_eq!(cluster.die_label(DieId(0)), "n0.gpu0");
        assert_eq!(cluster.die_label(DieId(40)), "die 40 (not on this machine)");
    }

    #[test]
    fn io_dies_are_the_alive_dies_on_the_io_edges() {
        let mut s = mesh(4, 3);
        s.io = Some(IoSpec {
            edges: vec![Edge::North, Edge::West],
            bandwidth: BytesPerSec(1e11),
            host_memory: Bytes(1 << 40),
        });
        s.defects.dead_dies = vec![at(2, 0)];
        let m = Machine::build(s.clone()).expect("valid mesh");
        let coords: Vec<Coord> = m.io_dies().iter().filter_map(|&d| m.coord(d)).collect();
        assert_eq!(
            coords,
            [(0, 0), (1, 0), (3, 0), (0, 1), (0, 2)].map(|(x, y)| Coord::new(x, y))
        );

        s.io = Some(IoSpec {
            edges: vec![Edge::South, Edge::East],
            bandwidth: BytesPerSec(1e11),
            host_memory: Bytes(0),
        });
        let m = Machine::build(s).expect("valid mesh");
        let coords: Vec<Coord> = m.io_dies().iter().filter_map(|&d| m.coord(d)).collect();
        assert_eq!(
            coords,
            [(3, 0), (3, 1), (0, 2), (1, 2), (2, 2), (3, 2)].map(|(x, y)| Coord::new(x, y))
        );

        let no_io = Machine::build(spec(Topology::Switch { ports: 8 })).expect("valid switch");
        assert!(no_io.io_dies().is_empty());
    }

    #[test]
    fn io_must_be_on_a_mesh_with_an_edge_and_a_live_die_on_it() {
        let io = IoSpec {
            edges: vec![Edge::West],
            bandwidth: BytesPerSec(1e11),
            host_memory: Bytes(1 << 40),
        };
        let mut s = spec(Topology::Cluster { nodes: 2, per_node: 4 });
        s.io = Some(io.clone());
        assert_eq!(Machine::build(s), Err(MachineError::IoOffMesh { topology: "cluster" }));

        let mut s = mesh(2, 2);
        s.io = Some(IoSpec {
            edges: vec![],
            ..io.clone()
        });
        assert_eq!(Machine::build(s.clone()), Err(MachineError::IoWithoutEdges));

        s.io = Some(io);
        s.defects.dead_dies = vec![at(0, 0), at(0, 1)];
        let err = Machine::build(s).expect_err("io edge all dead");
        assert_eq!(
            err,
            MachineError::IoCutOff {
                edges: vec![Edge::West]
            }
        );
    }

    #[test]
    fn bad_quantities_and_sizes_are_rejected() {
        let mut s = mesh(2, 2);
        s.link.bandwidth = BytesPerSec(0.0);
        assert_eq!(
            Machine::build(s).map(|_| ()).map_err(|e| e.to_string()),
            Err("link bandwidth is 0, but must be a positive finite rate".to_string())
        );
        let mut s = mesh(2, 2);
        s.die.launch_overhead = Seconds(f64::NAN);
        assert!(matches!(
            Machine::build(s),
            Err(MachineError::BadQuantity {
                quantity: "die launch_overhead",
                ..
            })
        ));
        let s = spec(Topology::Mesh {
            width: 2048,
            height: 1024,
            wafers_x: 1,
            wafers_y: 1,
        });
        assert_eq!(Machine::build(s), Err(MachineError::TooManyDies { count: 2048 * 1024 }));
        let s = spec(Topology::Cluster { nodes: 4, per_node: 0 });
        let err = Machine::build(s).expect_err("zero-sized");
        assert_eq!(
            err.to_string(),
            "the cluster's per_node is 0; every dimension must be at least 1"
        );
    }
}
