//! `moec compile FILE`: a plan's IR through its passes, emitted as text,
//! JSON or Graphviz, or lowered to the schedule, or its expert placement in
//! a serving engine's format.

use super::output::{emit, load_checked, report};
use super::Emit;
use moec::diag::Diagnostic;
use moec::driver::{self, CompileOptions};
use moec::ir::{self, text::TextOptions};
use moec::passes::PrintAfter;
use moec::placement_file::Format;
use std::path::PathBuf;

/// The command line of `compile`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .moe file.
    file: PathBuf,
    /// Which plan (default: the only plan, or the one named `default`).
    #[arg(long)]
    plan: Option<String>,
    /// What to write.
    #[arg(long, value_enum, default_value_t = Emit::Ir)]
    emit: Emit,
    /// The format of `--emit placement`: sglang, vllm-ascend, trtllm or moec (default).
    #[arg(long, value_parser = parse_format, value_name = "FORMAT")]
    format: Option<Format>,
    /// With --emit placement in an engine format: fill dies holding fewer experts with second slots of their own
    /// experts (checked against their free memory) instead of refusing.
    #[arg(long)]
    pad_slots: bool,
    /// Write here (atomically) instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Run this pipeline instead of the plan's: `place(round_robin),...` or a pipeline name.
    #[arg(long)]
    passes: Option<String>,
    /// Steps the run will take (default: the workload's): what a plan's migration plans over.
    #[arg(long)]
    steps: Option<u64>,
    /// Seconds each integer program may search (MoETuner's ILPs), with no node budget and the size caps raised:
    /// solves past the default budget can end differently on a slower machine.
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    milp_seconds: Option<f64>,
    /// Print the IR to standard error after this pass (repeatable; `place` matches `place(...)`).
    #[arg(long, value_name = "PASS")]
    print_after: Vec<String>,
    /// Print the IR to standard error after every pass.
    #[arg(long)]
    print_after_all: bool,
    /// Only print these layers of the IR text, e.g. `0..3` (inclusive).
    #[arg(long, value_name = "A..B")]
    layers: Option<String>,
}

/// Runs `moec compile`.
pub fn run(args: Args) -> Result<(), u8> {
    let layers = match args.layers.as_deref().map(parse_layers) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            eprintln!("error: --layers {e}");
            return Err(super::EXIT_USAGE);
        }
        None => None,
    };
    if (args.format.is_some() || args.pad_slots) && args.emit != Emit::Placement {
        eprintln!("error: --format and --pad-slots apply to --emit placement");
        return Err(super::EXIT_USAGE);
    }
    let session = load_checked(&args.file)?;
    let print_after = if args.print_after_all {
        PrintAfter::All
    } else if args.print_after.is_empty() {
        PrintAfter::Nothing
    } else {
        PrintAfter::Passes(args.print_after.clone())
    };
    let options = CompileOptions {
        plan: args.plan.clone(),
        passes: args.passes.clone(),
        print_after,
        steps: args.steps,
        milp_seconds: args.milp_seconds,
        ..CompileOptions::default()
    };
    let text_options = TextOptions { layers };
    let plan = session
        .select_plan(args.plan.as_deref())
        .map_err(|d| fail(&session, d))?;
    let machine = session.program.machine(plan.machine).ok_or(super::EXIT_DIAGNOSTICS)?;
    let mut print = |pass: &str, ir: &ir::Ir| {
        eprintln!("; *** IR after {pass} ***");
        eprint!("{}", ir::text::print(ir, machine, &text_options));
    };
    if args.emit == Emit::Schedule {
        let schedule = session.schedule(&options, &mut print).map_err(|d| fail(&session, d))?;
        return emit(args.output.as_deref(), &schedule.to_json());
    }
    if args.emit == Emit::Placement {
        let format = args.format.unwrap_or(Format::Moec);
        let text = session
            .placement_file(&options, format, args.pad_slots, &mut print)
            .map_err(|d| fail(&session, d))?;
        return emit(args.output.as_deref(), &text);
    }
    let ir = session.compile(&options, &mut print).map_err(|d| fail(&session, d))?;
    let text = match args.emit {
        Emit::Ir => ir::text::print(&ir, machine, &text_options),
        Emit::Json => ir::json::print(&ir),
        Emit::Dot => ir::dot::print(&ir, machine),
        Emit::Schedule | Emit::Placement => String::new(),
    };
    emit(args.output.as_deref(), &text)
}

fn fail(session: &driver::Session, d: Diagnostic) -> u8 {
    report(&session.loaded.sources, &[d]);
    super::EXIT_DIAGNOSTICS
}

/// A placement format by name (clap's value parser for `--format`).
fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        format!("no placement format `{s}` (formats: {})", names.join(", "))
    })
}

/// `3`, `0..3` (inclusive).
fn parse_layers(s: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let bad = || format!("expects a layer or a range such as 0..3, found `{s}`");
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u32 = a.trim().parse().map_err(|_| bad())?;
            let b: u32 = b.trim().trim_start_matches('=').parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            Ok(a..=b)
        }
        None => {
            let a: u32 = s.trim().parse().map_err(|_| bad())?;
            Ok(a..=a)
        }
    }
}

/// `--milp-seconds`: a positive number of seconds, at most a day.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds in (0, 86400]")),
    }
}
