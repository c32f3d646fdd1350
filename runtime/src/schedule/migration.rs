//! Expert weights that move while a run goes on: migrations (a copy
//! added, moved or dropped at a step) and per-step broadcasts, each cut into
//! chunks that travel the network like any other flow.
//!
//! A schedule's `placement` is where experts live at step 0. Migrations,
//! applied in order, change it: from `Migration::effective_step` on, the new
//! copy serves tokens (or the dropped one stops). Their bytes travel as
//! [`Chunk`]s before that step, each in a [`Window`] of a step: with every
//! die stopped before the step starts (invasive rebalancing), or while the
//! sending die runs a layer's attention or MoE phase (MoEntwine's
//! non-invasive migration over links that phase leaves cold). A chunk that
//! forwards another (`after`) starts only once that one has arrived, so a
//! migration split into legs (local, global, local) is store-and-forward.
//!
//! A [`Broadcast`] (HD-MoE's DynamicPlacement) copies an expert to more dies
//! for one layer of every step in a range: during the layer's attention the
//! weights flow down a tree, the receiving dies compute the expert's tokens
//! once they have arrived, and the copies are dropped after the layer. Its
//! tokens go to the least-loaded holder.

use super::Placement;
use crate::machine::DieId;
use crate::model::{LayerKind, ModelSpec};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// What a migration does to the placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationKind {
    /// A new copy on `to`; the source keeps its own (a shadow-slot replica,
    /// a restored expert).
    Replicate,
    /// The copy on `from` moves to `to` (invasive rebalancing).
    Move,
    /// The copy on `to` is dropped (a shadow slot freed); nothing travels.
    Evict,
}

/// Where a migration's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from", content = "die")]
pub enum WeightSource {
    /// A die holding a copy.
    Die(DieId),
    /// Off-chip memory (the machine's `io`), through the nearest I/O die:
    /// the `from` of its chunks that forward no other is that io die, and
    /// their bytes cross the io before the network (`sim/moves.rs`).
    Host,
}

/// When in a step a chunk travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "window")]
pub enum Window {
    /// Before the step, with every die stopped until all such chunks arrive.
    StopTheWorld,
    /// Once the sending die starts `layer`'s attention phase (its ring
    /// all-gather, or its attention).
    Attention { layer: u32 },
    /// Once the sending die starts `layer`'s MoE phase (its dispatch).
    Moe { layer: u32 },
}

impl Window {
    /// Where in a step's order of windows this one opens (stop-the-world
    /// first, then each layer's attention and MoE phase).
    pub fn order(self) -> u64 {
        match self {
            Window::StopTheWorld => 0,
            Window::Attention { layer } => 1 + 2 * u64::from(layer),
            Window::Moe { layer } => 2 + 2 * u64::from(layer),
        }
    }

    /// The layer whose phase opens the window (none for stop-the-world).
    pub fn layer(self) -> Option<u32> {
        match self {
            Window::StopTheWorld => None,
            Window::Attention { layer } | Window::Moe { layer } => Some(layer),
        }
    }
}

/// The phase of a step whose windows a leg of a migration uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A layer's attention (and its ring collectives).
    Attention,
    /// A layer's MoE all-to-all (dispatch to combine).
    Moe,
}

impl Phase {
    /// The phase's name in the IR's text.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Attention => "attention",
            Phase::Moe => "moe",
        }
    }

    /// Whether `w` is a window of this phase.
    pub fn has(self, w: Window) -> bool {
        matches!(
            (self, w),
            (Phase::Attention, Window::Attention { .. }) | (Phase::Moe, Window::Moe { .. })
        )
    }
}

/// The windows of one step in the order they open: every layer's
/// attention, and after it, for an MoE layer, its MoE phase.
pub fn step_windows(model: &ModelSpec) -> Vec<Window> {
    let mut w = Vec::new();
    for layer in 0..model.layers {
        w.push(Window::Attention { layer: layer as u32 });
        if model.layer_kind(layer) == LayerKind::Moe {
            w.push(Window::Moe { layer: layer as u32 });
        }
    }
    w
}

/// Cuts `bytes` into pieces of at most `chunk` bytes, each crossing
/// `legs` in order, from step `start` on: a piece takes each leg in a later
/// window than its previous leg (store and forward), and each leg carries
/// one piece a window, so pieces pipeline down the legs. Returns the
/// chunks and the first step after the last of them (when the copy can
/// serve). Errors when a leg's phase has no window in a step.
pub fn plan_legs(
    legs: &[(DieId, DieId, Phase)],
    bytes: u64,
    chunk: u64,
    start: u64,
    windows: &[Window],
) -> Result<(Vec<Chunk>, u64), String> {
    let n = windows.len() as u64;
    if let Some((_, _, p)) = legs.iter().find(|(_, _, p)| !windows.iter().any(|&w| p.has(w))) {
        return Err(format!("no {} window in a step to send a migration leg in", p.name()));
    }
    let chunk = chunk.max(1);
    let pieces = bytes.div_ceil(chunk).max(1);
    let mut next_free = vec![start * n; legs.len()];
    let mut chunks = Vec::new();
    let mut last_step = start;
    for c in 0..pieces {
        let offset = c * chunk;
        let size = chunk.min(bytes - offset.min(bytes));
        let mut prev: Option<(u64, usize)> = None;
        for (j, &(from, to, phase)) in legs.iter().enumerate() {
            let mut g = next_free[j].max(prev.map_or(0, |(p, _)| p + 1));
            while !phase.has(windows[(g % n) as usize]) {
                g += 1;
            }
            next_free[j] = g + 1;
            last_step = last_step.max(g / n);
            chunks.push(Chunk {
                step: g / n,
                window: windows[(g % n) as usize],
                from,
                to,
                offset,
                bytes: size,
                after: prev.map(|(_, k)| k as u32),
            });
            prev = Some((g, chunks.len() - 1));
        }
    }
    Ok((chunks, last_step + 1))
}

/// One piece of a migration on one leg: `bytes` of the expert's weights
/// (from `offset`) sent from `from` to `to` along the machine's route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The step during which it travels.
    pub step: u64,
    pub window: Window,
    pub from: DieId,
    pub to: DieId,
    pub offset: u64,
    pub bytes: u64,
    /// The chunk (index into the migration's `chunks`) whose bytes this one
    /// forwards: it starts only after that one has arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u32>,
}

/// An expert's copy added, moved or dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub kind: MigrationKind,
    pub layer: u32,
    pub expert: u32,
    pub source: WeightSource,
    pub to: DieId,
    /// The expert's weight bytes (what the chunks carry in all, per leg).
    pub bytes: u64,
    /// The first step served from the new placement; every chunk travels
    /// in an earlier step.
    pub effective_step: u64,
    pub chunks: Vec<Chunk>,
}

/// One expert broadcast for one layer of every step in `steps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    pub layer: u32,
    pub expert: u32,
    /// The die whose copy is sent.
    pub from: DieId,
    pub steps: Range<u64>,
    pub bytes: u64,
    /// The tree's edges `(parent, child)`, parents before children; the
    /// weights go down it in `pieces` pieces, pipelined, in the window of
    /// the layer's attention on each parent.
    pub tree: Vec<(DieId, DieId)>,
    pub pieces: u32,
}

impl Broadcast {
    /// The dies holding the expert while the broadcast is on (the source first).
    pub fn holders(&self) -> Vec<DieId> {
        std::iter::once(self.from)
            .chain(self.tree.iter().map(|&(_, c)| c))
            .collect()
    }
}

impl Placement {
    /// Applies `m` (a whole-expert migration: split experts do not migrate).
    /// Errors when the placement does not allow it (the expert is not where
    /// the migration says, or already on the destination).
    pub fn apply(&mut self, m: &Migration) -> Result<(), String> {
        let what = format!("expert {} of layer {}", m.expert, m.layer);
        let has_columns = self
            .expert_columns
            .get(m.layer as usize)
            .and_then(|l| l.get(m.expert as usize))
            .is_some_and(|c| !c.is_empty());
        let dies = self
            .experts
            .get_mut(m.layer as usize)
            .and_then(|l| l.get_mut(m.expert as usize))
            .ok_or_else(|| format!("{what} is not in the placement"))?;
        if has_columns {
            return Err(format!("{what} is split over dies; split experts do not migrate"));
        }
        let holds = |dies: &Vec<DieId>, d: DieId| dies.contains(&d);
        if let WeightSource::Die(from) = m.source {
            if m.kind != MigrationKind::Evict && !holds(dies, from) {
                return Err(format!("{what} is to be copied from {from}, which does not hold it"));
            }
        }
        match m.kind {
            MigrationKind::Replicate | MigrationKind::Move => {
                if holds(dies, m.to) {
                    return Err(format!("{what} is already on {}", m.to));
                }
                // One slot leaves (a die may hold two of an expert).
                if let (MigrationKind::Move, WeightSource::Die(from)) = (m.kind, m.source) {
                    drop_one_slot(dies, from);
                }
                dies.push(m.to);
            }
            MigrationKind::Evict => {
                if !holds(dies, m.to) || dies.len() < 2 {
                    return Err(format!("{what}: its copy on {} cannot be dropped", m.to));
                }
                drop_one_slot(dies, m.to);
            }
        }
        Ok(())
    }

    /// The placement during a step with `broadcasts` on: each broadcast
    /// expert is held by every die of its tree, its tokens to the least
    /// loaded of them.
    pub fn with_broadcasts(&self, broadcasts: &[&Broadcast]) -> Placement {
        let mut p = self.clone();
        for b in broadcasts {
            let (l, e) = (b.layer as usize, b.expert as usize);
            if let Some(dies) = p.experts.get_mut(l).and_then(|x| x.get_mut(e)) {
                for d in b.holders() {
                    if !dies.contains(&d) {
                        dies.push(d);
                    }
                }
            }
            if p.balanced.len() <= l {
                p.balanced.resize(l + 1, Vec::new());
            }
            if !p.balanced[l].contains(&b.expert) {
                p.balanced[l].push(b.expert);
                p.balanced[l].sort_unstable();
            }
        }
        p
    }

    /// Whether tokens of `expert` of `layer` go to its least-loaded holder.
    pub fn is_balanced(&self, layer: usize, expert: u32) -> bool {
        self.balanced
            .get(layer)
            .is_some_and(|b| b.binary_search(&expert).is_ok())
    }
}

/// Removes one of `die`'s slots of an expert from its holders.
fn drop_one_slot(dies: &mut Vec<DieId>, die: DieId) {
    if let Some(at) = dies.iter().position(|&d| d == die) {
        dies.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            experts: vec![vec![vec![DieId(0)], vec![DieId(1), DieId(2)]]],
            ..Placement::default()
        }
    }

    fn migration(kind: MigrationKind, expert: u32, from: u32, to: u32) -> Migration {
        Migration {
            kind,
            layer: 0,
            expert,
            source: WeightSource::Die(DieId(from)),
            to: DieId(to),
            bytes: 8,
            effective_step: 1,
            chunks: Vec::new(),
        }
    }

    #[test]
    fn replicate_move_and_evict_change_the_holders() {
        let mut p = placement();
        p.apply(&migration(MigrationKind::Replicate, 0, 0, 3)).unwrap();
        assert_eq!(p.experts[0][0], vec![DieId(0), DieId(3)]);
        p.apply(&migration(MigrationKind::Move, 1, 2, 0)).unwrap();
        assert_eq!(p.experts[0][1], vec![DieId(1), DieId(0)]);
        p.apply(&migration(MigrationKind::Evict, 0, 3, 3)).unwrap();
        assert_eq!(p.experts[0][0], vec![DieId(0)]);
    }

    #[test]
    fn impossible_migrations_are_refused() {
        let mut p = placement();
        // Not held by the source; already on the destination; the last copy.
        assert!(p.apply(&migration(MigrationKind::Replicate, 0, 5, 3)).is_err());
        assert!(p.apply(&migration(MigrationKind::Replicate, 1, 1, 2)).is_err());
        assert!(p.apply(&migration(MigrationKind::Evict, 0, 0, 0)).is_err());
        assert_eq!(p, placement());
    }

    #[test]
    fn pieces_pipeline_down_the_legs_one_a_window() {
        let windows = vec![
            Window::Attention { layer: 0 },
            Window::Moe { layer: 0 },
            Window::Attention { layer: 1 },
            Window::Moe { layer: 1 },
        ];
        let legs = [
            (DieId(0), DieId(1), Phase::Attention),
            (DieId(1), DieId(2), Phase::Moe),
            (DieId(2), DieId(3), Phase::Attention),
        ];
        let (chunks, effective) = plan_legs(&legs, 25, 10, 5, &windows).unwrap();
        let at: Vec<(u64, Window, u32, Option<u32>, u64)> = chunks
            .iter()
            .map(|c| (c.step, c.window, c.from.0, c.after, c.bytes))
            .collect();
        let (a0, m0, a1, m1) = (windows[0], windows[1], windows[2], windows[3]);
        assert_eq!(
            at,
            vec![
                (5, a0, 0, None, 10),
                (5, m0, 1, Some(0), 10),
                (5, a1, 2, Some(1), 10),
                (5, a1, 0, None, 10),
                (5, m1, 1, Some(3), 10),
                (6, a0, 2, Some(4), 10),
                (6, a0, 0, None, 5),
                (6, m0, 1, Some(6), 5),
                (6, a1, 2, Some(7), 5),
            ]
        );
        assert_eq!(effective, 7);
        assert!(plan_legs(&legs, 25, 10, 0, &windows[..1]).is_err());
    }

    #[test]
    fn a_broadcast_adds_its_tree_and_balances_the_expert() {
        let b = Broadcast {
            layer: 0,
            expert: 0,
            from: DieId(0),
            steps: 0..4,
            bytes: 8,
            tree: vec![(DieId(0), DieId(1)), (DieId(1), DieId(2))],
            pieces: 2,
        };
        let p = placement().with_broadcasts(&[&b]);
        assert_eq!(p.experts[0][0], vec![DieId(0), DieId(1), DieId(2)]);
        assert!(p.is_balanced(0, 0) && !p.is_balanced(0, 1));
    }
}
