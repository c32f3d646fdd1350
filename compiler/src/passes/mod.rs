//! Passes over the IR and the pass manager that runs them.
//!
//! A pass is one file implementing [`Pass`]. The [`registry`] knows every
//! pass by name and builds it from a spec such as `place(round_robin)`; a
//! pipeline is a comma-separated list of specs, or the name of a pipeline in
//! [`PIPELINES`]. The [`PassManager`] runs a pipeline like LLVM's `opt`: the
//! verifier after every pass, the IR printed after the passes asked for.
//!
//! The passes live by family, each folder's `mod.rs` its dispatcher:
//! [`place`] (where each expert lives: the placements, their solvers and
//! the attention groups), [`parallel`] (the form each MoE layer takes:
//! expert tensor parallelism, MoEShard, HD-MoE's hybrid, the e-graph
//! search), [`overlap`] (micro-batches whose communication runs under one
//! another's compute), [`migrate`] (experts moved while the run goes on). Families
//! depend downwards only: `migrate` and `parallel` on `place`, all of them
//! on the simulator [`probe`]s and the shared [`hungarian`] solver; the
//! [`registry`] on every family.

mod hungarian;
mod manager;
mod migrate;
mod milp;
mod overlap;
mod parallel;
mod place;
mod probe;
pub mod registry;

pub use manager::{PassManager, PipelineError, PrintAfter};
pub use migrate::MigrationPolicy;
pub use overlap::{fsmoe, OverlapChoice, PlainOverlap};
pub use parallel::form_graph;
pub use place::eplb_upstream;
pub use registry::{parse_pipeline, PassSpec, PIPELINES};

use crate::ir::Ir;
use crate::placement_file::ExpertLayout;
use moec_runtime::machine::Machine;
use moec_runtime::model::ModelSpec;
use moec_runtime::routing::RoutingStats;
use moec_runtime::workload::WorkloadSpec;

/// What a pass may consult: the machine model (for costs and topology), the
/// model and the workload. Passes never hard-code a machine.
pub struct PassContext<'a> {
    pub machine: &'a Machine,
    pub model: &'a ModelSpec,
    pub workload: &'a WorkloadSpec,
    /// Extra expert slots per layer for replicating placements (`None`: one per alive die).
    pub redundant_experts: Option<u64>,
    /// Dies each attention layer is split over by heads (1: data-parallel).
    pub attention_tp: u32,
    /// The placement a `placement = file("...")` plan read (for `from_file`).
    pub placement_file: Option<&'a ExpertLayout>,
    /// Steps the run will take (what migration plans over).
    pub steps: u64,
    /// Seconds each integer program may search, past the default node
    /// budget and size caps (`--milp-seconds`; `None`: the defaults).
    pub milp_seconds: Option<f64>,
    /// Expert loads from the workload's routing, measured on first use;
    /// and the same with layer-to-layer transitions, when a pass asks.
    stats: std::sync::OnceLock<Result<RoutingStats, String>>,
    transitions: std::sync::OnceLock<Result<RoutingStats, String>>,
}

impl<'a> PassContext<'a> {
    /// The context of one compilation.
    pub fn new(
        machine: &'a Machine,
        model: &'a ModelSpec,
        workload: &'a WorkloadSpec,
        redundant_experts: Option<u64>,
        attention_tp: u32,
    ) -> PassContext<'a> {
        PassContext {
            machine,
            model,
            workload,
            redundant_experts,
            attention_tp,
            placement_file: None,
            steps: workload.steps,
            milp_seconds: None,
            stats: std::sync::OnceLock::new(),
            transitions: std::sync::OnceLock::new(),
        }
    }

    /// The same context with the integer programs' search time.
    pub fn with_milp_seconds(mut self, seconds: Option<f64>) -> PassContext<'a> {
        self.milp_seconds = seconds;
        self
    }

    /// The same context with the placement a plan's file gave.
    pub fn with_placement_file(mut self, layout: Option<&'a ExpertLayout>) -> PassContext<'a> {
        self.placement_file = layout;
        self
    }

    /// The same context for a run of `steps` steps.
    pub fn with_steps(mut self, steps: u64) -> PassContext<'a> {
        self.steps = steps;
        self
    }

    /// Expert loads per layer, from the workload's own routing source
    /// (measured once, when a pass first asks).
    pub fn stats(&self) -> Result<&RoutingStats, String> {
        self.stats
            .get_or_init(|| RoutingStats::measure(self.model, self.workload, false))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// [`PassContext::stats`] with `transitions` counted too.
    pub fn stats_with_transitions(&self) -> Result<&RoutingStats, String> {
        self.transitions
            .get_or_init(|| RoutingStats::measure(self.model, self.workload, true))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A transformation of the IR.
pub trait Pass {
    /// The spec that names it, e.g. `place(round_robin)`.
    fn name(&self) -> String;

    /// Runs over `ir`. An error says why the pass cannot do its job on this
    /// input (not a bug: those the verifier catches).
    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String>;
}
