//! MoNTA's strategy (`monta(auto)`): per MoE layer, whether split experts'
//! tokens go through the relay, and in how many chunks, from the traffic
//! volumes and the links' bandwidths.
//!
//! MoNTA (arXiv 2411.00662) runs under tensor parallelism, where every
//! rank of a group would send the same tokens: each rank sends `1 / TP` of
//! them over the inter-node all-to-all and the group all-gathers them
//! inside the node, so the inter-node volume falls by the TP factor. In
//! moec the ranks are the parts of a split expert (`parallel = tp(k)`):
//! without the relay a token goes to every part, across the nodes `k`
//! times; with it (`Placement::relay_parts`) once, to the part at its
//! sender's position, which forwards it inside the part group.
//!
//! The all-to-all and the all-gather are pipelined in `n` chunks, chunk
//! `i`'s all-gather under chunk `i + 1`'s all-to-all:
//! `T(n) = T_a2a / n + (n - 1) max(T_a2a, T_ag) / n + T_ag / n`. The volumes
//! are the layer's own, from the runtime's traffic of the workload's first
//! step with and without the relay; each time is the busiest die's bytes
//! over its links (inter-node bytes over the NIC, intra-node over the
//! node's links, the two concurrently). What MoNTA's formula leaves out
//! and moec pays is added: each extra chunk costs the two links' latencies
//! and, since moec's chunks split the expert kernel too, one more read of
//! the busiest die's expert weights. Each layer takes the `n` of 1, 2, 4, 8
//! with the least relayed time (ties to fewer chunks); the step relays if
//! the layers' relayed times sum to less than their unsplit all-to-alls
//! (the relay is the placement's, so all layers or none), else keeps the
//! unsplit form. A note gives the choice and the volumes.

use crate::ir::{Ir, Overlap};
use crate::lower::lower;
use crate::passes::PassContext;
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::model::LayerKind;
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::sim::cost::{CostModel, PartLoad};
use moec_runtime::sim::traffic::{step_traffic, LayerTraffic};

/// The chunk counts MoNTA chooses among.
pub const CANDIDATES: [u32; 4] = [1, 2, 4, 8];

/// MoNTA's pipeline time of an all-to-all and an all-gather in `n` chunks,
/// plus `per_chunk` for each chunk past the first.
pub fn pipeline_time(all_to_all: f64, all_gather: f64, n: u32, per_chunk: f64) -> f64 {
    let n = f64::from(n.max(1));
    all_to_all / n + (n - 1.0) * all_to_all.max(all_gather) / n + all_gather / n + (n - 1.0) * per_chunk
}

/// Per model layer, the relay's chunk count (0: dense, or the layer keeps
/// the unsplit all-to-all); `Overlap::None` when no layer relays.
pub fn strategy(ir: &mut Ir, cx: &PassContext) -> Result<Overlap, String> {
    let layers = cx.model.layers as usize;
    let moe: Vec<usize> = (0..layers)
        .filter(|&l| cx.model.layer_kind(l as u64) == LayerKind::Moe)
        .collect();
    let Some(step) = RoutingGenerator::new(cx.model, cx.workload)?.step(0) else {
        ir.header
            .notes
            .push("monta(auto): routing = gate is only known at run time; no layer relays".into());
        return Ok(Overlap::None);
    };
    let traffic_under = |relay: bool| -> Result<Vec<Option<LayerTraffic>>, String> {
        let mut trial = ir.clone();
        trial.overlap = match relay {
            true => Overlap::Monta(super::on_moe_layers(cx, 1)),
            false => Overlap::None,
        };
        let schedule = lower(&trial, cx.model, cx.machine, cx.workload)?;
        Ok(step_traffic(&schedule, cx.machine, &step).layers)
    };
    let (unsplit, relayed) = (traffic_under(false)?, traffic_under(true)?);
    let costs = CostModel::new(cx.model, cx.workload);
    let links = Links::of(cx.machine);
    let mut chunks = vec![0u32; layers];
    let (mut inter_unsplit, mut inter_relayed) = (0u64, 0u64);
    let (mut time_unsplit, mut time_chosen) = (0.0, 0.0);
    for &l in &moe {
        let (Some(u), Some(r)) = (&unsplit[l], &relayed[l]) else {
            continue;
        };
        inter_unsplit += links.inter_node_bytes(&u.dispatch);
        inter_relayed += links.inter_node_bytes(&r.dispatch);
        let unsplit_s = links.busiest_send_s(&u.dispatch);
        let (a2a, ag) = (links.busiest_send_s(&r.dispatch), links.busiest_send_s(&r.relay));
        let per_chunk = links.latencies_s + expert_weights_s(&costs, cx, r);
        let mut best = (f64::INFINITY, 1u32);
        for n in CANDIDATES {
            let t = pipeline_time(a2a, ag, n, per_chunk);
            if t < best.0 {
                best = (t, n);
            }
        }
        time_unsplit += unsplit_s;
        time_chosen += best.0;
        chunks[l] = best.1;
    }
    let relay = time_chosen < time_unsplit;
    let counts: Vec<String> = CANDIDATES
        .iter()
        .map(|&n| (n, moe.iter().filter(|&&l| chunks[l] == n).count()))
        .filter(|&(_, k)| k > 0)
        .map(|(n, k)| format!("n = {n} on {k}"))
        .collect();
    ir.header.notes.push(format!(
        "monta(auto): inter-node all-to-all {} a step unsplit, {} relayed ({:.2}x less); modelled {:.3} ms a step unsplit, {:.3} ms relayed in {}: {}",
        bytes(inter_unsplit),
        bytes(inter_relayed),
        inter_unsplit as f64 / inter_relayed.max(1) as f64,
        time_unsplit * 1e3,
        time_chosen * 1e3,
        counts.join(", "),
        match relay {
            true => "relays",
            false => "keeps the unsplit all-to-all",
        }
    ));
    Ok(match relay {
        true => Overlap::Monta(chunks),
        false => Overlap::None,
    })
}

/// What a chunk's transfers cost on the machine's links.
struct Links<'m> {
    machine: &'m Machine,
    /// Both links' latency: what one more chunk of each transfer adds.
    latencies_s: f64,
}

impl<'m> Links<'m> {
    fn of(machine: &'m Machine) -> Links<'m> {
        let spec = machine.spec();
        let inter = spec.inter_node_link.or(spec.inter_wafer_link).unwrap_or(spec.link);
        Links {
            machine,
            latencies_s: spec.link.latency.0 + inter.latency.0,
        }
    }

    fn crosses(&self, a: DieId, b: DieId) -> bool {
        self.machine.node_of(a) != self.machine.node_of(b)
    }

    /// Bytes of `pairs` that cross a node boundary.
    fn inter_node_bytes(&self, pairs: &[(DieId, DieId, u64)]) -> u64 {
        pairs.iter().filter(|p| self.crosses(p.0, p.1)).map(|p| p.2).sum()
    }

    /// The busiest sender's time: its inter-node bytes over its NIC and its
    /// intra-node bytes over its port (its kind's, on a machine of several),
    /// the two at once.
    fn busiest_send_s(&self, pairs: &[(DieId, DieId, u64)]) -> f64 {
        let mut sent: std::collections::BTreeMap<DieId, (u64, u64)> = Default::default();
        for &(src, dst, b) in pairs {
            let s = sent.entry(src).or_default();
            match self.crosses(src, dst) {
                true => s.0 += b,
                false => s.1 += b,
            }
        }
        let spec = self.machine.spec();
        sent.iter()
            .map(|(&d, &(inter, intra))| {
                let nic = match spec.inter_node_link {
                    Some(_) => spec.nic_of(d),
                    None => spec.inter_wafer_link.unwrap_or(spec.link),
                };
                (inter as f64 / nic.bandwidth.0).max(intra as f64 / spec.port_of(d).bandwidth.0)
            })
            .fold(0.0, f64::max)
    }
}

/// The busiest die's expert kernel at one token a part: what a chunk's
/// kernel costs whatever its tokens (the weights it reads, the launch).
fn expert_weights_s(costs: &CostModel, cx: &PassContext, t: &LayerTraffic) -> f64 {
    t.expert_loads
        .iter()
        .enumerate()
        .map(|(d, loads)| {
            let one: Vec<PartLoad> = loads.iter().map(|p| PartLoad { tokens: 1, ..*p }).collect();
            costs.experts(&one).time(cx.machine.die_spec(DieId(d as u32))).0
        })
        .fold(0.0, f64::max)
}

fn bytes(b: u64) -> String {
    moec_runtime::units::Bytes(b).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_follows_montas_formula() {
        // All-to-all the longer: its n chunks back to back, plus the last all-gather chunk.
        assert!((pipeline_time(8.0, 4.0, 4, 0.0) - (2.0 + 3.0 * 8.0 / 4.0 + 1.0)).abs() < 1e-12);
        // One chunk: one after the other.
        assert_eq!(pipeline_time(8.0, 4.0, 1, 5.0), 12.0);
        // A fixed cost per chunk bounds n.
        assert!(pipeline_time(8.0, 8.0, 8, 1.0) > pipeline_time(8.0, 8.0, 2, 1.0));
    }
}
