//! One whole step of a placed IR, simulated: what the `auto` searches rank
//! their candidates by (`place(auto)`, `overlap(auto)`).
//!
//! The IR is lowered and timed over the first step of the workload's own
//! routing, without numerics and at a coarser network quantum than `moec
//! run` uses: ranking needs the order, not the last percent.

use crate::ir::Ir;
use crate::lower::lower;
use crate::passes::PassContext;
use moec_runtime::run::{run, RunOptions};

/// Steps a candidate is timed on.
const STEPS: u64 = 1;

/// The network quantum of the ranking runs (`moec run` uses 0.02).
const QUANTUM: f64 = 0.05;

/// The mean simulated step of `ir` (placed) on the context's machine and workload.
pub fn step_time(ir: &Ir, cx: &PassContext) -> Result<f64, String> {
    let schedule = lower(ir, cx.model, cx.machine, cx.workload)?;
    let options = RunOptions {
        steps: Some(STEPS),
        numerics: None,
        trace_steps: 0,
        network_quantum: QUANTUM,
        faults: Vec::new(),
    };
    Ok(run(&schedule, &options, &mut |_, _| {})
        .map_err(|e| e.message)?
        .report
        .latency
        .mean_s)
}
