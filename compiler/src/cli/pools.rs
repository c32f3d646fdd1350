//! `moec pools FILE`: sizing a disaggregated plan's pools
//! (`pool_sizing/`). MegaScale-Infer's plan search: every candidate
//! simulated at its largest batch meeting the time-per-token target, beside
//! the paper's linear-fit prediction, and the best one as a plan to paste.
//! DisagMoE's roofline split (`--rule disagmoe`): every split's stage
//! times, the rule's choice, and the splits the simulator ran.

use super::output::{emit, load_checked, report};
use super::run::ReportFormat;
use moec::pool_sizing::disagmoe::{self, Sizing};
use moec::pool_sizing::megascale::{self, PoolSearch, Space};
use moec::pool_sizing::wafer::{self, WaferSearch};
use moec_runtime::units::Seconds;
use std::path::PathBuf;

/// The command line of `pools`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .moe file.
    file: PathBuf,
    /// The sizing rule: MegaScale-Infer's plan search, or DisagMoE's roofline split.
    #[arg(long, value_enum, default_value_t = Rule::Megascale)]
    rule: Rule,
    /// The plan whose model, machine, workload (and pools, if any) to size (default: the only plan, or `default`).
    #[arg(long)]
    plan: Option<String>,
    /// Attention tensor-parallel sizes to try (default 1,2,4,8).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=64))]
    tp_attention: Vec<u32>,
    /// Expert tensor-parallel sizes to try (default 1,2,4,8).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=64))]
    tp_experts: Vec<u32>,
    /// Attention replicas to try (default: the balance rule's n_a = k1 E / (k3 K)).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    replicas: Vec<u32>,
    /// Micro-batches to try (default 1,2,3,4); under `--rule disagmoe`, the first is the split's (default: the
    /// plan's, or 2).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=64))]
    micro_batches: Vec<u32>,
    /// Steps each batch probe runs, timing only.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
    steps: u64,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    report: ReportFormat,
    /// Write the report here (atomically) instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// How to size the pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rule {
    /// MegaScale-Infer's Algorithm 1: tp_a, tp_e, replicas, micro-batches, the largest batch meeting the target.
    Megascale,
    /// DisagMoE: the split of the dies that makes the slower stage's roofline fastest, at the workload's batch.
    Disagmoe,
    /// On a mesh: attention and expert pools in every region shape (band, middle, edge, columns,
    /// checkerboard) and size, simulated against the plan as written.
    Wafer,
}

/// Runs `moec pools`.
pub fn execute(args: Args) -> Result<(), u8> {
    let session = load_checked(&args.file)?;
    if args.rule == Rule::Wafer {
        let found = wafer::search(&session, args.plan.as_deref(), args.steps).map_err(|d| {
            report(&session.loaded.sources, &[d]);
            super::EXIT_DIAGNOSTICS
        })?;
        let text = match args.report {
            ReportFormat::Json => serde_json::to_string_pretty(&found).unwrap_or_default() + "\n",
            ReportFormat::Text => wafer_table(&found),
        };
        return emit(args.output.as_deref(), &text);
    }
    if args.rule == Rule::Disagmoe {
        let sizing = disagmoe::size(
            &session,
            args.plan.as_deref(),
            args.steps,
            args.micro_batches.first().copied(),
        )
        .map_err(|d| {
            report(&session.loaded.sources, &[d]);
            super::EXIT_DIAGNOSTICS
        })?;
        let text = match args.report {
            ReportFormat::Json => serde_json::to_string_pretty(&sizing).unwrap_or_default() + "\n",
            ReportFormat::Text => split_table(&sizing),
        };
        return emit(args.output.as_deref(), &text);
    }
    let space = Space {
        tp_attention: args.tp_attention.clone(),
        tp_experts: args.tp_experts.clone(),
        replicas: args.replicas.clone(),
        micro_batches: args.micro_batches.clone(),
        steps: args.steps,
    };
    let search = megascale::search(&session, args.plan.as_deref(), &space, &mut |c| {
        eprintln!(
            "  tp_a {} tp_e {} n_a {} m {}: batch {}",
            c.tp_attention,
            c.tp_experts,
            c.replicas,
            c.micro_batches,
            c.found.as_ref().map_or("-".to_string(), |p| p.batch.to_string())
        );
    })
    .map_err(|d| {
        report(&session.loaded.sources, &[d]);
        super::EXIT_DIAGNOSTICS
    })?;
    let text = match args.report {
        ReportFormat::Json => serde_json::to_string_pretty(&search).unwrap_or_default() + "\n",
        ReportFormat::Text => table(&search),
    };
    emit(args.output.as_deref(), &text)
}

/// The search as a person reads it: the fits, every candidate, the best.
fn table(s: &PoolSearch) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let target = Seconds(s.slo.target_s);
    let _ = writeln!(
        o,
        "pools for plan `{}`: the largest batch with {} p99 <= {target} ({} steps a probe, timing only)",
        s.plan,
        s.slo.metric.name(),
        s.steps
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "MegaScale-Infer's linear fits (per micro-batch and layer):");
    for (tp_a, tp_e, f, rule) in &s.fits {
        let _ = writeln!(
            o,
            "  tp_a {tp_a} tp_e {tp_e}: T_a = {:.3} us x b_a + {:.1} us, T_e = {:.4} us x b_e + {:.1} us; balance n_a = {rule:.1}",
            f.k1 * 1e6,
            f.k2 * 1e6,
            f.k3 * 1e6,
            f.k4 * 1e6
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:>4} {:>4} {:>4} {:>2} {:>5} | {:>7} {:>10} {:>11} {:>12} | {:>7} {:>10}",
        "tp_a", "tp_e", "n_a", "m", "dies", "batch", "step p99", "tok/s/die", "tokens/$", "fit B", "fit step"
    );
    for (i, c) in s.candidates.iter().enumerate() {
        let cell = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("-".to_string(), f);
        let mark = if Some(i) == s.best { "  <- best" } else { "" };
        let _ = writeln!(
            o,
            "  {:>4} {:>4} {:>4} {:>2} {:>5} | {:>7} {:>10} {:>11} {:>12} | {:>7} {:>10}{mark}",
            c.tp_attention,
            c.tp_experts,
            c.replicas,
            c.micro_batches,
            c.dies,
            c.found.as_ref().map_or("-".to_string(), |p| p.batch.to_string()),
            cell(c.found.as_ref().and_then(|p| p.p99_s), &|x| Seconds(x).to_string()),
            cell(c.tokens_per_s_per_die, &|x| format!("{x:.1}")),
            cell(c.tokens_per_dollar, &|x| format!("{x:.0}")),
            c.predicted_batch.map_or("-".to_string(), |b| b.to_string()),
            cell(c.predicted_step_s, &|x| Seconds(x).to_string()),
        );
    }
    match &s.best_plan {
        Some(plan) => {
            let _ = writeln!(o);
            let _ = writeln!(o, "the best, as a plan:");
            o += plan;
        }
        None => {
            let _ = writeln!(o, "\nno candidate meets the target at batch 1");
        }
    }
    o
}

/// DisagMoE's sizing as a person reads it: the splits that fit, the rule's
/// choice and the simulator's.
fn split_table(s: &Sizing) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "DisagMoE's split for plan `{}`: batch {} at context {} in {} micro-batches over {} dies; attention {:.0}% of one die's roofline work",
        s.plan,
        s.batch,
        s.context,
        s.micro_batches,
        s.dies,
        s.attention_share * 100.0
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:>4} {:>4} | {:>10} {:>8} {:>10} {:>8} | {:>10}",
        "n_A", "n_F", "T_A", "bound", "T_F", "bound", "simulated"
    );
    for (i, x) in s.splits.iter().enumerate().filter(|(_, x)| x.fits) {
        let mut mark = String::new();
        if Some(i) == s.rule {
            mark += "  <- rule";
        }
        if Some(i) == s.simulated_best {
            mark += "  <- simulator";
        }
        let _ = writeln!(
            o,
            "  {:>4} {:>4} | {:>10} {:>8} {:>10} {:>8} | {:>10}{mark}",
            x.attention_dies,
            x.expert_dies,
            Seconds(x.attention_s).to_string(),
            x.attention_bound,
            Seconds(x.experts_s).to_string(),
            x.experts_bound,
            x.simulated_s.map_or("-".to_string(), |t| Seconds(t).to_string()),
        );
    }
    if s.rule.is_none() {
        let _ = writeln!(o, "\nno split holds both pools in memory");
    }
    o
}

/// The wafer layouts as a person reads them, fastest first, against the
/// plan as written.
fn wafer_table(s: &WaferSearch) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let colocated = s.colocated_s.map_or("-".to_string(), |t| Seconds(t).to_string());
    let _ = writeln!(
        o,
        "disaggregated layouts for plan `{}` (batch {}); the plan as written (colocated): {colocated} a step",
        s.plan, s.batch
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:>13} {:>4} {:>4} {:>2} | {:>10} {:>10}",
        "shape", "n_A", "n_F", "m", "step p99", "/colocated"
    );
    let mut order: Vec<usize> = (0..s.layouts.len()).collect();
    order.sort_by(|&a, &b| {
        let t = |i: usize| s.layouts[i].step_s.unwrap_or(f64::MAX);
        t(a).total_cmp(&t(b)).then(a.cmp(&b))
    });
    for i in order {
        let l = &s.layouts[i];
        let step = match (&l.refused, l.step_s) {
            (Some(r), _) => format!("refused: {r}"),
            (None, Some(t)) => Seconds(t).to_string(),
            (None, None) => "-".to_string(),
        };
        let ratio = l
            .step_s
            .zip(s.colocated_s)
            .map_or("-".to_string(), |(t, c)| format!("{:.2}x", t / c));
        let _ = writeln!(
            o,
            "  {:>13} {:>4} {:>4} {:>2} | {:>10} {:>10}",
            l.shape, l.attention_dies, l.expert_dies, l.micro_batches, step, ratio
        );
    }
    o
}
