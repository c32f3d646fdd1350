//! One run of a schedule: for every step, the routing (generated, replayed
//! or decided by the real gate), the numeric check (the distributed
//! execution against the dense reference), and the timing (the event
//! engine on the machine model); then the report. Faults (`fault.rs`)
//! strike at the start of their step, before that step's migrations.

use crate::fault::{self, Fault};
use crate::machine::Machine;
use crate::numerics::Arrival;
use crate::numerics::{NumericConfig, Numerics};
use crate::report::{FaultReport, NumericReport, ReportBuilder, RunReport};
use crate::routing::{RoutingGenerator, StepRouting};
use crate::schedule::{Broadcast, Migration, MigrationKind, Schedule, WeightSource};
use crate::sim::bound::{step_bound, StepBound};
use crate::sim::engine::{simulate_step_with, SimOptions, StepResult};
use crate::sim::moves::{step_chunks, StepChunk};
use rayon::prelude::*;
use std::sync::Arc;

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
    /// Dies and links that fail during the run (`--fail`).
    pub faults: Vec<Fault>,
}

/// What a run produced.
pub struct RunOutput {
    pub report: RunReport,
    /// The first `trace_steps` step results, with their transfers.
    pub traced: Vec<StepResult>,
    /// The machine as the run ended: with the faults' dies and links dead.
    pub machine: Machine,
}

/// Why a run stopped. Each kind is one diagnostic code at the command
/// line, so the user learns which of their inputs to change.
#[derive(Clone, Debug, PartialEq)]
pub struct RunError {
    pub kind: RunErrorKind,
    pub message: String,
}

/// Which input a run error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunErrorKind {
    /// The schedule does not hold together: validation, the numeric
    /// executor's walk of it, a migration it carries (E0043).
    Schedule,
    /// A `--fail` fault cannot strike, or the run cannot recover from it (E0044).
    Fault,
    /// The workload's routing cannot be generated: a trace that does not
    /// fit, `routing = gate` without the numeric executor (E0045).
    Routing,
}

impl RunError {
    fn new(kind: RunErrorKind, message: impl Into<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
        }
    }

    fn schedule(message: impl Into<String>) -> RunError {
        RunError::new(RunErrorKind::Schedule, message)
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Steps prepared ahead and simulated at once, per worker thread: enough
/// to keep every core busy, few enough that their routings stay small.
const STEPS_PER_THREAD: u64 = 2;

/// Runs `schedule`. `progress(done, total)` is called after every step.
///
/// The steps' timings are independent (each step starts on an idle
/// machine), while what feeds them is not (the routing generator's stream,
/// the migrations and faults so far, the numeric executor's state). So the
/// run goes in batches: the batch's steps are prepared one after another,
/// simulated on all cores, and reported in step order, which gives the
/// same report, bit for bit, as one step at a time.
pub fn run(
    schedule: &Schedule,
    options: &RunOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunOutput, RunError> {
    use RunErrorKind::{Fault, Routing};
    schedule.validate().map_err(RunError::schedule)?;
    let machine = Machine::build(schedule.machine.clone()).map_err(|e| RunError::schedule(e.to_string()))?;
    let steps = options.steps.unwrap_or(schedule.workload.steps).max(1);
    fault::check(&machine, &options.faults, steps).map_err(|e| RunError::new(Fault, e.to_string()))?;
    let faults = fault::in_order(&options.faults);
    // The machine as faults leave it; `machine` stays as the run began.
    let mut live = Arc::new(machine.clone());
    let mut generator =
        RoutingGenerator::new(&schedule.model, &schedule.workload).map_err(|e| RunError::new(Routing, e))?;
    let mut numerics = match &options.numerics {
        Some(c) => Some(Numerics::new(schedule, c).map_err(RunError::schedule)?),
        None => None,
    };
    let mut builder = ReportBuilder::new(schedule, &machine);
    let mut timeline = Timeline::new(schedule);
    let mut traced = Vec::new();
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    // The first step whose check failed, and where.
    let mut failed_check: Option<(u64, crate::numerics::Difference)> = None;
    let mut tolerance = crate::numerics::TOLERANCE;
    let tokens = schedule.workload.tokens_per_step() as usize;
    let batch = STEPS_PER_THREAD * rayon::current_num_threads().max(1) as u64;
    let mut next = 0;
    while next < steps {
        // Prepare: everything a step's timing needs, in step order. An
        // error here is reported after the steps before it.
        let mut jobs = Vec::new();
        let mut failed = None;
        for step in next..steps.min(next + batch) {
            let prepared = (|| -> Result<StepJob, RunError> {
                let struck = timeline
                    .apply_faults(step, &faults, &mut live)
                    .map_err(|e| RunError::new(Fault, e))?;
                let change = timeline.advance(step).map_err(RunError::schedule)?;
                if change.placement_changed {
                    if let Some(n) = &mut numerics {
                        n.relocate(&timeline.view, &change.arrivals).map_err(|e| {
                            RunError::schedule(format!(
                                "step {step}: the numeric executor cannot follow the migration: {e}"
                            ))
                        })?;
                    }
                }
                let generated = generator.step(step);
                let routing = match (&mut numerics, generated) {
                    (Some(n), generated) => {
                        let checked = n.step(step, generated.as_ref());
                        max_abs = max_abs.max(checked.max_abs_error);
                        max_rel = max_rel.max(checked.max_rel_error);
                        tolerance = checked.tolerance;
                        if let (None, Some(d)) = (&failed_check, checked.difference.clone()) {
                            failed_check = Some((step, d));
                        }
                        // The real gate decided only for the numeric tokens: tile them over the step.
                        generated.unwrap_or_else(|| tile(&checked.routing, tokens))
                    }
                    (None, Some(r)) => r,
                    (None, None) => {
                        return Err(RunError::new(
                            Routing,
                            "routing = gate needs the numeric executor: drop --no-numerics",
                        ))
                    }
                };
                let sim = SimOptions {
                    record_flows: step < options.trace_steps,
                    network_quantum: options.network_quantum,
                    ..SimOptions::default()
                };
                Ok(timeline.job(step, &live, routing, sim, struck, change.applied))
            })();
            match prepared {
                Ok(job) => jobs.push(job),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        next += jobs.len() as u64;
        // Simulate on all cores; report in step order.
        let timed: Vec<Result<(StepResult, f64, StepBound), String>> = jobs.par_iter().map(StepJob::simulate).collect();
        for (job, timed) in jobs.into_iter().zip(timed) {
            let (mut result, recovery_s, bound) = timed.map_err(RunError::schedule)?;
            // Re-homed sequences decode again once their KV caches are rebuilt.
            let rebuild: f64 = job.struck.iter().map(|r| r.kv_rebuild_s).sum();
            result.latency_s += rebuild;
            result.breakdown.other_s += rebuild;
            for mut report in job.struck {
                report.recovery_s = recovery_s;
                builder.fault(&job.machine, report);
            }
            builder.add(job.step, &result, job.applied, bound);
            if job.sim.record_flows {
                traced.push(result);
            }
            progress(job.step + 1, steps);
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let numeric_check = numerics.map(|n| {
        let s = n.shape();
        NumericReport {
            max_abs_error: max_abs,
            max_rel_error: max_rel,
            tolerance,
            passed: failed_check.is_none() && !max_rel.is_nan(),
            failed_step: failed_check.as_ref().map(|f| f.0),
            difference: failed_check.as_ref().map(|f| f.1.clone()),
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
        machine: Arc::unwrap_or_clone(live),
    })
}

/// The schedule as the run goes: the placement after the migrations that
/// took effect so far, and the view one step runs on (that placement with
/// the step's broadcasts).
struct Timeline {
    current: Schedule,
    /// The next migration of `current.migrations` to take effect.
    next: usize,
    /// Shared with the steps simulating on it; copied when it changes
    /// while they do.
    view: Arc<Schedule>,
    /// Indices of the broadcasts `view` holds.
    active: Vec<usize>,
    /// Expert copies faults restored (already in `current`'s placement),
    /// whose chunks travel in their fault's step.
    restores: Vec<Migration>,
    /// A fault changed `current` since the view was made, and the copies it
    /// restored (for the numeric executor).
    stale: bool,
    fault_arrivals: Vec<Arrival>,
}

/// What changed at the start of a step.
struct Change {
    /// Migrations that took effect.
    applied: u32,
    placement_changed: bool,
    /// Expert copies new in the view, and where their weights come from.
    arrivals: Vec<Arrival>,
}

impl Timeline {
    fn new(schedule: &Schedule) -> Timeline {
        Timeline {
            current: schedule.clone(),
            next: 0,
            view: Arc::new(schedule.clone()),
            active: Vec::new(),
            restores: Vec::new(),
            stale: false,
            fault_arrivals: Vec::new(),
        }
    }

    /// The faults of `faults` (in the order they strike) that strike at
    /// `step`: each rebuilds `machine` and repairs `current`
    /// (`fault::recover`). Returns their reports, without the step's timing.
    fn apply_faults(
        &mut self,
        step: u64,
        faults: &[Fault],
        machine: &mut Arc<Machine>,
    ) -> Result<Vec<FaultReport>, String> {
        let mut reports = Vec::new();
        for f in faults.iter().filter(|f| f.step == step) {
            let r = fault::recover(&mut self.current, self.next, machine, f, &self.fault_arrivals)
                .map_err(|e| format!("step {step}: {e}"))?;
            *machine = Arc::new(r.machine);
            Arc::make_mut(&mut self.view).machine = self.current.machine.clone();
            self.stale |= r.placement_changed;
            self.restores.extend(r.restores);
            self.fault_arrivals.extend(r.arrivals);
            // An earlier fault of this step may have restored copies onto,
            // or from, the die this one killed.
            let ffn = self.current.model.moe.as_ref().map_or(1, |m| m.expert_ffn.max(1));
            fault::revise_restores(
                &mut self.restores,
                &mut self.fault_arrivals,
                f,
                &self.current.placement,
                ffn,
                machine,
            )
            .map_err(|e| format!("step {step}: {e}"))?;
            reports.push(r.report);
        }
        Ok(reports)
    }

    /// Applies the migrations that take effect at `step` and puts the
    /// step's broadcasts on.
    fn advance(&mut self, step: u64) -> Result<Change, String> {
        let mut arrivals = std::mem::take(&mut self.fault_arrivals);
        let mut applied = 0;
        while let Some(m) = self
            .current
            .migrations
            .get(self.next)
            .filter(|m| m.effective_step <= step)
        {
            self.current
                .placement
                .apply(m)
                .map_err(|e| format!("step {step}: {e}"))?;
            if let (MigrationKind::Replicate | MigrationKind::Move, source) = (m.kind, m.source) {
                arrivals.push(Arrival {
                    layer: m.layer,
                    expert: m.expert,
                    to: m.to,
                    source,
                });
            }
            self.next += 1;
            applied += 1;
        }
        let active: Vec<usize> = (self.current.broadcasts.iter().enumerate())
            .filter(|(_, b)| b.steps.contains(&step))
            .map(|(i, _)| i)
            .collect();
        let placement_changed = applied > 0 || active != self.active || self.stale;
        if std::mem::take(&mut self.stale) {
            Arc::make_mut(&mut self.view).programs = self.current.programs.clone();
        }
        if placement_changed {
            let view = Arc::make_mut(&mut self.view);
            let before = std::mem::take(&mut view.placement);
            let on: Vec<&Broadcast> = active.iter().map(|&i| &self.current.broadcasts[i]).collect();
            view.placement = self.current.placement.with_broadcasts(&on);
            // A broadcast copy is new where neither the placement nor the
            // last view had it; it comes down the tree from its parent.
            for b in &on {
                let held = |p: &crate::schedule::Placement, d| {
                    p.experts
                        .get(b.layer as usize)
                        .and_then(|l| l.get(b.expert as usize))
                        .is_some_and(|dies| dies.contains(&d))
                };
                for &(parent, child) in &b.tree {
                    if !held(&self.current.placement, child) && !held(&before, child) {
                        arrivals.push(Arrival {
                            layer: b.layer,
                            expert: b.expert,
                            to: child,
                            source: WeightSource::Die(parent),
                        });
                    }
                }
            }
            self.active = active;
        }
        Ok(Change {
            applied,
            placement_changed,
            arrivals,
        })
    }

    /// `step`, ready to simulate on the view as it stands: the weights
    /// that travel in it (planned migrations and broadcasts, and copies
    /// faults restored) and what the run reports beside its timing.
    fn job(
        &self,
        step: u64,
        machine: &Arc<Machine>,
        routing: StepRouting,
        sim: SimOptions,
        struck: Vec<FaultReport>,
        applied: u32,
    ) -> StepJob {
        let on: Vec<&Broadcast> = self.active.iter().map(|&i| &self.current.broadcasts[i]).collect();
        StepJob {
            step,
            view: Arc::clone(&self.view),
            machine: Arc::clone(machine),
            routing,
            sim,
            planned: step_chunks(&self.current.migrations, &on, step),
            restores: step_chunks(&self.restores, &[], step),
            struck,
            applied,
        }
    }
}

/// One step, prepared: everything its timing depends on, so steps can be
/// simulated in any order and on any core.
struct StepJob {
    step: u64,
    view: Arc<Schedule>,
    /// The machine as the faults so far left it.
    machine: Arc<Machine>,
    routing: StepRouting,
    sim: SimOptions,
    /// Migration chunks and broadcast pieces in flight this step.
    planned: Vec<StepChunk>,
    /// Chunks of the expert copies faults restored, in flight this step.
    restores: Vec<StepChunk>,
    /// The faults that struck at its start, their timing not yet known.
    struck: Vec<FaultReport>,
    /// Migrations that took effect at its start.
    applied: u32,
}

impl StepJob {
    /// Simulates the step with its weights in flight. When migration
    /// chunks or broadcast pieces travel, the step is simulated again
    /// without them (as if the weights were already where they go): the
    /// difference is what moving them cost, the experts' wait for pieces
    /// and the links they took from the step's own traffic alike. When a
    /// fault restored experts, once more without their chunks: the
    /// difference is the recovery time (second). The variants run side by
    /// side. Third, the step's physical bound (`sim/bound.rs`), on its
    /// own work: the weights in flight are not in it.
    ///
    /// Those differences are taken on the exact network: the quantum's
    /// error goes both ways (`Network::with_quantum`), so at the default a
    /// step without any weight in flight could read up to a few percent
    /// apart from itself with them, a noise as large as the stall measured.
    fn simulate(&self) -> Result<(StepResult, f64, StepBound), String> {
        let run = |chunks: Vec<StepChunk>, sim: SimOptions| {
            simulate_step_with(&self.view, &self.machine, &self.routing, sim, chunks)
        };
        let differenced = !self.planned.is_empty() || !self.restores.is_empty();
        let sim = SimOptions {
            network_quantum: if differenced { 0.0 } else { self.sim.network_quantum },
            ..self.sim
        };
        let quiet = SimOptions {
            record_flows: false,
            ..sim
        };
        let without = |present: &Vec<StepChunk>, kept: &Vec<StepChunk>| {
            (!present.is_empty()).then(|| run(kept.clone(), quiet)).transpose()
        };
        let (result, (without_moves, without_restores)) = rayon::join(
            || run(joined(self.planned.clone(), self.restores.clone()), sim),
            || {
                rayon::join(
                    || without(&self.planned, &self.restores),
                    || without(&self.restores, &self.planned),
                )
            },
        );
        let mut result = result?;
        if let Some(w) = without_moves? {
            result.breakdown.migration_s = (result.latency_s - w.latency_s).max(0.0);
        }
        let recovery_s = match without_restores? {
            Some(w) => (result.latency_s - w.latency_s).max(0.0),
            None => 0.0,
        };
        Ok((result, recovery_s, step_bound(&self.view, &self.machine, &self.routing)))
    }
}

/// `a` then `b`, `b`'s references to its own chunks shifted past `a`'s.
fn joined(mut a: Vec<StepChunk>, b: Vec<StepChunk>) -> Vec<StepChunk> {
    let shift = a.len();
    a.extend(b.into_iter().map(|mut c| {
        for x in &mut c.after {
            *x += shift;
        }
        c
    }));
    a
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
