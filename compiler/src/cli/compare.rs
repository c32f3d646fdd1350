//! `moec compare FILE`: every placement, and every parallel form after the
//! plan's own placement, on the same plan's model, machine and workload,
//! run over the same steps and routing, in one table (and as JSON rows with
//! the run report's keys, and an SVG bar chart). A plan that moves experts
//! (`migration = ...`) also gets every migration policy, none included,
//! after its own placement and parallel form; and every plan gets its own
//! placement and parallel form under every overlap form (`two_batch`; the
//! placement's row is `none`). A plan whose attention and experts share
//! their dies also gets a disaggregated row: its machine split between the
//! two pools by DisagMoE's roofline rule, two micro-batches ping-ponging
//! (`moec pools` searches further). A plan under NI-Balancer also gets the
//! static plan with as many more expert slots as its shadow slots take
//! (EPLB's redundant replicas): the baseline at equal memory.

use super::output::{emit, load_checked, report, run_error, write_atomic};
use moec::driver::CompileOptions;
use moec::ir::Form;
use moec::passes::{MigrationPolicy, OverlapChoice, PlainOverlap};
use moec::sema::{ParallelChoice, PlacementChoice};
use moec_runtime::numerics::NumericConfig;
use moec_runtime::report::{bars, RunReport};
use moec_runtime::run::{run, RunOptions};
use moec_runtime::sim::engine::DEFAULT_NETWORK_QUANTUM;
use moec_runtime::units::{Bytes, Seconds};
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The command line of `compare`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .moe file.
    file: PathBuf,
    /// Which plan supplies the model, machine and workload (default: the only plan, or `default`).
    #[arg(long)]
    plan: Option<String>,
    /// Steps to run each placement (default: the workload's `steps`; 1 to 2^24, as in the language).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    steps: Option<u64>,
    /// Skip the numeric check (timing only).
    #[arg(long)]
    no_numerics: bool,
    /// Print `{"rows": [...]}` JSON instead of a table.
    #[arg(long, value_enum, default_value_t = super::run::ReportFormat::Text)]
    report: super::run::ReportFormat,
    /// Write a bar chart of p50 latency per placement as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Write the table or JSON here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// One placement's row: the run report's keys plus its name, compile time
/// and the memory it holds (so rows at equal memory are easy to find).
#[derive(Serialize)]
struct Row {
    name: String,
    compile_s: f64,
    /// Bytes on the fullest die (weights, KV cache, shadow slots), and the
    /// expert weights over every die (replicas and shadow slots included).
    memory_max_die_bytes: u64,
    expert_bytes_total: u64,
    #[serde(flatten)]
    report: RunReport,
}

/// One row to run: the plan compiled with another pipeline or another
/// migration policy.
struct Candidate {
    name: String,
    /// The pipeline replacing the plan's (`--passes`); `None` keeps its own.
    passes: Option<String>,
    /// The migration policy replacing the plan's.
    migration: Option<MigrationPolicy>,
    /// A compile error skips the row (with its reason) instead of stopping compare.
    optional: bool,
    /// The built-in placement the row runs, if it is one.
    choice: Option<PlacementChoice>,
    /// A variant of the plan to compile instead of the plan itself.
    variant: Option<moec::sema::Plan>,
}

/// A placement compare did not run, and why.
#[derive(Serialize)]
struct Skipped {
    name: String,
    reason: String,
}

/// Runs `moec compare`.
pub fn execute(args: Args) -> Result<(), u8> {
    let session = load_checked(&args.file)?;
    let plan = session.select_plan(args.plan.as_deref()).map_err(|d| {
        report(&session.loaded.sources, &[d]);
        super::EXIT_DIAGNOSTICS
    })?;
    // Every built-in placement, and the plan's own placement file when it has one.
    let mut candidates: Vec<Candidate> = PlacementChoice::ALL
        .iter()
        .map(|(name, c)| Candidate {
            name: name.to_string(),
            passes: Some(format!("place({name})")),
            migration: None,
            // A layout that cannot place this plan (one needing a
            // defect-free mesh, say) does not stop the others.
            optional: c.needs_tensor_parallel_attention(),
            choice: Some(c.clone()),
            variant: None,
        })
        .collect();
    if let PlacementChoice::File { path, .. } = &plan.placement {
        candidates.push(Candidate {
            name: format!("file(\"{path}\")"),
            passes: Some("from_file".to_string()),
            migration: None,
            optional: false,
            choice: None,
            variant: None,
        });
    }
    // Every parallel form after the plan's own placement (EP is its row above).
    let own = match &plan.placement {
        PlacementChoice::File { .. } => "from_file".to_string(),
        c => format!("place({})", c.name()),
    };
    let alive = session.machine_of(plan).map_or(1, |m| m.alive_dies().len() as u32);
    candidates.extend(
        ParallelChoice::compared(alive, plan.attention.ways())
            .into_iter()
            .filter(|f| *f != ParallelChoice::Fixed(Form::EP))
            .map(|f| Candidate {
                name: format!("{} + parallel = {f}", plan.placement.name()),
                passes: Some(format!("{own},{}", f.pass())),
                migration: None,
                // A form that does not fit (memory, group sizes) is skipped.
                optional: true,
                choice: None,
                variant: None,
            }),
    );
    // The plan's placement and parallel form under every overlap form
    // (its placement's row above is `none`).
    let own_form = match plan.parallel {
        ParallelChoice::Fixed(Form::EP) => String::new(),
        p => format!(",{}", p.pass()),
    };
    candidates.extend(
        OverlapChoice::TRIED
            .iter()
            .filter(|o| **o != OverlapChoice::Fixed(PlainOverlap::None))
            // MoNTA relays split experts' tokens: nothing to relay under ep.
            .filter(|o| **o != OverlapChoice::MontaByModel || plan.parallel != ParallelChoice::Fixed(Form::EP))
            .map(|form| Candidate {
                name: format!("{} + overlap = {form}", plan.placement.name()),
                passes: Some(format!("{own}{own_form},overlap({form})")),
                migration: None,
                optional: true,
                choice: None,
                variant: None,
            }),
    );
    // A plan that moves experts: the plan itself under every policy, its own
    // settings for its own policy and the defaults for the rest.
    if plan.migration != MigrationPolicy::None {
        candidates.extend(
            ["none", "invasive", "ni_balancer", "dynamic_placement"]
                .into_iter()
                .filter_map(|name| {
                    let policy = if plan.migration.name() == name {
                        plan.migration
                    } else {
                        MigrationPolicy::default_of(name)?
                    };
                    Some(Candidate {
                        name: format!("{} + migration = {name}", plan.placement.name()),
                        passes: None,
                        migration: Some(policy),
                        optional: true,
                        choice: None,
                        variant: None,
                    })
                }),
        );
    }
    // NI-Balancer's shadow slots are memory: the static plan with as many
    // more expert slots (EPLB's redundant replicas) is its baseline at
    // equal memory.
    if let MigrationPolicy::NiBalancer { slots, .. } = plan.migration {
        let replicates = plan.placement.replicates();
        let placement = if replicates {
            plan.placement.clone()
        } else {
            PlacementChoice::Eplb
        };
        let own = if replicates {
            plan.redundant_experts.unwrap_or(u64::from(alive))
        } else {
            0
        };
        let redundant = own + u64::from(slots) * u64::from(alive);
        candidates.push(Candidate {
            name: format!(
                "{} + redundant_experts = {redundant} (static, ni_balancer's memory)",
                placement.name()
            ),
            passes: None,
            migration: None,
            optional: true,
            choice: None,
            variant: Some(moec::sema::Plan {
                placement,
                redundant_experts: Some(redundant),
                migration: MigrationPolicy::None,
                ..plan.clone()
            }),
        });
    }
    // Colocated: the machine split by DisagMoE's rule, ping-ponging.
    if plan.pools.is_none() {
        match moec::pool_sizing::disagmoe::rule_plan(&session, plan) {
            Ok(Some(variant)) => candidates.push(Candidate {
                name: format!(
                    "disaggregated {}:{} (DisagMoE's split) + micro_batches(2)",
                    variant.pools.as_ref().map_or(0, |p| p.attention.len()),
                    variant.pools.as_ref().map_or(0, |p| p.experts.len())
                ),
                passes: None,
                migration: None,
                optional: true,
                choice: None,
                variant: Some(variant),
            }),
            Ok(None) => eprintln!("compare: no split of the machine holds both pools; no disaggregated row"),
            Err(d) => eprintln!("compare: no disaggregated row: {}", d.message),
        }
    }
    let mut rows = Vec::new();
    // Placements that do not apply to this plan, with why.
    let mut skipped: Vec<Skipped> = Vec::new();
    for Candidate {
        name,
        passes,
        migration,
        optional,
        choice,
        variant,
    } in candidates
    {
        if choice.as_ref().is_some_and(|c| !c.applies_with(plan.attention.ways())) {
            let reason = "needs attention = tp(k); this plan's attention is data-parallel".to_string();
            eprintln!("compare: skipping {name}: {reason}");
            skipped.push(Skipped { name, reason });
            continue;
        }
        let options = CompileOptions {
            plan: Some(plan.name.clone()),
            passes,
            migration,
            // Migration policies plan over the steps the rows run.
            steps: args.steps,
            ..Default::default()
        };
        let started = Instant::now();
        let compiled = session.compiled(variant.as_ref().unwrap_or(plan), &options, &mut |_, _| {});
        let (ir, schedule) = match compiled {
            Ok(s) => s,
            Err(d) if optional => {
                report(&session.loaded.sources, std::slice::from_ref(&d));
                let reason = d.message.clone();
                skipped.push(Skipped { name, reason });
                continue;
            }
            Err(d) => {
                report(&session.loaded.sources, &[d]);
                return Err(super::EXIT_DIAGNOSTICS);
            }
        };
        let compile_s = started.elapsed().as_secs_f64();
        let loads = session
            .machine_of(plan)
            .map(|m| moec::ir::memory::die_loads(&ir, m))
            .unwrap_or_default();
        let memory_max_die_bytes = loads.iter().map(|l| l.total().0).max().unwrap_or(0);
        let expert_bytes_total = loads.iter().map(|l| l.expert_bytes.0 + l.shadow_bytes.0).sum();
        let run_options = RunOptions {
            steps: args.steps,
            numerics: (!args.no_numerics).then(NumericConfig::default),
            trace_steps: 0,
            network_quantum: DEFAULT_NETWORK_QUANTUM,
            faults: Vec::new(),
        };
        eprintln!("compare: running {name} ...");
        let out = run(&schedule, &run_options, &mut |_, _| {}).map_err(|e| {
            let mut d = run_error(&e);
            d.message = format!("{name}: {}", d.message);
            report(&moec::source::SourceMap::default(), &[d]);
            super::EXIT_DIAGNOSTICS
        })?;
        rows.push(Row {
            name,
            compile_s,
            memory_max_die_bytes,
            expert_bytes_total,
            report: out.report,
        });
    }
    if let Some(svg) = &args.svg {
        let title = format!(
            "p50 step latency by placement: plan {} ({} on {})",
            plan.name, rows[0].report.model, rows[0].report.machine
        );
        let values: Vec<(String, f64)> = rows
            .iter()
            .map(|r| (r.name.clone(), r.report.latency.p50_s * 1e3))
            .collect();
        write_atomic(svg, &bars::render(&title, "ms", &values)).map_err(|e| {
            eprintln!("error: cannot write `{}`: {e}", svg.display());
            super::EXIT_DIAGNOSTICS
        })?;
    }
    let text = match args.report {
        super::run::ReportFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows, "skipped": skipped })).unwrap_or_default()
                + "\n"
        }
        super::run::ReportFormat::Text => {
            let mut text = table(&rows);
            for s in &skipped {
                text += &format!("skipped {}: {}\n", s.name, s.reason);
            }
            text
        }
    };
    emit(args.output.as_deref(), &text)
}

fn table(rows: &[Row]) -> String {
    let mut o = String::new();
    if let Some(first) = rows.first() {
        let r = &first.report;
        let _ = writeln!(
            o,
            "{} on {}, workload {} ({} tokens a step, {} steps)\n",
            r.model, r.machine, r.workload, r.tokens_per_step, r.steps
        );
    }
    let name_width = rows.iter().map(|r| r.name.len()).chain([9]).max().unwrap_or(9);
    // The workload's target, the same for every row: its column only when there is one.
    let slo = rows.first().and_then(|r| r.report.serving.slo);
    let slo_head = slo.map_or(String::new(), |s| format!(" {:>7}", s.metric.name()));
    let _ = writeln!(
        o,
        "{:<name_width$} {:>11} {:>11}{slo_head} {:>11} {:>7} {:>12} {:>12} {:>9} {:>9} {:>9} {:>11} {:>10} {:>11} {:>11} {:>9}",
        "placement",
        "p50",
        "p99",
        "tokens/s",
        "/bound",
        "all-to-all",
        "byte-hops",
        "link max",
        "die imb",
        "exp imb",
        "migration",
        "numerics",
        "mem max",
        "experts",
        "compile"
    );
    for row in rows {
        let r = &row.report;
        let a2a = r.breakdown.dispatch_s + r.breakdown.combine_s;
        let numerics = r
            .numeric_check
            .as_ref()
            .map_or("skipped".to_string(), |n| format!("{:.1e}", n.max_rel_error));
        let met = r.serving.slo.map_or(String::new(), |s| {
            format!(" {:>7}", if s.met { "met" } else { "missed" })
        });
        let _ = writeln!(
            o,
            "{:<name_width$} {:>11} {:>11}{met} {:>11.1} {:>6.2}x {:>12} {:>12} {:>8.1}% {:>9.3} {:>9.3} {:>11} {:>10} {:>11} {:>11} {:>9}",
            row.name,
            Seconds(r.latency.p50_s).to_string(),
            Seconds(r.latency.p99_s).to_string(),
            r.serving.tokens_per_s,
            r.bound.ratio,
            Seconds(a2a).to_string(),
            Bytes(r.traffic.byte_hops as u64).to_string(),
            100.0 * r.links.max_util,
            r.dies.imbalance,
            r.dies.expert_imbalance,
            Seconds(r.breakdown.migration_s).to_string(),
            numerics,
            Bytes(row.memory_max_die_bytes).to_string(),
            Bytes(row.expert_bytes_total).to_string(),
            Seconds(row.compile_s).to_string()
        );
    }
    let slo_note = slo.map_or(String::new(), |s| {
        format!(
            "; {}: p99 <= {} (the workload's slo)",
            s.metric.name(),
            Seconds(s.target_s)
        )
    });
    let _ = writeln!(
        o,
        "\ntokens/s: in all over the alive dies; /bound: mean step latency over its physical lower bound{slo_note}\nall-to-all: dispatch + combine on the critical die; byte-hops a step; die imb: busy max / mean; exp imb: expert time max / mean; migration: the time moving weights added a step\nmem max: the fullest die's memory (weights, KV cache, shadow slots); experts: expert weights over every die (replicas and shadow slots): rows at equal memory have equal experts"
    );
    o
}
