//! The machine description: what the compiler's semantic analysis fills in
//! from a `machine` block, before anything is built or checked.
//!
//! These are plain data; `Machine::build` turns one into a validated machine.

use super::error::MachineError;
use crate::units::{Bytes, BytesPerSec, FlopsPerSec, Seconds};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest latency or overhead a machine may declare, seconds.
pub const MAX_MACHINE_TIME_S: f64 = 3600.0;

/// A whole machine as written: shape, parts and known defects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// The name the source gives the machine.
    pub name: String,
    /// How the dies are connected.
    pub topology: Topology,
    /// The part every die is, unless a kind claims it.
    pub die: DieSpec,
    /// Other kinds of die and the dies that are of each (H20 GPUs beside
    /// L40S ones, a wafer's regions); a die in none is `die`. Empty: every
    /// die is the same part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<DieKind>,
    /// Mesh links; on a switch each GPU's port; on a cluster the intra-node
    /// (NVLink) port.
    pub link: LinkSpec,
    /// Multi-wafer meshes: links that cross a wafer boundary (`None`: same as
    /// `link`).
    #[serde(default)]
    pub inter_wafer_link: Option<LinkSpec>,
    /// Clusters: each GPU's NIC to the spine (`None`: same as `link`).
    #[serde(default)]
    pub inter_node_link: Option<LinkSpec>,
    /// Dimension order on meshes; ignored elsewhere.
    pub routing: RoutingPolicy,
    /// What each die's router adds to the links: a fixed latency per
    /// transfer, an efficiency, injection and ejection ports.
    #[serde(default)]
    pub router: RouterSpec,
    /// Off-wafer host memory, if any.
    #[serde(default)]
    pub io: Option<IoSpec>,
    /// What posting one message of an all-to-all costs under each
    /// transport (`schedule::Transport`); plans that keep the `direct`
    /// transport pay none.
    #[serde(default, skip_serializing_if = "MessageCosts::is_default")]
    pub messages: MessageCosts,
    /// Dies and links known to be dead.
    #[serde(default)]
    pub defects: Defects,
}

/// A kind of die other than the machine's `die`, and which dies are of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DieKind {
    /// The name the source gives the kind (`kind l40s { ... }`).
    pub name: String,
    pub die: DieSpec,
    /// The dies of this kind, by id, ascending.
    pub dies: Vec<super::DieId>,
    /// On a switch or a cluster: this kind's port into the switch or its
    /// node's switch (`None`: the machine's `link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkSpec>,
    /// On a cluster: this kind's NIC to the spine (`None`: the machine's
    /// `inter_node_link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_node_link: Option<LinkSpec>,
}

impl MachineSpec {
    /// The part die `d` is: its kind's, else the machine's `die`.
    pub fn die_of(&self, d: super::DieId) -> &DieSpec {
        self.kind_of(d).map_or(&self.die, |k| &k.die)
    }

    /// Die `d`'s port into its switch (a switch's or a cluster node's).
    pub fn port_of(&self, d: super::DieId) -> LinkSpec {
        self.kind_of(d).and_then(|k| k.link).unwrap_or(self.link)
    }

    /// Die `d`'s NIC on a cluster.
    pub fn nic_of(&self, d: super::DieId) -> LinkSpec {
        self.kind_of(d)
            .and_then(|k| k.inter_node_link)
            .or(self.inter_node_link)
            .unwrap_or(self.link)
    }

    fn kind_of(&self, d: super::DieId) -> Option<&DieKind> {
        self.kinds.iter().find(|k| k.dies.binary_search(&d).is_ok())
    }

    /// The name of die `d`'s kind (`die` for the machine's own part).
    pub fn kind_name_of(&self, d: super::DieId) -> &str {
        self.kind_of(d).map_or("die", |k| k.name.as_str())
    }
}

/// One die (or GPU): compute, memory and the cost of starting a kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DieSpec {
    /// Peak compute rate.
    pub compute: FlopsPerSec,
    /// Off-chip (HBM) or on-wafer memory capacity.
    pub memory: Bytes,
    /// Bandwidth of that memory.
    pub memory_bw: BytesPerSec,
    /// Fast on-die scratch memory.
    pub sram: Bytes,
    /// Fixed cost of launching one kernel.
    pub launch_overhead: Seconds,
    /// What one die costs to run, in dollars per die-hour (`price = 2.5`);
    /// reports give throughput per dollar when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// What one die draws, in watts (`power = 700`); reports give tokens
    /// per joule when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<f64>,
}

/// One direction of a link: how fast and how far.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Bytes per second in this direction.
    pub bandwidth: BytesPerSec,
    /// Time for the first byte to arrive.
    pub latency: Seconds,
}

/// Where a die meets the network: the costs a real router adds to the
/// links' bandwidth and latency. The default is the ideal router (no fixed
/// latency, every link fully usable, no port limit), under which the
/// network's closed forms hold exactly; `examples/machines/booksim-mesh-8x8.moe`
/// holds the values calibrated against BookSim2 (docs/RUNTIME.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterSpec {
    /// Paid once per transfer on top of its links' latencies: the last
    /// router's pipeline and the ejection into the die.
    pub latency: Seconds,
    /// The share of a link's or port's bandwidth transfers can use (switch
    /// and virtual-channel allocation losses), in (0, 1].
    pub efficiency: f64,
    /// What each transfer occupies on every link (not port) beyond its own
    /// bytes, so small messages see a lower efficiency: a message of `s`
    /// bytes can use `efficiency * s / (s + overhead)` of a link.
    pub overhead: Bytes,
    /// Each die's injection port and ejection port (one of each, this
    /// bandwidth in each direction); `None`: only links limit a die.
    pub port: Option<BytesPerSec>,
}

impl Default for RouterSpec {
    fn default() -> RouterSpec {
        RouterSpec {
            latency: Seconds(0.0),
            efficiency: 1.0,
            overhead: Bytes(0),
            port: None,
        }
    }
}

/// The per-message costs of the all-to-all transports
/// (`schedule::Transport`): paid on the sender, one message after another,
/// before each goes on the network.
///
/// The defaults are fitted to MegaScale-Infer's M2N measurement (M = N = 8
/// GPUs, 200 Gb/s each): M2N's median latency 80.8% below NCCL's at 2 KB
/// messages and 68.2% below at 256 KB. Under this model (NCCL's group
/// synchronisation costs nothing in a benchmark whose members start
/// together), those two ratios give 6.5 us a message for M2N and 35 us for
/// NCCL; `tests/transport.rs` measures both ratios on the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageCosts {
    /// MegaScale-Infer's M2N: a point-to-point write (RDMA, no proxy copy).
    pub m2n: Seconds,
    /// An NCCL-style all-to-all's message: proxy copy and set-up.
    pub nccl: Seconds,
}

impl Default for MessageCosts {
    fn default() -> MessageCosts {
        MessageCosts {
            m2n: Seconds(6.5e-6),
            nccl: Seconds(35e-6),
        }
    }
}

impl MessageCosts {
    pub fn is_default(&self) -> bool {
        *self == MessageCosts::default()
    }
}

/// How the dies are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    /// A grid of wafers, each a `width` x `height` mesh of dies; the global
    /// grid is (width*wafers_x) x (height*wafers_y).
    Mesh {
        /// Dies across one wafer.
        width: u32,
        /// Dies down one wafer.
        height: u32,
        /// Wafers across.
        wafers_x: u32,
        /// Wafers down.
        wafers_y: u32,
    },
    /// `ports` GPUs, each one port into a non-blocking switch (an NVL72-like
    /// rack).
    Switch {
        /// Number of GPUs.
        ports: u32,
    },
    /// `nodes` nodes of `per_node` GPUs: a non-blocking switch inside each
    /// node, and each GPU's NIC into one non-blocking spine.
    Cluster {
        /// Number of nodes.
        nodes: u32,
        /// GPUs in each node.
        per_node: u32,
    },
}

/// Which dimension a mesh route travels first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoutingPolicy {
    /// Along x to the destination column, then along y.
    Xy,
    /// Along y to the destination row, then along x.
    Yx,
}

/// A side of the global mesh: y = 0 is the north edge, x = 0 the west edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Edge {
    /// The row y = 0.
    North,
    /// The last row.
    South,
    /// The last column.
    East,
    /// The column x = 0.
    West,
}

/// Off-wafer memory reached through the dies on some mesh edges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoSpec {
    /// Edges whose dies reach the host.
    pub edges: Vec<Edge>,
    /// Total bandwidth over all those dies.
    pub bandwidth: BytesPerSec,
    /// Capacity of the host memory.
    pub host_memory: Bytes,
}

/// Dies and links known dead. Entries keep the order of the source so errors
/// can point back at them by index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Defects {
    /// Dead dies.
    #[serde(default)]
    pub dead_dies: Vec<DieRef>,
    /// Dead physical links, each between two neighbouring dies; both
    /// directions die.
    #[serde(default)]
    pub dead_links: Vec<(DieRef, DieRef)>,
}

/// A die as the source names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DieRef {
    /// Meshes: global coordinates.
    At(Coord),
    /// Switches and clusters: the GPU's global index.
    Index(u32),
}

/// A position in the global mesh grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Coord {
    /// Column, 0 at the west edge.
    pub x: u32,
    /// Row, 0 at the north edge.
    pub y: u32,
}

impl Coord {
    /// The coordinate (x, y).
    pub fn new(x: u32, y: u32) -> Coord {
        Coord { x, y }
    }

    /// Grid distance to `other`: the hop count of any dimension-order route.
    pub fn manhattan(self, other: Coord) -> u32 {
        self.x.abs_diff(other.x) + self.y.abs_diff(other.y)
    }
}

impl fmt::Display for Coord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Edge::North => "north",
            Edge::South => "south",
            Edge::East => "east",
            Edge::West => "west",
        })
    }
}

impl fmt::Display for DieRef {
    /// As the source writes it: `(x, y)` or a bare index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DieRef::At(c) => c.fmt(f),
            DieRef::Index(i) => write!(f, "{i}"),
        }
    }
}

impl MachineSpec {
    /// Rejects figures no machine can have: rates must be positive and
    /// finite, times finite and not negative. Later stages divide by them.
    pub(crate) fn check_quantities(&self) -> Result<(), MachineError> {
        let mut rates = vec![
            ("die compute", self.die.compute.0),
            ("die memory_bw", self.die.memory_bw.0),
            ("link bandwidth", self.link.bandwidth.0),
        ];
        let mut times = vec![
            ("die launch_overhead", self.die.launch_overhead.0),
            ("link latency", self.link.latency.0),
            ("router latency", self.router.latency.0),
        ];
        for k in &self.kinds {
            rates.extend([("kind compute", k.die.compute.0), ("kind memory_bw", k.die.memory_bw.0)]);
            times.push(("kind launch_overhead", k.die.launch_overhead.0));
            for l in [k.link, k.inter_node_link].into_iter().flatten() {
                rates.push(("kind link bandwidth", l.bandwidth.0));
                times.push(("kind link latency", l.latency.0));
            }
        }
        if let Some(port) = self.router.port {
            rates.push(("router port", port.0));
        }
        let efficiency = self.router.efficiency;
        if !(efficiency > 0.0 && efficiency <= 1.0) {
            return Err(MachineError::BadQuantity {
                quantity: "router efficiency",
                value: efficiency,
                expected: "a share of the bandwidth in (0, 1]",
            });
        }
        let optional = [
            (
                &self.inter_wafer_link,
                "inter_wafer_link bandwidth",
                "inter_wafer_link latency",
            ),
            (
                &self.inter_node_link,
                "inter_node_link bandwidth",
                "inter_node_link latency",
            ),
        ];
        for (link, bandwidth, latency) in optional {
            if let Some(link) = link {
                rates.push((bandwidth, link.bandwidth.0));
                times.push((latency, link.latency.0));
            }
        }
        if let Some(io) = &self.io {
            rates.push(("io bandwidth", io.bandwidth.0));
        }
        let bad_rate = rates.into_iter().find(|(_, v)| !(v.is_finite() && *v > 0.0));
        if let Some((quantity, value)) = bad_rate {
            return Err(MachineError::BadQuantity {
                quantity,
                value,
                expected: "a positive finite rate",
            });
        }
        // An hour is no machine's latency or launch overhead, and the
        // simulated clock (picoseconds in a u64, about 213 days) must hold
        // a step of thousands of them.
        let bad_time = times
            .into_iter()
            .find(|(_, v)| !(v.is_finite() && (0.0..=MAX_MACHINE_TIME_S).contains(v)));
        if let Some((quantity, value)) = bad_time {
            return Err(MachineError::BadQuantity {
                quantity,
                value,
                expected: "a time from 0 to an hour (3600 s)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared test spec, with every optional part filled in.
    fn wafer_scale() -> MachineSpec {
        let mut spec = crate::machine::tests::spec(Topology::Mesh {
            width: 4,
            height: 4,
            wafers_x: 2,
            wafers_y: 1,
        });
        spec.name = "wse".into();
        spec.inter_wafer_link = Some(LinkSpec {
            bandwidth: BytesPerSec(2e11),
            latency: Seconds(50e-9),
        });
        spec.routing = RoutingPolicy::Yx;
        spec.io = Some(IoSpec {
            edges: vec![Edge::West, Edge::North],
            bandwidth: BytesPerSec(4e11),
            host_memory: Bytes(1 << 40),
        });
        spec.defects = Defects {
            dead_dies: vec![DieRef::At(Coord::new(1, 2))],
            dead_links: vec![(DieRef::At(Coord::new(0, 0)), DieRef::At(Coord::new(1, 0)))],
        };
        spec
    }

    #[test]
    fn spec_survives_a_json_round_trip() {
        let spec = wafer_scale();
        let json = serde_json::to_string(&spec).expect("spec serialises");
        let back: MachineSpec = serde_json::from_str(&json).expect("spec deserialises");
        assert_eq!(back, spec);
    }

    #[test]
    fn defects_and_optional_parts_may_be_left_out_of_json() {
        let mut spec = wafer_scale();
        spec.defects = Defects::default();
        spec.io = None;
        spec.inter_wafer_link = None;
        let mut value = serde_json::to_value(&spec).expect("spec serialises");
        let object = value.as_object_mut().expect("spec is an object");
        for key in ["defects", "io", "inter_wafer_link", "inter_node_link"] {
            object.remove(key);
        }
        let back: MachineSpec = serde_json::from_value(value).expect("spec deserialises");
        assert_eq!(back, spec);
    }

    #[test]
    fn coords_and_refs_print_as_written() {
        assert_eq!(Coord::new(3, 4).to_string(), "(3, 4)");
        assert_eq!(DieRef::Index(17).to_string(), "17");
        assert_eq!(Edge::South.to_string(), "south");
        assert_eq!(Coord::new(1, 7).manhattan(Coord::new(4, 2)), 8);
    }
}
