//! Netbench against a cycle-accurate simulator's figures: BookSim2's
//! saturation tables (`../shared/validation/booksim/saturation-8x8.csv`,
//! `tests/netbench/saturation-*.csv`), read and reproduced row by row.
//!
//! BookSim counts in flits and cycles; a machine counts in bytes and
//! seconds. A flit a cycle is one link's full bandwidth, so with flits of
//! `flit_bytes` a cycle lasts `flit_bytes / link bandwidth`, a packet of
//! `n` flits is a message of `n * flit_bytes`, and BookSim's injection rate
//! in flits per node per cycle is netbench's offered load.

use super::{run, NetbenchConfig, Pattern};
use crate::machine::Machine;
use rayon::prelude::*;
use serde::Serialize;

/// One row of a BookSim2 saturation table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReferenceRow {
    /// The traffic pattern, in BookSim's spelling (`hotspot(27)`).
    pub pattern: Pattern,
    /// Flits per packet.
    pub packet_flits: u64,
    /// The analytical bound, flits per node per cycle.
    pub theta: f64,
    /// BookSim's highest stable offered load.
    pub saturation: f64,
    /// BookSim's zero-load latency, cycles.
    pub zero_load_cycles: f64,
}

/// Reads a saturation table: a CSV with a header naming at least
/// `pattern`, `packet_size`, `theta_analytical`, `highest_stable_offered`
/// and `zero_load_latency`, one row per pattern and packet size.
pub fn read_reference(text: &str) -> Result<Vec<ReferenceRow>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("the table is empty")?
        .split(',')
        .map(str::trim)
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("the table has no `{name}` column"))
    };
    let (pattern, packet, theta, stable, zero) = (
        column("pattern")?,
        column("packet_size")?,
        column("theta_analytical")?,
        column("highest_stable_offered")?,
        column("zero_load_latency")?,
    );
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let row = i + 2;
        let cell = |c: usize| cells.get(c).copied().ok_or_else(|| format!("row {row} is short"));
        let number = |c: usize| -> Result<f64, String> {
            let text = cell(c)?;
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("row {row}: `{text}` is not a number"))
        };
        let name = cell(pattern)?;
        rows.push(ReferenceRow {
            pattern: name
                .parse()
                .map_err(|_| format!("row {row}: unknown pattern `{name}`"))?,
            packet_flits: cell(packet)?
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("row {row}: the packet size is not a positive whole number"))?,
            theta: number(theta)?,
            saturation: number(stable)?,
            zero_load_cycles: number(zero)?,
        });
    }
    Ok(rows)
}

/// One reference row and what netbench gives for it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// BookSim's figures.
    pub reference: ReferenceRow,
    /// Netbench's analytical bound, flits per node per cycle.
    pub theta: Option<f64>,
    /// Netbench's saturation load (`NetbenchResult::saturation`).
    pub saturation: Option<f64>,
    /// Netbench's zero-load latency, cycles.
    pub zero_load_cycles: f64,
}

impl Comparison {
    /// Netbench's saturation over BookSim's, minus 1.
    pub fn saturation_error(&self) -> Option<f64> {
        self.saturation.map(|s| s / self.reference.saturation - 1.0)
    }

    /// Netbench's zero-load latency over BookSim's, minus 1.
    pub fn zero_load_error(&self) -> f64 {
        self.zero_load_cycles / self.reference.zero_load_cycles - 1.0
    }
}

/// Runs every row on `machine` with flits of `flit_bytes`: the saturation
/// search with `messages_per_die` messages a point, and the closed-form
/// zero-load latency. Rows run on every core at once; each is seeded alike
/// and stands alone, so the result does not depend on how they were shared.
pub fn compare(
    machine: &Machine,
    rows: &[ReferenceRow],
    flit_bytes: u64,
    messages_per_die: u32,
    seed: u64,
) -> Vec<Comparison> {
    let cycle = flit_bytes as f64 / machine.spec().link.bandwidth.0;
    rows.par_iter()
        .map(|row| {
            let config = NetbenchConfig {
                pattern: row.pattern,
                message_bytes: row.packet_flits * flit_bytes,
                loads: Vec::new(),
                messages_per_die,
                seed,
                saturation: true,
            };
            let result = run(machine, &config);
            Comparison {
                reference: row.clone(),
                theta: result.theta,
                saturation: result.saturation,
                zero_load_cycles: result.zero_load_latency_s / cycle,
            }
        })
        .collect()
}
