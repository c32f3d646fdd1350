//! Netbench: the network model alone under classic synthetic traffic, to
//! check the flow model against cycle-accurate network-on-chip simulators
//! (BookSim-style latency vs offered load curves).
//!
//! This file owns the traffic patterns, the injection process, the
//! measurement of one load point, and the text, JSON and SVG reports.
//!
//! Every alive die that has somewhere to send injects messages of a fixed
//! size at Poisson times: the mean gap is `message_bytes / (load * link
//! bandwidth)`, so `load` is the offered rate per die as a fraction of one
//! mesh link (the spec's `link`). A run at one load lasts as long as a die
//! takes to inject `messages_per_die` messages on average; the first 20% of
//! that time is warm-up and is not measured.
//!
//! What the numbers mean in a flow model:
//! - **latency** is completion minus creation. There are no buffers, so
//!   there is no queueing delay as such: contention shows up as flows
//!   sharing links at lower rates, which stretches their transmission.
//!   Beyond saturation flows pile up in flight and latency grows with the
//!   length of the run, as a queue would.
//! - **accepted** is the bytes delivered during the measured window, per
//!   source die and second, as a fraction of the link bandwidth. Past
//!   saturation it falls rather than levelling off: max-min fairness shares
//!   a link per flow, not per byte delivered, so the long flows that pile up
//!   (several links per byte) keep their share. Compare the knee of a curve
//!   with a cycle-accurate simulator's, not its tail.
//! - There is no injection or ejection port: a die may transmit over all of
//!   its links at once, and only links limit it.

use super::network::Network;
use super::time::Time;
use crate::machine::{DieId, Machine, Topology};
use crate::rng::Rng;
use crate::units::{BytesPerSec, Seconds};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

/// Fraction of the injection window discarded as warm-up.
const WARM_UP: f64 = 0.2;

/// Hotspot fraction when the pattern is written without one.
pub const DEFAULT_HOTSPOT_FRACTION: f64 = 0.2;

/// Saturation: accepted below this fraction of offered ...
const ACCEPTED_FLOOR: f64 = 0.95;

/// ... or mean latency above this multiple of the zero-load latency.
const LATENCY_CEILING: f64 = 3.0;

/// Where each message goes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Pattern {
    /// Any other alive die, uniformly.
    UniformRandom,
    /// On a square mesh (x, y) -> (y, x). Elsewhere: the two halves of the
    /// id's bits swapped when the die count is a power of four, else the
    /// `BitComplement` partner. Dies on the diagonal send nothing.
    Transpose,
    /// Die `id` -> `count - 1 - id`: the bitwise complement when the count is
    /// a power of two, and on a mesh the point mirrored through the centre.
    /// With an odd count the middle die sends nothing.
    BitComplement,
    /// `fraction` of messages to the alive die nearest the mesh centre (the
    /// lowest alive die off meshes), the rest uniform; the hotspot itself
    /// sends uniformly.
    Hotspot {
        /// Share of messages sent to the hotspot, 0..=1.
        fraction: f64,
    },
    /// Each die cycles through every other alive die in turn, starting with
    /// the next one after itself, so no two dies aim at the same die at once.
    AllToAll,
}

impl Pattern {
    /// The short name: "uniform", "transpose", "bitcomp", "hotspot",
    /// "all-to-all".
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::UniformRandom => "uniform",
            Pattern::Transpose => "transpose",
            Pattern::BitComplement => "bitcomp",
            Pattern::Hotspot { .. } => "hotspot",
            Pattern::AllToAll => "all-to-all",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A pattern name that is not one of the five.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsePatternError(pub String);

impl fmt::Display for ParsePatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown traffic pattern `{}`; expected uniform, transpose, bitcomp, hotspot, hotspot:FRACTION or all-to-all",
            self.0
        )
    }
}

impl std::error::Error for ParsePatternError {}

impl FromStr for Pattern {
    type Err = ParsePatternError;

    /// The names `name()` gives; "hotspot" takes an optional `:FRACTION`
    /// in 0..=1 (default `DEFAULT_HOTSPOT_FRACTION`).
    fn from_str(s: &str) -> Result<Pattern, ParsePatternError> {
        let bad = || ParsePatternError(s.to_string());
        Ok(match s {
            "uniform" => Pattern::UniformRandom,
            "transpose" => Pattern::Transpose,
            "bitcomp" => Pattern::BitComplement,
            "all-to-all" => Pattern::AllToAll,
            "hotspot" => Pattern::Hotspot {
                fraction: DEFAULT_HOTSPOT_FRACTION,
            },
            _ => {
                let fraction: f64 = s
                    .strip_prefix("hotspot:")
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(bad)?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(bad());
                }
                Pattern::Hotspot { fraction }
            }
        })
    }
}

/// What to run: one pattern at several offered loads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetbenchConfig {
    /// Where messages go.
    pub pattern: Pattern,
    /// Size of every message.
    pub message_bytes: u64,
    /// Offered load per die as a fraction of one link's bandwidth, e.g.
    /// 0.05..=1.0. Loads that are not positive and finite are skipped.
    pub loads: Vec<f64>,
    /// How long each load runs: the time a die takes, on average, to inject
    /// this many messages (so every load costs about the same to simulate).
    pub messages_per_die: u32,
    /// Seeds the injection times and destinations; the same seed gives the
    /// same result.
    pub seed: u64,
}

impl Default for NetbenchConfig {
    /// Uniform traffic, 4 KiB messages, loads 0.05 to 1.0 in steps of 0.05,
    /// 100 messages per die, seed 1. Past saturation flows pile up, so a
    /// point costs about the square of `messages_per_die`.
    fn default() -> NetbenchConfig {
        NetbenchConfig {
            pattern: Pattern::UniformRandom,
            message_bytes: 4096,
            loads: (1..=20).map(|i| f64::from(i) * 0.05).collect(),
            messages_per_die: 100,
            seed: 1,
        }
    }
}

/// What one offered load achieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// Offered load per die, fraction of one link's bandwidth.
    pub offered: f64,
    /// Delivered during the measured window per source die, same unit.
    pub accepted: f64,
    /// The same in bytes per second per source die.
    pub accepted_bytes_per_s: f64,
    /// Mean latency of the messages created in the measured window.
    pub mean_latency_s: f64,
    /// 99th percentile (nearest rank) of the same.
    pub p99_latency_s: f64,
    /// Mean over the same messages of their latency on an idle network:
    /// route latency plus bytes over the route's slowest link.
    pub zero_load_latency_s: f64,
    /// Messages measured (created after the warm-up).
    pub messages: usize,
}

/// A latency vs offered load curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetbenchResult {
    /// The pattern's name.
    pub pattern: String,
    /// Size of every message.
    pub message_bytes: u64,
    /// Dies that injected traffic.
    pub sources: usize,
    /// One per valid load, ascending offered load.
    pub points: Vec<LoadPoint>,
    /// The lowest offered load at which accepted falls below 95% of offered
    /// or mean latency exceeds 3x the zero-load latency; `None` if no
    /// measured point does.
    pub saturation: Option<f64>,
}

/// Runs `config.pattern` on `machine` at every load of `config`.
pub fn run(machine: &Machine, config: &NetbenchConfig) -> NetbenchResult {
    let targets = Targets::new(machine, config.pattern);
    let mut loads: Vec<f64> = config
        .loads
        .iter()
        .copied()
        .filter(|l| l.is_finite() && *l > 0.0)
        .collect();
    loads.sort_by(f64::total_cmp);
    let points: Vec<LoadPoint> = loads
        .iter()
        .map(|&load| run_load(machine, &targets, config, load))
        .collect();
    let saturation = points
        .iter()
        .find(|p| {
            p.messages > 0
                && (p.accepted < ACCEPTED_FLOOR * p.offered
                    || p.mean_latency_s > LATENCY_CEILING * p.zero_load_latency_s)
        })
        .map(|p| p.offered);
    NetbenchResult {
        pattern: config.pattern.name().to_string(),
        message_bytes: config.message_bytes,
        sources: targets.sources.len(),
        points,
        saturation,
    }
}

/// One message: when it is created, by which die, for which die.
#[derive(Clone, Copy, Debug)]
struct Message {
    created: Time,
    src: DieId,
    dst: DieId,
}

/// A pattern resolved against a machine: who sends, and to whom.
#[derive(Debug)]
struct Targets {
    pattern: Pattern,
    /// Alive dies, ascending.
    alive: Vec<DieId>,
    /// Positions in `alive` of the dies that inject.
    sources: Vec<usize>,
    /// Per position in `alive`: the fixed partner (transpose, bitcomp).
    partner: Vec<Option<DieId>>,
    /// The hotspot die.
    hotspot: Option<DieId>,
}

impl Targets {
    fn new(machine: &Machine, pattern: Pattern) -> Targets {
        let alive = machine.alive_dies();
        let count = machine.die_count();
        let partner: Vec<Option<DieId>> = alive
            .iter()
            .map(|&d| {
                let p = match pattern {
                    Pattern::Transpose => transpose(machine, d),
                    Pattern::BitComplement => mirror(count, d),
                    _ => None,
                }?;
                (p != d && machine.is_alive(p)).then_some(p)
            })
            .collect();
        let fixed = matches!(pattern, Pattern::Transpose | Pattern::BitComplement);
        let sources = (0..alive.len())
            .filter(|&i| if fixed { partner[i].is_some() } else { alive.len() >= 2 })
            .collect();
        Targets {
            pattern,
            hotspot: hotspot(machine, &alive),
            alive,
            sources,
            partner,
        }
    }

    /// The destination of the `k`-th message of the die at position `pos`
    /// of `alive` (a source, so it has one).
    fn pick(&self, pos: usize, k: u64, rng: &mut Rng) -> Option<DieId> {
        let m = self.alive.len();
        let uniform = |rng: &mut Rng| {
            // Any alive die but the sender: draw among m - 1 and skip it.
            let r = rng.below(m.saturating_sub(1) as u64) as usize;
            self.alive.get(if r >= pos { r + 1 } else { r }).copied()
        };
        match self.pattern {
            Pattern::UniformRandom => uniform(rng),
            Pattern::Transpose | Pattern::BitComplement => self.partner.get(pos).copied().flatten(),
            Pattern::Hotspot { fraction } => {
                let src = self.alive.get(pos).copied();
                match self.hotspot {
                    Some(hot) if Some(hot) != src && rng.next_f64() < fraction => Some(hot),
                    _ => uniform(rng),
                }
            }
            Pattern::AllToAll => {
                let others = m.saturating_sub(1).max(1) as u64;
                let step = (k % others) as usize + 1;
                self.alive.get((pos + step) % m.max(1)).copied()
            }
        }
    }
}

/// Transpose partner of `d` (see `Pattern::Transpose`).
fn transpose(machine: &Machine, d: DieId) -> Option<DieId> {
    if let (Some(grid), Topology::Mesh { .. }) = (machine.grid(), machine.spec().topology) {
        if grid.width == grid.height {
            let c = grid.coord(d)?;
            return grid.die_at(crate::machine::Coord::new(c.y, c.x));
        }
    }
    let count = machine.die_count();
    let bits = count.trailing_zeros();
    if count.is_power_of_two() && bits % 2 == 0 {
        let half = bits / 2;
        let low = d.0 & ((1 << half) - 1);
        return Some(DieId((low << half) | (d.0 >> half)));
    }
    mirror(count, d)
}

/// `count - 1 - d`: bit complement on power-of-two counts.
fn mirror(count: u32, d: DieId) -> Option<DieId> {
    count.checked_sub(1)?.checked_sub(d.0).map(DieId)
}

/// The alive die nearest the mesh centre (lowest id among equals), or the
/// lowest alive die off meshes.
fn hotspot(machine: &Machine, alive: &[DieId]) -> Option<DieId> {
    let Some(grid) = machine.grid() else {
        return alive.first().copied();
    };
    // Doubled coordinates keep the centre of an even grid an integer.
    let off_centre = |d: &DieId| {
        grid.coord(*d).map_or(u64::MAX, |c| {
            u64::from((2 * c.x).abs_diff(grid.width - 1)) + u64::from((2 * c.y).abs_diff(grid.height - 1))
        })
    };
    alive.iter().copied().min_by_key(|d| (off_centre(d), *d))
}

/// Simulates one offered load and measures it.
fn run_load(machine: &Machine, targets: &Targets, config: &NetbenchConfig, load: f64) -> LoadPoint {
    let link_bw = machine.spec().link.bandwidth.0;
    let bytes = config.message_bytes;
    // Empty messages are injected at the rate of 1-byte ones, so the count
    // stays finite.
    let mean_gap = bytes.max(1) as f64 / (load * link_bw);
    let duration = f64::from(config.messages_per_die) * mean_gap;
    let messages = inject(targets, config, mean_gap, duration);

    let mut net = Network::new(machine);
    let mut done = vec![Time::NEVER; messages.len()];
    let mut finished = Vec::new();
    let mut next = 0;
    loop {
        let inject_at = messages.get(next).map(|m| m.created);
        let t = match (inject_at, net.next_event()) {
            (None, None) => break,
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a.min(b),
        };
        net.advance_into(t, &mut finished);
        for &(_, tag, at) in &finished {
            if let Some(slot) = done.get_mut(tag as usize) {
                *slot = at;
            }
        }
        while let Some(m) = messages.get(next) {
            if m.created > t {
                break;
            }
            // Alive dies on a built machine reach each other; a message that
            // somehow had no route is simply never delivered.
            let _ = net.start(t, m.src, m.dst, bytes, next as u64);
            next += 1;
        }
    }

    let done: Vec<f64> = done.iter().map(|t| if t.is_never() { f64::NAN } else { t.secs() }).collect();
    measure(machine, targets, &messages, &done, bytes, load, duration)
}

/// Every source's messages for one load, in creation order (ties by die).
fn inject(targets: &Targets, config: &NetbenchConfig, mean_gap: f64, duration: f64) -> Vec<Message> {
    let mut messages = Vec::new();
    // A Poisson count this far above its mean is practically impossible;
    // the cap only bounds the work.
    let cap = 4 * u64::from(config.messages_per_die) + 64;
    let root = Rng::new(config.seed);
    for &pos in &targets.sources {
        let Some(&src) = targets.alive.get(pos) else { continue };
        // One stream per die, the same at every load, so the curves differ
        // by the load and not by the luck of the draw.
        let mut rng = root.fork(u64::from(src.0));
        let mut t = 0.0;
        for k in 0..cap {
            t += rng.exponential(mean_gap);
            if t.is_nan() || t >= duration {
                break;
            }
            if let Some(dst) = targets.pick(pos, k, &mut rng) {
                messages.push(Message {
                    created: Time::from_secs(t),
                    src,
                    dst,
                });
            }
        }
    }
    messages.sort_by(|a, b| a.created.cmp(&b.created).then(a.src.cmp(&b.src)));
    messages
}

/// The load point from each message's creation and completion.
fn measure(
    machine: &Machine,
    targets: &Targets,
    messages: &[Message],
    done: &[f64],
    bytes: u64,
    load: f64,
    duration: f64,
) -> LoadPoint {
    let link_bw = machine.spec().link.bandwidth.0;
    let (from, to) = (WARM_UP * duration, duration);
    let delivered: f64 = done
        .iter()
        .filter(|&&t| t > from && t <= to)
        .map(|_| bytes as f64)
        .sum();
    let sources = targets.sources.len().max(1) as f64;
    let accepted_bytes_per_s = if to > from {
        delivered / (to - from) / sources
    } else {
        0.0
    };

    let mut zero_load = HashMap::new();
    let mut latencies = Vec::new();
    let mut zero_sum = 0.0;
    for (m, &t) in messages.iter().zip(done) {
        if m.created.secs() < from || !t.is_finite() {
            continue;
        }
        latencies.push(t - m.created.secs());
        zero_sum += *zero_load
            .entry((m.src, m.dst))
            .or_insert_with(|| idle_latency(machine, m.src, m.dst, bytes));
    }
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    let mean = |sum: f64| if n == 0 { 0.0 } else { sum / n as f64 };
    // Nearest rank: the smallest value with at least 99% at or below it.
    let p99 = latencies
        .get((n * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    LoadPoint {
        offered: load,
        accepted: accepted_bytes_per_s / link_bw,
        accepted_bytes_per_s,
        mean_latency_s: mean(latencies.iter().sum()),
        p99_latency_s: p99,
        zero_load_latency_s: mean(zero_sum),
        messages: n,
    }
}

/// A message's latency on an idle network: the head crosses every hop, then
/// the bytes stream at the slowest link's bandwidth.
fn idle_latency(machine: &Machine, src: DieId, dst: DieId, bytes: u64) -> f64 {
    let Ok(route) = machine.route(src, dst) else {
        return 0.0;
    };
    let mut latency = 0.0;
    let mut slowest = f64::INFINITY;
    for &l in &route.links {
        let spec = machine.link(l).spec;
        latency += spec.latency.0;
        slowest = slowest.min(spec.bandwidth.0);
    }
    // The network completes empty messages at once, head and all.
    if route.links.is_empty() || bytes == 0 {
        return 0.0;
    }
    latency + bytes as f64 / slowest
}

/// The result as pretty JSON.
pub fn to_json(result: &NetbenchResult) -> String {
    // Plain structs of numbers and strings always serialise; NaN would
    // become null rather than fail.
    serde_json::to_string_pretty(result).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The result as an aligned text table, one row per load.
pub fn to_table(result: &NetbenchResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netbench: {} traffic, {} B messages, {} sources",
        result.pattern, result.message_bytes, result.sources
    );
    let headers = [
        "offered",
        "accepted",
        "accepted/die",
        "mean latency",
        "p99 latency",
        "zero-load",
        "messages",
    ];
    let rows: Vec<[String; 7]> = result
        .points
        .iter()
        .map(|p| {
            [
                format!("{:.3}", p.offered),
                format!("{:.3}", p.accepted),
                BytesPerSec(p.accepted_bytes_per_s).to_string(),
                Seconds(p.mean_latency_s).to_string(),
                Seconds(p.p99_latency_s).to_string(),
                Seconds(p.zero_load_latency_s).to_string(),
                p.messages.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:>w$}");
        }
        text
    };
    let _ = writeln!(out, "{}", line(&mut headers.iter().copied()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
    match result.saturation {
        Some(s) => {
            let _ = writeln!(out, "saturation: {s:.3} of link bandwidth per die");
        }
        None => out.push_str("saturation: not reached\n"),
    }
    out
}

/// A round step near `span / 5` (1, 2 or 5 times a power of ten) and the
/// first multiple of it at or above `span`, for axis ticks.
fn ticks(span: f64) -> (f64, f64) {
    let span = if span.is_finite() && span > 0.0 { span } else { 1.0 };
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let top = (span / step - 1e-9).ceil().max(1.0) * step;
    (step, top)
}

/// Decimals that show a tick step exactly.
fn decimals(step: f64) -> usize {
    (-step.log10().floor()).max(0.0) as usize
}

/// Escapes text for an SVG text node or attribute.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The result as an SVG plot of latency against offered load: mean and p99
/// latency, the zero-load latency, and the saturation point. Latencies past
/// 10x the zero-load latency are drawn at the top edge so the knee stays
/// visible. The text depends only on the result.
pub fn to_svg(result: &NetbenchResult) -> String {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 440.0;
    const LEFT: f64 = 76.0;
    const RIGHT: f64 = 24.0;
    const TOP: f64 = 64.0;
    const BOTTOM: f64 = 60.0;
    const CLIP: f64 = 10.0;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let points = &result.points;

    let max_offered = points.iter().map(|p| p.offered).fold(0.0, f64::max);
    let (x_step, x_top) = ticks(max_offered);
    let zero = points
        .iter()
        .map(|p| p.zero_load_latency_s)
        .filter(|z| *z > 0.0)
        .fold(f64::INFINITY, f64::min);
    let mut highest = points
        .iter()
        .flat_map(|p| [p.mean_latency_s, p.p99_latency_s])
        .filter(|l| l.is_finite())
        .fold(0.0, f64::max);
    let mut clipped = false;
    if zero.is_finite() {
        clipped = highest > CLIP * zero;
        highest = highest.min(CLIP * zero).max(zero);
    }
    let (scale, unit) = match highest {
        h if h < 1e-6 => (1e9, "ns"),
        h if h < 1e-3 => (1e6, "us"),
        h if h < 1.0 => (1e3, "ms"),
        _ => (1.0, "s"),
    };
    let (y_step, y_top) = ticks(highest * scale);
    let x = |load: f64| LEFT + plot_w * (load / x_top).clamp(0.0, 1.0);
    let y = |seconds: f64| TOP + plot_h * (1.0 - (seconds * scale / y_top).clamp(0.0, 1.0));

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="26" text-anchor="middle" font-size="15">{} traffic, {} B messages: latency vs offered load</text>"#,
        WIDTH / 2.0,
        xml(&result.pattern),
        result.message_bytes
    );

    // Grid lines and tick labels.
    let _ = writeln!(svg, r##"<g stroke="#dddddd" stroke-width="1">"##);
    let x_ticks = (x_top / x_step).round() as usize;
    let y_ticks = (y_top / y_step).round() as usize;
    for i in 0..=x_ticks {
        let px = LEFT + plot_w * i as f64 / x_ticks.max(1) as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{px:.1}" y1="{TOP:.1}" x2="{px:.1}" y2="{:.1}"/>"#,
            TOP + plot_h
        );
    }
    for i in 0..=y_ticks {
        let py = TOP + plot_h * (1.0 - i as f64 / y_ticks.max(1) as f64);
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/>"#,
            LEFT + plot_w
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g text-anchor="middle">"#);
    for i in 0..=x_ticks {
        let px = LEFT + plot_w * i as f64 / x_ticks.max(1) as f64;
        let value = x_step * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}">{value:.prec$}</text>"#,
            TOP + plot_h + 18.0,
            prec = decimals(x_step)
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g text-anchor="end">"#);
    for i in 0..=y_ticks {
        let py = TOP + plot_h * (1.0 - i as f64 / y_ticks.max(1) as f64);
        let value = y_step * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{value:.prec$}</text>"#,
            LEFT - 8.0,
            py + 4.0,
            prec = decimals(y_step)
        );
    }
    let _ = writeln!(svg, "</g>");

    // Axes and their labels.
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT:.1},{TOP:.1} V{:.1} H{:.1}" fill="none" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (fraction of link bandwidth per die)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency ({unit}){}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        if clipped {
            format!(", clipped at {CLIP}x zero load")
        } else {
            String::new()
        }
    );

    // The zero-load reference.
    if zero.is_finite() {
        let zy = y(zero);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT:.1}" y1="{zy:.1}" x2="{:.1}" y2="{zy:.1}" stroke="#888888" stroke-dasharray="2 3"/>"##,
            LEFT + plot_w
        );
    }

    // The curves: p99 dashed behind the mean.
    let polyline = |latency: &dyn Fn(&LoadPoint) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.offered), y(latency(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
        polyline(&|p| p.p99_latency_s)
    );
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        polyline(&|p| p.mean_latency_s)
    );
    let _ = writeln!(svg, r##"<g fill="#1f77b4">"##);
    for p in points {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3"/>"#,
            x(p.offered),
            y(p.mean_latency_s)
        );
    }
    let _ = writeln!(svg, "</g>");

    // The saturation point.
    if let Some(s) = result.saturation {
        let sx = x(s);
        let sy = points
            .iter()
            .find(|p| p.offered == s)
            .map_or(TOP, |p| y(p.mean_latency_s));
        let _ = writeln!(
            svg,
            r##"<line x1="{sx:.1}" y1="{TOP:.1}" x2="{sx:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r##"<circle cx="{sx:.1}" cy="{sy:.1}" r="6" fill="none" stroke="#d62728" stroke-width="2"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#d62728">saturation {s:.3}</text>"##,
            sx + 6.0,
            TOP + plot_h - 8.0
        );
    }

    // Legend: one row between the title and the plot, clear of the curves.
    let ly = TOP - 14.0;
    let entries = [
        ("mean", "#1f77b4", r#" stroke-width="2""#),
        ("p99", "#ff7f0e", r#" stroke-width="1.5" stroke-dasharray="5 3""#),
        ("zero load", "#888888", r#" stroke-dasharray="2 3""#),
    ];
    let mut lx = LEFT;
    for (label, colour, style) in entries {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}"{style}/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
        lx += 30.0 + 8.0 * label.len() as f64 + 20.0;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::{mesh, spec, LINK};
    use crate::machine::{Coord, MachineSpec};

    fn build(s: MachineSpec) -> Machine {
        Machine::build(s).expect("valid machine")
    }

    fn config(pattern: Pattern, loads: &[f64], messages_per_die: u32) -> NetbenchConfig {
        NetbenchConfig {
            pattern,
            message_bytes: 4096,
            loads: loads.to_vec(),
            messages_per_die,
            seed: 7,
        }
    }

    #[test]
    fn pattern_names_round_trip_and_bad_ones_are_refused() {
        for p in [
            Pattern::UniformRandom,
            Pattern::Transpose,
            Pattern::BitComplement,
            Pattern::Hotspot {
                fraction: DEFAULT_HOTSPOT_FRACTION,
            },
            Pattern::AllToAll,
        ] {
            assert_eq!(p.to_string().parse::<Pattern>(), Ok(p));
        }
        assert_eq!("hotspot:0.5".parse(), Ok(Pattern::Hotspot { fraction: 0.5 }));
        for bad in ["", "Uniform", "hotspot:", "hotspot:1.5", "hotspot:nan", "bitcomp "] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns_pick_the_classic_destinations() {
        let m = build(mesh(8, 8));
        let at = |x, y| m.die_at(Coord::new(x, y)).expect("on the grid");
        let mut rng = Rng::new(1);
        let t = Targets::new(&m, Pattern::Transpose);
        assert_eq!(t.pick(at(2, 5).index(), 0, &mut rng), Some(at(5, 2)));
        // The diagonal sends nothing.
        assert_eq!(t.sources.len(), 64 - 8);
        let b = Targets::new(&m, Pattern::BitComplement);
        assert_eq!(b.pick(at(1, 6).index(), 0, &mut rng), Some(at(6, 1)));
        assert_eq!(b.sources.len(), 64);
        // 16 dies on a switch: transpose swaps the two 2-bit halves.
        let rack = build(spec(Topology::Switch { ports: 16 }));
        assert_eq!(
            Targets::new(&rack, Pattern::Transpose).pick(0b0111, 0, &mut rng),
            Some(DieId(0b1101))
        );
        // All-to-all visits every other die once per cycle.
        let a = Targets::new(&m, Pattern::AllToAll);
        let mut seen: Vec<DieId> = (0..63).filter_map(|k| a.pick(10, k, &mut rng)).collect();
        seen.sort();
        assert_eq!(
            seen,
            m.alive_dies().into_iter().filter(|d| d.0 != 10).collect::<Vec<_>>()
        );
        // Hotspot: about `fraction` of messages to the centre die.
        let h = Targets::new(&m, Pattern::Hotspot { fraction: 0.3 });
        assert_eq!(h.hotspot, Some(at(3, 3)));
        let hits = (0..10_000)
            .filter(|&k| h.pick(0, k, &mut rng) == Some(at(3, 3)))
            .count();
        let expected = 0.3 + 0.7 / 63.0;
        assert!((hits as f64 / 1e4 - expected).abs() < 0.02, "{hits}");
    }

    #[test]
    fn at_low_load_latency_is_the_zero_load_latency_and_all_is_accepted() {
        let m = build(mesh(8, 8));
        let r = run(&m, &config(Pattern::UniformRandom, &[0.02, 0.1], 60));
        assert_eq!(r.sources, 64);
        assert_eq!(r.saturation, None);
        // Zero load: hops x L + bytes / W, with uniform pairs averaging
        // 2 (k^2 - 1) / 3k x k^2 / (k^2 - 1) = 16/3 hops on an 8x8 mesh.
        let idle = 16.0 / 3.0 * LINK.latency.0 + 4096.0 / LINK.bandwidth.0;
        for p in &r.points {
            assert!(p.messages > 2000, "{}", p.messages);
            assert!(
                (p.zero_load_latency_s / idle - 1.0).abs() < 0.03,
                "{} vs {idle}",
                p.zero_load_latency_s
            );
            assert!((p.accepted / p.offered - 1.0).abs() < 0.05, "{p:?}");
            assert!((p.accepted_bytes_per_s - p.accepted * LINK.bandwidth.0).abs() < 1.0);
        }
        let low = &r.points[0];
        assert!(
            (low.mean_latency_s / low.zero_load_latency_s - 1.0).abs() < 0.03,
            "{low:?}"
        );
        assert!(low.p99_latency_s >= low.mean_latency_s);

        // Two dies, one hop: every message's zero-load latency is L + B/W.
        let pair = build(mesh(2, 1));
        let r = run(&pair, &config(Pattern::UniformRandom, &[0.01], 200));
        let p = &r.points[0];
        let idle = LINK.latency.0 + 4096.0 / LINK.bandwidth.0;
        assert!((p.zero_load_latency_s / idle - 1.0).abs() < 1e-9);
        assert!((p.mean_latency_s / idle - 1.0).abs() < 0.03, "{p:?}");
    }

    #[test]
    fn uniform_saturates_below_full_load_and_transpose_earlier() {
        // XY routing on a k x k mesh: uniform traffic loads the middle links
        // with k/4 of a die's injection (saturating at 4/k = 0.5 of a link
        // at best), transpose loads the links next to the diagonal with
        // k - 1 dies' traffic (1/7 here).
        let m = build(mesh(8, 8));
        let loads = [0.1, 0.3, 0.6];
        let uniform = run(&m, &config(Pattern::UniformRandom, &loads, 20));
        let transpose = run(&m, &config(Pattern::Transpose, &loads, 20));
        let u = uniform.saturation.expect("uniform saturates");
        let t = transpose.saturation.expect("transpose saturates");
        assert!(u < 1.0 && t < u, "uniform {u}, transpose {t}");
        let top = uniform.points.last().expect("points");
        assert!(top.accepted < ACCEPTED_FLOOR * top.offered, "{top:?}");
        assert!(top.accepted < 0.5, "{top:?}");
        // Below saturation what is offered is accepted.
        for p in uniform.points.iter().filter(|p| p.offered < u) {
            assert!((p.accepted / p.offered - 1.0).abs() < 0.06, "{p:?}");
        }
        // Past it, latency climbs well above the zero-load latency.
        let last = transpose.points.last().expect("points");
        assert!(
            last.mean_latency_s > LATENCY_CEILING * last.zero_load_latency_s,
            "{last:?}"
        );
    }

    #[test]
    fn reports_are_deterministic() {
        let m = build(mesh(4, 4));
        let c = config(Pattern::Hotspot { fraction: 0.2 }, &[0.3, 0.1, f64::NAN, 0.6, -1.0], 30);
        let (a, b) = (run(&m, &c), run(&m, &c));
        assert_eq!(a, b);
        assert_eq!(a.points.iter().map(|p| p.offered).collect::<Vec<_>>(), [0.1, 0.3, 0.6]);
        assert_eq!(to_json(&a), to_json(&b));
        assert_eq!(to_svg(&a), to_svg(&b));
        assert_eq!(to_table(&a), to_table(&b));
        let back: NetbenchResult = serde_json::from_str(&to_json(&a)).expect("JSON reads back");
        // serde_json parses floats to within an ulp, not always exactly.
        assert_eq!(
            (&back.pattern, back.sources, back.saturation),
            (&a.pattern, a.sources, a.saturation)
        );
        for (x, y) in back.points.iter().zip(&a.points) {
            assert!((x.mean_latency_s / y.mean_latency_s - 1.0).abs() < 1e-12);
            assert_eq!(x.messages, y.messages);
        }
        let svg = to_svg(&a);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let table = to_table(&a);
        assert_eq!(table.lines().count(), 1 + 1 + 3 + 1);
        // Columns line up: every row as wide as the header.
        let widths: Vec<usize> = table.lines().skip(1).take(4).map(str::len).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{table}");
    }

    #[test]
    fn degenerate_machines_and_configs_do_not_panic() {
        let one = build(mesh(1, 1));
        let r = run(&one, &config(Pattern::UniformRandom, &[0.5], 10));
        assert_eq!((r.sources, r.saturation), (0, None));
        assert_eq!(r.points[0].messages, 0);
        let _ = to_svg(&r);
        let m = build(mesh(3, 3));
        let mut c = config(Pattern::BitComplement, &[0.2], 10);
        c.message_bytes = 0;
        let r = run(&m, &c);
        // The middle die of an odd count mirrors onto itself.
        assert_eq!(r.sources, 8);
        let _ = (to_svg(&r), to_table(&r), to_json(&r));
        let empty = run(&m, &config(Pattern::AllToAll, &[], 10));
        assert!(empty.points.is_empty());
        assert!(to_svg(&empty).contains("</svg>"));
    }
}
