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
use moec_runtime::sim::engine::StepResult;

/// Steps a candidate is timed on.
const STEPS: u64 = 1;

/// The network quantum of the ranking runs (`moec run` uses 0.02).
const QUANTUM: f64 = 0.05;

/// The mean simulated step of `ir` (placed) on the context's machine and workload.
pub fn step_time(ir: &Ir, cx: &PassContext) -> Result<f64, String> {
    Ok(simulated(ir, cx, 0)?.report.latency.mean_s)
}

/// The first simulated step of `ir`, with every instruction's span: what
/// a fit of a task model reads.
pub fn traced_step(ir: &Ir, cx: &PassContext) -> Result<StepResult, String> {
    simulated(ir, cx, 1)?
        .traced
        .into_iter()
        .next()
        .ok_or_else(|| "the probe's run traced no step".to_string())
}

fn simulated(ir: &Ir, cx: &PassContext, trace_steps: u64) -> Result<moec_runtime::run::RunOutput, String> {
    let schedule = lower(ir, cx.model, cx.machine, cx.workload)?;
    let options = RunOptions {
        steps: Some(STEPS),
        numerics: None,
        trace_steps,
        network_quantum: QUANTUM,
        faults: Vec::new(),
    };
    run(&schedule, &options, &mut |_, _| {}).map_err(|e| e.message)
}
