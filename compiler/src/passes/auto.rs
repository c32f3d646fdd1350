//! `place(auto)`: tries every placement that applies to the plan and keeps
//! the one whose simulated step is fastest.
//!
//! Each candidate runs as its own `place(...)` on a copy of the IR, must
//! pass the verifier (a placement that does not fit is dropped, with its
//! reason in a note), is lowered, and is timed on the simulator over the
//! first step of the workload's own routing, without numerics and at a
//! coarser network quantum than `moec run` uses: ranking needs the order,
//! not the last percent. Placing runs in turn (the passes share the
//! context's routing statistics); the simulations, the costly part, run on
//! every core at once. The winner's annotations replace the IR's; every
//! candidate's time is left in `Header::notes`, so `moec compile` shows why
//! the winner won. Ties go to the earlier candidate in `PlacementChoice::ALL`
//! (the simpler placement).

use super::place::Place;
use super::{Pass, PassContext};
use crate::ir::{verify_placed, Ir};
use crate::lower::lower;
use crate::sema::PlacementChoice;
use moec_runtime::run::{run, RunOptions};
use moec_runtime::schedule::Schedule;

/// Steps each candidate is timed on.
const STEPS: u64 = 1;

/// The network quantum of the ranking runs (`moec run` uses 0.02).
const QUANTUM: f64 = 0.05;

/// The placements `auto` tries for this plan: every built-in one, less
/// those that need tensor-parallel attention when the plan has none.
pub fn candidates(cx: &PassContext) -> Vec<PlacementChoice> {
    PlacementChoice::ALL
        .iter()
        .map(|(_, c)| c.clone())
        .filter(|c| *c != PlacementChoice::Auto)
        .filter(|c| !c.needs_tensor_parallel_attention() || cx.attention_tp > 1)
        .collect()
}

/// A candidate, placed and lowered, or why it could not be.
type Placed = (PlacementChoice, Result<(Ir, Schedule), String>);

/// Places `ir` with the fastest candidate; errors only when none fits.
pub fn place(ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
    let placed: Vec<Placed> = candidates(cx)
        .into_iter()
        .map(|c| (c.clone(), placed(ir, cx, &c)))
        .collect();
    let times = simulate_all(&placed);
    let mut best: Option<(f64, PlacementChoice, Ir)> = None;
    let mut notes = Vec::new();
    for ((choice, trial), time) in placed.into_iter().zip(times) {
        let name = choice.name();
        match trial.and_then(|(ir, _)| time.map(|t| (t, ir))) {
            Ok((seconds, trial)) => {
                notes.push(format!("auto: {name} {:.3} ms a step (simulated)", seconds * 1e3));
                if best.as_ref().is_none_or(|(b, _, _)| seconds < *b) {
                    best = Some((seconds, choice, trial));
                }
            }
            Err(why) => notes.push(format!("auto: {name} skipped: {why}")),
        }
    }
    let Some((seconds, choice, trial)) = best else {
        return Err(format!("no placement fits this plan ({})", notes.join("; ")));
    };
    *ir = trial;
    ir.header.notes.extend(notes);
    ir.header.notes.push(format!(
        "auto: chose {} at {:.3} ms a step",
        choice.name(),
        seconds * 1e3
    ));
    Ok(())
}

/// Places a copy of `ir` with `choice`, checks it, and lowers it.
fn placed(ir: &Ir, cx: &PassContext, choice: &PlacementChoice) -> Result<(Ir, Schedule), String> {
    let mut trial = ir.clone();
    Place::new(Some(choice.name()))?.run(&mut trial, cx)?;
    if let Some(e) = verify_placed(&trial, cx.machine).first() {
        return Err(e.to_string());
    }
    let schedule = lower(&trial, cx.model, cx.machine, cx.workload)?;
    Ok((trial, schedule))
}

/// The mean simulated step of every lowered candidate (in order), the
/// candidates shared out over the cores.
fn simulate_all(placed: &[Placed]) -> Vec<Result<f64, String>> {
    let time = |schedule: &Schedule| -> Result<f64, String> {
        let options = RunOptions {
            steps: Some(STEPS),
            numerics: None,
            trace_steps: 0,
            network_quantum: QUANTUM,
        };
        Ok(run(schedule, &options, &mut |_, _| {})?.report.latency.mean_s)
    };
    let schedules: Vec<Option<&Schedule>> = placed.iter().map(|(_, p)| p.as_ref().ok().map(|(_, s)| s)).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(schedules.len().max(1));
    let mut times: Vec<Result<f64, String>> = vec![Err("the simulation did not finish".into()); schedules.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let schedules = &schedules;
                scope.spawn(move || {
                    // Candidate i goes to worker i mod workers: a fixed
                    // split, so the result does not depend on timing.
                    (w..schedules.len())
                        .step_by(workers)
                        .filter_map(|i| schedules[i].map(|s| (i, time(s))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, t) in h.join().unwrap_or_default() {
                times[i] = t;
            }
        }
    });
    times
}
