//! Netbench: the network model alone under classic synthetic traffic, to
//! check the flow model against cycle-accurate network-on-chip simulators
//! (BookSim2's latency against offered load, and its saturation point).
//!
//! This module owns the injection process, the measurement of one load
//! point, the sweep and the search for the saturation load; `pattern`
//! says where messages go, `bound` the closed forms a result is read
//! against, `reference` the comparison with BookSim2's figures, `report`
//! the text, JSON and SVG.
//!
//! Every source die injects messages of a fixed size at Poisson times: the
//! mean gap is `message_bytes / (load * link bandwidth)`, so `load` is the
//! offered rate per die as a fraction of one mesh link (the spec's `link`),
//! BookSim's flits per node per cycle when a flit a cycle fills a link. A
//! message to the sender itself turns around in its router
//! (`Network::with_loopback`), as in BookSim. A run at one load lasts as
//! long as a die takes to inject `messages_per_die` messages on average;
//! the first 20% of that is warm-up, the rest the measured window.
//!
//! What the numbers mean in a flow model:
//! - **latency** is completion minus creation of the messages created in
//!   the measured window (the run goes on injecting until they are all
//!   delivered, so the last of them see a loaded network too). There are
//!   no buffers: contention shows up as flows sharing channels at lower
//!   rates, which stretches their transmission.
//! - **stable** is BookSim's sense of saturation: whether the network keeps
//!   up. The backlog (messages created and not yet delivered) is averaged
//!   over each half of the measured window; a load is unstable when the
//!   second half's average exceeds the first's by more than
//!   `UNSTABLE_GROWTH` of the messages injected in a half that cross a
//!   busiest channel (`Bounds::bottleneck_share`), or when the
//!   measured messages are not all delivered by `DRAIN_LIMIT` times the
//!   run's length. Past saturation the backlog grows at the excess of
//!   offered over accepted load, so that share is the excess itself
//!   whatever the run's length; below it the backlog fluctuates, and
//!   averaging over each half keeps those fluctuations from reading as
//!   growth, but it also fills from empty to its stationary level, which
//!   near saturation takes longer than a short run's warm-up. That
//!   transient's share falls as the run lengthens and a real excess's does
//!   not, so a load that looks unstable is run again twice as long (up to
//!   `MAX_LENGTHENING` times): it is unstable if its growth persists (at
//!   least `PERSISTS` of what the shorter run saw) and stable if it falls
//!   below the threshold. A point whose growth is past `CLEARLY_UNSTABLE`
//!   is not run again.
//! - **saturation** is the highest stable load, found by bisection between
//!   0 and just past the pattern's analytical bound; the latency **knee**
//!   (3x the zero-load latency) is reported apart from it.

mod bound;
mod pattern;
mod reference;
mod report;

pub use bound::Bounds;
pub use pattern::{ParsePatternError, Pattern};
pub use reference::{compare, read_reference, Comparison, ReferenceRow};
pub use report::{comparison_table, to_json, to_svg, to_table};

use super::network::Network;
use super::time::Time;
use crate::machine::Machine;
use crate::rng::Rng;
use pattern::Targets;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Fraction of the injection window discarded as warm-up.
const WARM_UP: f64 = 0.2;

/// A load is unstable when the backlog's average over the second half of
/// the measured window exceeds the first half's by more than this share of
/// the messages injected in a half.
const UNSTABLE_GROWTH: f64 = 0.02;

/// ... or when the measured messages are not all delivered by this many
/// times the injection window.
const DRAIN_LIMIT: f64 = 3.0;

/// A load that looks unstable is run again with twice the messages, up to
/// this many times the configured number ...
pub const MAX_LENGTHENING: u32 = 16;

/// ... until its backlog growth stays at least this share of the shorter
/// run's (a real excess) or falls below `UNSTABLE_GROWTH` (a transient).
const PERSISTS: f64 = 0.7;

/// Growth no warm-up transient reaches (near saturation they stay under
/// 0.1 on the meshes measured): a point this far gone is not run again.
const CLEARLY_UNSTABLE: f64 = 0.25;

/// The latency knee: mean latency at this multiple of the zero-load latency.
const KNEE: f64 = 3.0;

/// The saturation search stops when the bracket is narrower than this
/// share of the analytical bound (BookSim's reference figures are good to
/// about +-0.005 flits/node/cycle, 1% of an 8x8 uniform bound).
const SEARCH_RESOLUTION: f64 = 0.005;

/// The search starts its bracket this far above the analytical bound.
const SEARCH_HEADROOM: f64 = 1.1;

/// The most messages one load point may measure: their latencies are kept
/// for the percentile (8 bytes each).
pub const MAX_MEASURED_MESSAGES: u64 = 1 << 24;

/// What to run: one pattern at several offered loads, and optionally the
/// search for its saturation load.
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
    /// Also search for the saturation load by bisection.
    pub saturation: bool,
}

impl Default for NetbenchConfig {
    /// Uniform traffic, 4 KiB messages, loads 0.05 to 1.0 in steps of 0.05,
    /// 200 messages per die, seed 1, no saturation search.
    fn default() -> NetbenchConfig {
        NetbenchConfig {
            pattern: Pattern::UniformRandom,
            message_bytes: 4096,
            loads: (1..=20).map(|i| f64::from(i) * 0.05).collect(),
            messages_per_die: 200,
            seed: 1,
            saturation: false,
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
    /// Mean latency of the messages created in the measured window (of
    /// those delivered, when the load is unstable).
    pub mean_latency_s: f64,
    /// 99th percentile (nearest rank) of the same.
    pub p99_latency_s: f64,
    /// Messages measured (created in the measured window and delivered).
    pub messages: usize,
    /// How much the backlog's average grew from the first half of the
    /// measured window to the second, as a share of the messages injected
    /// in a half that cross a busiest channel.
    pub backlog_growth: f64,
    /// Whether the network kept up (see the module doc).
    pub stable: bool,
}

/// A latency against offered load curve, with the pattern's bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetbenchResult {
    /// The pattern as written (`Pattern`'s display).
    pub pattern: String,
    /// Size of every message.
    pub message_bytes: u64,
    /// Dies that injected traffic.
    pub sources: usize,
    /// The analytical bound (see `Bounds::theta`).
    pub theta: Option<f64>,
    /// The closed-form zero-load latency (`Bounds::zero_load_latency_s`).
    pub zero_load_latency_s: f64,
    /// One per valid load, ascending offered load.
    pub points: Vec<LoadPoint>,
    /// The lowest swept load that is unstable.
    pub first_unstable: Option<f64>,
    /// The lowest swept load whose mean latency exceeds 3x the zero-load
    /// latency.
    pub knee: Option<f64>,
    /// With the search: the highest stable load found (to within 0.5% of
    /// theta); `None` without the search, or when no load up to 1.1 theta
    /// (or a full link, without theta) is unstable.
    pub saturation: Option<f64>,
}

/// Runs `config.pattern` on `machine` at every load of `config`, and the
/// saturation search if asked.
pub fn run(machine: &Machine, config: &NetbenchConfig) -> NetbenchResult {
    let targets = Targets::new(machine, config.pattern);
    let bounds = bound::bounds(machine, &targets, config.message_bytes);
    let mut loads: Vec<f64> = config
        .loads
        .iter()
        .copied()
        .filter(|l| l.is_finite() && *l > 0.0)
        .collect();
    loads.sort_by(f64::total_cmp);
    let points: Vec<LoadPoint> = loads
        .iter()
        .map(|&load| verdict(machine, &targets, config, load, bounds.bottleneck_share))
        .collect();
    let measured = |p: &&LoadPoint| p.messages > 0;
    let first_unstable = points.iter().filter(measured).find(|p| !p.stable).map(|p| p.offered);
    let knee = points
        .iter()
        .filter(measured)
        .find(|p| p.mean_latency_s > KNEE * bounds.zero_load_latency_s)
        .map(|p| p.offered);
    let saturation = if config.saturation {
        search_saturation(machine, &targets, config, &bounds)
    } else {
        None
    };
    NetbenchResult {
        pattern: config.pattern.to_string(),
        message_bytes: config.message_bytes,
        sources: targets.sources.len(),
        theta: bounds.theta,
        zero_load_latency_s: bounds.zero_load_latency_s,
        points,
        first_unstable,
        knee,
        saturation,
    }
}

/// The closed forms of `pattern` with `message_bytes` messages on `machine`.
pub fn bounds(machine: &Machine, pattern: Pattern, message_bytes: u64) -> Bounds {
    bound::bounds(machine, &Targets::new(machine, pattern), message_bytes)
}

/// The highest stable load, by bisection from [0, 1.1 theta] (or [0, 1]
/// without theta) down to `SEARCH_RESOLUTION` of the bracket's top.
fn search_saturation(machine: &Machine, targets: &Targets, config: &NetbenchConfig, bounds: &Bounds) -> Option<f64> {
    let share = bounds.bottleneck_share;
    let top = bounds.theta.map_or(1.0, |t| t * SEARCH_HEADROOM);
    if targets.sources.is_empty() || verdict(machine, targets, config, top, share).stable {
        return None;
    }
    let (mut lo, mut hi) = (0.0, top);
    while hi - lo > SEARCH_RESOLUTION * top {
        let mid = 0.5 * (lo + hi);
        if verdict(machine, targets, config, mid, share).stable {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// One offered load measured, lengthened until its stability is clear (see
/// the module doc).
fn verdict(machine: &Machine, targets: &Targets, config: &NetbenchConfig, load: f64, share: f64) -> LoadPoint {
    let mut messages = config.messages_per_die;
    let mut point = run_load(machine, targets, config, (load, share), messages);
    let limit = config.messages_per_die.saturating_mul(MAX_LENGTHENING);
    while !point.stable && messages < limit && point.backlog_growth < CLEARLY_UNSTABLE {
        let before = point.backlog_growth;
        messages = messages.saturating_mul(2);
        point = run_load(machine, targets, config, (load, share), messages);
        if point.backlog_growth >= PERSISTS * before {
            break;
        }
    }
    point
}

/// Simulates one offered load with `messages` per die on average and
/// measures it, judging its backlog by the `share` of messages that cross
/// a busiest channel.
fn run_load(
    machine: &Machine,
    targets: &Targets,
    config: &NetbenchConfig,
    (load, share): (f64, f64),
    messages: u32,
) -> LoadPoint {
    let link_bw = machine.spec().link.bandwidth.0;
    let bytes = config.message_bytes;
    // Empty messages are injected at the rate of 1-byte ones, so the count
    // stays finite.
    let mean_gap = bytes.max(1) as f64 / (load * link_bw);
    let window = f64::from(messages) * mean_gap;
    let (warm, end) = (Time::from_secs(WARM_UP * window), Time::from_secs(window));
    let mid = Time::from_secs((0.5 + 0.5 * WARM_UP) * window);
    let drain_limit = Time::from_secs(DRAIN_LIMIT * window);

    // One stream per source, the same at every load, so the curves differ
    // by the load and not by the luck of the draw. Arrivals accumulate in
    // f64 seconds per stream and are rounded once each.
    let root = Rng::new(config.seed);
    let mut streams: Vec<(Rng, f64)> = targets
        .sources
        .iter()
        .map(|&pos| (root.fork(u64::from(targets.alive[pos].0)), 0.0))
        .collect();
    let mut arrivals: BinaryHeap<Reverse<(Time, usize)>> = BinaryHeap::new();
    for (i, (rng, t)) in streams.iter_mut().enumerate() {
        *t += rng.exponential(mean_gap);
        arrivals.push(Reverse((Time::from_secs(*t), i)));
    }
    let mut sent = vec![0u64; streams.len()];

    let mut net = Network::new(machine).with_loopback();
    let mut finished = Vec::new();
    let (mut created, mut delivered) = (0u64, 0u64);
    let (mut measured_created, mut measured_done) = (0u64, 0u64);
    let mut latencies: Vec<u64> = Vec::new();
    let mut delivered_in_window = 0u64;
    // The backlog's integral over each half of the measured window, the
    // messages created by the middle and by the end, and the last time the
    // integral was brought up to.
    let mut area = [0.0f64; 2];
    let (mut created_at_mid, mut created_at_end) = (None, None);
    let mut last = Time::ZERO;
    loop {
        let next_arrival = arrivals.peek().map_or(Time::NEVER, |a| a.0 .0);
        let checkpoint = [warm, mid, end].into_iter().find(|&c| c > last).unwrap_or(Time::NEVER);
        let t = next_arrival
            .min(checkpoint)
            .min(net.next_event().unwrap_or(Time::NEVER));
        if t.is_never() || t > drain_limit {
            break;
        }
        // The backlog held since `last`, split at the checkpoints.
        let backlog = (created - delivered) as f64;
        for (half, (from, to)) in [(warm, mid), (mid, end)].into_iter().enumerate() {
            let (a, b) = (last.max(from), t.min(to));
            if b > a {
                area[half] += backlog * (b - a).secs();
            }
        }
        last = t;
        net.advance_into(t, &mut finished);
        for &(_, tag, at) in &finished {
            delivered += 1;
            let born = Time(tag);
            if born >= warm && born < end {
                measured_done += 1;
                latencies.push(at.since(born).0);
            }
            if at > warm && at <= end {
                delivered_in_window += 1;
            }
        }
        if t == mid {
            created_at_mid = Some(created);
        }
        if t == end {
            created_at_end = Some(created);
        }
        if let (Some(a), Some(b)) = (created_at_mid, created_at_end) {
            // Past the window: stop once the measured messages are in, or at
            // once when the network cannot keep up.
            if growth(area, mid.since(warm), (a, b)) / share > UNSTABLE_GROWTH || measured_done == measured_created {
                break;
            }
        }
        while let Some(&Reverse((when, i))) = arrivals.peek() {
            if when > t {
                break;
            }
            arrivals.pop();
            let (rng, clock) = &mut streams[i];
            let pos = targets.sources[i];
            if let Some(dst) = targets.pick(pos, sent[i], rng) {
                // The tag is the creation time: the latency needs nothing else.
                if net.start(when, targets.alive[pos], dst, bytes, when.0).is_ok() {
                    created += 1;
                    if when >= warm && when < end {
                        measured_created += 1;
                    }
                }
            }
            sent[i] += 1;
            *clock += rng.exponential(mean_gap);
            if measured_created < MAX_MEASURED_MESSAGES {
                arrivals.push(Reverse((Time::from_secs(*clock), i)));
            }
        }
    }

    let growth = match (created_at_mid, created_at_end) {
        (Some(a), Some(b)) => growth(area, mid.since(warm), (a, b)) / share,
        _ => 0.0,
    };
    let stable = growth <= UNSTABLE_GROWTH && measured_done == measured_created;
    latencies.sort_unstable();
    let n = latencies.len();
    let mean = if n == 0 {
        0.0
    } else {
        latencies.iter().map(|&l| l as f64).sum::<f64>() / n as f64 * 1e-12
    };
    // Nearest rank: the smallest value with at least 99% at or below it.
    let p99 = latencies
        .get((n * 99).div_ceil(100).saturating_sub(1))
        .map_or(0.0, |&l| Time(l).secs());
    let seconds = end.since(warm).secs();
    let sources = targets.sources.len().max(1) as f64;
    let accepted_bytes_per_s = if seconds > 0.0 {
        (delivered_in_window * bytes) as f64 / seconds / sources
    } else {
        0.0
    };
    LoadPoint {
        offered: load,
        accepted: accepted_bytes_per_s / link_bw,
        accepted_bytes_per_s,
        mean_latency_s: mean,
        p99_latency_s: p99,
        messages: n,
        backlog_growth: growth,
        stable,
    }
}

/// How much the backlog's average over the second half of the measured
/// window (`area[1]` over `half`) exceeds the first half's, as a share of
/// the messages created in the second half (`created` by its start and by
/// its end).
fn growth(area: [f64; 2], half: Time, (created_mid, created_end): (u64, u64)) -> f64 {
    let seconds = half.secs();
    if seconds <= 0.0 {
        return 0.0;
    }
    let injected = created_end.saturating_sub(created_mid).max(1) as f64;
    (area[1] - area[0]) / seconds / injected
}

#[cfg(test)]
mod tests;
