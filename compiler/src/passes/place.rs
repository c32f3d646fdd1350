//! `place(ALGORITHM)`: the placement pass. Each algorithm (one file each:
//! `round_robin`, `contiguous`) decides the die of every expert; this pass
//! applies it to every layer and places everything else data-parallel:
//! every alive die holds a copy of the embedding, attention, gates, shared
//! experts, dense FFNs and LM head and serves its share of the batch, and
//! dispatch and combine run on every die, as the all-to-all they are.

use super::{contiguous, round_robin, Pass, PassContext};
use crate::ir::{Annotation, Ir, Op, Sharding};
use crate::sema::PlacementChoice;

/// The placement pass with its chosen algorithm.
pub struct Place {
    algorithm: PlacementChoice,
}

impl Place {
    /// `arg` is the algorithm's name as in a plan's `placement = ...`.
    pub fn new(arg: Option<&str>) -> Result<Place, String> {
        let names: Vec<&str> = PlacementChoice::ALL.iter().map(|(n, _)| *n).collect();
        let Some(arg) = arg else {
            return Err(format!("`place` needs an algorithm: place({})", names.join("|")));
        };
        PlacementChoice::ALL
            .iter()
            .find(|(n, _)| *n == arg)
            .map(|&(_, algorithm)| Place { algorithm })
            .ok_or_else(|| format!("no placement algorithm `{arg}` (algorithms: {})", names.join(", ")))
    }
}

impl Pass for Place {
    fn name(&self) -> String {
        format!("place({})", self.algorithm.name())
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        let dies = cx.machine.alive_dies();
        if dies.is_empty() {
            return Err("the machine has no alive die".into());
        }
        let experts = cx.model.moe.as_ref().map_or(0, |m| m.experts);
        let indices: Vec<_> = ir.graph.node_indices().collect();
        for i in indices {
            let node = &mut ir.graph[i];
            let placed = match node.op {
                Op::Expert { expert, .. } => vec![match self.algorithm {
                    PlacementChoice::RoundRobin => round_robin::expert_die(expert.0, &dies),
                    PlacementChoice::Contiguous => contiguous::expert_die(expert.0, experts, &dies),
                }],
                _ => dies.clone(),
            };
            node.ann = Annotation {
                dies: placed,
                sharding: Sharding::Whole,
            };
        }
        Ok(())
    }
}
