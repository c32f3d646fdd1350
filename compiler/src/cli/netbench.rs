//! `moec netbench MACHINE_FILE`: the network alone under the classic
//! synthetic traffic patterns, swept over offered load, to check the mesh
//! model against cycle-accurate network-on-chip simulators.

use super::output::{emit, load_checked, report, write_atomic};
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
    /// Traffic pattern, as BookSim2 defines it: uniform (the sender included), transpose, bitcomp,
    /// hotspot (everything to the centre die), hotspot(DIE), hotspot:F (a fraction F, the rest uniform),
    /// or all-to-all.
    #[arg(long, default_value = "uniform")]
    pattern: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    message_size: u64,
    /// Offered loads per die, as fractions of one link's bandwidth, comma-separated
    /// (default 0.05, 0.1, ..., 1.0).
    #[arg(long, value_delimiter = ',', value_name = "LOADS")]
    loads: Vec<f64>,
    /// Messages each die injects per load point (a point that looks unstable runs again up to 16x as long).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    messages: u32,
    /// Also search for the saturation load (the highest stable load) by bisection.
    #[arg(long)]
    saturation: bool,
    /// Reproduce a BookSim2 saturation table (e.g. ../shared/validation/booksim/saturation-8x8.csv): every
    /// row's saturation load and zero-load latency, side by side with the table's.
    #[arg(long, value_name = "CSV", conflicts_with_all = ["pattern", "loads", "saturation", "svg", "message_size"])]
    reference: Option<PathBuf>,
    /// With --reference: bytes in one flit (a flit a cycle is one link's bandwidth).
    #[arg(long, default_value_t = 16, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    flit: u64,
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
    let dies = machine.alive_dies().len() as u64;
    moec::budget::check_netbench(dies, args.messages).map_err(|d| {
        report(&moec::source::SourceMap::default(), &[d]);
        super::EXIT_DIAGNOSTICS
    })?;
    if let Some(path) = &args.reference {
        let rows = read_table(path)
            .map_err(|e| e.to_string())
            .and_then(|text| netbench::read_reference(&text))
            .map_err(|e| {
                eprintln!("error: --reference `{}`: {e}", path.display());
                super::EXIT_DIAGNOSTICS
            })?;
        let compared = netbench::compare(machine, &rows, args.flit, args.messages, args.seed);
        let text = if args.json {
            serde_json::to_string_pretty(&compared).unwrap_or_default()
        } else {
            netbench::comparison_table(&compared, args.flit)
        };
        return emit(args.output.as_deref(), &text);
    }
    if let Pattern::Hotspot { die: Some(die), .. } = pattern {
        if !machine.is_alive(die) {
            eprintln!(
                "error: --pattern: the hot die {} is not an alive die of `{}` (dies 0 to {})",
                die.0,
                machine.spec().name,
                machine.die_count().saturating_sub(1)
            );
            return Err(super::EXIT_USAGE);
        }
    }
    let mut config = NetbenchConfig {
        pattern,
        message_bytes: args.message_size,
        messages_per_die: args.messages,
        seed: args.seed,
        saturation: args.saturation,
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

/// A reference table's text: a regular file of at most 1 MiB (a device or
/// a FIFO is refused, not read without end).
fn read_table(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    const LIMIT: u64 = 1 << 20;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(LIMIT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    Ok(text)
}
