//! The workload description: what is being served and how tokens route.

use crate::routing::calibrate::SkewTarget;
use crate::routing::counts::RoutingCounts;
use serde::{Deserialize, Serialize};

/// Inference phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Whole prompts at once: `batch` sequences of `seq_len` tokens.
    Prefill,
    /// One new token for each of `batch` sequences with `context` tokens behind it.
    Decode,
}

/// Where each step's token-to-expert choices come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RoutingSource {
    /// Every expert equally likely.
    Uniform { seed: u64 },
    /// Zipf-skewed expert popularity with exponent `s`; `layer_corr` is the
    /// probability a token's choice in layer l+1 follows its choice in l;
    /// `drift` is how far popularity moves per step.
    Zipf {
        s: f64,
        layer_corr: f64,
        drift: f64,
        seed: u64,
    },
    /// MoEShard's skewed router (`skewed(...)`, `routing/skewed.rs`): the
    /// first `ceil(hot x experts)` experts of every MoE layer get `boost`
    /// added to the uniform 1/experts, renormalised; a token's `top_k`
    /// choices are drawn without replacement. Layers independent, no drift.
    Skewed { hot: f64, boost: f64, seed: u64 },
    /// A recorded trace file (the path resolved against the .moe file's folder).
    Trace { path: String },
    /// Recorded expert counts (`counts("file", ...)`, docs/TRACES.md): each
    /// step's choices are drawn so every layer's loads follow them. The
    /// selected counts travel with the workload, so a schedule needs no file.
    Counts { counts: Box<RoutingCounts>, seed: u64 },
    /// The Zipf generator with each layer's exponent and `layer_corr` solved
    /// so the load skew (max / mean) and the cross-layer dependency equal
    /// `skew` and `dependency` (`calibrated(...)`); `drift` as for `Zipf`.
    Calibrated {
        skew: SkewTarget,
        dependency: Option<f64>,
        drift: f64,
        seed: u64,
    },
    /// The model's own gate over real activations (the numeric executor's
    /// router decides; at reduced width, see docs/RUNTIME.md).
    Gate { seed: u64 },
}

/// A workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub name: String,
    pub phase: Phase,
    /// Sequences per step.
    pub batch: u64,
    /// Prefill: prompt length. Decode: context length behind each new token.
    pub seq_len: u64,
    /// How many steps to run.
    pub steps: u64,
    pub routing: RoutingSource,
    /// The latency target the workload states (`slo { tpot = 150 ms }`);
    /// absent in schedules written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
}

/// Which latency a service-level objective bounds. Both are a step's
/// latency in this simulator: a decode step gives every sequence one
/// output token (time per output token), a prefill step gives every
/// sequence its first (time to first token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SloMetric {
    /// Time per output token: decode.
    Tpot,
    /// Time to first token: prefill.
    Ttft,
}

impl SloMetric {
    /// The spelling in the language and the reports (`tpot`, `ttft`).
    pub fn name(self) -> &'static str {
        match self {
            SloMetric::Tpot => "tpot",
            SloMetric::Ttft => "ttft",
        }
    }

    /// The metric a phase has.
    pub fn of(phase: Phase) -> SloMetric {
        match phase {
            Phase::Decode => SloMetric::Tpot,
            Phase::Prefill => SloMetric::Ttft,
        }
    }
}

/// A latency target: a plan meets it when its 99th-percentile step
/// latency is at most `target_s` (docs/RUNTIME.md says why p99).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub metric: SloMetric,
    /// Seconds.
    pub target_s: f64,
}

impl Slo {
    /// Whether a run whose p99 step latency is `p99_s` meets the target.
    pub fn met_by(&self, p99_s: f64) -> bool {
        p99_s <= self.target_s
    }
}

impl WorkloadSpec {
    /// Tokens each step pushes through every layer.
    pub fn tokens_per_step(&self) -> u64 {
        match self.phase {
            Phase::Prefill => self.batch.saturating_mul(self.seq_len),
            Phase::Decode => self.batch,
        }
    }

    /// Tokens each sequence attends over (its KV-cache length).
    pub fn context(&self) -> u64 {
        self.seq_len
    }
}
