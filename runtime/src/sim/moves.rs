//! Expert weights in flight during one simulated step: migration chunks and
//! broadcast pieces, as flows on the same network as the step's own traffic.
//!
//! A chunk starts once its window is open on its sending die (that die has
//! issued the first instruction of the phase: see [`Window`]) and every
//! chunk it forwards has arrived; stop-the-world chunks start at once, and
//! no die issues anything until they have all arrived. A broadcast piece
//! gates its receiving die's expert kernel of that layer: the die cannot
//! compute an expert whose weights are still on the way. Nothing else waits
//! on a migration chunk: it costs the step only the links it shares and,
//! if it has not arrived when the step's own work ends, the time until it
//! has. A chunk whose window never opens (its die runs no such phase) is
//! started when the step's own work is done, so it is never lost.
//!
//! Flows are tagged with [`MIGRATION`] in the top byte and the chunk's
//! index below, so the engine can tell their arrivals from the collectives'.
//!
//! A chunk read from the host (the first leg of a [`WeightSource::Host`]
//! migration: a restored expert reloaded from off-wafer memory) first
//! crosses the machine's io, then the network from the io die it enters
//! through (its `from`). The io is one pipe of the machine's io bandwidth
//! (`IoSpec::bandwidth`, the total over all io dies): host reads take it
//! one after another in the order they start, each for its bytes over that
//! bandwidth, and the chunk's flow starts when its read is done.

use super::network::Network;
use super::time::Time;
use crate::machine::DieId;
use crate::schedule::{Broadcast, Migration, Op, WeightSource, Window};
use std::collections::BTreeMap;

/// The traffic class (tag top byte) of weights in flight.
pub const MIGRATION: u64 = 6;

/// One transfer of weights in a step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepChunk {
    pub window: Window,
    pub from: DieId,
    pub to: DieId,
    pub bytes: u64,
    /// Chunks (indices into the step's list) that must arrive first.
    pub after: Vec<usize>,
    /// A broadcast piece: the MoE layer whose expert kernel on `to` waits for it.
    pub gates_layer: Option<u32>,
    /// Read from the host first: `from` is the io die the bytes enter
    /// through, and the flow starts once the io has carried them.
    pub from_host: bool,
}

/// The weights a step moves: the chunks of `migrations` that travel at
/// `step`, and the pieces of the `broadcasts` on at `step`. A chunk that
/// forwards one sent in an earlier step waits for nothing.
pub fn step_chunks(migrations: &[Migration], broadcasts: &[&Broadcast], step: u64) -> Vec<StepChunk> {
    let mut out = Vec::new();
    for m in migrations {
        // Index of each of the migration's chunks in `out`, for this step's.
        let mut at: BTreeMap<usize, usize> = BTreeMap::new();
        for (k, c) in m.chunks.iter().enumerate().filter(|(_, c)| c.step == step) {
            at.insert(k, out.len());
            out.push(StepChunk {
                window: c.window,
                from: c.from,
                to: c.to,
                bytes: c.bytes,
                after: c
                    .after
                    .and_then(|a| at.get(&(a as usize)).copied())
                    .into_iter()
                    .collect(),
                gates_layer: None,
                from_host: m.source == WeightSource::Host && c.after.is_none(),
            });
        }
    }
    for b in broadcasts {
        let pieces = b.pieces.max(1) as usize;
        let piece = b.bytes.div_ceil(pieces as u64);
        // Per tree edge, the index of its previous piece; per die, the
        // index of the piece that brought it piece p.
        let first = out.len();
        let edges = b.tree.len();
        for p in 0..pieces {
            let bytes = piece.min(b.bytes.saturating_sub(piece * p as u64));
            for (j, &(parent, child)) in b.tree.iter().enumerate() {
                let mut after = Vec::new();
                // The parent forwards piece p once it has it ...
                if let Some(into) = b.tree.iter().position(|&(_, c)| c == parent) {
                    after.push(first + p * edges + into);
                }
                // ... and one piece at a time on each edge (pipelined).
                if p > 0 {
                    after.push(first + (p - 1) * edges + j);
                }
                out.push(StepChunk {
                    window: Window::Attention { layer: b.layer },
                    from: parent,
                    to: child,
                    bytes,
                    after,
                    gates_layer: Some(b.layer),
                    from_host: false,
                });
            }
        }
    }
    out
}

/// The window an instruction opens on its die, if it starts a phase.
pub fn opens(op: &Op) -> Option<Window> {
    match *op {
        Op::AllGather { layer } | Op::Attention { layer } => Some(Window::Attention { layer }),
        Op::TokenAllGather { layer } | Op::Dispatch { layer } => Some(Window::Moe { layer }),
        _ => None,
    }
}

/// The chunks' state during the step.
pub struct Moves {
    chunks: Vec<StepChunk>,
    /// Per chunk: predecessors still to arrive.
    waiting: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    started: Vec<bool>,
    /// Per chunk: (start, arrival) once known.
    times: Vec<(Time, Option<Time>)>,
    /// Windows opened so far, per (die, window).
    open: BTreeMap<(DieId, Window), ()>,
    /// Chunks by the (die, window) that starts them.
    by_window: BTreeMap<(DieId, Window), Vec<usize>>,
    /// Broadcast pieces still to arrive, per (layer, receiving die).
    gate: BTreeMap<(u32, DieId), u32>,
    stop_the_world: usize,
    started_flows: Vec<(u64, usize)>,
    /// The machine's io bandwidth (bytes/s), if it has io.
    io_bandwidth: Option<f64>,
    /// When the io is next free to read from the host.
    io_free_at: Time,
    /// Host reads under way: (when the read is done, chunk), in start order.
    reading: Vec<(Time, usize)>,
}

impl Moves {
    /// The step's chunks, none started.
    pub fn new(chunks: Vec<StepChunk>) -> Moves {
        let n = chunks.len();
        let mut dependents = vec![Vec::new(); n];
        let mut by_window: BTreeMap<(DieId, Window), Vec<usize>> = BTreeMap::new();
        let mut gate = BTreeMap::new();
        let mut stop_the_world = 0;
        for (i, c) in chunks.iter().enumerate() {
            for &a in &c.after {
                dependents[a].push(i);
            }
            by_window.entry((c.from, c.window)).or_default().push(i);
            if let Some(l) = c.gates_layer {
                *gate.entry((l, c.to)).or_insert(0) += 1;
            }
            if c.window == Window::StopTheWorld {
                stop_the_world += 1;
            }
        }
        Moves {
            waiting: chunks.iter().map(|c| c.after.len()).collect(),
            dependents,
            started: vec![false; n],
            times: vec![(Time::ZERO, None); n],
            open: BTreeMap::new(),
            by_window,
            gate,
            stop_the_world,
            started_flows: Vec::new(),
            io_bandwidth: None,
            io_free_at: Time::ZERO,
            reading: Vec::new(),
            chunks,
        }
    }

    /// The io host reads cross: `bandwidth` bytes/s in all (`None`: the
    /// machine has no io, and a host read is an error).
    pub fn with_io(mut self, bandwidth: Option<f64>) -> Moves {
        self.io_bandwidth = bandwidth.filter(|b| b.is_finite() && *b > 0.0);
        self
    }

    /// When the next host read is done (its flow then starts), if any is under way.
    pub fn next_read_done(&self) -> Option<Time> {
        self.reading.iter().map(|&(t, _)| t).min()
    }

    /// Starts the flows of the host reads done by `now`.
    pub fn finish_reads(&mut self, now: Time, net: &mut Network) -> Result<(), String> {
        // (time the read is done, chunk) pairs.
        type Reads = Vec<(Time, usize)>;
        let (done, rest): (Reads, Reads) = self.reading.iter().partition(|&&(t, _)| t <= now);
        self.reading = rest;
        for (_, i) in done {
            self.send(i, now, net)?;
        }
        Ok(())
    }

    /// Whether the step moves nothing.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether stop-the-world chunks are still in flight (no die may issue).
    pub fn world_stopped(&self) -> bool {
        self.stop_the_world > 0
    }

    /// Whether `die`'s expert kernel of `layer` still waits for broadcast weights.
    pub fn experts_wait(&self, layer: u32, die: DieId) -> bool {
        self.gate.get(&(layer, die)).is_some_and(|&n| n > 0)
    }

    /// Starts the stop-the-world chunks, at the step's start `now`.
    pub fn start_world(&mut self, now: Time, net: &mut Network) -> Result<(), String> {
        let keys: Vec<(DieId, Window)> = self
            .by_window
            .keys()
            .filter(|(_, w)| *w == Window::StopTheWorld)
            .copied()
            .collect();
        for (d, w) in keys {
            self.open_window(d, w, now, net)?;
        }
        Ok(())
    }

    /// Die `die` opened `window` at `now`: starts its chunks that are ready.
    pub fn open_window(&mut self, die: DieId, window: Window, now: Time, net: &mut Network) -> Result<(), String> {
        if self.open.insert((die, window), ()).is_some() {
            return Ok(());
        }
        let ready: Vec<usize> = self.by_window.get(&(die, window)).cloned().unwrap_or_default();
        for i in ready {
            self.try_start(i, now, net)?;
        }
        Ok(())
    }

    fn try_start(&mut self, i: usize, now: Time, net: &mut Network) -> Result<(), String> {
        let c = &self.chunks[i];
        if self.started[i] || self.waiting[i] > 0 || !self.open.contains_key(&(c.from, c.window)) {
            return Ok(());
        }
        self.start(i, now, net)
    }

    fn start(&mut self, i: usize, now: Time, net: &mut Network) -> Result<(), String> {
        self.started[i] = true;
        self.times[i].0 = now;
        if self.chunks[i].from_host {
            let Some(bandwidth) = self.io_bandwidth else {
                return Err(format!(
                    "a chunk is read from the host into {}, but the machine has no io",
                    self.chunks[i].from
                ));
            };
            // One pipe: this read waits for the ones before it.
            let done = now.max(self.io_free_at) + Time::from_secs(self.chunks[i].bytes as f64 / bandwidth);
            self.io_free_at = done;
            self.reading.push((done, i));
            return Ok(());
        }
        self.send(i, now, net)
    }

    /// Puts chunk `i` on the network at `now`.
    fn send(&mut self, i: usize, now: Time, net: &mut Network) -> Result<(), String> {
        let c = &self.chunks[i];
        let id = net
            .start(now, c.from, c.to, c.bytes, (MIGRATION << 56) | i as u64)
            .map_err(|e| format!("a migration chunk from {} to {}: {e}", c.from, c.to))?;
        self.started_flows.push((id.0, i));
        Ok(())
    }

    /// Takes the flows started since the last call: (flow id, chunk).
    pub fn take_started(&mut self) -> Vec<(u64, usize)> {
        std::mem::take(&mut self.started_flows)
    }

    /// Chunk `i` arrived at `end` (seen at `now`): releases what waited on it.
    pub fn arrived(&mut self, i: usize, end: Time, now: Time, net: &mut Network) -> Result<(), String> {
        let Some(c) = self.chunks.get(i) else {
            return Ok(());
        };
        self.times[i].1 = Some(end);
        if c.window == Window::StopTheWorld {
            self.stop_the_world -= 1;
        }
        if let Some(l) = c.gates_layer {
            if let Some(n) = self.gate.get_mut(&(l, c.to)) {
                *n = n.saturating_sub(1);
            }
        }
        for k in self.dependents[i].clone() {
            self.waiting[k] = self.waiting[k].saturating_sub(1);
            self.try_start(k, now, net)?;
        }
        Ok(())
    }

    /// The step's own work is done: starts every chunk still unstarted
    /// whose predecessors have arrived. Returns how many it started.
    pub fn start_leftovers(&mut self, now: Time, net: &mut Network) -> Result<usize, String> {
        let mut n = 0;
        for i in 0..self.chunks.len() {
            if !self.started[i] && self.waiting[i] == 0 {
                self.start(i, now, net)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether every chunk has arrived.
    pub fn all_arrived(&self) -> bool {
        self.times.iter().all(|t| t.1.is_some())
    }

    /// When the last chunk arrived (`None` without chunks).
    pub fn last_arrival(&self) -> Option<Time> {
        self.times.iter().filter_map(|t| t.1).max()
    }

    /// Bytes sent (per leg) and the time some chunk was in flight (the
    /// union of the chunks' flights).
    pub fn totals(&self) -> (u64, f64) {
        let bytes = self.chunks.iter().map(|c| c.bytes).sum();
        let mut spans: Vec<(Time, Time)> = self.times.iter().filter_map(|&(s, e)| e.map(|e| (s, e))).collect();
        spans.sort_unstable();
        let (mut total, mut reach) = (Time::ZERO, Time::ZERO);
        for (s, e) in spans {
            let from = s.max(reach);
            total += e - from;
            reach = reach.max(e);
        }
        (bytes, total.secs())
    }

    /// The chunk of a started flow's index (for callers matching flows).
    pub fn chunk(&self, i: usize) -> Option<&StepChunk> {
        self.chunks.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Chunk, MigrationKind, WeightSource};

    fn chunk(step: u64, window: Window, from: u32, to: u32, after: Option<u32>) -> Chunk {
        Chunk {
            step,
            window,
            from: DieId(from),
            to: DieId(to),
            offset: 0,
            bytes: 100,
            after,
        }
    }

    #[test]
    fn a_step_takes_its_own_chunks_and_keeps_forwarding_inside_it() {
        let m = Migration {
            kind: MigrationKind::Replicate,
            layer: 0,
            expert: 0,
            source: WeightSource::Die(DieId(0)),
            to: DieId(2),
            bytes: 100,
            effective_step: 3,
            chunks: vec![
                chunk(1, Window::Attention { layer: 0 }, 0, 1, None),
                chunk(2, Window::Moe { layer: 0 }, 1, 2, Some(0)),
                chunk(2, Window::Attention { layer: 1 }, 0, 1, None),
                chunk(2, Window::Moe { layer: 1 }, 1, 2, Some(2)),
            ],
        };
        let c = step_chunks(&[m], &[], 2);
        assert_eq!(c.len(), 3);
        // Chunk 1 forwards chunk 0, which travelled in step 1: nothing to wait for.
        assert!(c[0].after.is_empty());
        assert_eq!(c[2].after, vec![1]);
    }

    #[test]
    fn broadcast_pieces_follow_their_parent_and_the_piece_before() {
        let b = Broadcast {
            layer: 3,
            expert: 1,
            from: DieId(0),
            steps: 0..10,
            bytes: 1000,
            tree: vec![(DieId(0), DieId(1)), (DieId(1), DieId(2))],
            pieces: 2,
        };
        let c = step_chunks(&[], &[&b], 5);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].after, Vec::<usize>::new());
        assert_eq!(c[1].after, vec![0]);
        assert_eq!(c[2].after, vec![0]);
        assert_eq!(c[3].after, vec![2, 1]);
        assert!(c.iter().all(|x| x.gates_layer == Some(3) && x.bytes == 500));
    }

    #[test]
    fn flight_time_is_the_union_of_the_chunks_flights() {
        let mut m = Moves::new(vec![
            StepChunk {
                window: Window::StopTheWorld,
                from: DieId(0),
                to: DieId(1),
                bytes: 10,
                after: Vec::new(),
                gates_layer: None,
                from_host: false,
            };
            3
        ]);
        m.times = [(0, 2), (1, 3), (5, 6)]
            .map(|(a, b)| (Time::from_secs(a as f64), Some(Time::from_secs(b as f64))))
            .to_vec();
        assert_eq!(m.totals(), (30, 4.0));
    }
}
