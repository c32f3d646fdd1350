//! One run of a schedule: for every step, the routing (generated, replayed
//! or decided by the real gate), the numeric check (the distributed
//! execution against the dense reference), and the timing (the event
//! engine on the machine model); then the report.

use crate::machine::Machine;
use crate::numerics::{NumericConfig, Numerics};
use crate::report::{NumericReport, ReportBuilder, RunReport};
use crate::routing::{RoutingGenerator, StepRouting};
use crate::schedule::Schedule;
use crate::sim::engine::{simulate_step, SimOptions, StepResult};

/// How to run.
pub struct RunOptions {
    /// Steps to run (default: the workload's).
    pub steps: Option<u64>,
    /// Numeric check settings; `None` skips numerics.
    pub numerics: Option<NumericConfig>,
    /// Steps whose transfers are recorded for the Chrome trace (from step 0).
    pub trace_steps: u64,
    /// The network's rate-recompute quantum (0: exact); see `SimOptions`.
    pub network_quantum: f64,
}

/// What a run produced.
pub struct RunOutput {
    pub report: RunReport,
    /// The first `trace_steps` step results, with their transfers.
    pub traced: Vec<StepResult>,
}

/// Runs `schedule`. `progress(done, total)` is called after every step.
pub fn run(schedule: &Schedule, options: &RunOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<RunOutput, String> {
    schedule.validate()?;
    let machine = Machine::build(schedule.machine.clone()).map_err(|e| e.to_string())?;
    let steps = options.steps.unwrap_or(schedule.workload.steps).max(1);
    let mut generator = RoutingGenerator::new(&schedule.model, &schedule.workload)?;
    let mut numerics = match &options.numerics {
        Some(c) => Some(Numerics::new(schedule, c)?),
        None => None,
    };
    let mut builder = ReportBuilder::new(schedule, &machine);
    let mut traced = Vec::new();
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let tokens = schedule.workload.tokens_per_step() as usize;
    for step in 0..steps {
        let generated = generator.step(step);
        let routing = match (&mut numerics, generated) {
            (Some(n), generated) => {
                let checked = n.step(step, generated.as_ref());
                max_abs = max_abs.max(checked.max_abs_error);
                max_rel = max_rel.max(checked.max_rel_error);
                // The real gate decided only for the numeric tokens: tile them over the step.
                generated.unwrap_or_else(|| tile(&checked.routing, tokens))
            }
            (None, Some(r)) => r,
            (None, None) => return Err("routing = gate needs the numeric executor: drop --no-numerics".into()),
        };
        let record = step < options.trace_steps;
        let sim = SimOptions {
            record_flows: record,
            network_quantum: options.network_quantum,
        };
        let result = simulate_step(schedule, &machine, &routing, sim)?;
        builder.add(step, &result);
        if record {
            traced.push(result);
        }
        progress(step + 1, steps);
    }
    let numeric_check = numerics.map(|n| {
        let s = n.shape();
        NumericReport {
            max_abs_error: max_abs,
            max_rel_error: max_rel,
            width: s.hidden,
            reduced: n.reduced(),
            note: if n.reduced() {
                format!(
                    "numerics ran reduced: hidden {} of {}, the first {} tokens of each step, context {}; timing used the full model",
                    s.hidden,
                    schedule.model.hidden,
                    s.batch * if schedule.workload.phase == crate::workload::Phase::Prefill { s.seq_len } else { 1 },
                    s.context
                )
            } else {
                "numerics ran at full size".into()
            },
        }
    });
    Ok(RunOutput {
        report: builder.finish(numeric_check),
        traced,
    })
}

/// A routing over `tokens` tokens that repeats `r`'s tokens cyclically.
fn tile(r: &StepRouting, tokens: usize) -> StepRouting {
    let k = r.top_k.max(1);
    let have = r.tokens.max(1);
    let layers = r
        .layers
        .iter()
        .map(|l| {
            let mut experts = Vec::with_capacity(tokens * k);
            let mut weights = Vec::new();
            for t in 0..tokens {
                let src = (t % have) * k;
                experts.extend_from_slice(l.experts.get(src..src + k).unwrap_or(&[]));
                if !l.weights.is_empty() {
                    weights.extend_from_slice(l.weights.get(src..src + k).unwrap_or(&[]));
                }
            }
            crate::routing::LayerRouting {
                layer: l.layer,
                experts,
                weights,
            }
        })
        .collect();
    StepRouting {
        tokens,
        top_k: r.top_k,
        layers,
    }
}
