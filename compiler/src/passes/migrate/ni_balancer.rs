//! MoEntwine's NI-Balancer: non-invasive expert migration into shadow
//! slots, over links the current phase leaves cold.
//!
//! Every `every` steps, for each MoE layer, from the loads predicted over
//! the last `window` steps:
//!
//! 1. each die's load is `H_d = sum over its experts of load_e / replicas_e`
//!    (a replicated expert's tokens are spread over its copies);
//! 2. when the hottest die's `H` exceeds `(1 + alpha)` times the mean over
//!    the alive dies, its hottest expert (by its share on that die) gains a
//!    replica on the nearest die that has a free shadow slot and would stay
//!    below the hottest die's load; if every near die's slots are taken, a
//!    die whose coldest shadow replica carries less than the new share drops
//!    it to make room;
//! 3. the copy travels in legs (at most three: local, global, local), each
//!    over a route whose links are cold in that leg's phase
//!    ([`PhaseLinks`], measured on the simulator), in chunks sized to fit a
//!    window, so it never waits on or delays the step's own traffic; the
//!    replica serves from the step after its last chunk arrives.
//!
//! An expert with a copy still in flight is left alone until it lands, and
//! a shadow replica serves at least `window` steps before it may be
//! evicted, so sampling noise does not make replicas chase each other. The
//! shadow slots are reserved in every die's memory for every MoE layer
//! (`Ir::shadow_slots`), so no migration can run a die out of memory.

use super::load_history::LoadHistory;
use super::{Decision, ExpertHolders, MovePlan};
use crate::ir::{ExpertId, Ir, Timing, Travel, WeightMove};
use crate::passes::probe::phase_links::PhaseLinks;
use crate::passes::PassContext;
use moec_runtime::machine::DieId;
use moec_runtime::schedule::{plan_legs, step_windows};

/// The policy's settings (see `MigrationPolicy::NiBalancer`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub alpha: f64,
    pub every: u64,
    pub window: u64,
    pub slots: u32,
}

/// A shadow replica: its expert and the decision that made it.
#[derive(Clone, Copy, Debug)]
struct Shadow {
    expert: u32,
    decision: usize,
    /// The step it starts serving.
    effective: u64,
}

/// Plans the run's migrations.
pub fn plan(
    ir: &Ir,
    holders: &ExpertHolders,
    history: &LoadHistory,
    cx: &PassContext,
    settings: Settings,
) -> Result<MovePlan, String> {
    let machine = cx.machine;
    let links = PhaseLinks::measure(ir, cx)?;
    let windows = step_windows(cx.model);
    let bytes = cx.model.expert_bytes();
    let alive = machine.alive_dies();
    let die_count = machine.die_count() as usize;
    let layers = holders.layers.len();
    let steps = history.steps();

    // Holders including copies in flight: what the policy counts on.
    let mut planned = holders.dies.clone();
    let mut shadows: Vec<Vec<Vec<Shadow>>> = vec![vec![Vec::new(); die_count]; layers];
    // Per layer and expert: the step its copy in flight starts serving.
    let mut landing: Vec<Vec<u64>> = holders.dies.iter().map(|l| vec![0; l.len()]).collect();
    let mut decisions: Vec<Decision> = Vec::new();
    let (mut triggers, mut evictions, mut fallbacks, mut too_late) = (0u64, 0u64, 0u64, 0u64);
    let mut legs_used = [0u64; 4];

    for s in (1..steps).step_by(settings.every.max(1) as usize) {
        for i in 0..layers {
            let Some(loads) = history.predict(s, settings.window, i) else {
                continue;
            };
            let h = ExpertHolders::die_loads(&planned[i], &loads, die_count);
            let mean = alive.iter().map(|d| h[d.index()]).sum::<f64>() / alive.len().max(1) as f64;
            let Some(&hot) = alive
                .iter()
                .max_by(|a, b| h[a.index()].total_cmp(&h[b.index()]).then(b.cmp(a)))
            else {
                continue;
            };
            if h[hot.index()] <= (1.0 + settings.alpha) * mean {
                continue;
            }
            triggers += 1;
            // The hottest expert of the hottest die that is not already moving.
            let share = |e: usize| loads[e] / planned[i][e].len().max(1) as f64;
            let Some(expert) = (0..planned[i].len())
                .filter(|&e| planned[i][e].contains(&hot) && landing[i][e] <= s)
                .max_by(|&a, &b| share(a).total_cmp(&share(b)).then(b.cmp(&a)))
            else {
                continue;
            };
            let after = loads[expert] / (planned[i][expert].len() + 1) as f64;
            // The nearest die that gains from it: not holding it, below the
            // hottest die once it has the copy, with a slot free or freeable.
            let room = |d: DieId| -> Option<Option<usize>> {
                let taken = &shadows[i][d.index()];
                if taken.len() < settings.slots as usize {
                    return Some(None);
                }
                // The coldest shadow replica that has served a window of
                // steps (so noise does not make replicas chase each other),
                // if colder than the newcomer.
                taken
                    .iter()
                    .enumerate()
                    .filter(|(_, sh)| sh.effective + settings.window <= s)
                    .map(|(k, sh)| (k, share(sh.expert as usize)))
                    .filter(|&(_, load)| load < after)
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                    .map(|(k, _)| Some(k))
            };
            let target = alive
                .iter()
                .copied()
                .filter(|&d| !planned[i][expert].contains(&d) && h[d.index()] + after < h[hot.index()])
                .filter_map(|d| Some((d, room(d)?, machine.hops(hot, d)?)))
                .min_by(|a, b| {
                    (a.2, h[a.0.index()], a.0)
                        .partial_cmp(&(b.2, h[b.0.index()], b.0))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            let Some((to, evict, _)) = target else { continue };
            // Send from the holder nearest the target (the hot die on ties).
            let from = planned[i][expert]
                .iter()
                .copied()
                .filter(|&d| !is_landing(&shadows[i][d.index()], expert as u32, s))
                .min_by_key(|&d| (machine.hops(d, to).unwrap_or(u32::MAX), d != hot, d))
                .unwrap_or(hot);
            let legs = match links.legs(machine, from, to) {
                Some(l) => l,
                None => {
                    fallbacks += 1;
                    vec![links.fallback(machine, from, to)]
                }
            };
            let chunk = links.chunk_bytes(legs.iter().map(|l| l.phase));
            let route: Vec<_> = legs.iter().map(|l| (l.from, l.to, l.phase)).collect();
            let (_, effective) = plan_legs(&route, bytes.0, chunk.0, s, &windows)?;
            if effective >= steps {
                too_late += 1;
                continue;
            }
            if let Some(k) = evict {
                let old = shadows[i][to.index()].remove(k);
                if let Decision::Replicate { weights, .. } = &mut decisions[old.decision] {
                    weights.timing.until = Some(s.max(weights.timing.effective + 1));
                }
                planned[i][old.expert as usize].retain(|&d| d != to);
                evictions += 1;
            }
            legs_used[legs.len().min(3)] += 1;
            shadows[i][to.index()].push(Shadow {
                expert: expert as u32,
                decision: decisions.len(),
                effective,
            });
            planned[i][expert].push(to);
            landing[i][expert] = effective;
            decisions.push(Decision::Replicate {
                layer: i,
                weights: WeightMove {
                    expert: ExpertId(expert as u32),
                    from,
                    to: vec![to],
                    bytes,
                    timing: Timing {
                        start: s,
                        effective,
                        until: None,
                    },
                    travel: Travel::Legs { legs, chunk },
                },
            });
        }
    }
    let [cold_attention, cold_moe] = links.cold_counts(machine);
    let alive_links = machine.links().iter().filter(|l| l.alive).count();
    let notes = vec![
        format!(
            "ni_balancer: alpha {}, every {} steps, window {}, {} shadow slots a die and layer; {triggers} triggers, {} replicas ({} in one leg, {} in two, {} in three), {evictions} shadow replicas evicted, {fallbacks} with no cold route, {too_late} left out (would land after the run)",
            settings.alpha,
            settings.every,
            settings.window,
            settings.slots,
            decisions.len(),
            legs_used[1],
            legs_used[2],
            legs_used[3],
        ),
        format!(
            "ni_balancer: links cold (< {:.0}% busy) in attention {cold_attention} of {alive_links}, in MoE {cold_moe} of {alive_links}; windows {:.1} us attention, {:.1} us MoE",
            crate::passes::probe::phase_links::COLD * 100.0,
            links.window_s(crate::ir::Phase::Attention) * 1e6,
            links.window_s(crate::ir::Phase::Moe) * 1e6,
        ),
    ];
    Ok(MovePlan {
        decisions,
        shadow_slots: settings.slots,
        notes,
    })
}

/// Whether `die`'s shadow copy of `expert` is still in flight at `step`
/// (it cannot send what it has not received).
fn is_landing(shadows: &[Shadow], expert: u32, step: u64) -> bool {
    shadows.iter().any(|sh| sh.expert == expert && sh.effective > step)
}
