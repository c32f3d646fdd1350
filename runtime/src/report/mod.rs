//! What a run measured, for people (`text`), programs (JSON, keys
//! documented in docs/RUNTIME.md), timelines (`chrome`: a Chrome trace) and
//! pictures (`heatmap`: link utilisation over the mesh, `series`: latency
//! and imbalance per step, `bars`: a comparison, all SVG written by hand
//! with what `svg` holds).

pub mod bars;
pub mod chrome;
pub mod heatmap;
pub mod series;
pub mod serving;
mod svg;
pub mod text;

use crate::machine::Machine;
use crate::schedule::Schedule;
use crate::sim::bound::StepBound;
use crate::sim::engine::{Breakdown, StepResult};
use serde::Serialize;
pub use serving::{BoundReport, ServingReport, SloReport, StepLatency};

/// Version of the JSON report layout.
pub const REPORT_VERSION: u32 = 1;

/// Latency per step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_s: f64,
    pub p99_s: f64,
    pub mean_s: f64,
}

/// Bytes moved between dies, per step (mean over steps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TrafficReport {
    pub bytes: f64,
    /// Bytes times links crossed.
    pub byte_hops: f64,
    /// Of those, dispatch and combine's (the MoE all-to-all) and the ring
    /// collectives' of tensor-parallel attention groups.
    pub all_to_all_byte_hops: f64,
    pub collective_byte_hops: f64,
}

/// Directional link utilisation over the whole run: bytes carried over
/// bandwidth times run time, per alive link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LinkReport {
    pub max_util: f64,
    pub mean_util: f64,
}

/// Compute-unit busy time per die per step (alive dies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DieReport {
    pub busy_max_s: f64,
    pub busy_mean_s: f64,
    /// busy_max / busy_mean: 1 is perfect balance.
    pub imbalance: f64,
    /// The experts' own balance, mean over steps: per step, the sum over
    /// MoE layers of the busiest die's expert time over the mean die's (1:
    /// every layer's experts equally loaded on every die).
    pub expert_imbalance: f64,
}

/// The numeric check: distributed execution against the dense reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NumericReport {
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    /// The largest `max_rel_error` that passes (tighter at full width).
    pub tolerance: f64,
    /// Every step within the tolerance. A run that fails it exits non-zero.
    pub passed: bool,
    /// The first step that failed, and where it first differs.
    pub failed_step: Option<u64>,
    pub difference: Option<crate::numerics::Difference>,
    /// The hidden width the numerics ran at.
    pub width: u64,
    /// True when numerics ran smaller than the model (timing is always full size).
    pub reduced: bool,
    /// What was reduced, in words.
    pub note: String,
}

/// One step's figures, for time series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepSummary {
    pub step: u64,
    pub latency_s: f64,
    /// Busiest alive die's compute over the mean (1: perfect balance).
    pub imbalance: f64,
    /// The MoE layers' expert time on the busiest die over the mean die's,
    /// summed over layers (see `DieReport::expert_imbalance`).
    pub expert_imbalance: f64,
    /// Time migration added to this step (stop-the-world moves, chunks
    /// that outlasted their window or slowed the step's own flows).
    pub migration_stall_s: f64,
    /// Time during which some migration chunk was in flight.
    pub migration_transfer_s: f64,
    /// Bytes of migration chunks sent during the step (per leg).
    pub migration_bytes: u64,
    /// Migrations that took effect at the start of this step.
    pub migrations_applied: u32,
    /// A fault was injected at the start of this step.
    pub fault: bool,
    /// The step's physical lower bound (`sim/bound.rs`): no execution of
    /// its work on this machine and placement is faster.
    pub bound_s: f64,
}

/// Expert weights moved during the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MigrationReport {
    /// Migrations (copies added, moved, dropped) that took effect.
    pub applied: u64,
    /// Bytes of migration chunks and broadcast pieces sent, per leg.
    pub bytes: f64,
    pub byte_hops: f64,
    /// Time some weights were in flight, summed over steps.
    pub transfer_s: f64,
    /// Time migration added to steps, summed over steps (what
    /// `breakdown.migration_s` shows per step on average).
    pub stall_s: f64,
    /// Transfer time that did not add to a step: `transfer_s - stall_s`,
    /// at least 0.
    pub overlapped_s: f64,
}

/// A fault injected during the run and what recovering from it cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultReport {
    pub step: u64,
    /// What failed, in words.
    pub what: String,
    /// The fault step's latency, and the median step's over the run.
    pub step_latency_s: f64,
    pub median_latency_s: f64,
    /// Time restoring the lost expert copies added to the fault step (the
    /// step simulated with and without their chunks). Faults striking at one
    /// step recover together: each shows the step's time.
    pub recovery_s: f64,
    /// Sequences moved off the dead die (or its dissolved attention group).
    pub rehomed_sequences: u64,
    /// Time the re-homed sequences' KV caches took to rebuild (a prefill of
    /// their context at the surviving dies' peak compute, a lower bound),
    /// added to the fault step: they cannot decode before it is done.
    pub kv_rebuild_s: f64,
    /// Lost expert copies restored from a surviving replica over the
    /// network, and reloaded from the host through the io.
    pub restored_from_replica: u64,
    pub reloaded_from_host: u64,
    /// What was lost and where it was restored, one line each.
    pub notes: Vec<String>,
}

/// The report of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub version: u32,
    pub plan: String,
    pub model: String,
    pub machine: String,
    pub workload: String,
    pub steps: u64,
    pub tokens_per_step: u64,
    pub latency: Latency,
    /// Mean over steps of where the critical die's time went.
    pub breakdown: Breakdown,
    pub traffic: TrafficReport,
    pub links: LinkReport,
    pub dies: DieReport,
    /// Tokens per second per alive die.
    pub tokens_per_s_per_die: f64,
    /// What the run serves: throughput, per-token latencies, cost, the
    /// workload's latency target.
    pub serving: ServingReport,
    /// The physical lower bound of the steps and the plan's distance from it.
    pub bound: BoundReport,
    /// `None` when the run skipped numerics (`--no-numerics`).
    pub numeric_check: Option<NumericReport>,
    pub migration: MigrationReport,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultReport>,
    pub per_step: Vec<StepSummary>,
    /// Per directional link (LinkId order): utilisation over the run.
    #[serde(skip)]
    pub link_util: Vec<f64>,
}

/// Collects step results into a report.
pub struct ReportBuilder<'a> {
    schedule: &'a Schedule,
    /// The machine as it is now (faults change it).
    machine: Machine,
    latencies: Vec<f64>,
    breakdown: Breakdown,
    bytes: f64,
    byte_hops: f64,
    all_to_all_byte_hops: f64,
    collective_byte_hops: f64,
    link_bytes: Vec<f64>,
    die_busy: Vec<f64>,
    per_step: Vec<StepSummary>,
    migration: MigrationReport,
    faults: Vec<FaultReport>,
    /// Dies alive now (a die fault removes one).
    alive: Vec<crate::machine::DieId>,
    /// Each step's bound, term by term.
    bounds: Vec<StepBound>,
}

impl<'a> ReportBuilder<'a> {
    /// An empty report for `schedule` on `machine`.
    pub fn new(schedule: &'a Schedule, machine: &'a Machine) -> ReportBuilder<'a> {
        ReportBuilder {
            schedule,
            machine: machine.clone(),
            latencies: Vec::new(),
            breakdown: Breakdown::default(),
            bytes: 0.0,
            byte_hops: 0.0,
            all_to_all_byte_hops: 0.0,
            collective_byte_hops: 0.0,
            link_bytes: vec![0.0; machine.links().len()],
            die_busy: vec![0.0; machine.die_count() as usize],
            per_step: Vec::new(),
            migration: MigrationReport::default(),
            faults: Vec::new(),
            alive: machine.alive_dies(),
            bounds: Vec::new(),
        }
    }

    /// A fault struck at the start of the step about to be added: the
    /// machine's alive dies change from then on.
    pub fn fault(&mut self, machine: &Machine, report: FaultReport) {
        self.alive = machine.alive_dies();
        self.machine = machine.clone();
        self.faults.push(report);
    }

    /// Adds one step, at which `applied` migrations took effect, with its
    /// physical bound.
    pub fn add(&mut self, step: u64, r: &StepResult, applied: u32, bound: StepBound) {
        self.latencies.push(r.latency_s);
        self.bounds.push(bound);
        let b = &mut self.breakdown;
        b.attention_s += r.breakdown.attention_s;
        b.allreduce_s += r.breakdown.allreduce_s;
        b.dispatch_s += r.breakdown.dispatch_s;
        b.expert_s += r.breakdown.expert_s;
        b.combine_s += r.breakdown.combine_s;
        b.migration_s += r.breakdown.migration_s;
        b.other_s += r.breakdown.other_s;
        self.bytes += r.traffic.bytes as f64;
        self.byte_hops += r.traffic.byte_hops as f64;
        self.all_to_all_byte_hops += r.all_to_all_byte_hops as f64;
        self.collective_byte_hops += r.collective_byte_hops as f64;
        for (acc, x) in self.link_bytes.iter_mut().zip(&r.link_bytes) {
            *acc += x;
        }
        for (acc, x) in self.die_busy.iter_mut().zip(&r.die_busy_s) {
            *acc += x;
        }
        let alive = self.alive_busy(&r.die_busy_s);
        self.per_step.push(StepSummary {
            step,
            latency_s: r.latency_s,
            imbalance: imbalance(&alive),
            expert_imbalance: r.expert_imbalance(&self.alive),
            migration_stall_s: r.breakdown.migration_s,
            migration_transfer_s: r.migration_transfer_s,
            migration_bytes: r.migration_bytes,
            migrations_applied: applied,
            fault: self.faults.last().is_some_and(|f| f.step == step),
            bound_s: bound.bound_s(),
        });
        let m = &mut self.migration;
        m.applied += u64::from(applied);
        m.bytes += r.migration_bytes as f64;
        m.byte_hops += r.migration_byte_hops as f64;
        m.transfer_s += r.migration_transfer_s;
        m.stall_s += r.breakdown.migration_s;
        for f in self.faults.iter_mut().filter(|f| f.step == step) {
            f.step_latency_s = r.latency_s;
        }
    }

    fn alive_busy(&self, busy: &[f64]) -> Vec<f64> {
        self.alive
            .iter()
            .map(|d| busy.get(d.0 as usize).copied().unwrap_or(0.0))
            .collect()
    }

    /// The finished report.
    pub fn finish(self, numeric_check: Option<NumericReport>) -> RunReport {
        let steps = self.latencies.len().max(1) as f64;
        let total_time: f64 = self.latencies.iter().sum();
        let link_util: Vec<f64> = self
            .machine
            .links()
            .iter()
            .zip(&self.link_bytes)
            .map(|(l, &b)| {
                if l.alive && total_time > 0.0 {
                    b / (l.spec.bandwidth.0 * total_time)
                } else {
                    0.0
                }
            })
            .collect();
        let alive_utils: Vec<f64> = self
            .machine
            .links()
            .iter()
            .zip(&link_util)
            .filter(|(l, _)| l.alive)
            .map(|(_, u)| *u)
            .collect();
        let busy: Vec<f64> = self.alive_busy(&self.die_busy).iter().map(|b| b / steps).collect();
        let busy_max = busy.iter().copied().fold(0.0, f64::max);
        let busy_mean = mean(&busy);
        let tokens = self.schedule.workload.tokens_per_step();
        let alive = self.machine.alive_dies().len().max(1) as f64;
        let scale = |x: f64| x / steps;
        let b = self.breakdown;
        let median = percentile(&self.latencies, 0.50);
        let latency = Latency {
            p50_s: percentile(&self.latencies, 0.50),
            p99_s: percentile(&self.latencies, 0.99),
            mean_s: mean(&self.latencies),
        };
        let tokens_per_s = if total_time > 0.0 {
            tokens as f64 * self.latencies.len() as f64 / total_time
        } else {
            0.0
        };
        let serving = ServingReport::new(
            &self.schedule.workload,
            (self.machine.price_per_hour(), self.machine.power_w()),
            &latency,
            tokens_per_s,
            alive,
        );
        let bound = BoundReport::new(&self.bounds, latency.mean_s);
        let faults = self
            .faults
            .into_iter()
            .map(|f| FaultReport {
                median_latency_s: median,
                ..f
            })
            .collect();
        RunReport {
            version: REPORT_VERSION,
            plan: self.schedule.plan.clone(),
            model: self.schedule.model.name.clone(),
            machine: self.schedule.machine.name.clone(),
            workload: self.schedule.workload.name.clone(),
            steps: self.latencies.len() as u64,
            tokens_per_step: tokens,
            latency,
            breakdown: Breakdown {
                attention_s: scale(b.attention_s),
                allreduce_s: scale(b.allreduce_s),
                dispatch_s: scale(b.dispatch_s),
                expert_s: scale(b.expert_s),
                combine_s: scale(b.combine_s),
                migration_s: scale(b.migration_s),
                other_s: scale(b.other_s),
            },
            traffic: TrafficReport {
                bytes: scale(self.bytes),
                byte_hops: scale(self.byte_hops),
                all_to_all_byte_hops: scale(self.all_to_all_byte_hops),
                collective_byte_hops: scale(self.collective_byte_hops),
            },
            links: LinkReport {
                max_util: alive_utils.iter().copied().fold(0.0, f64::max),
                mean_util: mean(&alive_utils),
            },
            dies: DieReport {
                busy_max_s: busy_max,
                busy_mean_s: busy_mean,
                imbalance: imbalance(&busy),
                expert_imbalance: mean(&self.per_step.iter().map(|s| s.expert_imbalance).collect::<Vec<_>>()),
            },
            tokens_per_s_per_die: tokens_per_s / alive,
            serving,
            bound,
            numeric_check,
            migration: MigrationReport {
                overlapped_s: (self.migration.transfer_s - self.migration.stall_s).max(0.0),
                ..self.migration
            },
            faults,
            per_step: self.per_step,
            link_util,
        }
    }
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn imbalance(busy: &[f64]) -> f64 {
    let m = mean(busy);
    if m > 0.0 {
        busy.iter().copied().fold(0.0, f64::max) / m
    } else {
        1.0
    }
}

/// The `q` quantile by nearest rank (q = 0.5: the median step).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl RunReport {
    /// The JSON form (stable key order).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 0.5), 50.0);
        assert_eq!(super::percentile(&v, 0.99), 99.0);
        assert_eq!(super::percentile(&[3.0], 0.99), 3.0);
    }
}
