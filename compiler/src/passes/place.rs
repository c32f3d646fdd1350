//! `place(ALGORITHM)`: the placement pass, which delegates to one placement
//! algorithm per file (here: `round_robin`).

use super::{round_robin, Pass, PassContext};
use crate::ir::Ir;
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
        match self.algorithm {
            PlacementChoice::RoundRobin => round_robin::place(ir, cx),
        }
    }
}
