//! Defects: turning the listed dead dies and links into dies and link pairs
//! of the machine, rejecting entries that name nothing real, and rejecting
//! machines the defects leave unusable.

use super::die::DieId;
use super::error::{DefectEntry, MachineError};
use super::spec::{DieRef, Topology};
use super::topology::{die_phrase, Grid};
use super::Machine;
use std::collections::BTreeMap;

/// The defects resolved against the topology.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeadSet {
    /// Dead dies, ascending.
    pub dies: Vec<DieId>,
    /// Dead physical links as (lower id, higher id), ascending.
    pub links: Vec<(DieId, DieId)>,
}

/// Resolves `spec.defects` for a topology with `die_count` dies (already
/// checked), reporting the first bad entry: dead dies first, then dead links,
/// each in listed order.
pub(crate) fn resolve(
    topology: &Topology,
    die_count: u32,
    dead_dies: &[DieRef],
    dead_links: &[(DieRef, DieRef)],
) -> Result<DeadSet, MachineError> {
    let grid = Grid::of(topology);
    let resolve_one = |die: &DieRef, entry: DefectEntry| -> Result<DieId, MachineError> {
        match (die, grid) {
            (DieRef::At(at), Some(grid)) => grid.die_at(*at).ok_or(MachineError::DieOutsideMesh {
                entry,
                at: *at,
                width: grid.width,
                height: grid.height,
            }),
            (DieRef::Index(index), None) if *index < die_count => Ok(DieId(*index)),
            (DieRef::Index(index), None) => Err(MachineError::IndexOutOfRange {
                entry,
                index: *index,
                count: die_count,
            }),
            _ => Err(MachineError::WrongDieRef {
                entry,
                die: *die,
                topology: topology.kind(),
            }),
        }
    };

    // First listing of each die and link, to name duplicates.
    let mut dies = BTreeMap::new();
    for (i, die) in dead_dies.iter().enumerate() {
        let entry = DefectEntry::DeadDie(i);
        let id = resolve_one(die, entry)?;
        if let Some(&first) = dies.get(&id) {
            return Err(MachineError::DeadDieTwice {
                entry,
                first,
                die: die_phrase(topology, id),
            });
        }
        dies.insert(id, i);
    }

    let mut links = BTreeMap::new();
    for (i, (a, b)) in dead_links.iter().enumerate() {
        let entry = DefectEntry::DeadLink(i);
        let (a, b) = (resolve_one(a, entry)?, resolve_one(b, entry)?);
        let phrase = |d| die_phrase(topology, d);
        // Only mesh dies are wired to each other; GPUs meet at switches.
        let neighbours = grid
            .and_then(|g| Some(g.coord(a)?.manhattan(g.coord(b)?) == 1))
            .unwrap_or(false);
        if !neighbours {
            return Err(MachineError::NotNeighbours {
                entry,
                a: phrase(a),
                b: phrase(b),
            });
        }
        let pair = (a.min(b), a.max(b));
        if let Some(&first) = links.get(&pair) {
            return Err(MachineError::DeadLinkTwice {
                entry,
                first,
                a: phrase(a),
                b: phrase(b),
            });
        }
        links.insert(pair, i);
    }

    Ok(DeadSet {
        dies: dies.into_keys().collect(),
        links: links.into_keys().collect(),
    })
}

/// Rejects a built machine the defects leave unusable: no die alive, alive
/// dies that cannot reach each other, or host memory cut off.
pub(crate) fn check_usable(machine: &Machine) -> Result<(), MachineError> {
    let alive = machine.alive_dies();
    let Some(&first) = alive.first() else {
        return Err(MachineError::AllDiesDead);
    };
    // Only meshes can be cut: switch routes need nothing but the two GPUs.
    // Links die in pairs, so reaching everything from one die means every
    // die reaches every other.
    if let Some(grid) = machine.grid() {
        let reached = machine.reached_from(first);
        if let Some(&lost) = alive.iter().find(|d| !reached[d.index()]) {
            if let (Some(from), Some(to)) = (grid.coord(first), grid.coord(lost)) {
                return Err(MachineError::MeshCut { from, to });
            }
        }
    }
    if let Some(io) = &machine.spec().io {
        if machine.io_dies().is_empty() {
            return Err(MachineError::IoCutOff {
                edges: io.edges.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::{at, mesh, spec};
    use crate::machine::{Coord, MachineSpec, NodeId};

    fn error(s: MachineSpec) -> MachineError {
        Machine::build(s).expect_err("spec should be rejected")
    }

    #[test]
    fn a_mesh_cut_in_two_names_an_unreachable_pair() {
        let mut s = mesh(4, 4);
        s.defects.dead_links = (0..4).map(|y| (at(1, y), at(2, y))).collect();
        let err = error(s);
        assert_eq!(
            err,
            MachineError::MeshCut {
                from: Coord::new(0, 0),
                to: Coord::new(2, 0)
            }
        );
        assert_eq!(
            err.to_string(),
            "defects cut the mesh: die (0, 0) cannot reach die (2, 0)"
        );

        // Dead dies can cut it too; a lone corner behind them is enough.
        let mut s = mesh(4, 4);
        s.defects.dead_dies = vec![at(0, 2), at(1, 3)];
        assert_eq!(
            error(s),
            MachineError::MeshCut {
                from: Coord::new(0, 0),
                to: Coord::new(0, 3)
            }
        );
    }

    #[test]
    fn a_dead_link_kills_both_directions_and_nothing_else() {
        let mut s = mesh(3, 3);
        s.defects.dead_links = vec![(at(1, 1), at(1, 0))];
        let m = Machine::build(s).expect("valid mesh");
        let dead: Vec<(NodeId, NodeId)> = m.links().iter().filter(|l| !l.alive).map(|l| (l.from, l.to)).collect();
        assert_eq!(dead, [(NodeId(1), NodeId(4)), (NodeId(4), NodeId(1))]);
        assert_eq!(m.alive_dies().len(), 9);
    }

    #[test]
    fn errors_carry_the_index_of_the_offending_entry() {
        let mut s = spec(Topology::Mesh {
            width: 8,
            height: 8,
            wafers_x: 2,
            wafers_y: 1,
        });
        s.defects.dead_dies = vec![at(0, 0), at(15, 7), at(16, 2)];
        let err = error(s.clone());
        assert_eq!(err.defect_entry(), Some(DefectEntry::DeadDie(2)));
        assert_eq!(err.to_string(), "die (16, 2) is outside the 16x8 mesh");

        s.defects.dead_dies = vec![at(0, 0), at(1, 0), at(2, 0), at(1, 0)];
        let err = error(s.clone());
        assert_eq!(
            err,
            MachineError::DeadDieTwice {
                entry: DefectEntry::DeadDie(3),
                first: 1,
                die: "die (1, 0)".into()
            }
        );
        assert_eq!(err.to_string(), "die (1, 0) is listed dead twice");

        s.defects.dead_dies = vec![DieRef::Index(3)];
        let err = error(s.clone());
        assert_eq!(err.defect_entry(), Some(DefectEntry::DeadDie(0)));
        assert_eq!(
            err.to_string(),
            "die 3 is named by index, but a mesh names its dies by coordinates"
        );

        s.defects.dead_dies = vec![];
        s.defects.dead_links = vec![(at(0, 0), at(1, 0)), (at(5, 5), at(5, 7))];
        let err = error(s.clone());
        assert_eq!(err.defect_entry(), Some(DefectEntry::DeadLink(1)));
        assert_eq!(
            err.to_string(),
            "no link joins die (5, 5) and die (5, 7): they are not neighbours"
        );

        s.defects.dead_links = vec![(at(0, 0), at(1, 0)), (at(3, 3), at(3, 3))];
        assert!(matches!(
            error(s.clone()),
            MachineError::NotNeighbours {
                entry: DefectEntry::DeadLink(1),
                ..
            }
        ));

        s.defects.dead_links = vec![(at(0, 0), at(1, 0)), (at(4, 4), at(4, 3)), (at(1, 0), at(0, 0))];
        let err = error(s.clone());
        assert_eq!(err.defect_entry(), Some(DefectEntry::DeadLink(2)));
        assert!(matches!(err, MachineError::DeadLinkTwice { first: 0, .. }));
        assert_eq!(
            err.to_string(),
            "the link between die (1, 0) and die (0, 0) is listed dead twice"
        );

        s.defects.dead_links = vec![(at(0, 0), at(1, 0)), (at(20, 0), at(19, 0))];
        assert!(matches!(
            error(s),
            MachineError::DieOutsideMesh {
                entry: DefectEntry::DeadLink(1),
                ..
            }
        ));
    }

    #[test]
    fn gpus_are_named_by_index_in_range_and_have_no_direct_links() {
        let mut s = spec(Topology::Cluster { nodes: 2, per_node: 4 });
        s.defects.dead_dies = vec![DieRef::Index(1), DieRef::Index(8)];
        let err = error(s.clone());
        assert_eq!(
            err,
            MachineError::IndexOutOfRange {
                entry: DefectEntry::DeadDie(1),
                index: 8,
                count: 8
            }
        );
        assert_eq!(err.to_string(), "gpu index 8 is out of range: the machine has 8 gpus");

        s.defects.dead_dies = vec![DieRef::Index(1), at(0, 1)];
        let err = error(s.clone());
        assert_eq!(err.defect_entry(), Some(DefectEntry::DeadDie(1)));
        assert_eq!(
            err.to_string(),
            "die (0, 1) is named by coordinates, but a cluster names its gpus by index"
        );

        s.defects.dead_dies = vec![];
        s.defects.dead_links = vec![(DieRef::Index(1), DieRef::Index(5))];
        assert_eq!(
            error(s).to_string(),
            "no link joins n0.gpu1 and n1.gpu1: they are not neighbours"
        );

        let mut s = spec(Topology::Switch { ports: 4 });
        s.defects.dead_dies = vec![DieRef::Index(2), DieRef::Index(2)];
        assert_eq!(error(s).to_string(), "gpu2 is listed dead twice");
    }

    #[test]
    fn a_machine_with_every_die_dead_is_rejected() {
        let mut s = spec(Topology::Switch { ports: 2 });
        s.defects.dead_dies = vec![DieRef::Index(1), DieRef::Index(0)];
        assert_eq!(error(s), MachineError::AllDiesDead);
        let mut s = mesh(1, 1);
        s.defects.dead_dies = vec![at(0, 0)];
        assert_eq!(error(s), MachineError::AllDiesDead);
        // One GPU left is still a machine: nothing to be cut from.
        let mut s = spec(Topology::Switch { ports: 2 });
        s.defects.dead_dies = vec![DieRef::Index(1)];
        assert_eq!(Machine::build(s).map(|m| m.alive_dies()), Ok(vec![DieId(0)]));
    }
}
