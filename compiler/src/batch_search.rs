//! The largest batch whose latency meets the workload's target
//! (`moec run --max-batch`): a search over the batch on the simulator.
//!
//! Each probe compiles the plan at that batch through the driver (the
//! verifier refuses a batch whose KV cache does not fit, and the budget one
//! the tool will not simulate: both count as failing) and runs a few steps,
//! timing only. The search doubles the batch from 1 until a probe fails
//! (or the language's limit, 2^24, passes), then bisects between the last
//! pass and the first failure until they are neighbours, so it ends with a
//! batch that meets the target next to one that does not, both probed.
//! It assumes what it cannot prove: that a larger batch is never faster.
//! Probes are deterministic (the workload's seeded routing, the same
//! steps), so the same input gives the same search.

use crate::diag::{Code, Diagnostic};
use crate::driver::{CompileOptions, Session};
use crate::sema::Plan;
use moec_runtime::report::RunReport;
use moec_runtime::run::{run, RunOptions};
use moec_runtime::sim::engine::DEFAULT_NETWORK_QUANTUM;
use moec_runtime::workload::Slo;
use serde::Serialize;

/// The largest batch the language allows, and so the search's ceiling.
pub const MAX_BATCH: u64 = 1 << 24;

/// Steps each probe runs unless told otherwise: enough for a p99 that is
/// not one step's luck, few enough for a search of twenty probes.
pub const DEFAULT_PROBE_STEPS: u64 = 4;

/// One batch tried.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Probe {
    pub batch: u64,
    /// The 99th-percentile step latency (the target's metric); `None` when
    /// the plan was refused at this batch.
    pub p99_s: Option<f64>,
    /// Tokens per second over the alive dies, and per die.
    pub tokens_per_s: Option<f64>,
    pub tokens_per_s_per_die: Option<f64>,
    /// Tokens per dollar when the machine prices its dies.
    pub tokens_per_dollar: Option<f64>,
    /// Mean step latency over the physical bound at this batch.
    pub bound_ratio: Option<f64>,
    /// The target met: it ran, and its p99 is within the target.
    pub met: bool,
    /// Why the plan was refused at this batch (it does not fit, the budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Probe {
    /// A probe that ran, judged against `slo`.
    pub fn ran(batch: u64, report: &RunReport, slo: &Slo) -> Probe {
        let p99 = report.latency.p99_s;
        Probe {
            batch,
            p99_s: Some(p99),
            tokens_per_s: Some(report.serving.tokens_per_s),
            tokens_per_s_per_die: Some(report.serving.tokens_per_s_per_die),
            tokens_per_dollar: report.serving.tokens_per_dollar,
            bound_ratio: Some(report.bound.ratio),
            met: slo.met_by(p99),
            refused: None,
        }
    }

    /// A batch the compiler refused, with its reason.
    pub fn refused(batch: u64, reason: String) -> Probe {
        Probe {
            batch,
            p99_s: None,
            tokens_per_s: None,
            tokens_per_s_per_die: None,
            tokens_per_dollar: None,
            bound_ratio: None,
            met: false,
            refused: Some(reason),
        }
    }
}

/// What the search found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Search {
    pub slo: Slo,
    /// Steps each probe ran.
    pub steps: u64,
    /// The largest batch that met the target, probed; `None` when batch 1
    /// does not.
    pub found: Option<Probe>,
    /// The smallest batch that failed, probed: `found`'s batch + 1, or 1;
    /// `None` when the language's largest batch meets the target.
    pub first_failing: Option<Probe>,
    /// Every probe, in the order run.
    pub probes: Vec<Probe>,
}

/// The probes a search ran, and which of them bound the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Probed {
    /// In the order run.
    pub probes: Vec<Probe>,
    /// Index of the largest batch that passed, if any did.
    pub pass: Option<usize>,
    /// Index of the smallest batch that failed, if any did.
    pub fail: Option<usize>,
}

/// The largest `b` in 1 ..= `max` with `probe(b).met`, by doubling then
/// bisection (at most about 2 log2(b) probes), assuming a larger batch
/// never meets a target a smaller one misses.
pub fn largest_passing<E>(max: u64, mut probe: impl FnMut(u64) -> Result<Probe, E>) -> Result<Probed, E> {
    let mut probes = Vec::new();
    let (mut pass, mut fail): (Option<usize>, Option<usize>) = (None, None);
    let max = max.max(1);
    let mut b = 1u64;
    // Doubling: 1, 2, 4, ... until a failure or the ceiling.
    // Records a probe as the latest pass or failure; says whether it passed.
    let record = |p: Probe, probes: &mut Vec<Probe>, pass: &mut Option<usize>, fail: &mut Option<usize>| {
        let met = p.met;
        probes.push(p);
        *(if met { pass } else { fail }) = Some(probes.len() - 1);
        met
    };
    loop {
        if !record(probe(b)?, &mut probes, &mut pass, &mut fail) || b == max {
            break;
        }
        b = b.saturating_mul(2).min(max);
    }
    // Bisection between the last pass and the first failure.
    while let (Some(p), Some(f)) = (pass, fail) {
        let (lo, hi) = (probes[p].batch, probes[f].batch);
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        record(probe(mid)?, &mut probes, &mut pass, &mut fail);
    }
    Ok(Probed { probes, pass, fail })
}

/// Compiles `plan` at `batch` sequences and runs `steps` steps of it,
/// timing only, judged against `slo`. A plan that does not fit (E0020) or
/// that the budget refuses (E0046) at this batch is a refused probe; any
/// other compile or run error is returned.
pub fn probe(session: &Session, plan: &Plan, (batch, steps): (u64, u64), slo: &Slo) -> Result<Probe, Diagnostic> {
    let options = CompileOptions {
        plan: Some(plan.name.clone()),
        steps: Some(steps),
        batch: Some(batch),
        ..CompileOptions::default()
    };
    let schedule = match session.schedule_plan(plan, &options, &mut |_, _| {}) {
        Ok(s) => s,
        Err(d) if d.code == Code::E0020 || d.code == Code::E0046 => {
            return Ok(Probe::refused(batch, d.message));
        }
        Err(d) => return Err(d),
    };
    let run_options = RunOptions {
        steps: Some(steps),
        numerics: None,
        trace_steps: 0,
        network_quantum: DEFAULT_NETWORK_QUANTUM,
        faults: Vec::new(),
    };
    let out = run(&schedule, &run_options, &mut |_, _| {}).map_err(|e| {
        let mut d = crate::driver::run_error(&e);
        d.message = format!("batch {batch}: {}", d.message);
        d
    })?;
    Ok(Probe::ran(batch, &out.report, slo))
}

/// Searches plan `plan` of `session` for the largest batch meeting its
/// workload's target, each probe running `steps` steps. E0006 when the
/// workload states no target; a compile error other than the plan not
/// fitting (E0020) or the budget (E0046), or a run error, stops the search.
pub fn search(session: &Session, plan: Option<&str>, steps: Option<u64>) -> Result<Search, Diagnostic> {
    let chosen = session.select_plan(plan)?;
    let workload = session
        .program
        .workload(chosen.workload)
        .ok_or_else(|| Diagnostic::error(Code::E0021, chosen.span, "this plan refers to items with errors"))?;
    let slo = workload.slo.ok_or_else(|| {
        Diagnostic::error(
            Code::E0006,
            chosen.span,
            format!(
                "the batch search needs a latency target, and workload `{}` states none",
                workload.name
            ),
        )
        .with_label("this plan's workload")
        .with_hint("add `slo { tpot = 50 ms }` (decode) or `slo { ttft = 2 s }` (prefill) to the workload")
    })?;
    let steps = steps.unwrap_or(DEFAULT_PROBE_STEPS).max(1);
    let probe = |batch: u64| probe(session, chosen, (batch, steps), &slo);
    let Probed { probes, pass, fail } = largest_passing(MAX_BATCH, probe)?;
    Ok(Search {
        slo,
        steps,
        found: pass.map(|i| probes[i].clone()),
        first_failing: fail.map(|i| probes[i].clone()),
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(batch: u64, met: bool) -> Probe {
        Probe {
            met,
            ..Probe::refused(batch, String::new())
        }
    }

    #[test]
    fn the_search_ends_on_neighbours_a_pass_and_a_failure() {
        for limit in [1u64, 2, 3, 5, 96, 97, 1000, 4095] {
            let mut seen = Vec::new();
            let Probed { probes, pass, fail } = largest_passing::<()>(MAX_BATCH, |b| {
                seen.push(b);
                Ok(fake(b, b <= limit))
            })
            .unwrap();
            let (p, f) = (pass.unwrap(), fail.unwrap());
            assert_eq!((probes[p].batch, probes[f].batch), (limit, limit + 1), "{seen:?}");
            // Doubling then bisection: about 2 log2(limit) probes, none twice.
            assert!(
                probes.len() <= 2 * (64 - limit.leading_zeros()) as usize + 1,
                "{seen:?}"
            );
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), seen.len());
        }
    }

    #[test]
    fn a_first_failure_or_the_ceiling_ends_the_search() {
        let Probed { probes, pass, fail } = largest_passing::<()>(MAX_BATCH, |b| Ok(fake(b, false))).unwrap();
        assert_eq!((probes.len(), pass, fail), (1, None, Some(0)));
        let Probed { probes, pass, fail } = largest_passing::<()>(100, |b| Ok(fake(b, true))).unwrap();
        assert_eq!((probes.last().map(|p| p.batch), fail), (Some(100), None));
        assert_eq!(pass, Some(probes.len() - 1));
    }
}
