//! Command-line parsing (clap) and dispatch to the subcommands.
//!
//! Exit codes: 0 success, 1 the input has errors (diagnostics printed),
//! 2 the command line is wrong (clap's usage errors, an unknown code for
//! `explain`).

mod check;
mod compare;
mod compile;
mod explain;
mod fmt;
mod netbench;
mod output;
mod pools;
mod run;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit status for input with errors.
pub const EXIT_DIAGNOSTICS: u8 = 1;
/// Exit status for a wrong command line.
pub const EXIT_USAGE: u8 = 2;

/// moec compiles Mixture-of-Experts inference onto wafer-scale meshes, GPU
/// racks and clusters: a .moe file describes the model, the machine and the
/// workload; passes place the experts; the result is a placed graph IR.
#[derive(Parser, Debug)]
#[command(name = "moec", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  moec check examples/deepseek-v3-wafer.moe
  moec compile examples/deepseek-v3-wafer.moe --layers 0..3
  moec compile examples/mixtral-8x7b-h100.moe --emit dot -o mixtral.dot
  moec compile examples/deepseek-v3-wafer.moe --passes 'place(round_robin)' --print-after place
  moec explain E0003
  moec fmt --write examples/deepseek-v3-wafer.moe";

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check a file (and its imports); print what it defines.
    #[command(after_help = "Example:\n  moec check examples/deepseek-v3-wafer.moe")]
    Check {
        /// The .moe file.
        file: PathBuf,
    },
    /// Compile a plan: build its IR, run its passes, print the placed IR.
    #[command(after_help = "Examples:
  moec compile examples/deepseek-v3-wafer.moe
  moec compile examples/deepseek-v3-wafer.moe --plan default --emit json -o plan.json
  moec compile examples/deepseek-v3-wafer.moe --passes baseline --print-after-all --layers 3..3
  moec compile examples/deepseek-v3-wafer.moe --plan eplb --emit placement --format sglang -o eplb.json

Passes: place(round_robin), place(contiguous), place(eplb), from_file. Named pipelines: baseline = place(round_robin).
Placement formats (--emit placement --format F): sglang, vllm-ascend, trtllm, moec (docs/PLACEMENT_FORMATS.md).")]
    Compile(compile::Args),
    /// Run a plan on the simulated machine with real kernels; report latency, traffic, balance, throughput, the
    /// physical bound and the numeric check (--max-batch: the largest batch meeting the workload's slo).
    #[command(after_help = "Examples:
  moec run examples/deepseek-v3-wafer.moe --steps 4
  moec run examples/deepseek-v3-wafer.moe --report json -o report.json --trace trace.json --heatmap links.svg
  moec run examples/mixtral-8x7b-h100.moe --max-batch
  moec compile examples/mixtral-8x7b-h100.moe --emit schedule -o plan.json && moec run plan.json")]
    Run(run::Args),
    /// Every placement on one plan's model, machine and workload: one table (or JSON rows, and an SVG bar chart).
    #[command(after_help = "Examples:
  moec compare examples/deepseek-v3-wafer.moe --steps 4
  moec compare examples/mixtral-8x7b-h200.moe --report json -o rows.json --svg placements.svg")]
    Compare(compare::Args),
    /// The network alone under BookSim2's synthetic traffic (uniform, transpose, bitcomp, hotspot, all-to-all),
    /// swept over load; its saturation load; a BookSim2 saturation table reproduced.
    #[command(after_help = "Examples:
  moec netbench examples/machines/wafer-8x8.moe
  moec netbench examples/machines/wafer-8x8.moe --pattern transpose --loads 0.05,0.1,0.15,0.2 --svg transpose.svg
  moec netbench examples/machines/wafer-8x8.moe --pattern hotspot:0.3 --message-size 65536 --json
  moec netbench examples/machines/booksim-mesh-8x8.moe --pattern uniform --message-size 256 --saturation
  moec netbench examples/machines/booksim-mesh-8x8.moe --reference tests/netbench/saturation-8x8.csv")]
    Netbench(netbench::Args),
    /// Size a disaggregated plan's pools: MegaScale-Infer's search over tp_a, tp_e, attention replicas and
    /// micro-batches, each at its largest batch meeting the workload's tpot target, beside the paper's fits.
    #[command(after_help = "Examples:
  moec pools examples/megascale-infer.moe --plan a800
  moec pools examples/megascale-infer.moe --plan h20_l40s_disaggregated --report json -o pools.json
  moec pools examples/megascale-infer.moe --plan a800 --tp-attention 1 --tp-experts 1 --micro-batches 1,2,3,4")]
    Pools(pools::Args),
    /// Explain a diagnostic code, with an example (no code: list them all).
    Explain {
        /// A code such as E0003.
        code: Option<String>,
    },
    /// Print a .moe file in canonical layout.
    Fmt {
        /// The .moe file.
        file: PathBuf,
        /// Rewrite the file in place.
        #[arg(short, long, conflicts_with = "check")]
        write: bool,
        /// Exit 1 if the file is not in canonical layout.
        #[arg(long)]
        check: bool,
    },
}

/// Output forms of `compile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The IR's text form.
    Ir,
    /// The IR as JSON.
    Json,
    /// The IR as a Graphviz graph.
    Dot,
    /// The lowered schedule (JSON) that `moec run` executes.
    Schedule,
    /// The expert placement in a serving engine's format (`--format`).
    Placement,
}

/// Runs a command; `Err` carries the exit status.
pub fn run(cli: Cli) -> Result<(), u8> {
    match cli.command {
        Command::Check { file } => check::run(&file),
        Command::Compile(args) => compile::run(args),
        Command::Run(args) => run::execute(args),
        Command::Compare(args) => compare::execute(args),
        Command::Netbench(args) => netbench::execute(args),
        Command::Pools(args) => pools::execute(args),
        Command::Explain { code } => explain::run(code.as_deref()),
        Command::Fmt { file, write, check } => fmt::run(&file, write, check),
    }
}
