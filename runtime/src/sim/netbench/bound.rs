//! A pattern's closed forms on a machine: the analytical saturation bound
//! (BookSim's theta) and the zero-load latency, against which netbench's
//! simulated points are read.

use super::pattern::Targets;
use crate::machine::{DieId, Machine};

/// Source-destination pairs beyond which the closed forms are not worked
/// out (every pair's route is walked): 4M pairs, a 2,048-die uniform.
const MAX_PAIRS: usize = 1 << 22;

/// The closed forms of one pattern and message size on one machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// The offered load (fraction of one link's bandwidth per source) at
    /// which the busiest channel (link, injection or ejection port) is
    /// full under the pattern's routes: 1 / its load per unit of offered
    /// load, as BookSim's validation defines theta. `None` when no channel
    /// carries anything or the machine is too large to walk every pair.
    pub theta: Option<f64>,
    /// The mean over the pattern's messages of their latency on an idle
    /// network: route and router latency, then the message's bytes (plus
    /// the router's overhead on links) over its slowest channel.
    pub zero_load_latency_s: f64,
    /// The share of the pattern's messages that cross a busiest channel
    /// (one loaded to within 1e-9 of the most): the traffic whose backlog
    /// grows once the load passes theta. 1 when there is no theta.
    pub bottleneck_share: f64,
}

/// The closed forms of `targets` with messages of `bytes` on `machine`.
pub(crate) fn bounds(machine: &Machine, targets: &Targets, bytes: u64) -> Bounds {
    let pairs: usize = targets.sources.len().saturating_mul(targets.alive.len());
    if pairs > MAX_PAIRS || targets.sources.is_empty() {
        return Bounds {
            theta: None,
            zero_load_latency_s: 0.0,
            bottleneck_share: 1.0,
        };
    }
    let spec = machine.spec();
    let router = spec.router;
    let link_bw = spec.link.bandwidth.0;
    let dies = machine.die_count() as usize;
    let links = machine.links();
    // Per unit of offered load: what each link, injection and ejection port carries.
    let mut link_load = vec![0.0; links.len()];
    let mut port_load = vec![0.0; 2 * dies];
    let mut latency_sum = 0.0;
    let size = bytes as f64;
    for &pos in &targets.sources {
        let src = targets.alive[pos];
        for (dst, p) in targets.destinations(pos) {
            let Ok(route) = machine.route(src, dst) else { continue };
            if let Some(port) = router.port {
                port_load[src.index()] += p * link_bw / port.0;
                port_load[dies + dst.index()] += p * link_bw / port.0;
            }
            let mut head = router.latency.0;
            let mut wire: f64 = router.port.map_or(0.0, |port| size / (port.0 * router.efficiency));
            for &l in &route.links {
                let spec = links[l.index()].spec;
                link_load[l.index()] += p * link_bw / spec.bandwidth.0;
                head += spec.latency.0;
                let usable = spec.bandwidth.0 * router.efficiency;
                wire = wire.max((size + router.overhead.0 as f64) / usable);
            }
            // As the network completes them: at once when nothing crosses a
            // router or the message is empty.
            let idle = if bytes == 0 || (route.links.is_empty() && !loops(src, dst)) {
                0.0
            } else {
                head + wire
            };
            latency_sum += p * idle;
        }
    }
    let busiest = link_load.iter().chain(&port_load).copied().fold(0.0, f64::max);
    // Second pass: which messages cross a busiest channel.
    let full = |load: f64| busiest > 0.0 && load >= busiest * (1.0 - 1e-9);
    let mut crossing = 0.0;
    for &pos in &targets.sources {
        let src = targets.alive[pos];
        for (dst, p) in targets.destinations(pos) {
            let Ok(route) = machine.route(src, dst) else { continue };
            let ports = router.port.is_some() && (full(port_load[src.index()]) || full(port_load[dies + dst.index()]));
            if ports || route.links.iter().any(|l| full(link_load[l.index()])) {
                crossing += p;
            }
        }
    }
    let sources = targets.sources.len() as f64;
    Bounds {
        theta: (busiest > 0.0).then(|| 1.0 / busiest),
        zero_load_latency_s: latency_sum / sources,
        bottleneck_share: if crossing > 0.0 { crossing / sources } else { 1.0 },
    }
}

/// Netbench's network turns a message to its own die around in the router.
fn loops(src: DieId, dst: DieId) -> bool {
    src == dst
}
