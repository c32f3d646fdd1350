//! What can go wrong building a machine from its description, or routing
//! between two of its dies, with messages in the field's words.

use super::die::DieId;
use super::spec::{Coord, DieRef, Edge};
use super::topology::MAX_DIES;
use std::fmt;

/// Which defect entry an error is about: its list and its index there, so the
/// compiler can point at the entry's source span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DefectEntry {
    /// `defects.dead_dies[i]`.
    DeadDie(usize),
    /// `defects.dead_links[i]`.
    DeadLink(usize),
}

/// Why `Machine::build` rejected a description.
///
/// Fields named `die`, `a` or `b` hold the die as messages name it:
/// `die (3, 4)` on meshes, `gpu17` or `n1.gpu3` elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub enum MachineError {
    /// A rate that is not positive and finite, or a time that is negative or
    /// not finite.
    BadQuantity {
        /// What the figure is, e.g. "link bandwidth".
        quantity: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// A topology dimension of 0.
    ZeroDimension {
        /// "mesh", "switch" or "cluster".
        topology: &'static str,
        /// Which dimension, e.g. "wafers_x".
        dimension: &'static str,
    },
    /// More dies than the machine model handles.
    TooManyDies {
        /// Dies the topology describes.
        count: u128,
    },
    /// An `io` block on a topology without mesh edges.
    IoOffMesh {
        /// The topology it was given on.
        topology: &'static str,
    },
    /// An `io` block listing no edges.
    IoWithoutEdges,
    /// A die kind names a die the machine lacks, or a die another kind
    /// (or itself, twice) already names.
    BadKindDie {
        /// The kind.
        kind: String,
        /// The die it names.
        die: u32,
        /// Dies the machine has.
        dies: u32,
        /// The kind that named it first, if it is named twice.
        also: Option<String>,
    },
    /// A die kind's dies are not in ascending order (a schedule written by
    /// hand; the compiler sorts them).
    KindDiesUnsorted {
        /// The kind.
        kind: String,
    },
    /// Every die on the io edges is dead.
    IoCutOff {
        /// The io edges, as listed.
        edges: Vec<Edge>,
    },
    /// A defect names a mesh coordinate off the global grid.
    DieOutsideMesh {
        /// The offending entry.
        entry: DefectEntry,
        /// The coordinate given.
        at: Coord,
        /// Global grid width.
        width: u32,
        /// Global grid height.
        height: u32,
    },
    /// A defect names a GPU index past the last GPU.
    IndexOutOfRange {
        /// The offending entry.
        entry: DefectEntry,
        /// The index given.
        index: u32,
        /// How many GPUs there are.
        count: u32,
    },
    /// A defect names a die by coordinates on a switch or cluster, or by index
    /// on a mesh.
    WrongDieRef {
        /// The offending entry.
        entry: DefectEntry,
        /// The reference given.
        die: DieRef,
        /// The machine's topology.
        topology: &'static str,
    },
    /// A die listed dead more than once.
    DeadDieTwice {
        /// The repeated entry.
        entry: DefectEntry,
        /// Index of the first listing in `dead_dies`.
        first: usize,
        /// The die.
        die: String,
    },
    /// A link listed dead more than once (either direction counts).
    DeadLinkTwice {
        /// The repeated entry.
        entry: DefectEntry,
        /// Index of the first listing in `dead_links`.
        first: usize,
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// A dead link between dies no link joins.
    NotNeighbours {
        /// The offending entry.
        entry: DefectEntry,
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// No die is left alive.
    AllDiesDead,
    /// Dead dies and links split the mesh; one pair that cannot reach each other.
    MeshCut {
        /// A die on one side.
        from: Coord,
        /// A die it cannot reach.
        to: Coord,
    },
}

impl MachineError {
    /// The defect entry the error is about, if it is about one.
    pub fn defect_entry(&self) -> Option<DefectEntry> {
        match self {
            MachineError::DieOutsideMesh { entry, .. }
            | MachineError::IndexOutOfRange { entry, .. }
            | MachineError::WrongDieRef { entry, .. }
            | MachineError::DeadDieTwice { entry, .. }
            | MachineError::DeadLinkTwice { entry, .. }
            | MachineError::NotNeighbours { entry, .. } => Some(*entry),
            _ => None,
        }
    }
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::BadQuantity {
                quantity,
                value,
                expected,
            } => {
                if value.is_finite() && *value != 0.0 && !(1e-6..1e9).contains(&value.abs()) {
                    // 1e308 in full is three hundred digits.
                    write!(f, "{quantity} is {value:e}, but must be {expected}")
                } else {
                    write!(f, "{quantity} is {value}, but must be {expected}")
                }
            }
            MachineError::ZeroDimension { topology, dimension } => {
                write!(
                    f,
                    "the {topology}'s {dimension} is 0; every dimension must be at least 1"
                )
            }
            MachineError::TooManyDies { count } => {
                write!(
                    f,
                    "the machine has {count} dies, more than the {MAX_DIES} the machine model supports"
                )
            }
            MachineError::IoOffMesh { topology } => {
                write!(f, "io edges exist only on meshes, but this machine is a {topology}")
            }
            MachineError::IoWithoutEdges => f.write_str("io names no edges, so host memory is unreachable"),
            MachineError::BadKindDie { kind, die, dies, also } => match also {
                Some(other) => write!(
                    f,
                    "die {die} is of kind `{other}` and of kind `{kind}`; a die is one kind"
                ),
                None => write!(
                    f,
                    "kind `{kind}` names die {die}, but the machine has {dies} (0 to {})",
                    dies.saturating_sub(1)
                ),
            },
            MachineError::KindDiesUnsorted { kind } => {
                write!(
                    f,
                    "kind `{kind}` lists its dies out of order; list them ascending, each once"
                )
            }
            MachineError::IoCutOff { edges } => {
                let names: Vec<String> = edges.iter().map(Edge::to_string).collect();
                write!(
                    f,
                    "every die on the io edges ({}) is dead, so host memory is unreachable",
                    names.join(", ")
                )
            }
            MachineError::DieOutsideMesh { at, width, height, .. } => {
                write!(f, "die {at} is outside the {width}x{height} mesh")
            }
            MachineError::IndexOutOfRange { index, count, .. } => {
                write!(f, "gpu index {index} is out of range: the machine has {count} gpus")
            }
            MachineError::WrongDieRef {
                die: die @ DieRef::At(_),
                topology,
                ..
            } => {
                write!(
                    f,
                    "die {die} is named by coordinates, but a {topology} names its gpus by index"
                )
            }
            MachineError::WrongDieRef { die, topology, .. } => {
                write!(
                    f,
                    "die {die} is named by index, but a {topology} names its dies by coordinates"
                )
            }
            MachineError::DeadDieTwice { die, .. } => write!(f, "{die} is listed dead twice"),
            MachineError::DeadLinkTwice { a, b, .. } => {
                write!(f, "the link between {a} and {b} is listed dead twice")
            }
            MachineError::NotNeighbours { a, b, .. } => {
                write!(f, "no link joins {a} and {b}: they are not neighbours")
            }
            MachineError::AllDiesDead => f.write_str("every die is dead"),
            MachineError::MeshCut { from, to } => {
                write!(f, "defects cut the mesh: die {from} cannot reach die {to}")
            }
        }
    }
}

impl std::error::Error for MachineError {}

/// Why `Machine::route` found no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The id is past the machine's last die.
    NoSuchDie(DieId),
    /// The source or destination is dead.
    DeadDie(DieId),
    /// No path over alive links joins the two dies.
    Unreachable {
        /// Where the route starts.
        src: DieId,
        /// Where it should end.
        dst: DieId,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NoSuchDie(die) => write!(f, "{die} is not on this machine"),
            RouteError::DeadDie(die) => write!(f, "{die} is dead"),
            RouteError::Unreachable { src, dst } => {
                write!(f, "no route over alive links from {src} to {dst}")
            }
        }
    }
}

impl std::error::Error for RouteError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_thing_exactly() {
        let outside = MachineError::DieOutsideMesh {
            entry: DefectEntry::DeadDie(2),
            at: Coord::new(9, 2),
            width: 16,
            height: 8,
        };
        assert_eq!(outside.to_string(), "die (9, 2) is outside the 16x8 mesh");
        assert_eq!(outside.defect_entry(), Some(DefectEntry::DeadDie(2)));
        let cut = MachineError::MeshCut {
            from: Coord::new(0, 0),
            to: Coord::new(7, 7),
        };
        assert_eq!(
            cut.to_string(),
            "defects cut the mesh: die (0, 0) cannot reach die (7, 7)"
        );
        assert_eq!(cut.defect_entry(), None);
        let wrong = MachineError::WrongDieRef {
            entry: DefectEntry::DeadLink(0),
            die: DieRef::At(Coord::new(1, 2)),
            topology: "switch",
        };
        assert_eq!(
            wrong.to_string(),
            "die (1, 2) is named by coordinates, but a switch names its gpus by index"
        );
        let cut_off = MachineError::IoCutOff {
            edges: vec![Edge::North, Edge::West],
        };
        assert_eq!(
            cut_off.to_string(),
            "every die on the io edges (north, west) is dead, so host memory is unreachable"
        );
        assert_eq!(RouteError::DeadDie(DieId(5)).to_string(), "die 5 is dead");
    }
}
