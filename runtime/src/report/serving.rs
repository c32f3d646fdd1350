//! What a run means for serving: throughput in all and per die, the
//! per-token latencies a decode or prefill step gives (TPOT, TTFT),
//! throughput per dollar when the machine prices its dies, whether the
//! workload's latency target is met, and how far the steps are from their
//! physical bound (`sim/bound.rs`). Keys in docs/RUNTIME.md.

use super::{mean, Latency};
use crate::sim::bound::StepBound;
use crate::workload::{Phase, SloMetric, WorkloadSpec};
use serde::Serialize;

/// Seconds in an hour: prices are per die-hour.
const HOUR_S: f64 = 3600.0;

/// A per-token latency: the step latency's median and 99th percentile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepLatency {
    pub p50_s: f64,
    pub p99_s: f64,
}

/// Whether the run met the workload's latency target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SloReport {
    /// `tpot` (decode) or `ttft` (prefill).
    pub metric: SloMetric,
    pub target_s: f64,
    /// The run's 99th-percentile step latency, what the target bounds.
    pub p99_s: f64,
    pub met: bool,
}

/// Serving figures of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServingReport {
    /// Tokens through the model per second, over all alive dies (decode:
    /// output tokens; prefill: prompt tokens).
    pub tokens_per_s: f64,
    /// The same per alive die.
    pub tokens_per_s_per_die: f64,
    /// Decode: time per output token. Each step gives every sequence one
    /// token, so it is the step latency. `None` for prefill.
    pub tpot: Option<StepLatency>,
    /// Prefill: time to first token. The step computes every prompt and
    /// gives each sequence its first token, so it is the step latency.
    /// `None` for decode.
    pub ttft: Option<StepLatency>,
    /// The mean alive die's price, dollars per die-hour (`None`: not every
    /// die has one).
    pub price_per_die_hour: Option<f64>,
    /// Tokens per dollar at that price over the alive dies.
    pub tokens_per_dollar: Option<f64>,
    /// What the alive dies draw together, watts (`None`: not given for all).
    pub power_w: Option<f64>,
    /// Tokens per joule at that power.
    pub tokens_per_joule: Option<f64>,
    /// The workload's latency target and whether it was met (`None`: it states none).
    pub slo: Option<SloReport>,
}

impl ServingReport {
    /// The serving figures of a run of `workload` on `alive` dies at the
    /// end, which cost `price_per_hour` and draw `power_w` together when
    /// all say, whose steps took `latency` and pushed `tokens_per_s`.
    pub fn new(
        workload: &WorkloadSpec,
        (price_per_hour, power_w): (Option<f64>, Option<f64>),
        latency: &Latency,
        tokens_per_s: f64,
        alive: f64,
    ) -> ServingReport {
        let per_token = StepLatency {
            p50_s: latency.p50_s,
            p99_s: latency.p99_s,
        };
        // The mean die's price: the machine's over its dies.
        let price = price_per_hour
            .filter(|p| p.is_finite() && *p > 0.0)
            .map(|p| p / alive.max(1.0));
        ServingReport {
            tokens_per_s,
            tokens_per_s_per_die: tokens_per_s / alive.max(1.0),
            tpot: (workload.phase == Phase::Decode).then_some(per_token),
            ttft: (workload.phase == Phase::Prefill).then_some(per_token),
            price_per_die_hour: price,
            tokens_per_dollar: price.map(|p| tokens_per_s * HOUR_S / (p * alive.max(1.0))),
            power_w: power_w.filter(|p| p.is_finite() && *p > 0.0),
            tokens_per_joule: power_w.filter(|p| p.is_finite() && *p > 0.0).map(|p| tokens_per_s / p),
            slo: workload.slo.map(|slo| SloReport {
                metric: slo.metric,
                target_s: slo.target_s,
                p99_s: latency.p99_s,
                met: slo.met_by(latency.p99_s),
            }),
        }
    }

    /// The SLO's verdict in words, for the text report and compare
    /// (`tpot p99 12.3 ms <= 50 ms: met`); `None` without a target.
    pub fn slo_line(&self) -> Option<String> {
        use crate::units::Seconds;
        let s = self.slo?;
        let (rel, verdict) = if s.met { ("<=", "met") } else { (">", "missed") };
        Some(format!(
            "{} p99 {} {rel} {}: {verdict}",
            s.metric.name(),
            Seconds(s.p99_s),
            Seconds(s.target_s)
        ))
    }
}

/// The steps' physical lower bound and the plan's distance from it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BoundReport {
    /// The mean over steps of each step's bound (its largest term).
    pub mean_s: f64,
    /// The mean over steps of the plan-independent part (the machine terms).
    pub machine_s: f64,
    /// Mean step latency over `mean_s`: 1 is the machine's limit for this
    /// placement's work; what is above it is the schedule's (launches,
    /// activations, waits, the network's sharing).
    pub ratio: f64,
    /// Mean step latency over `machine_s`: the distance from what any
    /// placement could do.
    pub machine_ratio: f64,
    /// The term with the largest mean (ties to the first of `terms`' order).
    pub binding: String,
    /// Each term's mean over steps.
    pub terms: StepBound,
}

impl BoundReport {
    /// The bound of steps `bounds` whose latencies averaged `mean_latency_s`.
    pub fn new(bounds: &[StepBound], mean_latency_s: f64) -> BoundReport {
        let avg = |f: &dyn Fn(&StepBound) -> f64| mean(&bounds.iter().map(f).collect::<Vec<_>>());
        let terms = StepBound {
            die_compute_s: avg(&|b| b.die_compute_s),
            die_memory_s: avg(&|b| b.die_memory_s),
            die_links_s: avg(&|b| b.die_links_s),
            cut_s: avg(&|b| b.cut_s),
            machine_compute_s: avg(&|b| b.machine_compute_s),
            machine_memory_s: avg(&|b| b.machine_memory_s),
        };
        let mean_s = avg(&|b| b.bound_s());
        let machine_s = avg(&|b| b.machine_s());
        let ratio = |b: f64| if b > 0.0 { mean_latency_s / b } else { 0.0 };
        BoundReport {
            mean_s,
            machine_s,
            ratio: ratio(mean_s),
            machine_ratio: ratio(machine_s),
            binding: terms.binding().name().to_string(),
            terms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::bound::BoundTerm;
    use crate::workload::RoutingSource;
    use crate::workload::Slo;

    fn workload(phase: Phase, slo: Option<Slo>) -> WorkloadSpec {
        WorkloadSpec {
            name: "w".into(),
            phase,
            batch: 8,
            seq_len: 128,
            steps: 4,
            routing: RoutingSource::Uniform { seed: 0 },
            slo,
        }
    }

    const LATENCY: Latency = Latency {
        p50_s: 0.010,
        p99_s: 0.020,
        mean_s: 0.012,
    };

    #[test]
    fn decode_has_tpot_prefill_ttft_and_a_price_gives_tokens_per_dollar() {
        let slo = Slo {
            metric: SloMetric::Tpot,
            target_s: 0.015,
        };
        let r = ServingReport::new(
            &workload(Phase::Decode, Some(slo)),
            (Some(4.0 * 2.0), Some(4.0 * 700.0)),
            &LATENCY,
            800.0,
            4.0,
        );
        assert_eq!(r.tpot.map(|t| t.p99_s), Some(0.020));
        assert_eq!(r.ttft, None);
        assert_eq!(r.tokens_per_s_per_die, 200.0);
        // 800 tokens/s for 4 dies at $2 an hour: $8 an hour buys 2.88 M tokens.
        assert_eq!(r.tokens_per_dollar, Some(800.0 * 3600.0 / 8.0));
        assert_eq!(r.price_per_die_hour, Some(2.0));
        // 800 tokens/s on 2.8 kW.
        assert_eq!(r.tokens_per_joule, Some(800.0 / 2800.0));
        let s = r.slo.expect("an slo");
        assert!(!s.met && s.p99_s == 0.020);
        assert_eq!(r.slo_line().as_deref(), Some("tpot p99 20 ms > 15 ms: missed"));

        let r = ServingReport::new(&workload(Phase::Prefill, None), (None, None), &LATENCY, 800.0, 4.0);
        assert_eq!(r.ttft.map(|t| t.p50_s), Some(0.010));
        assert_eq!((r.tpot, r.tokens_per_dollar, r.slo), (None, None, None));
    }

    #[test]
    fn the_bound_report_averages_terms_and_names_the_largest() {
        let a = StepBound {
            die_compute_s: 1.0,
            die_memory_s: 3.0,
            machine_memory_s: 2.0,
            ..StepBound::default()
        };
        let b = StepBound {
            die_compute_s: 1.0,
            die_memory_s: 1.0,
            cut_s: 4.0,
            machine_memory_s: 0.5,
            ..StepBound::default()
        };
        let r = BoundReport::new(&[a, b], 7.0);
        // Step bounds 3 and 4; the cut's mean (2) ties die memory's, which comes first.
        assert_eq!(r.mean_s, 3.5);
        assert_eq!(r.ratio, 2.0);
        assert_eq!(r.machine_s, 1.25);
        assert_eq!(r.binding, "die_memory");
        assert_eq!(BoundTerm::ALL[0].name(), "die_compute");
    }
}
