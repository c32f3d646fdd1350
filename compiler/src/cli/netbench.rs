//! `moec netbench MACHINE_FILE`: the network alone under the classic
//! synthetic traffic patterns, swept over offered load, to check the mesh
//! model against cycle-accurate network-on-chip simulators.

use super::output::{emit, load_checked, write_atomic};
use moec_runtime::sim::netbench::{self, NetbenchConfig, Pattern};
use std::path::PathBuf;

/// The command line of `netbench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .moe file defining the machine.
    file: PathBuf,
    /// Which machine (default: the only one in the file).
    #[arg(long)]
    machine: Option<String>,
    /// Traffic pattern: uniform, transpose, bitcomp, hotspot, hotspot:F (fraction to the hot die), all-to-all.
    #[arg(long, default_value = "uniform")]
    pattern: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    message_size: u64,
    /// Offered loads per die, as fractions of one link's bandwidth, comma-separated
    /// (default 0.05, 0.1, ..., 1.0).
    #[arg(long, value_delimiter = ',', value_name = "LOADS")]
    loads: Vec<f64>,
    /// Messages each die injects per load point.
    #[arg(long, default_value_t = 100)]
    messages: u32,
    /// Seed of the message arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the latency-vs-load curve as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Write the table or JSON here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Runs `moec netbench`.
pub fn execute(args: Args) -> Result<(), u8> {
    let pattern: Pattern = args.pattern.parse().map_err(|e: netbench::ParsePatternError| {
        eprintln!("error: --pattern: {}", e.0);
        super::EXIT_USAGE
    })?;
    if args.loads.iter().any(|l| !(l.is_finite() && *l > 0.0)) || args.message_size == 0 {
        eprintln!("error: loads must be positive fractions and --message-size at least 1 byte");
        return Err(super::EXIT_USAGE);
    }
    let session = load_checked(&args.file)?;
    let machines: Vec<_> = session
        .program
        .machines
        .iter()
        .filter_map(|m| m.item.as_ref())
        .collect();
    let machine = match &args.machine {
        Some(name) => machines.iter().find(|m| &m.spec().name == name).copied(),
        None if machines.len() == 1 => Some(machines[0]),
        None => None,
    };
    let Some(machine) = machine else {
        let names: Vec<&str> = machines.iter().map(|m| m.spec().name.as_str()).collect();
        eprintln!(
            "error: which machine? pass --machine NAME (machines: {})",
            names.join(", ")
        );
        return Err(super::EXIT_DIAGNOSTICS);
    };
    let mut config = NetbenchConfig {
        pattern,
        message_bytes: args.message_size,
        messages_per_die: args.messages,
        seed: args.seed,
        ..NetbenchConfig::default()
    };
    if !args.loads.is_empty() {
        config.loads = args.loads.clone();
    }
    let result = netbench::run(machine, &config);
    if let Some(svg) = &args.svg {
        write_atomic(svg, &netbench::to_svg(&result)).map_err(|e| {
            eprintln!("error: cannot write `{}`: {e}", svg.display());
            super::EXIT_DIAGNOSTICS
        })?;
    }
    let text = if args.json {
        netbench::to_json(&result)
    } else {
        netbench::to_table(&result)
    };
    emit(args.output.as_deref(), &text)
}
