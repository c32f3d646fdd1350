//! Invasive rebalancing, the baseline NI-Balancer is measured against: EPLB
//! recomputed every `every` steps on the loads of the last `window` steps,
//! and the experts that must change dies moved with every die stopped.
//!
//! This is what a serving engine does today (SGLang's and vllm-ascend's
//! periodic EPLB rebalance): the new layout is DeepSeek's replicate + pack
//! on the predicted loads, with the same number of copies per layer as the
//! compiled placement. Packs are anonymous, so before anything moves they
//! are matched to dies by the Hungarian algorithm, keeping as many experts
//! where they are as possible. Every copy that must appear somewhere else
//! moves from a die that is losing it (or, for a new replica, is copied from
//! the nearest holder); copies no longer wanted are dropped. All of it
//! travels before the step, with no die computing: the step stalls for as
//! long as the busiest links need.

use super::load_history::LoadHistory;
use super::{Decision, ExpertHolders, MovePlan};
use crate::ir::{Eviction, ExpertId, Timing, Travel, WeightMove};
use crate::passes::hungarian;
use crate::passes::place::eplb;
use crate::passes::PassContext;
use moec_runtime::machine::DieId;
use std::collections::BTreeSet;

/// Plans the run's rebalances.
pub fn plan(
    holders: &ExpertHolders,
    history: &LoadHistory,
    cx: &PassContext,
    every: u64,
    window: u64,
) -> Result<MovePlan, String> {
    let machine = cx.machine;
    let alive = machine.alive_dies();
    let gpus = eplb::Gpus::new(&alive, |_| 0);
    let bytes = cx.model.expert_bytes();
    let mut current = holders.dies.clone();
    let mut decisions = Vec::new();
    let (mut rebalances, mut moved, mut copied, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    let every = every.max(1);
    for s in (every..history.steps()).step_by(every as usize) {
        let before = decisions.len();
        for (i, layer) in current.iter_mut().enumerate() {
            let Some(loads) = history.predict(s, window, i) else {
                continue;
            };
            let copies: usize = layer.iter().map(Vec::len).sum();
            let redundant = copies.saturating_sub(layer.len());
            let placed = eplb::place(&[loads], 1, &gpus, redundant, eplb::Policy::Global)?;
            let fresh = eplb::distinct(placed.layouts).swap_remove(0);
            let target = match_to_dies(layer, &fresh, &alive)?;
            let stop = |expert: ExpertId, from: DieId, to: DieId| WeightMove {
                expert,
                from,
                to: vec![to],
                bytes,
                timing: Timing {
                    start: s,
                    effective: s,
                    until: None,
                },
                travel: Travel::StopTheWorld,
            };
            for (e, (old, new)) in layer.iter_mut().zip(target).enumerate() {
                let old_set: BTreeSet<DieId> = old.iter().copied().collect();
                let new_set: BTreeSet<DieId> = new.iter().copied().collect();
                let gone: Vec<DieId> = old_set.difference(&new_set).copied().collect();
                let added: Vec<DieId> = new_set.difference(&old_set).copied().collect();
                let expert = ExpertId(e as u32);
                for (k, &to) in added.iter().enumerate() {
                    let (decision, from) = match gone.get(k) {
                        Some(&from) => {
                            moved += 1;
                            (true, from)
                        }
                        None => {
                            copied += 1;
                            let from = old
                                .iter()
                                .copied()
                                .min_by_key(|&d| (machine.hops(d, to).unwrap_or(u32::MAX), d))
                                .ok_or("an expert with no copy")?;
                            (false, from)
                        }
                    };
                    let weights = stop(expert, from, to);
                    decisions.push(if decision {
                        Decision::Move { layer: i, weights }
                    } else {
                        Decision::Replicate { layer: i, weights }
                    });
                }
                for &die in gone.iter().skip(added.len()) {
                    dropped += 1;
                    decisions.push(Decision::Evict {
                        layer: i,
                        eviction: Eviction { expert, die, step: s },
                    });
                }
                *old = new;
            }
        }
        if decisions.len() > before {
            rebalances += 1;
        }
    }
    Ok(MovePlan {
        decisions,
        shadow_slots: 0,
        notes: vec![format!(
            "invasive: EPLB every {every} steps on the loads of the last {window}; {rebalances} rebalances moved {moved} copies, added {copied}, dropped {dropped}, all stop-the-world"
        )],
    })
}

/// The fresh EPLB layout (`fresh[e]`: the dies of expert `e`, dies being
/// `alive` in pack order) with its packs given to dies so that as many of
/// the current copies as possible stay where they are.
fn match_to_dies(current: &[Vec<DieId>], fresh: &[Vec<DieId>], alive: &[DieId]) -> Result<Vec<Vec<DieId>>, String> {
    let n = alive.len();
    let pack_of = |d: DieId| alive.iter().position(|&a| a == d);
    // kept[p][j]: experts of pack p already on die alive[j].
    let mut kept = vec![vec![0.0f64; n]; n];
    for (e, dies) in fresh.iter().enumerate() {
        for &d in dies {
            let Some(p) = pack_of(d) else { continue };
            for &c in &current[e] {
                if let Some(j) = pack_of(c) {
                    kept[p][j] += 1.0;
                }
            }
        }
    }
    let cost: Vec<Vec<f64>> = kept.iter().map(|row| row.iter().map(|&k| -k).collect()).collect();
    let die_of_pack = hungarian::assign(&cost)?;
    Ok(fresh
        .iter()
        .map(|dies| {
            let mut v: Vec<DieId> = dies
                .iter()
                .filter_map(|&d| pack_of(d).map(|p| alive[die_of_pack[p]]))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect())
}
