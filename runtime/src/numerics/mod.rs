//! Numerics: the real numbers of a step, computed twice over and compared.
//!
//! The distributed executor (`executor.rs`) runs the schedule's die programs
//! with real kernels on per-die buffers, copying rows between dies where the
//! schedule dispatches and combines; the dense reference (`reference.rs`)
//! computes the same step on one device. Both use the same weights
//! (`weights.rs`, drawn from the seed), token ids, synthetic KV cache and
//! routing, so any difference is the executor's data movement going wrong.
//! When the full model does not fit this machine, both run a reduced-width
//! model (`width.rs`), and [`Numerics::reduced`] says so.
//!
//! When the placement changes between steps (expert migrations and
//! broadcasts, sequences re-homed off a dead die), [`Numerics::relocate`]
//! follows it: every die keeps what it still holds, a copy that arrives is
//! cloned from the source die's own buffer (or the host's), and the
//! reference, the width and the token layout stay. Nothing a token computes
//! depends on where it is: the synthetic KV cache is keyed by (seed, layer,
//! sequence, position), never by the home die, and every copy of an expert
//! holds the same numbers, so a relocated step still matches the reference.
//!
//! The seed is the workload routing's seed (`gate`, `uniform` and `zipf`
//! have one; a trace uses 0), so a workload names its numbers.

mod batch;
mod check;
mod context;
mod executor;
mod holdings;
mod reference;
mod route;
mod walk;
mod weights;
mod width;

#[cfg(test)]
mod tests;

pub use check::{errors, first_over, Difference, NumericStep, TOLERANCE, TOLERANCE_FULL};
pub use executor::Fault;
pub use width::{NumericShape, WeightCopies};

use crate::kernels::Router;
use crate::machine::DieId;
use crate::model::AttentionSpec;
use crate::model::ModelSpec;
use crate::routing::StepRouting;
use crate::schedule::{Schedule, WeightSource};
use crate::workload::{RoutingSource, WorkloadSpec};
use batch::TokenLayout;
use context::NumericContext;
use executor::Executor;
use holdings::Holdings;
use route::GivenRouting;
use weights::{ModelWeights, WeightGen};

/// Limits of the numeric run.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericConfig {
    /// `--numeric-width`: run at this hidden size (must fit `memory_budget`).
    pub width: Option<u64>,
    /// Bytes all weight copies may take (default 1 GiB).
    pub memory_budget: u64,
    /// FLOPs one step's forward may take (default 2e9).
    pub flops_budget: f64,
    /// Cached positions per decode token, and prefill tokens per sequence, at most (default 64).
    pub max_context: u64,
    /// Numeric tokens per step at most (default 256).
    pub max_tokens: u64,
    /// A deliberate fault in the executor, to show that the check catches
    /// a wrong one (`moec run --inject-numeric-fault`); `None` normally.
    pub fault: Option<Fault>,
}

impl Default for NumericConfig {
    fn default() -> NumericConfig {
        NumericConfig {
            width: None,
            memory_budget: 1 << 30,
            flops_budget: 2e9,
            max_context: 64,
            max_tokens: 256,
            fault: None,
        }
    }
}

/// A whole expert copy that is new on a die, and where its weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub layer: u32,
    pub expert: u32,
    pub to: DieId,
    /// A die holding the expert (its own buffer is copied: an earlier
    /// arrival of the same relocation counts), or the host's copy.
    pub source: WeightSource,
}

/// A schedule's numerics, ready to run steps.
#[derive(Clone, Debug)]
pub struct Numerics {
    /// The (full-size) model and the workload the numerics were built for:
    /// a relocation keeps both.
    model: ModelSpec,
    workload: WorkloadSpec,
    /// The attention group size the numeric heads were rounded to split for.
    tp: usize,
    shape: NumericShape,
    ctx: NumericContext,
    weights: ModelWeights,
    executor: Executor,
}

/// The seed a workload's numbers are drawn from.
fn seed_of(workload: &WorkloadSpec) -> u64 {
    match workload.routing {
        RoutingSource::Uniform { seed }
        | RoutingSource::Zipf { seed, .. }
        | RoutingSource::Skewed { seed, .. }
        | RoutingSource::Gate { seed }
        | RoutingSource::Counts { seed, .. }
        | RoutingSource::Calibrated { seed, .. } => seed,
        RoutingSource::Trace { .. } => 0,
    }
}

impl Numerics {
    /// Sizes the numeric model for `schedule` within `config`, checks the
    /// schedule can compute a step (every instruction finds its inputs, no
    /// deadlock), and materialises the weights of the reference and of every
    /// die.
    pub fn new(schedule: &Schedule, config: &NumericConfig) -> Result<Numerics, String> {
        schedule.validate()?;
        let (model, workload) = (&schedule.model, &schedule.workload);
        if model.hidden == 0 || model.vocab == 0 {
            return Err("the model has no hidden size or vocabulary".into());
        }
        if workload.tokens_per_step() == 0 {
            return Err("the workload has no tokens in a step".into());
        }
        let heads_ok = match model.attention {
            AttentionSpec::Mha { heads, head_dim } => heads > 0 && head_dim > 0,
            AttentionSpec::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => kv_heads > 0 && heads % kv_heads == 0 && heads > 0 && head_dim > 0,
            AttentionSpec::Mla {
                heads,
                kv_lora_rank,
                head_dim,
                v_head_dim,
                ..
            } => heads > 0 && kv_lora_rank > 0 && head_dim > 0 && v_head_dim > 0,
        };
        if !heads_ok {
            return Err(format!(
                "{} attention of {} has no usable heads",
                model.attention.kind(),
                model.name
            ));
        }
        let router = model.moe.as_ref().map(Router::from_spec).transpose()?;
        // The numeric batch does not depend on the width.
        let sequences = NumericShape::at_width(model, workload, model.hidden, config).batch as usize;
        let holdings = Holdings::new(schedule, sequences)?;
        let walk = walk::plan(schedule, &holdings)?;
        let mut shape = width::select(model, workload, &holdings.copies, config)?;
        let tp = schedule.placement.attention_groups.first().map_or(1, Vec::len);
        shape.split_heads(model, tp as u64);
        let layout = TokenLayout::new(&shape, workload);
        let ctx = NumericContext {
            model: shape.model(model),
            router,
            seed: seed_of(workload),
            layout,
        };
        let weights = WeightGen::new(ctx.seed, &ctx.model).model_weights();
        let mut executor = Executor::new(schedule, &holdings, walk, &layout, &weights);
        executor.fault = config.fault;
        Ok(Numerics {
            model: model.clone(),
            workload: workload.clone(),
            tp,
            shape,
            ctx,
            weights,
            executor,
        })
    }

    /// Follows a placement change: `schedule` carries the new placement
    /// (same model, workload and number of dies as the one [`Numerics::new`]
    /// was built for; its programs are taken as given). Rebuilds the
    /// holdings and the walk (so the new schedule is checked as `new` checks
    /// one); every die keeps the buffers of what it still holds; each of
    /// `arrivals`, in order, is copied from the f32 arrays its source die
    /// holds, or from the host's copy for [`WeightSource::Host`]. Non-expert
    /// weights a die newly needs (it became home to sequences, or another
    /// share of its group's heads) come from the host. Copies no longer
    /// placed are dropped. Errors, leaving the numerics as they were: a
    /// source die without a whole copy, an arrival the new placement does
    /// not ask for or to a die already holding the expert, an expert copy
    /// or part new on a die without an arrival, attention groups of another
    /// size than at `new` (other than none).
    ///
    /// The schedule's `migrations` and `broadcasts` are not looked at: its
    /// placement is the one to follow, with them already applied. The
    /// numeric width chosen at `new` stays, even when the new placement
    /// holds more copies than its memory budget counted.
    pub fn relocate(&mut self, schedule: &Schedule, arrivals: &[Arrival]) -> Result<(), String> {
        if schedule.model != self.model || schedule.workload != self.workload {
            return Err("relocation to a schedule of another model or workload".into());
        }
        let placed = Schedule {
            migrations: Vec::new(),
            broadcasts: Vec::new(),
            ..schedule.clone()
        };
        placed.validate()?;
        let tp = schedule.placement.attention_groups.first().map_or(1, Vec::len);
        if tp != 1 && tp != self.tp {
            return Err(format!(
                "attention groups of {tp} dies: the numeric heads were split for groups of {}",
                self.tp
            ));
        }
        let holdings = Holdings::new(schedule, self.ctx.layout.sequences)?;
        let walk = walk::plan(schedule, &holdings)?;
        let layout = self.ctx.layout;
        self.executor
            .relocate(schedule, &holdings, walk, &layout, &self.weights, arrivals)
    }

    /// The dimensions the numerics run at.
    pub fn shape(&self) -> &NumericShape {
        &self.shape
    }

    /// Whether the numerics run smaller than the model or the workload.
    pub fn reduced(&self) -> bool {
        self.shape.reduced
    }

    /// One step: the distributed execution and the dense reference on the
    /// same routing; `routing` None = real gate. A given routing covers the
    /// workload step's tokens (sequence-major); the numeric tokens take the
    /// choices of the tokens they stand for.
    pub fn step(&mut self, step: u64, routing: Option<&StepRouting>) -> NumericStep {
        let ids = self.ctx.layout.token_ids(self.ctx.seed, step, self.ctx.model.vocab);
        let given = routing.map(|r| GivenRouting {
            routing: r,
            layout: Some(self.ctx.layout),
        });
        let run = self.executor.run(&self.ctx, &ids, given.as_ref());
        let used = GivenRouting {
            routing: &run.forward.routing,
            layout: None,
        };
        let reference = reference::forward(&self.ctx, &self.weights, &ids, Some(&used), routing.is_none());
        let (w, vocab) = (self.ctx.width(), self.ctx.model.vocab as usize);
        let (abs_h, rel_h) = errors(&run.forward.hidden, &reference.hidden, w);
        let (abs_l, rel_l) = errors(&run.forward.logits, &reference.logits, vocab);
        let tolerance = if self.reduced() { TOLERANCE } else { TOLERANCE_FULL };
        let max_rel_error = rel_h.max(rel_l);
        // A failure names the first layer, token and die that differ.
        let difference = (max_rel_error > tolerance || max_rel_error.is_nan()).then(|| {
            let layer = run
                .forward
                .layers
                .iter()
                .zip(&reference.layers)
                .enumerate()
                .find_map(|(l, (got, want))| first_over(got, want, w, tolerance).map(|at| (Some(l as u32), at)));
            let (layer, (token, element, got, want, rel_error)) = layer
                .or_else(|| first_over(&run.forward.logits, &reference.logits, vocab, tolerance).map(|at| (None, at)))
                .unwrap_or((None, (0, 0, f32::NAN, f32::NAN, max_rel_error)));
            Difference {
                layer,
                token,
                die: self.executor.home_die(token).map(|d| d as u32),
                element,
                got,
                want,
                rel_error,
            }
        });
        NumericStep {
            max_abs_error: abs_h.max(abs_l),
            max_rel_error,
            tolerance,
            difference,
            bytes_copied: run.bytes_copied,
            rows_copied: run.rows_copied,
            gate_fallbacks: run.forward.gate_fallbacks,
            gate_disagreements: reference.gate_disagreements,
            routing: run.forward.routing,
        }
    }
}
