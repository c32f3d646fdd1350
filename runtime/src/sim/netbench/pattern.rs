//! Netbench's traffic patterns, as BookSim2 defines them: who sends to
//! whom, the probability of each destination, and from that the pattern's
//! analytical bound (the load at which its busiest channel is full).

use crate::machine::{DieId, Machine, Topology};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where each message goes. Node numbering, fixed points and self-traffic
/// follow BookSim2's definitions (`traffic.cpp`): a die may send to itself,
/// and that message turns around in its router.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Pattern {
    /// Any alive die uniformly, the sender included.
    UniformRandom,
    /// On a square mesh (x, y) -> (y, x); dies on the diagonal send to
    /// themselves. Elsewhere: the two halves of the id's bits swapped when
    /// the die count is a power of four, else the `BitComplement` partner.
    Transpose,
    /// Die `id` -> `count - 1 - id`: the bitwise complement when the count is
    /// a power of two, and on a mesh the point mirrored through the centre
    /// (with an odd count the middle die sends to itself).
    BitComplement,
    /// `fraction` of every die's messages to one die, the rest uniform: by
    /// default all of them (BookSim's `hotspot`), to the alive die nearest
    /// the mesh centre (the lowest alive die off meshes) or the one named.
    Hotspot {
        /// Share of messages sent to the hotspot, 0..=1.
        fraction: f64,
        /// The hot die; `None`: the one nearest the centre.
        die: Option<DieId>,
    },
    /// Each die cycles through every other alive die in turn, starting with
    /// the next one after itself, so no two dies aim at the same die at once.
    AllToAll,
}

impl Pattern {
    /// The short name: "uniform", "transpose", "bitcomp", "hotspot",
    /// "all-to-all".
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::UniformRandom => "uniform",
            Pattern::Transpose => "transpose",
            Pattern::BitComplement => "bitcomp",
            Pattern::Hotspot { .. } => "hotspot",
            Pattern::AllToAll => "all-to-all",
        }
    }
}

impl fmt::Display for Pattern {
    /// The spelling `from_str` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if let Pattern::Hotspot { fraction, die } = self {
            if let Some(d) = die {
                write!(f, "({})", d.0)?;
            }
            if *fraction != 1.0 {
                write!(f, ":{fraction}")?;
            }
        }
        Ok(())
    }
}

/// A pattern name that is not one of the five.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsePatternError(pub String);

impl fmt::Display for ParsePatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown traffic pattern `{}`; expected uniform, transpose, bitcomp, hotspot, hotspot(DIE), hotspot:FRACTION or all-to-all",
            self.0
        )
    }
}

impl std::error::Error for ParsePatternError {}

impl FromStr for Pattern {
    type Err = ParsePatternError;

    /// The names `name()` gives; "hotspot" takes an optional die number in
    /// parentheses (BookSim's `hotspot(27)`) and an optional `:FRACTION` in
    /// 0..=1 (default 1: everything to the hot die).
    fn from_str(s: &str) -> Result<Pattern, ParsePatternError> {
        let bad = || ParsePatternError(s.to_string());
        Ok(match s {
            "uniform" => Pattern::UniformRandom,
            "transpose" => Pattern::Transpose,
            "bitcomp" => Pattern::BitComplement,
            "all-to-all" => Pattern::AllToAll,
            _ => {
                let rest = s.strip_prefix("hotspot").ok_or_else(bad)?;
                let (die, rest) = match rest.strip_prefix('(') {
                    Some(inner) => {
                        let (n, rest) = inner.split_once(')').ok_or_else(bad)?;
                        (Some(DieId(n.parse().map_err(|_| bad())?)), rest)
                    }
                    None => (None, rest),
                };
                let fraction = match rest {
                    "" => 1.0,
                    _ => rest
                        .strip_prefix(':')
                        .and_then(|f| f.parse::<f64>().ok())
                        .filter(|f| (0.0..=1.0).contains(f))
                        .ok_or_else(bad)?,
                };
                Pattern::Hotspot { fraction, die }
            }
        })
    }
}

/// A pattern resolved against a machine: who sends, and to whom.
#[derive(Debug)]
pub(crate) struct Targets {
    pattern: Pattern,
    /// Alive dies, ascending.
    pub(crate) alive: Vec<DieId>,
    /// Positions in `alive` of the dies that inject.
    pub(crate) sources: Vec<usize>,
    /// Per position in `alive`: the fixed partner (transpose, bitcomp).
    partner: Vec<Option<DieId>>,
    /// The hotspot die.
    pub(crate) hotspot: Option<DieId>,
}

impl Targets {
    pub(crate) fn new(machine: &Machine, pattern: Pattern) -> Targets {
        let alive = machine.alive_dies();
        let count = machine.die_count();
        let partner: Vec<Option<DieId>> = alive
            .iter()
            .map(|&d| {
                let p = match pattern {
                    Pattern::Transpose => transpose(machine, d),
                    Pattern::BitComplement => mirror(count, d),
                    _ => None,
                }?;
                machine.is_alive(p).then_some(p)
            })
            .collect();
        let hotspot = match pattern {
            Pattern::Hotspot { die: Some(d), .. } => machine.is_alive(d).then_some(d),
            _ => centre(machine, &alive),
        };
        let sources = (0..alive.len())
            .filter(|&i| match pattern {
                Pattern::Transpose | Pattern::BitComplement => partner[i].is_some(),
                Pattern::AllToAll => alive.len() >= 2,
                Pattern::Hotspot { fraction: 1.0, .. } => hotspot.is_some(),
                _ => true,
            })
            .collect();
        Targets {
            pattern,
            hotspot,
            alive,
            sources,
            partner,
        }
    }

    /// The destination of the `k`-th message of the die at position `pos`
    /// of `alive` (a source, so it has one).
    pub(crate) fn pick(&self, pos: usize, k: u64, rng: &mut Rng) -> Option<DieId> {
        let m = self.alive.len();
        let uniform = |rng: &mut Rng| self.alive.get(rng.below(m as u64) as usize).copied();
        match self.pattern {
            Pattern::UniformRandom => uniform(rng),
            Pattern::Transpose | Pattern::BitComplement => self.partner.get(pos).copied().flatten(),
            Pattern::Hotspot { fraction, .. } => match self.hotspot {
                Some(hot) if fraction == 1.0 || rng.next_f64() < fraction => Some(hot),
                _ => uniform(rng),
            },
            Pattern::AllToAll => {
                let others = m.saturating_sub(1).max(1) as u64;
                let step = (k % others) as usize + 1;
                self.alive.get((pos + step) % m.max(1)).copied()
            }
        }
    }

    /// Where the die at position `pos` sends, with each destination's
    /// probability (summing to 1 for a source).
    pub(crate) fn destinations(&self, pos: usize) -> Vec<(DieId, f64)> {
        let m = self.alive.len();
        let uniform = |weight: f64| self.alive.iter().map(move |&d| (d, weight / m as f64));
        match self.pattern {
            Pattern::UniformRandom => uniform(1.0).collect(),
            Pattern::Transpose | Pattern::BitComplement => self
                .partner
                .get(pos)
                .copied()
                .flatten()
                .map(|p| (p, 1.0))
                .into_iter()
                .collect(),
            Pattern::Hotspot { fraction, .. } => {
                let Some(hot) = self.hotspot else {
                    return uniform(1.0).collect();
                };
                let mut out: Vec<(DieId, f64)> = if fraction < 1.0 {
                    uniform(1.0 - fraction).collect()
                } else {
                    Vec::new()
                };
                match out.iter_mut().find(|(d, _)| *d == hot) {
                    Some(entry) => entry.1 += fraction,
                    None => out.push((hot, fraction)),
                }
                out
            }
            Pattern::AllToAll => {
                let others = m.saturating_sub(1).max(1) as f64;
                self.alive
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != pos)
                    .map(|(_, &d)| (d, 1.0 / others))
                    .collect()
            }
        }
    }
}

/// Transpose partner of `d` (see `Pattern::Transpose`).
fn transpose(machine: &Machine, d: DieId) -> Option<DieId> {
    if let (Some(grid), Topology::Mesh { .. }) = (machine.grid(), machine.spec().topology) {
        if grid.width == grid.height {
            let c = grid.coord(d)?;
            return grid.die_at(crate::machine::Coord::new(c.y, c.x));
        }
    }
    let count = machine.die_count();
    let bits = count.trailing_zeros();
    if count.is_power_of_two() && bits % 2 == 0 {
        let half = bits / 2;
        let low = d.0 & ((1 << half) - 1);
        return Some(DieId((low << half) | (d.0 >> half)));
    }
    mirror(count, d)
}

/// `count - 1 - d`: bit complement on power-of-two counts.
fn mirror(count: u32, d: DieId) -> Option<DieId> {
    count.checked_sub(1)?.checked_sub(d.0).map(DieId)
}

/// The alive die nearest the mesh centre (lowest id among equals), or the
/// lowest alive die off meshes: on an 8x8 mesh die 27 = (3, 3), BookSim's
/// usual hotspot.
fn centre(machine: &Machine, alive: &[DieId]) -> Option<DieId> {
    let Some(grid) = machine.grid() else {
        return alive.first().copied();
    };
    // Doubled coordinates keep the centre of an even grid an integer.
    let off_centre = |d: &DieId| {
        grid.coord(*d).map_or(u64::MAX, |c| {
            u64::from((2 * c.x).abs_diff(grid.width - 1)) + u64::from((2 * c.y).abs_diff(grid.height - 1))
        })
    };
    alive.iter().copied().min_by_key(|d| (off_centre(d), *d))
}
