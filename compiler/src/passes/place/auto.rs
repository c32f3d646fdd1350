//! `place(auto)`: tries every placement that applies to the plan and keeps
//! the one whose simulated step is fastest.
//!
//! Each candidate runs as its own `place(...)` on a copy of the IR, must
//! pass the verifier (a placement that does not fit is dropped, with its
//! reason in a note), is lowered, and is timed on the simulator over the
//! first step of the workload's own routing (`probe/step_time.rs`). The candidates run on every core at once, each
//! placed, lowered and simulated by one worker (the routing statistics are
//! measured once, first, and shared). The winner's annotations replace the IR's; every
//! candidate's time is left in `Header::notes`, so `moec compile` shows why
//! the winner won. Ties go to the earlier candidate in `PlacementChoice::ALL`
//! (the simpler placement).

use super::Place;
use crate::ir::{verify_placed, Ir};
use crate::passes::probe::step_time::step_time;
use crate::passes::Pass;
use crate::passes::PassContext;
use crate::sema::PlacementChoice;

/// The placements `auto` tries for this plan: every built-in one, less
/// those that need tensor-parallel attention when the plan has none.
pub fn candidates(cx: &PassContext) -> Vec<PlacementChoice> {
    PlacementChoice::ALL
        .iter()
        .map(|(_, c)| c.clone())
        .filter(|c| *c != PlacementChoice::Auto)
        .filter(|c| c.applies_with(cx.attention_tp))
        .collect()
}

/// Places `ir` with the fastest candidate; errors only when none fits.
pub fn place(ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
    // Measure the routing statistics once, before the workers share them.
    let _ = cx.stats();
    let choices = candidates(cx);
    let trials = on_every_core(&choices, |choice| trial(ir, cx, choice));
    let mut best: Option<(f64, &PlacementChoice, Ir)> = None;
    let mut notes = Vec::new();
    for (choice, trial) in choices.iter().zip(trials) {
        let name = choice.name();
        match trial {
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

/// Places a copy of `ir` with `choice`, checks it, lowers it and times it.
fn trial(ir: &Ir, cx: &PassContext, choice: &PlacementChoice) -> Result<(f64, Ir), String> {
    let mut trial = ir.clone();
    Place::new(Some(choice.name()))?.run(&mut trial, cx)?;
    if let Some(e) = verify_placed(&trial, cx.machine).first() {
        return Err(e.to_string());
    }
    let seconds = step_time(&trial, cx)?;
    Ok((seconds, trial))
}

/// `work` on every item, results in the items' order, the items taken by
/// the cores in turn from a shared counter, last item first. Each item's work depends on
/// the item alone, so which core ran it does not change what it gives.
fn on_every_core<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, String> + Sync,
) -> Vec<Result<R, String>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<Result<R, String>>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (work, next) = (&work, &next);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    // Last first: the later placements cost more to compute
                    // (MoETuner, the token-domain layouts, HD-MoE), and the
                    // quick ones fill in around them.
                    loop {
                        let taken = next.fetch_add(1, Ordering::Relaxed);
                        let Some(i) = items.len().checked_sub(taken + 1) else {
                            break;
                        };
                        done.push((i, work(&items[i])));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().unwrap_or_default() {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err("its worker stopped".into())))
        .collect()
}
