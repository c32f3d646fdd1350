//! The network: transfers between dies as flows that share the machine's
//! links by max-min fairness.
//!
//! This file owns the flow-level model of the interconnect. A flow is one
//! transfer of some bytes from a source die to a destination die along the
//! machine's route between them. Its life has two phases:
//!
//! 1. **head**: the first byte crosses the route's hops, taking the sum of
//!    their latencies plus the router's fixed latency (cut-through: no hop
//!    waits for the whole message). The flow takes no bandwidth yet.
//! 2. **transmission**: the bytes stream at the flow's fair rate; the flow
//!    completes when its last byte has been sent, so a flow alone on its
//!    route finishes at `start + route latency + bytes / bottleneck bandwidth`.
//!
//! What a flow competes for are its route's directional links and, when the
//! machine's router declares a `port`, the source die's injection port and
//! the destination's ejection port (BookSim's terminal channels): each is a
//! capacity in the same max-min solve. Each offers `efficiency` of its
//! bandwidth; a flow occupies a port for its bytes and a link for its bytes
//! plus the router's per-message `overhead` (`machine::RouterSpec`).
//!
//! Rates are max-min fair over those capacities (progressive filling): the
//! one whose capacity split among its unfrozen flows is smallest freezes
//! those flows at that share, its capacity is taken from every other one
//! they cross, and so on until every flow has a rate. With more than a few
//! dozen capacities in use they wait in a min-heap by share: freezing a
//! flow only raises the shares of the other capacities it crosses, so an
//! entry is refreshed lazily, when it comes to the top with a share lower
//! than its capacity's current one; with fewer, a scan finds the lowest.
//! Rates change only when the set of transmitting flows changes, so they
//! are recomputed once per instant at which flows start transmitting or
//! finish, however many do. Each link keeps the list of flows crossing it,
//! updated as flows start and finish, so a recompute visits each flow once
//! per link of its route at most twice (once found through a bottleneck,
//! once frozen): O(flows x route length x log(active links)), allocating
//! nothing once its buffers have grown.
//!
//! Time is an integer count of picoseconds (`sim::time`): a flow's finish is
//! the time its rate was set plus its remaining bytes over that rate,
//! rounded up to the picosecond, so results never depend on when the
//! traffic started, only on what happened since.
//!
//! There are no queues or packets: contention shows up as lower rates, not
//! as waiting in a buffer.

use super::time::Time;
use crate::machine::{DieId, Machine, RouteError};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Traffic classes a flow's tag can name (its top byte): the collective
/// kinds of `engine.rs` and migration.
pub const TRAFFIC_CLASSES: usize = 9;
/// Capacities in use up to which progressive filling scans them for the
/// lowest share at each level instead of keeping them in a heap.
const SCAN_LINKS: usize = 64;

/// Flows in transmission below which the quantum is off: every change
/// recomputes the rates and no event is held back (see `hold_for_quantum`),
/// so small cases (a ring of a few dies, the closed forms) stay exact.
const HOLD_MIN_FLOWS: usize = 16;

/// One transfer's identity, in the order transfers were started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FlowId(pub u64);

/// What one directional link (or port) has carried so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LinkStats {
    /// Bytes that crossed the link (fractional while flows are mid-transfer),
    /// the router's per-message overhead included.
    pub bytes: f64,
    /// Seconds during which at least one flow was transmitting over the link.
    pub busy_s: f64,
}

/// The volume of every flow started so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Bytes of all flows, including those between a die and itself.
    pub bytes: u64,
    /// Bytes times links crossed, summed over flows (saturating).
    pub byte_hops: u64,
    /// `byte_hops` by traffic class: a flow's class is its tag's top byte
    /// (classes above 7 count as 7), so a caller can tell its kinds of
    /// traffic apart.
    pub class_byte_hops: [u64; TRAFFIC_CLASSES],
}

/// Where a cached route's links sit in `Network::route_links`, and how long
/// its head takes to cross them.
#[derive(Clone, Copy, Debug)]
struct RouteSlot {
    /// First link's position in `route_links`.
    offset: usize,
    /// Links on the route.
    len: usize,
    /// Sum of the per-hop latencies and the router's.
    latency: Time,
}

impl RouteSlot {
    /// The route's links as indices into the machine's link table.
    fn links<'a>(&self, route_links: &'a [u32]) -> &'a [u32] {
        &route_links[self.offset..self.offset + self.len]
    }
}

/// A flow that has been started and not yet reported finished.
#[derive(Clone, Copy, Debug)]
struct Flow {
    id: FlowId,
    /// Its slot in the per-link member lists and the `Scratch` tables,
    /// fixed while it transmits (its position in `Network::flows` is not);
    /// `u32::MAX` until it starts transmitting.
    slot: u32,
    /// The caller's label, handed back on completion.
    tag: u64,
    /// Bytes not yet sent, as of `Network::rates_since` (the bytes drain
    /// lazily: see [`Flow::remaining_at`]).
    remaining: f64,
    /// Bytes per second while transmitting; 0 until the first recompute.
    rate: f64,
    /// When the last byte leaves at the current rate.
    finish_at: Time,
    route: RouteSlot,
}

impl Flow {
    /// Bytes not yet sent at `now`, the rate having held since `since`.
    /// Draining lazily keeps an event that changes no rate O(1) in the flows.
    fn remaining_at(&self, now: Time, since: Time) -> f64 {
        self.remaining - self.rate * now.since(since).secs()
    }
}

/// A flow whose head is still crossing its route, ordered so the
/// `BinaryHeap` pops the earliest start first (ties: lower id first).
#[derive(Clone, Copy, Debug)]
struct Heading {
    /// When the head arrives and bytes start to stream.
    transmit_at: Time,
    flow: Flow,
}

impl PartialEq for Heading {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Heading {}

impl PartialOrd for Heading {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Heading {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest.
        other
            .transmit_at
            .cmp(&self.transmit_at)
            .then_with(|| other.flow.id.cmp(&self.flow.id))
    }
}

/// The transmitting flows as the max-min computation sees them, kept up to
/// date by `settle` as flows start and finish, plus the buffers a recompute
/// reuses, so a recompute neither regroups the flows nor allocates once
/// the buffers have grown.
///
/// Flows are named here by slot (`Flow::slot`): a slot is taken when a flow
/// starts transmitting and freed when it finishes, so the tables stay as
/// small as the most flows ever in transmission at once.
#[derive(Debug, Default)]
struct Scratch {
    /// Links with at least one transmitting flow, ascending id. `settle`
    /// appends links that gain their first flow; `recompute` sorts and
    /// prunes.
    active: Vec<u32>,
    /// Capacities still holding unfrozen flows during progressive filling,
    /// by share as of when they were pushed (`f64::to_bits` of a share,
    /// never negative, orders as the share does), then link.
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// Per link, its counts and filling state (one record, so each visit is
    /// one cache line).
    links: Vec<Fill>,
    /// Per link: the flows crossing it, as (slot, the link's position on
    /// the flow's route), in no particular order (a finishing flow's place
    /// is taken by the list's last).
    members: Vec<Vec<(u32, u32)>>,
    /// Per slot: where its flow sits in `members` of each link of its route,
    /// in route order, so a finishing flow leaves each list in O(1).
    places: Vec<Vec<u32>>,
    /// Per slot: what filling needs of its flow, copied out of the larger
    /// `Flow` records so the filling loops stay in cache.
    slots: Vec<SlotFill>,
    /// Slots free for the next flow to start transmitting.
    free: Vec<u32>,
}

impl Scratch {
    /// Enters a flow that starts transmitting over `route` (links at
    /// `offset..offset + len` of `route_links`) in its links' member lists,
    /// and returns its slot.
    fn join(&mut self, route: RouteSlot, weight: f64, route_links: &[u32]) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // Slots fit u32: each is a flow in transmission, and 2^32 of
                // them would not fit in memory.
                let slot = self.slots.len() as u32;
                self.slots.push(SlotFill::default());
                self.places.push(Vec::new());
                slot
            }
        };
        let s = slot as usize;
        // Offsets and lengths fit u32: the route cache holds far fewer than
        // 2^32 links for any machine that fits in memory.
        self.slots[s] = SlotFill {
            rate: 0.0,
            weight,
            offset: route.offset as u32,
            len: route.len as u32,
        };
        let places = &mut self.places[s];
        places.clear();
        for (hop, &l) in route.links(route_links).iter().enumerate() {
            let members = &mut self.members[l as usize];
            places.push(members.len() as u32);
            members.push((slot, hop as u32));
            self.links[l as usize].count += 1;
        }
        slot
    }

    /// The capacity with unfrozen flows and the lowest share (lowest index
    /// among equals), found by a scan over those in use.
    fn lowest_by_scan(&mut self) -> Option<(f64, u32)> {
        let mut lowest: Option<(f64, u32)> = None;
        for &l in &self.active {
            let fill = &mut self.links[l as usize];
            if fill.unfrozen > 0 {
                let share = fill.share();
                if lowest.is_none_or(|(least, _)| share < least) {
                    lowest = Some((share, l));
                }
            }
        }
        lowest
    }

    /// The same from the heap, refreshing entries that went stale: flows
    /// froze on a capacity since it was pushed, so its share rose and it
    /// waits for its turn again, unless it is still the lowest (a tie: the
    /// common case in an all-to-all).
    fn lowest_by_heap(&mut self) -> Option<(f64, u32)> {
        while let Some(Reverse((pushed, l))) = self.heap.pop() {
            let fill = &mut self.links[l as usize];
            if fill.unfrozen == 0 {
                continue;
            }
            let share = fill.share();
            let bits = share.to_bits();
            if bits != pushed && self.heap.peek().is_some_and(|top| (bits, l) > top.0) {
                self.heap.push(Reverse((bits, l)));
                continue;
            }
            return Some((share, l));
        }
        None
    }

    /// Gives every unfrozen flow crossing capacity `l` the rate `level`,
    /// and takes what they use from every capacity they cross.
    /// Capacities from index `ports_from` on are ports.
    fn freeze<const WEIGHTED: bool>(&mut self, l: usize, level: f64, route_links: &[u32], ports_from: usize) {
        let fill = &self.links[l];
        // Every flow of the list crosses this capacity, so its figures are
        // kept in registers here, not through memory in the loop.
        let (mut capacity, mut left, mut weight) = (fill.capacity, fill.unfrozen, fill.weight);
        // Ports carry a flow's bytes alone; links its weight. Unweighted,
        // every weight is 1 and the test folds away.
        let on = |link: usize, w: f64| if WEIGHTED && link < ports_from { w } else { 1.0 };
        for &(k, hop) in &self.members[l] {
            let slot = &mut self.slots[k as usize];
            if slot.rate > 0.0 {
                continue;
            }
            slot.rate = level;
            let w = slot.weight;
            // With weight 1 these are the plain subtractions of the level.
            capacity -= level * on(l, w);
            weight -= on(l, w);
            let route = slot.links(route_links);
            // The links before and after this one (split rather than tested
            // link by link: the test mispredicts).
            let (before, after) = route.split_at(hop as usize);
            for &crossed in before.iter().chain(&after[1..]) {
                let fill = &mut self.links[crossed as usize];
                let w = on(crossed as usize, w);
                fill.capacity -= level * w;
                fill.weight -= w;
                fill.unfrozen -= 1;
            }
            // The rest of the list froze at earlier levels.
            left -= 1;
            if left == 0 {
                break;
            }
        }
        let fill = &mut self.links[l];
        fill.capacity = capacity;
        fill.unfrozen = left;
        fill.weight = weight;
    }

    /// Takes the finished flow in `slot` out of its links' member lists and
    /// frees the slot.
    fn leave(&mut self, slot: u32, route_links: &[u32]) {
        let s = slot as usize;
        for (hop, &l) in self.slots[s].links(route_links).iter().enumerate() {
            let place = self.places[s][hop];
            let members = &mut self.members[l as usize];
            members.swap_remove(place as usize);
            self.links[l as usize].count -= 1;
            // The list's last flow moved into the freed place: tell it.
            if let Some(&(moved, at)) = members.get(place as usize) {
                self.places[moved as usize][at as usize] = place;
            }
        }
        self.free.push(slot);
    }
}

/// One transmitting flow's part in progressive filling: the fields read
/// together, side by side, as the flows are visited in no useful order.
#[derive(Clone, Copy, Debug, Default)]
struct SlotFill {
    /// Its rate once frozen, 0 before.
    rate: f64,
    /// What a byte of it occupies on a link (not a port): 1 plus the
    /// router's per-message overhead over its size.
    weight: f64,
    /// Its route's first link in `route_links`.
    offset: u32,
    /// Links on its route.
    len: u32,
}

impl SlotFill {
    /// The flow's route as indices into the machine's link table.
    fn links<'a>(&self, route_links: &'a [u32]) -> &'a [u32] {
        &route_links[self.offset as usize..(self.offset + self.len) as usize]
    }
}

/// One link's part in progressive filling.
#[derive(Clone, Copy, Debug, Default)]
struct Fill {
    /// Capacity not yet handed out, bytes per second; after filling, what
    /// no flow uses.
    capacity: f64,
    /// Transmitting flows crossing the link (its `members`), kept up to
    /// date by `settle`.
    count: u32,
    /// Flows crossing it not yet given a rate.
    unfrozen: u32,
    /// Their weights' sum (`SlotFill::weight` on links, 1 on ports): the
    /// capacity one unit of rate given to all of them takes.
    weight: f64,
    /// `share()` as of when `unfrozen` was `shared_at`: a link's capacity,
    /// weight and unfrozen count only change together, so the share is
    /// computed again only after some of its flows froze, not at every
    /// level's scan.
    share: f64,
    /// See `share`; `u32::MAX` when it is stale.
    shared_at: u32,
}

impl Fill {
    /// The link's fair share: capacity left over the flows still to freeze.
    #[inline]
    fn share(&mut self) -> f64 {
        if self.shared_at != self.unfrozen {
            // Rounding may leave a hair below zero; a share is never negative.
            let capacity = if self.capacity > 0.0 { self.capacity } else { 0.0 };
            self.share = capacity / self.weight;
            self.shared_at = self.unfrozen;
        }
        self.share
    }
}

/// The flows in flight on a machine, advanced through time by the caller.
///
/// Typical use: `start` transfers, then repeatedly `advance(next_event())`
/// and react to the finished flows it returns, until `next_event` is `None`.
#[derive(Debug)]
pub struct Network<'m> {
    machine: &'m Machine,
    /// The clock.
    now: Time,
    next_id: u64,
    /// The machine's links, then (with ports) each die's injection port,
    /// then each die's ejection port.
    links: usize,
    /// Per capacity (see `links`): the bytes per second flows may use.
    capacity: Vec<f64>,
    /// A transfer from a die to itself turns around in its router (through
    /// its ports and the router's latency) instead of completing at once.
    loopback: bool,
    /// The router's fixed latency per transfer.
    router_latency: Time,
    /// The router's per-message overhead, bytes.
    overhead: f64,
    /// Routes already asked of the machine. Only looked up, never iterated,
    /// so its order cannot reach any result.
    routes: FxHashMap<(DieId, DieId), RouteSlot>,
    /// Every cached route's links, back to back.
    route_links: Vec<u32>,
    /// Flows whose head is still crossing the route.
    heading: BinaryHeap<Heading>,
    /// Flows transmitting, in the order they began to.
    flows: Vec<Flow>,
    /// Whether `flows` changed since the rates were computed.
    dirty: bool,
    /// When the flows' `remaining` was last brought up to date (the last
    /// recompute); the rates have held since.
    rates_since: Time,
    /// After a recompute, the rates hold for `quantum` x what is left of
    /// the busy period (0: recomputed at every change, exact). See
    /// [`Network::with_quantum`].
    quantum: f64,
    /// Flows in transmission from which the quantum acts (`HOLD_MIN_FLOWS`).
    hold_min_flows: usize,
    /// The earliest time the rates may be recomputed again.
    next_recompute: Time,
    /// Earliest `finish_at` over `flows`, `NEVER` when there are none.
    next_finish: Time,
    /// Finished flows not yet handed back by `advance`.
    finished: Vec<(FlowId, u64, Time)>,
    stats: Vec<LinkStats>,
    traffic: Traffic,
    scratch: Scratch,
    /// Rate recomputes so far, and the flows they gave rates to: the
    /// network's work, for benchmarks.
    recomputes: u64,
    rated: u64,
}

impl<'m> Network<'m> {
    /// An idle network at time 0 on `machine`.
    pub fn new(machine: &'m Machine) -> Network<'m> {
        let router = machine.spec().router;
        let links = machine.links().len();
        let dies = machine.die_count() as usize;
        let mut capacity: Vec<f64> = machine
            .links()
            .iter()
            .map(|l| l.spec.bandwidth.0 * router.efficiency)
            .collect();
        if let Some(port) = router.port {
            capacity.resize(links + 2 * dies, port.0 * router.efficiency);
        }
        let all = capacity.len();
        Network {
            machine,
            now: Time::ZERO,
            next_id: 0,
            links,
            capacity,
            loopback: false,
            router_latency: Time::from_secs(router.latency.0),
            overhead: router.overhead.0 as f64,
            routes: FxHashMap::default(),
            route_links: Vec::new(),
            heading: BinaryHeap::new(),
            flows: Vec::new(),
            dirty: false,
            rates_since: Time::ZERO,
            quantum: 0.0,
            hold_min_flows: HOLD_MIN_FLOWS,
            next_recompute: Time::ZERO,
            next_finish: Time::NEVER,
            finished: Vec::new(),
            stats: vec![LinkStats::default(); all],
            traffic: Traffic::default(),
            recomputes: 0,
            rated: 0,
            scratch: Scratch {
                links: vec![Fill::default(); all],
                members: vec![Vec::new(); all],
                ..Scratch::default()
            },
        }
    }

    /// Trades exactness for speed: after recomputing the rates at time r,
    /// changes (flows starting or finishing) wait until r + `quantum` x
    /// what is left of the busy period (until, at the new rates, the last
    /// flow would finish) before the rates are recomputed. A finishing flow
    /// still finishes at its exact time; only the handing of its bandwidth
    /// to the others lags, and a flow that starts meanwhile waits for its
    /// rate, each by at most that share of the work in flight. The error
    /// goes both ways (the flows that keep a lagging rate may finish
    /// earlier than exactly), and on the examples stays within 2% of the
    /// exact step (`tests/run.rs`). An all-to-all whose flows all differ in
    /// size then costs a few times 1 / `quantum` recomputes instead of one
    /// per flow. 0 (the default) is exact. The quantum only acts while at
    /// least `HOLD_MIN_FLOWS` flows transmit; with fewer the network is
    /// exact.
    pub fn with_quantum(mut self, quantum: f64) -> Network<'m> {
        self.quantum = if quantum.is_finite() && quantum > 0.0 {
            quantum
        } else {
            0.0
        };
        self
    }

    /// Transfers from a die to itself go through its router (its injection
    /// and ejection ports, the router's latency), as in a network-on-chip
    /// simulator's traffic patterns, instead of completing at once as data
    /// that never leaves the die.
    pub fn with_loopback(mut self) -> Network<'m> {
        self.loopback = true;
        self
    }

    /// The machine the flows run on.
    pub fn machine(&self) -> &'m Machine {
        self.machine
    }

    /// Starts a transfer of `bytes` from `src` to `dst` at time `now` along
    /// `machine.route(src, dst)`; `tag` is handed back when it finishes.
    ///
    /// A `now` past the clock first advances the network to it (flows that
    /// finish meanwhile are kept for the next `advance`); a `now` before the
    /// clock means the clock's time, since nothing starts in the past. A
    /// transfer of 0 bytes, or from a die to itself (unless `with_loopback`),
    /// completes at `now` and is still reported by the next `advance`.
    pub fn start(&mut self, now: Time, src: DieId, dst: DieId, bytes: u64, tag: u64) -> Result<FlowId, RouteError> {
        if now > self.now && !now.is_never() {
            self.run_to(now);
        }
        let route = self.route(src, dst)?;
        let id = FlowId(self.next_id);
        self.next_id += 1;
        self.traffic.bytes = self.traffic.bytes.saturating_add(bytes);
        // Byte-hops count the machine's links, not the ports.
        let hops = u64::try_from(route.len).unwrap_or(u64::MAX) - if self.has_ports() { 2 } else { 0 };
        let hops = if route.len == 0 { 0 } else { hops };
        self.traffic.byte_hops = self.traffic.byte_hops.saturating_add(bytes.saturating_mul(hops));
        let class = &mut self.traffic.class_byte_hops[((tag >> 56) as usize).min(TRAFFIC_CLASSES - 1)];
        *class = class.saturating_add(bytes.saturating_mul(hops));
        if bytes == 0 || (route.len == 0 && route.latency == Time::ZERO) {
            self.finished.push((id, tag, self.now));
            return Ok(id);
        }
        let size = bytes as f64;
        self.heading.push(Heading {
            transmit_at: self.now + route.latency,
            flow: Flow {
                id,
                slot: u32::MAX,
                tag,
                remaining: size,
                rate: 0.0,
                finish_at: Time::NEVER,
                route,
            },
        });
        Ok(id)
    }

    /// The earliest time anything changes: a flow's head arriving so it
    /// starts transmitting, or a flow finishing; the current time when
    /// finished flows wait to be reported. `None` when idle.
    pub fn next_event(&self) -> Option<Time> {
        if !self.finished.is_empty() {
            return Some(self.now);
        }
        let mut next = Time::NEVER;
        if let Some(h) = self.heading.peek() {
            next = h.transmit_at.max(self.now);
        }
        if !self.flows.is_empty() {
            // `next_finish` always follows the rates in force, current or lagging.
            next = next.min(self.next_finish.max(self.now));
            if self.dirty {
                // Flows that started while the rates lag have no rate yet
                // (they would never finish): the recompute is an event.
                next = next.min(self.next_recompute.max(self.now));
            }
        }
        next = self.hold_for_quantum(next);
        (!next.is_never()).then_some(next)
    }

    /// Moves the clock to `t`, draining bytes at the current rates and
    /// handling every start and finish on the way in time order, and returns
    /// the flows finished since the last call as (flow, tag, finish time),
    /// sorted by (time, flow).
    ///
    /// `t` is normally `next_event()`, but any later time works: the events
    /// before it are handled in order. A `t` before the clock leaves the
    /// clock where it is; `Time::NEVER` runs until idle and leaves the clock
    /// at the last event.
    pub fn advance(&mut self, t: Time) -> Vec<(FlowId, u64, Time)> {
        let mut out = Vec::new();
        self.advance_into(t, &mut out);
        out
    }

    /// `advance`, appending to `out` (cleared first) so a caller's buffer is
    /// reused instead of a new vector per event.
    pub fn advance_into(&mut self, t: Time, out: &mut Vec<(FlowId, u64, Time)>) {
        self.run_to(t);
        out.clear();
        out.append(&mut self.finished);
        out.sort_unstable_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
    }

    /// The clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Flows started and not yet finished (heading or transmitting).
    pub fn active(&self) -> usize {
        self.heading.len() + self.flows.len()
    }

    /// The current rate of a transmitting flow in bytes per second; `None`
    /// when the flow is not transmitting (its head is still on the way, or
    /// it has finished). Linear in the flows transmitting: for inspection,
    /// not for inner loops.
    pub fn rate(&self, flow: FlowId) -> Option<f64> {
        self.flows.iter().find(|f| f.id == flow).map(|f| f.rate)
    }

    /// Per link (index = `LinkId.0`): bytes carried so far and seconds with
    /// at least one flow transmitting over it.
    pub fn link_stats(&self) -> &[LinkStats] {
        &self.stats[..self.links]
    }

    /// Per die, what its injection port and its ejection port carried;
    /// empty when the machine's dies have no ports.
    pub fn port_stats(&self) -> (&[LinkStats], &[LinkStats]) {
        let ports = &self.stats[self.links..];
        ports.split_at(ports.len() / 2)
    }

    /// Total bytes and byte-hops (bytes x links traversed) of all flows
    /// started.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// How many times the rates were recomputed, and how many flows those
    /// recomputes rated in all (the network's work: each costs about the
    /// flow's route length).
    pub fn work(&self) -> (u64, u64) {
        (self.recomputes, self.rated)
    }

    /// Whether dies have injection and ejection ports (capacities after the
    /// links).
    fn has_ports(&self) -> bool {
        self.capacity.len() > self.links
    }

    /// The route from `src` to `dst`, asked of the machine once per pair:
    /// its links, between the dies' ports when they have them.
    fn route(&mut self, src: DieId, dst: DieId) -> Result<RouteSlot, RouteError> {
        if let Some(&slot) = self.routes.get(&(src, dst)) {
            return Ok(slot);
        }
        let route = self.machine.route(src, dst)?;
        let offset = self.route_links.len();
        let mut latency = Time::ZERO;
        let through_router = !route.links.is_empty() || self.loopback;
        let dies = self.machine.die_count() as usize;
        // Port indices fit u32 with the links: a machine has at most 2^20 dies.
        let port = |kind: usize, die: DieId| (self.links + kind * dies + die.index()) as u32;
        if through_router && self.has_ports() {
            self.route_links.push(port(0, src));
        }
        for &link in &route.links {
            self.route_links.push(link.0);
            latency += Time::from_secs(self.machine.link(link).spec.latency.0);
        }
        if through_router {
            if self.has_ports() {
                self.route_links.push(port(1, dst));
            }
            latency += self.router_latency;
        }
        let slot = RouteSlot {
            offset,
            len: self.route_links.len() - offset,
            latency,
        };
        self.routes.insert((src, dst), slot);
        Ok(slot)
    }

    /// Handles every event up to `t` in time order and leaves the clock at
    /// `t` (see `advance` for odd values of `t`), with the rates current.
    fn run_to(&mut self, t: Time) {
        // The past means "now".
        let t = t.max(self.now);
        loop {
            // Everything due at this instant is one batch: one recompute.
            self.settle();
            if self.dirty {
                if self.now >= self.next_recompute || self.flows.len() < self.hold_min_flows {
                    let last_finish = self.recompute();
                    // What is left of the busy period at these rates: a
                    // hold in proportion to it is a bounded share of every
                    // transfer in flight, however long the network has been
                    // busy (a chain of ring steps is held by a share of one
                    // step, not of all the steps before it).
                    let horizon = last_finish.max(self.now).since(self.now).secs();
                    self.next_recompute = self.now + Time::from_secs(self.quantum * horizon);
                } else {
                    // Lagging: the old rates stay; only the finished flows left.
                    self.next_finish = self.flows.iter().map(|f| f.finish_at).min().unwrap_or(Time::NEVER);
                }
            }
            if self.now >= t {
                break;
            }
            let mut next = self.next_finish;
            if let Some(h) = self.heading.peek() {
                next = next.min(h.transmit_at);
            }
            if self.dirty && !self.flows.is_empty() {
                next = next.min(self.next_recompute);
            }
            next = self.hold_for_quantum(next);
            if next.is_never() && t.is_never() {
                // Idle and asked to run forever: stop at the last event.
                break;
            }
            // Each pass either reaches `t` or an event that `settle` then
            // handles (a finish removes a flow, a start moves one), so the
            // loop ends.
            self.drain_to(next.min(t).max(self.now));
        }
    }

    /// With a quantum, nothing changes the rates before `next_recompute`, so
    /// events before it are handled together there (each finish still
    /// carries its exact time).
    /// Only while many flows transmit: then each event is costly (a pass over
    /// the flows) and batching pays; with few, holding would only delay
    /// chains of small dependent transfers (ring steps) by whole quanta.
    fn hold_for_quantum(&self, next: Time) -> Time {
        if self.quantum > 0.0
            && self.flows.len() >= self.hold_min_flows
            && !next.is_never()
            && next < self.next_recompute
        {
            self.next_recompute
        } else {
            next
        }
    }

    /// Finishes the flows done at the current time and starts the ones
    /// whose head has arrived, marking the rates stale if either happened.
    fn settle(&mut self) {
        let now = self.now;
        let since = self.rates_since;
        let Network {
            flows,
            stats,
            route_links,
            finished,
            dirty,
            heading,
            scratch,
            capacity,
            next_finish,
            overhead,
            ..
        } = self;
        // Nothing is done before the earliest finish: then the scan over the
        // flows is skipped.
        if now >= *next_finish {
            flows.retain(|f| {
                let done = f.finish_at <= now;
                if done {
                    let left = f.remaining_at(now, since);
                    for &l in f.route.links(route_links) {
                        // Hand the link the rounding left over, so it ends up
                        // having carried exactly the flow's bytes.
                        stats[l as usize].bytes += left;
                    }
                    scratch.leave(f.slot, route_links);
                    // A flow drained while the clock waited out a quantum
                    // still finished at its own time.
                    finished.push((f.id, f.tag, f.finish_at));
                    *dirty = true;
                }
                !done
            });
        }
        while let Some(h) = heading.peek() {
            if h.transmit_at > now {
                break;
            }
            if let Some(mut h) = heading.pop() {
                if h.flow.route.len == 0 {
                    // A loopback without ports: only the router's latency.
                    finished.push((h.flow.id, h.flow.tag, h.transmit_at));
                    continue;
                }
                for &l in h.flow.route.links(route_links) {
                    let fill = &mut scratch.links[l as usize];
                    if fill.count == 0 {
                        // It may be listed already if it emptied since the
                        // last recompute; `recompute` drops duplicates. An
                        // empty link carries nothing: all its bandwidth is free.
                        scratch.active.push(l);
                        fill.capacity = capacity[l as usize];
                    }
                }
                let weight = 1.0 + *overhead / h.flow.remaining;
                h.flow.slot = scratch.join(h.flow.route, weight, route_links);
                flows.push(h.flow);
                *dirty = true;
            }
        }
    }

    /// Moves the clock forward to `t` at the current rates.
    fn drain_to(&mut self, t: Time) {
        let dt = t.since(self.now).secs();
        if dt > 0.0 {
            // The flows drain lazily (`Flow::remaining_at`); only the links'
            // counters move here.
            for &l in &self.scratch.active {
                let l = l as usize;
                // What the frozen flows took is what the link carries.
                let load = self.capacity[l] - self.scratch.links[l].capacity;
                let s = &mut self.stats[l];
                s.bytes += load * dt;
                s.busy_s += dt;
            }
        }
        self.now = t;
    }

    /// Max-min fair rates for the transmitting flows by progressive filling,
    /// and when each will finish at them; returns the last of those finishes.
    fn recompute(&mut self) -> Time {
        self.dirty = false;
        self.recomputes += 1;
        self.rated += self.flows.len() as u64;
        let Network {
            flows,
            route_links,
            capacity,
            scratch: s,
            overhead,
            links: ports_from,
            now,
            next_finish,
            rates_since,
            ..
        } = self;
        // Bring every flow's bytes up to the clock before the rates change,
        // and mark it unfrozen.
        for f in flows.iter_mut() {
            f.remaining = f.remaining_at(*now, *rates_since);
            s.slots[f.slot as usize].rate = 0.0;
        }
        *rates_since = *now;

        // `settle` keeps the per-link flow lists and the list of links in
        // use; here that list only loses the links that emptied and
        // duplicates, so the cost follows the traffic, not the machine's size.
        s.active.sort_unstable();
        s.active.dedup();
        let links = &s.links;
        s.active.retain(|&l| links[l as usize].count > 0);
        for &l in &s.active {
            let fill = &mut s.links[l as usize];
            fill.unfrozen = fill.count;
            fill.capacity = capacity[l as usize];
            fill.shared_at = u32::MAX;
            // With an overhead flows differ in weight (`SlotFill::weight`)
            // on links; otherwise a capacity's weight is its flow count.
            fill.weight = if *overhead > 0.0 && (l as usize) < *ports_from {
                s.members[l as usize]
                    .iter()
                    .map(|&(k, _)| s.slots[k as usize].weight)
                    .sum()
            } else {
                f64::from(fill.count)
            };
        }
        // Few capacities: a scan for the lowest share each level costs less
        // than keeping a heap (rings: one level fills them all).
        let scan = s.active.len() <= SCAN_LINKS;
        if !scan {
            s.heap.clear();
            for &l in &s.active {
                let share = s.links[l as usize].share();
                s.heap.push(Reverse((share.to_bits(), l)));
            }
        }
        let mut level = 0.0f64;
        while let Some((share, l)) = if scan { s.lowest_by_scan() } else { s.lowest_by_heap() } {
            // In exact arithmetic each level is at least the one before;
            // holding to that keeps rounding from ever giving a flow a
            // smaller (or negative) rate than an earlier one. Only a
            // bandwidth near the smallest float could underflow a share to
            // 0; a positive level keeps "rate > 0" meaning frozen.
            level = level.max(share).max(f64::MIN_POSITIVE);
            if *overhead > 0.0 {
                s.freeze::<true>(l as usize, level, route_links, *ports_from);
            } else {
                s.freeze::<false>(l as usize, level, route_links, *ports_from);
            }
        }

        let (mut first, mut last) = (Time::NEVER, Time::ZERO);
        for f in flows.iter_mut() {
            // Every flow crosses a link, so it was frozen at a level > 0.
            f.rate = s.slots[f.slot as usize].rate;
            f.finish_at = *now + Time::from_secs_ceil(f.remaining / f.rate);
            first = first.min(f.finish_at);
            last = last.max(f.finish_at);
        }
        *next_finish = first;
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::{mesh, spec};
    use crate::machine::{Coord, LinkSpec, MachineSpec, Topology};
    use crate::units::{BytesPerSec, Seconds};

    const W: f64 = 1e12;
    const L: f64 = 5e-9;

    fn build(s: MachineSpec) -> Machine {
        Machine::build(s).expect("valid machine")
    }

    fn die(m: &Machine, x: u32, y: u32) -> DieId {
        m.die_at(Coord::new(x, y)).expect("on the grid")
    }

    /// A time in seconds on the network's clock.
    fn ts(seconds: f64) -> Time {
        Time::from_secs(seconds)
    }

    /// Finished flows with their times in seconds.
    fn secs(done: Vec<(FlowId, u64, Time)>) -> Vec<(FlowId, u64, f64)> {
        done.into_iter().map(|(f, tag, t)| (f, tag, t.secs())).collect()
    }

    /// Runs the network until idle, returning every finished flow.
    fn run(net: &mut Network) -> Vec<(FlowId, u64, f64)> {
        let mut all = Vec::new();
        let mut steps = 0;
        while let Some(t) = net.next_event() {
            all.extend(secs(net.advance(t)));
            steps += 1;
            assert!(steps < 1_000_000, "the network never went idle");
        }
        all
    }

    /// Equal but for the picosecond rounding of a few events.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs() + 4e-12
    }

    #[test]
    fn a_lone_flow_takes_the_route_latency_then_bytes_over_bandwidth() {
        let m = build(mesh(8, 8));
        let mut net = Network::new(&m);
        let (src, dst) = (die(&m, 1, 2), die(&m, 6, 5));
        let bytes = 1 << 20;
        let id = net.start(ts(0.0), src, dst, bytes, 42).expect("route");
        assert_eq!(net.active(), 1);
        // First the head crosses 8 hops.
        let head = net.next_event().expect("a flow is heading");
        assert!(close(head.secs(), 8.0 * L), "{head}");
        let done = run(&mut net);
        assert_eq!(done.len(), 1);
        let (fid, tag, t) = done[0];
        assert_eq!((fid, tag), (id, 42));
        let expected = 8.0 * L + bytes as f64 / W;
        assert!(close(t, expected), "{t} vs {expected}");
        assert_eq!(net.active(), 0);
        assert_eq!(net.next_event(), None);
        // Busy only while transmitting, not while the head crossed.
        let route = m.route(src, dst).expect("route");
        for l in &route.links {
            let s = net.link_stats()[l.index()];
            assert!(close(s.busy_s, bytes as f64 / W), "{}", s.busy_s);
        }
    }

    #[test]
    fn a_flow_starting_while_rates_lag_still_finishes() {
        // A finishes at ~1 us and the rates are recomputed; with quantum 2
        // the next recompute waits until ~3 us. C starts meanwhile and B
        // finishes: when the caller advances to 2.5 us (a compute event),
        // C transmits at no rate yet, and the recompute must still come.
        let m = build(mesh(4, 1));
        let mut net = Network::new(&m).with_quantum(2.0);
        // Three flows: let the quantum act on so few.
        net.hold_min_flows = 0;
        net.start(ts(0.0), DieId(0), DieId(1), 1_000_000, 1).expect("route");
        net.start(ts(0.0), DieId(2), DieId(3), 2_000_000, 2).expect("route");
        let mut done = Vec::new();
        while done.is_empty() {
            let t = net.next_event().expect("busy");
            done = net.advance(t);
        }
        assert_eq!(done[0].1, 1);
        let c = net.start(net.now(), DieId(1), DieId(2), 1_000_000, 3).expect("route");
        let finished = net.advance(ts(2.5e-6));
        assert!(finished.is_empty() || finished.iter().all(|f| f.1 == 2), "{finished:?}");
        let rest = run(&mut net);
        assert!(rest.iter().any(|f| f.0 == c), "C never finished: {rest:?}");
    }

    #[test]
    fn two_flows_on_one_link_split_it_and_finish_together() {
        let m = build(mesh(2, 1));
        let mut net = Network::new(&m);
        let bytes = 1_000_000u64;
        let a = net.start(ts(0.0), DieId(0), DieId(1), bytes, 1).expect("route");
        let b = net.start(ts(0.0), DieId(0), DieId(1), bytes, 2).expect("route");
        net.advance(ts(L));
        assert_eq!((net.rate(a), net.rate(b)), (Some(W / 2.0), Some(W / 2.0)));
        let done = run(&mut net);
        let expected = L + 2.0 * bytes as f64 / W;
        assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), [a, b]);
        assert!(done.iter().all(|d| close(d.2, expected)), "{done:?}");
        // The opposite direction is a different link and stays free.
        let reverse = m.link_between(DieId(1).node(), DieId(0).node()).expect("link");
        assert_eq!(net.link_stats()[reverse.index()], LinkStats::default());
    }

    #[test]
    fn parking_lot_gets_the_max_min_rates() {
        // Dies 0 1 | 2 3 on two wafers: 0->1 is a mesh link (10 units),
        // 1->2 crosses the wafer boundary (4 units). Zero latency so every
        // flow transmits at once.
        let mut s = spec(Topology::Mesh {
            width: 2,
            height: 1,
            wafers_x: 2,
            wafers_y: 1,
        });
        s.link = LinkSpec {
            bandwidth: BytesPerSec(10e9),
            latency: Seconds(0.0),
        };
        s.inter_wafer_link = Some(LinkSpec {
            bandwidth: BytesPerSec(4e9),
            latency: Seconds(0.0),
        });
        let m = build(s);
        let mut net = Network::new(&m);
        let a = net.start(ts(0.0), DieId(0), DieId(2), 1 << 30, 0).expect("route");
        let b = net.start(ts(0.0), DieId(0), DieId(1), 1 << 30, 0).expect("route");
        let c = net.start(ts(0.0), DieId(1), DieId(2), 1 << 30, 0).expect("route");
        assert_eq!(net.next_event(), Some(Time::ZERO));
        assert!(net.advance(ts(0.0)).is_empty());
        // The slow link is the bottleneck: A and C split it, B gets the rest
        // of the fast link.
        assert_eq!(net.rate(a), Some(2e9));
        assert_eq!(net.rate(c), Some(2e9));
        assert_eq!(net.rate(b), Some(8e9));
        // Three links: 0->1 carries A and B, 1->2 carries A and C.
        let done = run(&mut net);
        let l01 = m.link_between(DieId(0).node(), DieId(1).node()).expect("link");
        let l12 = m.link_between(DieId(1).node(), DieId(2).node()).expect("link");
        let gib = (1u64 << 30) as f64;
        for l in [l01, l12] {
            let carried = net.link_stats()[l.index()].bytes;
            assert!(close(carried, 2.0 * gib), "{carried}");
        }
        // B finishes first at 8e9; then A and C split 4e9 evenly and finish
        // together.
        let tb = gib / 8e9;
        let t_ac = tb + (gib - 2e9 * tb) / 2e9;
        let times: Vec<(FlowId, f64)> = done.iter().map(|d| (d.0, d.2)).collect();
        assert_eq!(times[0].0, b);
        assert!(close(times[0].1, tb));
        assert_eq!((times[1].0, times[2].0), (a, c));
        assert!(close(times[1].1, t_ac) && close(times[2].1, t_ac), "{times:?}");
    }

    #[test]
    fn a_flow_joining_mid_transfer_slows_the_first_exactly() {
        let m = build(mesh(2, 1));
        let mut net = Network::new(&m);
        let bytes = 1_000_000u64;
        let b = bytes as f64;
        let first = net.start(ts(0.0), DieId(0), DieId(1), bytes, 0).expect("route");
        // The second starts a quarter of the way into the first's transfer.
        let t1 = L + 0.25 * b / W;
        assert!(net.advance(ts(t1)).is_empty());
        assert_eq!(net.rate(first), Some(W));
        let second = net.start(ts(t1), DieId(0), DieId(1), bytes, 0).expect("route");
        // Its head arrives after L; until then the first still runs alone.
        assert_eq!(net.next_event(), Some(ts(t1) + ts(L)));
        let done = run(&mut net);
        // Alone until t1 + L, then half rate until it is done, then the
        // second alone.
        let sent_alone = W * (t1 + L - L);
        let t_first = t1 + L + (b - sent_alone) / (W / 2.0);
        let t_second = t_first + (b - (t_first - t1 - L) * W / 2.0) / W;
        assert_eq!((done[0].0, done[1].0), (first, second));
        assert!(close(done[0].2, t_first), "{} vs {t_first}", done[0].2);
        assert!(close(done[1].2, t_second), "{} vs {t_second}", done[1].2);
    }

    #[test]
    fn flows_to_self_and_of_zero_bytes_complete_at_once() {
        let m = build(mesh(4, 4));
        let mut net = Network::new(&m);
        let (a, b) = (die(&m, 0, 0), die(&m, 3, 3));
        net.advance(ts(1e-6));
        let selfie = net.start(ts(1e-6), a, a, 1 << 20, 7).expect("route");
        let empty = net.start(ts(1e-6), a, b, 0, 8).expect("route");
        assert_eq!(net.next_event(), Some(ts(1e-6)));
        assert_eq!(net.advance(ts(1e-6)), [(selfie, 7, ts(1e-6)), (empty, 8, ts(1e-6))]);
        assert_eq!(net.next_event(), None);
        assert_eq!(
            net.traffic(),
            Traffic {
                bytes: 1 << 20,
                byte_hops: 0,
                class_byte_hops: [0; TRAFFIC_CLASSES],
            }
        );
        // Errors from the machine come through.
        assert_eq!(
            net.start(ts(0.0), a, DieId(99), 1, 0),
            Err(RouteError::NoSuchDie(DieId(99)))
        );
    }

    #[test]
    fn link_bytes_are_bytes_times_traversals_and_traffic_counts_byte_hops() {
        let m = build(mesh(4, 4));
        let mut net = Network::new(&m);
        let mut expected = vec![0.0; m.links().len()];
        let mut byte_hops = 0;
        let mut total = 0;
        for (i, (src, dst)) in [(0, 15), (3, 12), (5, 6), (15, 0), (0, 15), (9, 9)]
            .into_iter()
            .enumerate()
        {
            let bytes = 10_000 * (i as u64 + 1);
            let route = m.route(DieId(src), DieId(dst)).expect("route");
            for l in &route.links {
                expected[l.index()] += bytes as f64;
            }
            byte_hops += bytes * u64::from(route.hops());
            total += bytes;
            net.start(ts(0.0), DieId(src), DieId(dst), bytes, i as u64)
                .expect("route");
        }
        assert_eq!(run(&mut net).len(), 6);
        for (s, e) in net.link_stats().iter().zip(&expected) {
            assert!((s.bytes - e).abs() <= 1e-6 * e.max(1.0), "{} vs {e}", s.bytes);
            assert_eq!(s.busy_s > 0.0, *e > 0.0);
        }
        assert_eq!(
            net.traffic(),
            Traffic {
                bytes: total,
                byte_hops,
                // Tags below 2^56 are all of class 0.
                class_byte_hops: {
                    let mut c = [0; TRAFFIC_CLASSES];
                    c[0] = byte_hops;
                    c
                },
            }
        );
    }

    /// Textbook progressive filling, one bottleneck link at a time (ties to
    /// the lowest id): the rates `recompute` must match.
    fn reference_rates(m: &Machine, routes: &[Vec<usize>]) -> Vec<f64> {
        let mut capacity: Vec<f64> = m.links().iter().map(|l| l.spec.bandwidth.0).collect();
        let mut rates = vec![None; routes.len()];
        loop {
            let mut unfrozen = vec![0u32; capacity.len()];
            for (k, r) in routes.iter().enumerate() {
                if rates[k].is_none() {
                    for &l in r {
                        unfrozen[l] += 1;
                    }
                }
            }
            let bottleneck = (0..capacity.len())
                .filter(|&l| unfrozen[l] > 0)
                .map(|l| (capacity[l] / f64::from(unfrozen[l]), l))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let Some((share, link)) = bottleneck else { break };
            for (k, r) in routes.iter().enumerate() {
                if rates[k].is_none() && r.contains(&link) {
                    rates[k] = Some(share);
                    for &l in r {
                        capacity[l] -= share;
                    }
                }
            }
        }
        rates.into_iter().map(|r| r.unwrap_or(0.0)).collect()
    }

    #[test]
    fn rates_match_textbook_progressive_filling_on_irregular_traffic() {
        // Random pairs on a mesh with a slower wafer boundary give dozens of
        // distinct levels, past the passes over flows into the grouped
        // filling.
        let mut s = spec(Topology::Mesh {
            width: 3,
            height: 3,
            wafers_x: 2,
            wafers_y: 1,
        });
        s.link.latency = Seconds(0.0);
        s.inter_wafer_link = Some(LinkSpec {
            bandwidth: BytesPerSec(3e11),
            latency: Seconds(0.0),
        });
        let m = build(s);
        let mut rng = crate::rng::Rng::new(11);
        let mut net = Network::new(&m);
        let mut ids = Vec::new();
        let mut routes = Vec::new();
        while ids.len() < 80 {
            let (src, dst) = (DieId(rng.below(18) as u32), DieId(rng.below(18) as u32));
            if src == dst {
                continue;
            }
            ids.push(net.start(ts(0.0), src, dst, 1 << 20, 0).expect("route"));
            routes.push(
                m.route(src, dst)
                    .expect("route")
                    .links
                    .iter()
                    .map(|l| l.index())
                    .collect::<Vec<_>>(),
            );
        }
        net.advance(ts(0.0));
        let expected = reference_rates(&m, &routes);
        let mut levels: Vec<f64> = expected.clone();
        levels.sort_by(f64::total_cmp);
        levels.dedup_by(|a, b| close(*a, *b));
        assert!(levels.len() > 6, "only {} levels", levels.len());
        for (id, want) in ids.iter().zip(&expected) {
            let got = net.rate(*id).expect("transmitting");
            assert!((got / want - 1.0).abs() < 1e-8, "{id:?}: {got} vs {want}");
        }
    }

    #[test]
    fn one_long_advance_equals_stepping_event_by_event() {
        let m = build(mesh(4, 4));
        let stepped = {
            let mut net = Network::new(&m);
            all_to_all(&mut net, &m, 10_000)
        };
        let mut net = Network::new(&m);
        let dies = m.alive_dies();
        for &src in &dies {
            for &dst in &dies {
                if src != dst {
                    net.start(ts(0.0), src, dst, 10_000, (u64::from(src.0) << 32) | u64::from(dst.0))
                        .expect("route");
                }
            }
        }
        // Odd times leave the clock alone; infinity runs until idle.
        assert!(net.advance(ts(f64::NAN)).is_empty() && net.advance(ts(-1.0)).is_empty());
        assert_eq!(net.now(), Time::ZERO);
        let at_once = secs(net.advance(Time::NEVER));
        assert_eq!(at_once, stepped);
        assert_eq!(net.next_event(), None);
        assert_eq!(net.now().secs(), at_once.last().map(|d| d.2).unwrap_or(0.0));
        // A start in the past starts now.
        let late = net.start(ts(0.0), DieId(0), DieId(1), 1000, 0).expect("route");
        assert_eq!(net.advance(Time::NEVER)[0].0, late);
        assert!(close(net.now().secs(), at_once[at_once.len() - 1].2 + L + 1000.0 / W));
    }

    /// Every die sends `bytes` to every other die at time 0.
    fn all_to_all(net: &mut Network, m: &Machine, bytes: u64) -> Vec<(FlowId, u64, f64)> {
        let dies = m.alive_dies();
        for &src in &dies {
            for &dst in &dies {
                if src != dst {
                    net.start(ts(0.0), src, dst, bytes, (u64::from(src.0) << 32) | u64::from(dst.0))
                        .expect("route");
                }
            }
        }
        run(net)
    }

    #[test]
    fn the_same_inputs_give_identical_outputs() {
        let m = build(mesh(4, 4));
        let once = || {
            let mut net = Network::new(&m);
            let done = all_to_all(&mut net, &m, 4096);
            let bits: Vec<(FlowId, u64, u64)> = done.iter().map(|d| (d.0, d.1, d.2.to_bits())).collect();
            let stats: Vec<(u64, u64)> = net
                .link_stats()
                .iter()
                .map(|s| (s.bytes.to_bits(), s.busy_s.to_bits()))
                .collect();
            (bits, stats, net.now())
        };
        let first = once();
        assert_eq!(first.0.len(), 16 * 15);
        assert_eq!(first, once());
    }

    #[test]
    fn all_to_all_through_a_switch_is_limited_by_each_port() {
        let m = build(spec(Topology::Switch { ports: 8 }));
        let mut net = Network::new(&m);
        let bytes = 1_000_000u64;
        let done = all_to_all(&mut net, &m, bytes);
        assert_eq!(done.len(), 56);
        // Every up-port and down-port carries 7 flows, so each gets W / 7.
        let expected = 2.0 * L + 7.0 * bytes as f64 / W;
        assert!(done.iter().all(|d| close(d.2, expected)), "{:?} vs {expected}", done[0]);
        for s in net.link_stats() {
            assert!(close(s.bytes, 7.0 * bytes as f64));
            assert!(close(s.busy_s, 7.0 * bytes as f64 / W));
        }
    }

    #[test]
    fn mesh_all_to_all_respects_the_bisection_and_finishes_every_flow() {
        let m = build(mesh(8, 8));
        let mut net = Network::new(&m);
        let bytes = 64 << 10;
        let done = all_to_all(&mut net, &m, bytes);
        assert_eq!(done.len(), 64 * 63);
        assert!(done.iter().all(|d| d.2.is_finite() && d.2 > 0.0));
        assert!(done.windows(2).all(|w| (w[0].2, w[0].0) < (w[1].2, w[1].0)));
        // The closed form under XY routing: the east link between columns
        // 3 and 4 of a row carries the row's 4 western dies' flows to the
        // 32 eastern dies (128 flows), and the south link between rows 3
        // and 4 of a column the 32 northern dies' flows to that column's 4
        // southern dies (128 again); no link carries more. Max-min keeps
        // these links busy until their last byte, so the all-to-all ends
        // at 128 flows' bytes over W, plus at most the longest route's 14
        // hops of latency.
        let bound = 128.0 * bytes as f64 / W;
        let end = net.now().secs();
        assert!(end >= bound, "{end} < {bound}");
        assert!(end <= bound + 14.0 * L, "{end} vs {bound} + 14 hops");
    }

    /// How long one uniform all-to-all of 64 KB per pair on an 8x8 mesh
    /// takes to simulate. Prints; times nothing as a pass or fail. Run with
    /// `cargo test --release -p moec-runtime sim::network -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, meaningful in release mode"]
    fn measure_mesh_all_to_all_simulation_time() {
        let m = build(mesh(8, 8));
        let runs = 20;
        let begin = std::time::Instant::now();
        let mut events = 0;
        let mut end = 0.0;
        for _ in 0..runs {
            let mut net = Network::new(&m);
            let dies = m.alive_dies();
            for &src in &dies {
                for &dst in &dies {
                    if src != dst {
                        net.start(ts(0.0), src, dst, 64 << 10, 0).expect("route");
                    }
                }
            }
            events = 0;
            while let Some(t) = net.next_event() {
                net.advance(t);
                events += 1;
            }
            end = net.now().secs();
        }
        let each = begin.elapsed().as_secs_f64() / f64::from(runs);
        println!(
            "8x8 mesh all-to-all, 64 KB per pair: {:.3} ms to simulate ({events} advances, {:.3} us simulated)",
            each * 1e3,
            end * 1e6
        );
    }
}
