//! The compiler driver: file to checked program to placed IR. The CLI and
//! the tests both go through here.

use crate::budget;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::ir::Form;
use crate::ir::{self, Ir, VerifyError};
use crate::lower;
use crate::passes::{
    parse_pipeline, MigrationPolicy, OverlapChoice, PassContext, PassManager, PipelineError, PlainOverlap, PrintAfter,
};
use crate::placement_file::{self, ExpertLayout, Format, Padding, Target};
use crate::sema::{self, ParallelChoice, PlacementChoice, Plan, Program};
use crate::source::{self, Loaded, RootError, SourceReader};
use moec_runtime::machine::Machine;
use moec_runtime::model::ModelSpec;
use moec_runtime::run::{RunError, RunErrorKind};
use moec_runtime::schedule::Schedule;
use moec_runtime::units::Bytes;
use moec_runtime::workload::WorkloadSpec;
use std::borrow::Cow;
use std::path::Path;

/// A root file, its imports, and what checking them found.
pub struct Session {
    pub loaded: Loaded,
    pub program: Program,
    pub diagnostics: Diagnostics,
}

/// Reads, parses and checks `path` and its imports.
pub fn check(reader: &dyn SourceReader, path: &Path) -> Result<Session, RootError> {
    let mut loaded = source::load(reader, path)?;
    let (program, diags) = sema::analyze(reader, &loaded.sources, &loaded.files);
    let mut diagnostics = std::mem::take(&mut loaded.diagnostics);
    diagnostics.extend(diags);
    // What each plan would cost, before anyone asks to compile it.
    for plan in &program.plans {
        if let (Some(model), Some(machine), Some(workload)) = (
            program.model(plan.model),
            program.machine(plan.machine),
            program.workload(plan.workload),
        ) {
            if let Err(d) = budget::check(plan, model, machine, workload, plan.migration, workload.steps) {
                diagnostics.push(d);
            }
        }
    }
    Ok(Session {
        loaded,
        program,
        diagnostics,
    })
}

/// How to compile a plan.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// The plan's name; `None` takes the only plan, or the one named `default`.
    pub plan: Option<String>,
    /// A pipeline overriding the plan's (`--passes`).
    pub passes: Option<String>,
    /// A migration policy overriding the plan's (`moec compare`'s rows).
    pub migration: Option<MigrationPolicy>,
    pub print_after: PrintAfter,
    /// Steps the run will take (default: the workload's): what a
    /// migration policy plans over.
    pub steps: Option<u64>,
    /// Sequences a step, replacing the workload's `batch` (the batch
    /// search's probes); within the language's 1 ..= 2^24.
    pub batch: Option<u64>,
    /// Seconds each integer program may search, past the default node
    /// budget and size caps (`--milp-seconds`).
    pub milp_seconds: Option<f64>,
}

impl CompileOptions {
    /// `workload` as this compile sees it: with its batch replaced when
    /// `batch` is set.
    fn workload<'w>(&self, workload: &'w WorkloadSpec) -> Cow<'w, WorkloadSpec> {
        match self.batch {
            Some(batch) if batch != workload.batch => Cow::Owned(WorkloadSpec {
                batch,
                ..workload.clone()
            }),
            _ => Cow::Borrowed(workload),
        }
    }
}

impl Session {
    /// True when checking found an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }

    /// The plan to compile: the one named, else `default`, else the only one.
    pub fn select_plan(&self, name: Option<&str>) -> Result<&Plan, Diagnostic> {
        let names: Vec<&str> = self.program.plans.iter().map(|p| p.name.as_str()).collect();
        let listed = if names.is_empty() {
            "the file defines no plan that checks".to_string()
        } else {
            format!("plans: {}", names.join(", "))
        };
        match name {
            Some(n) => self.program.plan(n).ok_or_else(|| {
                let hint = sema::suggest::did_you_mean(n, names.iter().copied())
                    .map(|d| format!("{d} "))
                    .unwrap_or_default();
                Diagnostic::global(Code::E0021, format!("no plan named `{n}`")).with_hint(format!("{hint}({listed})"))
            }),
            None => match self.program.plans.as_slice() {
                [only] => Ok(only),
                _ => self.program.plan("default").ok_or_else(|| {
                    Diagnostic::global(
                        Code::E0021,
                        "which plan? the file has no single plan and none named `default`",
                    )
                    .with_hint(format!("pass --plan NAME ({listed})"))
                }),
            },
        }
    }

    /// The machine a plan runs on (`None` when it has errors).
    pub fn machine_of(&self, plan: &Plan) -> Option<&Machine> {
        self.parts(plan).ok().map(|(_, m, _)| m)
    }

    /// The model, machine and workload a plan names (E0021 when one has errors).
    pub fn parts(&self, plan: &Plan) -> Result<(&ModelSpec, &Machine, &WorkloadSpec), Diagnostic> {
        match (
            self.program.model(plan.model),
            self.program.machine(plan.machine),
            self.program.workload(plan.workload),
        ) {
            (Some(model), Some(machine), Some(workload)) => Ok((model, machine, workload)),
            _ => Err(Diagnostic::error(
                Code::E0021,
                plan.span,
                "this plan refers to items with errors",
            )),
        }
    }

    /// Builds the IR of a plan and runs its pipeline. `print` receives the
    /// IR after each pass that `print_after` asks for.
    pub fn compile(&self, options: &CompileOptions, print: &mut dyn FnMut(&str, &Ir)) -> Result<Ir, Diagnostic> {
        let plan = self.select_plan(options.plan.as_deref())?;
        self.compile_plan(plan, options, print)
    }

    /// [`Session::compile`] of a plan given whole (one of the program's,
    /// or a variant of one a search built): `options.plan` is not read.
    pub fn compile_plan(
        &self,
        plan: &Plan,
        options: &CompileOptions,
        print: &mut dyn FnMut(&str, &Ir),
    ) -> Result<Ir, Diagnostic> {
        let (model, machine, workload) = self.parts(plan)?;
        let workload = &*options.workload(workload);
        let steps = options.steps.unwrap_or(workload.steps).max(1);
        let policy = options.migration.unwrap_or(plan.migration);
        budget::check(plan, model, machine, workload, policy, steps)?;
        let pipeline = match (&options.passes, &plan.placement) {
            (Some(p), _) => p.clone(),
            (None, PlacementChoice::File { .. }) => "from_file".to_string(),
            (None, choice) => format!("place({})", choice.name()),
        };
        // A plan's `parallel` (other than plain EP) runs after its placement.
        let pipeline = match (&options.passes, plan.parallel) {
            (None, ParallelChoice::Fixed(Form::EP)) | (Some(_), _) => pipeline,
            (None, parallel) => format!("{pipeline},{}", parallel.pass()),
        };
        // A plan's `overlap` (other than none) splits the step on that layout.
        let pipeline = match (&options.passes, plan.overlap) {
            (None, OverlapChoice::Fixed(PlainOverlap::None)) | (Some(_), _) => pipeline,
            (None, overlap) => format!("{pipeline},overlap({overlap})"),
        };
        // A plan's `migration` (other than none) runs last, on the final layout.
        let pipeline = match (&options.passes, options.migration.unwrap_or(plan.migration)) {
            (None, MigrationPolicy::None) | (Some(_), _) => pipeline,
            (None, policy) => format!("{pipeline},{}", policy.pass()),
        };
        let specs = parse_pipeline(&pipeline).map_err(|e| Diagnostic::global(Code::E0021, e))?;
        let manager = PassManager::new(&specs, options.print_after.clone()).map_err(|e| pipeline_error(plan, e))?;
        let mut ir = ir::build(&plan.name, model, machine, workload);
        ir.pools = plan.pools.clone();
        ir.transport = plan.transport;
        ir.capacity_factor = plan.capacity_factor;
        let cx = PassContext::new(machine, model, workload, plan.redundant_experts, plan.attention.ways())
            .with_placement_file(self.program.placement_file(&plan.name))
            .with_steps(steps)
            .with_milp_seconds(options.milp_seconds);
        manager.run(&mut ir, &cx, print).map_err(|e| pipeline_error(plan, e))?;
        Ok(ir)
    }

    /// Compiles a plan and lowers it to the schedule the runtime executes.
    pub fn schedule(&self, options: &CompileOptions, print: &mut dyn FnMut(&str, &Ir)) -> Result<Schedule, Diagnostic> {
        let plan = self.select_plan(options.plan.as_deref())?;
        self.schedule_plan(plan, options, print)
    }

    /// [`Session::schedule`] of a plan given whole (`options.plan` is not read).
    pub fn schedule_plan(
        &self,
        plan: &Plan,
        options: &CompileOptions,
        print: &mut dyn FnMut(&str, &Ir),
    ) -> Result<Schedule, Diagnostic> {
        self.compiled(plan, options, print).map(|(_, s)| s)
    }

    /// A plan given whole, compiled and lowered: its IR (what it holds where)
    /// and its schedule.
    pub fn compiled(
        &self,
        plan: &Plan,
        options: &CompileOptions,
        print: &mut dyn FnMut(&str, &Ir),
    ) -> Result<(Ir, Schedule), Diagnostic> {
        let ir = self.compile_plan(plan, options, print)?;
        let schedule = self.lower(plan, options, &ir)?;
        Ok((ir, schedule))
    }

    /// Lowers a compiled plan's IR.
    fn lower(&self, plan: &Plan, options: &CompileOptions, ir: &Ir) -> Result<Schedule, Diagnostic> {
        let (model, machine, workload) = self.parts(plan)?;
        let workload = &*options.workload(workload);
        lower::lower(ir, model, machine, workload).map_err(|e| {
            Diagnostic::global(Code::E0020, format!("internal error: {e}"))
                .with_hint("this is a bug in moec; please report it with the input file")
        })
    }

    /// Compiles a plan and writes its expert placement (the lowered
    /// schedule's, what `moec run` executes) as a placement file in
    /// `format`. `pad_slots`: fill dies that hold fewer experts with second
    /// slots of their own experts, within their free memory, instead of
    /// refusing (E0039) in the engine formats.
    pub fn placement_file(
        &self,
        options: &CompileOptions,
        format: Format,
        pad_slots: bool,
        print: &mut dyn FnMut(&str, &Ir),
    ) -> Result<String, Diagnostic> {
        let plan = self.select_plan(options.plan.as_deref())?;
        let (ir, schedule) = self.compiled(plan, options, print)?;
        let (model, machine, _) = self.parts(plan)?;
        // What a file of whole experts per device would silently lose.
        let lost = if schedule.placement.has_split_experts() {
            Some(("splits experts over dies", "a whole replica on every part's die"))
        } else if !schedule.migrations.is_empty() || !schedule.broadcasts.is_empty() {
            Some(("moves experts during the run", "only the first step's layout"))
        } else {
            None
        };
        if let Some((what, instead)) = lost {
            return Err(Diagnostic::error(
                Code::E0048,
                plan.span,
                format!(
                    "plan `{}` {what}, which a {} placement file cannot express: it would record {instead}",
                    plan.name,
                    format.name()
                ),
            )
            .with_label("this plan's placement")
            .with_hint(format!(
                "export the placement alone, `--passes 'place({})'`, or keep the whole plan with `--emit schedule`",
                plan.placement.name()
            )));
        }
        let layout = ExpertLayout {
            experts: schedule.placement.experts,
        };
        let free: Vec<Bytes> = ir::memory::die_loads(&ir, machine)
            .iter()
            .map(|l| Bytes(machine.die_spec(l.die).memory.0.saturating_sub(l.total().0)))
            .collect();
        let padding = if pad_slots {
            Padding::Repeat { free: &free }
        } else {
            Padding::Refuse
        };
        // The refusal points at the plan whose placement it is.
        placement_file::write(format, &layout, &schedule.plan, Target { model, machine }, padding)
            .map_err(|p| p.into_diagnostic(Some(plan.span)))
    }
}

/// A pipeline failure as a diagnostic: infeasible placements are the user's
/// (E0020, at the plan); broken IR is moec's bug and says so.
fn pipeline_error(plan: &Plan, e: PipelineError) -> Diagnostic {
    match e {
        PipelineError::Spec(m) => Diagnostic::global(Code::E0021, m).with_hint(
            "passes: place(round_robin), place(contiguous), from_file; pipelines: baseline; see `moec compile --help`",
        ),
        PipelineError::Pass { pass, message } => {
            Diagnostic::error(Code::E0020, plan.span, format!("pass {pass} failed: {message}"))
                .with_label("in this plan")
        }
        PipelineError::Verify { pass, errors } => {
            let fits: Vec<&VerifyError> = errors
                .iter()
                .filter(|e| matches!(e, VerifyError::DoesNotFit { .. }))
                .collect();
            if let (Some(first), true) = (fits.first(), fits.len() == errors.len()) {
                let more = if fits.len() > 1 {
                    format!(" (and {} more dies)", fits.len() - 1)
                } else {
                    String::new()
                };
                Diagnostic::error(Code::E0020, plan.span, format!("after {pass}: {first}{more}"))
                    .with_label("this plan does not fit the machine")
                    .with_hint("use more dies or more memory per die, or a smaller batch or context")
            } else {
                let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                Diagnostic::global(
                    Code::E0020,
                    format!(
                        "internal error: the IR verifier failed after {pass}: {}",
                        list.join("; ")
                    ),
                )
                .with_hint("this is a bug in moec; please report it with the input file")
            }
        }
    }
}

/// A run's error as a diagnostic: the input it is about picks the code.
pub fn run_error(e: &RunError) -> Diagnostic {
    let code = match e.kind {
        RunErrorKind::Schedule => Code::E0043,
        RunErrorKind::Fault => Code::E0044,
        RunErrorKind::Routing => Code::E0045,
    };
    Diagnostic::global(code, e.message.clone())
}
