//! `moec run FILE | plan.json`: compile (or read a schedule), execute it on
//! the simulated machine with real kernels, and report.

use super::output::{emit, load_checked, report, run_error, write_atomic};
use moec::diag::{Code, Diagnostic};
use moec::driver::CompileOptions;
use moec::source::SourceMap;
use moec::syntax::Span;
use moec_runtime::fault::Fault;
use moec_runtime::machine::Machine;
use moec_runtime::numerics::NumericConfig;
use moec_runtime::report::{chrome, heatmap, series, text};
use moec_runtime::run::{run, RunOptions};
use moec_runtime::schedule::Schedule;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table.
    Text,
    /// JSON with the keys docs/RUNTIME.md documents.
    Json,
}

/// The command line of `run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .moe file (its plan is compiled first) or a schedule from `moec compile --emit schedule`.
    file: PathBuf,
    /// Which plan of a .moe file (default: the only plan, or `default`).
    #[arg(long)]
    plan: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    report: ReportFormat,
    /// Write the report here (atomically) instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write a Chrome trace (chrome://tracing, Perfetto) of the first step: every die and link a track.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Steps to include in the trace.
    #[arg(long, default_value_t = 1, value_name = "N")]
    trace_steps: u64,
    /// Write an SVG heat map of link utilisation.
    #[arg(long, value_name = "FILE")]
    heatmap: Option<PathBuf>,
    /// Write an SVG time series of latency and imbalance per step.
    #[arg(long, value_name = "FILE")]
    series: Option<PathBuf>,
    /// Steps to run (default: the workload's `steps`; 1 to 2^24, as in the language).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    steps: Option<u64>,
    /// Hidden width of the numeric check (default: the largest that fits the memory and time budget).
    #[arg(long, value_name = "W")]
    numeric_width: Option<u64>,
    /// Skip the numeric check (timing only).
    #[arg(long)]
    no_numerics: bool,
    /// The numeric check's self-test: the executor loses the first row a dispatch copies, and the check
    /// must fail the run.
    #[arg(long, hide = true, conflicts_with = "no_numerics")]
    inject_numeric_fault: bool,
    /// Network rate-recompute quantum: 0 simulates max-min sharing exactly; the default bounds the error
    /// near 2% and is far faster on big all-to-alls.
    #[arg(long, default_value_t = moec_runtime::sim::engine::DEFAULT_NETWORK_QUANTUM, value_name = "FRACTION")]
    network_quantum: f64,
    /// Inject a fault at the start of a step: `die(x,y)@step=N` or `link((x1,y1),(x2,y2))@step=N` on a
    /// mesh, `die(i)@step=N` on GPUs. Repeatable.
    /// (Read as text, so that an error can point into the spec.)
    #[arg(long = "fail", value_name = "SPEC")]
    faults: Vec<String>,
    /// Instead of one run: find the largest batch whose p99 step latency meets the workload's
    /// `slo { ... }`, recompiling at each batch tried and running `--steps` steps (default 4) timing only.
    #[arg(long, conflicts_with_all = ["trace", "heatmap", "series", "faults", "numeric_width"])]
    max_batch: bool,
}

/// Runs `moec run`.
pub fn execute(args: Args) -> Result<(), u8> {
    if args.max_batch {
        return max_batch(&args);
    }
    let schedule = load_schedule(&args.file, args.plan.as_deref(), args.steps)?;
    let faults = parse_faults(&args.faults, &schedule, args.steps)?;
    let numerics = (!args.no_numerics).then(|| NumericConfig {
        width: args.numeric_width,
        fault: args
            .inject_numeric_fault
            .then_some(moec_runtime::numerics::Fault::DropDispatchedRow),
        ..NumericConfig::default()
    });
    let options = RunOptions {
        steps: args.steps,
        numerics,
        trace_steps: if args.trace.is_some() { args.trace_steps } else { 0 },
        network_quantum: args.network_quantum,
        faults,
    };
    let mut bar = Progress::new();
    let out = run(&schedule, &options, &mut |done, total| bar.tick(done, total)).map_err(|e| {
        bar.clear();
        report(&SourceMap::default(), &[run_error(&e)]);
        super::EXIT_DIAGNOSTICS
    })?;
    bar.clear();
    let machine = Machine::build(schedule.machine.clone()).map_err(|e| {
        eprintln!("error: {e}");
        super::EXIT_DIAGNOSTICS
    })?;
    if let Some(path) = &args.trace {
        write(path, &chrome::render(&machine, &out.traced))?;
    }
    if let Some(path) = &args.heatmap {
        let title = format!("link utilisation: plan {} on {}", schedule.plan, schedule.machine.name);
        // Drawn on the machine as the run ended, so failed links and dies show dead.
        write(path, &heatmap::render(&out.machine, &out.report.link_util, &title))?;
    }
    if let Some(path) = &args.series {
        let title = format!(
            "latency and imbalance per step: plan {} on {}",
            schedule.plan, schedule.machine.name
        );
        write(path, &series::render(&out.report, &title))?;
    }
    let text = match args.report {
        ReportFormat::Text => text::render(&out.report),
        ReportFormat::Json => out.report.to_json(),
    };
    emit(args.output.as_deref(), &text)?;
    // The report is written either way; a failed numeric check fails the run.
    match &out.report.numeric_check {
        Some(n) if !n.passed => {
            let place = match (n.failed_step, &n.difference) {
                (Some(step), Some(d)) => format!(": {}", text::describe(step, d)),
                _ => String::new(),
            };
            let d = Diagnostic::global(
                Code::E0047,
                format!(
                    "the numeric check failed: max rel error {:.3e} over the tolerance {:.0e}{place}",
                    n.max_rel_error, n.tolerance
                ),
            )
            .with_hint("the executor computed something the dense reference does not: a bug in moec or in a hand-edited schedule");
            report(&SourceMap::default(), &[d]);
            Err(super::EXIT_DIAGNOSTICS)
        }
        _ => Ok(()),
    }
}

/// `--max-batch`: the batch search (`moec::batch_search`), as a table or JSON.
fn max_batch(args: &Args) -> Result<(), u8> {
    if args.file.extension().is_some_and(|e| e == "json") {
        eprintln!(
            "error: --max-batch recompiles the plan at every batch it tries: give it the .moe file, not a schedule"
        );
        return Err(super::EXIT_USAGE);
    }
    let session = load_checked(&args.file)?;
    let search = moec::batch_search::search(&session, args.plan.as_deref(), args.steps).map_err(|d| {
        report(&session.loaded.sources, &[d]);
        super::EXIT_DIAGNOSTICS
    })?;
    let text = match args.report {
        ReportFormat::Json => serde_json::to_string_pretty(&search).unwrap_or_default() + "\n",
        ReportFormat::Text => search_table(&search),
    };
    emit(args.output.as_deref(), &text)
}

/// The batch search as a person reads it: the answer, then every probe.
fn search_table(s: &moec::batch_search::Search) -> String {
    use moec_runtime::units::Seconds;
    use std::fmt::Write;
    let metric = s.slo.metric.name();
    let mut o = String::new();
    let target = Seconds(s.slo.target_s);
    match &s.found {
        Some(p) => {
            let _ = writeln!(o, "largest batch with {metric} p99 <= {target}: {}", p.batch);
            let _ = write!(
                o,
                "  at batch {}: {metric} p99 {}, {:.1} tokens/s ({:.1} per die)",
                p.batch,
                Seconds(p.p99_s.unwrap_or(0.0)),
                p.tokens_per_s.unwrap_or(0.0),
                p.tokens_per_s_per_die.unwrap_or(0.0)
            );
            if let Some(d) = p.tokens_per_dollar {
                let _ = write!(o, ", {d:.0} tokens per $");
            }
            let _ = writeln!(o, ", {:.2}x its bound", p.bound_ratio.unwrap_or(0.0));
        }
        None => {
            let _ = writeln!(o, "no batch meets {metric} p99 <= {target}: batch 1 does not");
        }
    }
    match &s.first_failing {
        Some(p) => {
            let why = match (&p.refused, p.p99_s) {
                (Some(r), _) => format!("refused: {r}"),
                (None, Some(p99)) => format!("{metric} p99 {} > {target}", Seconds(p99)),
                (None, None) => String::new(),
            };
            let _ = writeln!(o, "  batch {}: {why}", p.batch);
        }
        None => {
            let _ = writeln!(
                o,
                "  every batch up to the language's limit ({}) meets it",
                moec::batch_search::MAX_BATCH
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "probes ({} steps each, timing only, in the order run):", s.steps);
    let _ = writeln!(
        o,
        "  {:>9} {:>12} {:>12} {:>12} {:>8}  verdict",
        "batch",
        format!("{metric} p99"),
        "tokens/s",
        "per die",
        "/bound"
    );
    for p in &s.probes {
        let verdict = match &p.refused {
            Some(r) => format!("refused: {r}"),
            None if p.met => "met".to_string(),
            None => "missed".to_string(),
        };
        let cell = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("-".to_string(), f);
        let _ = writeln!(
            o,
            "  {:>9} {:>12} {:>12} {:>12} {:>8}  {verdict}",
            p.batch,
            cell(p.p99_s, &|x| Seconds(x).to_string()),
            cell(p.tokens_per_s, &|x| format!("{x:.1}")),
            cell(p.tokens_per_s_per_die, &|x| format!("{x:.1}")),
            cell(p.bound_ratio, &|x| format!("{x:.2}x")),
        );
    }
    o
}

fn write(path: &Path, text: &str) -> Result<(), u8> {
    write_atomic(path, text).map_err(|e| {
        eprintln!("error: cannot write `{}`: {e}", path.display());
        super::EXIT_DIAGNOSTICS
    })
}

/// A .moe file compiled, or a schedule read back.
fn load_schedule(file: &Path, plan: Option<&str>, steps: Option<u64>) -> Result<Schedule, u8> {
    if file.extension().is_some_and(|e| e == "json") {
        let mut sources = SourceMap::default();
        let refuse = |sources: &SourceMap, d| {
            report(sources, &[d]);
            super::EXIT_DIAGNOSTICS
        };
        let text = moec_runtime::input::read_text(file, moec_runtime::input::MAX_DATA_FILE_BYTES)
            .map_err(|e| refuse(&sources, moec::source::unreadable(file, &e)))?;
        return Schedule::from_json(&text).map_err(|e| {
            let message = format!("`{}`: {e}", file.display());
            let diagnostic = match e.line_column {
                Some((line, column)) => {
                    let at = byte_offset(&text, line, column);
                    let id = sources.add(file, text);
                    Diagnostic::error(Code::E0043, Span::new(id, at, at), message)
                }
                None => Diagnostic::global(Code::E0043, message),
            }
            .with_hint(
                "a schedule is what `moec compile --emit schedule` writes; edit the .moe file and compile again",
            );
            refuse(&sources, diagnostic)
        });
    }
    let session = load_checked(file)?;
    let options = CompileOptions {
        plan: plan.map(str::to_string),
        steps,
        ..CompileOptions::default()
    };
    session.schedule(&options, &mut |_, _| {}).map_err(|d| {
        report(&session.loaded.sources, &[d]);
        super::EXIT_DIAGNOSTICS
    })
}

/// The `--fail` specs, parsed and checked against the machine and the run's
/// length before anything runs, so that an error (E0044) can point into
/// the spec it is about: each spec is shown as a one-line file `--fail`.
fn parse_faults(specs: &[String], schedule: &Schedule, steps: Option<u64>) -> Result<Vec<Fault>, u8> {
    let refuse = |spec: &str, at: std::ops::Range<usize>, message: String, label: &str| {
        let mut sources = SourceMap::default();
        let id = sources.add(Path::new("--fail"), spec.to_string());
        let span = Span::new(id, at.start.min(spec.len()), at.end.min(spec.len()));
        report(
            &sources,
            &[Diagnostic::error(Code::E0044, span, message).with_label(label)],
        );
        super::EXIT_DIAGNOSTICS
    };
    let mut faults = Vec::new();
    for spec in specs {
        let fault = spec.parse::<Fault>().map_err(|e| {
            // The character at the problem, whole.
            let width = spec
                .get(e.at..)
                .and_then(|r| r.chars().next())
                .map_or(0, char::len_utf8);
            refuse(spec, e.at..e.at + width, e.to_string(), "here")
        })?;
        faults.push(fault);
    }
    let Ok(machine) = Machine::build(schedule.machine.clone()) else {
        return Ok(faults); // the run reports the machine's own error
    };
    let steps = steps.unwrap_or(schedule.workload.steps).max(1);
    if let Err(e) = moec_runtime::fault::check(&machine, &faults, steps) {
        let spec = faults
            .iter()
            .position(|f| *f == e.fault)
            .map_or("", |i| specs[i].as_str());
        return Err(refuse(spec, 0..spec.len(), e.to_string(), "this fault"));
    }
    Ok(faults)
}

/// The byte offset of serde_json's 1-based line and column (a column
/// counts bytes), clamped to the text.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let mut at = (start + column.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A progress bar that appears only once a run has taken a second.
struct Progress {
    start: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            bar: None,
        }
    }

    fn tick(&mut self, done: u64, total: u64) {
        if self.bar.is_none() && self.start.elapsed() > Duration::from_secs(1) && done < total {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {elapsed} (eta {eta})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(bar);
        }
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
