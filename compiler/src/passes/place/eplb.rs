//! DeepSeek's expert-parallel load balancer (EPLB) as a placement: upstream's
//! `rebalance_experts` (`eplb_upstream.rs`, exact to its golden outputs) on
//! every MoE layer's loads, its physical slots mapped onto the dies.
//!
//! The GPUs upstream numbers are the expert dies ordered by node (a cluster
//! node or a wafer: the machine's `node_of`), then by id; slot `s` lives on
//! GPU `s / slots_per_gpu`. Slots are slots: when packing puts two replicas
//! of one expert on one die, that die lists the expert twice, holds two
//! copies of its weights, and the copy rule (`Placement::copy_for`) spreads
//! the expert's tokens over both, as an engine does. Within one die the
//! order of its slots is not kept (a die's slots are listed by expert).
//!
//! Three policies: `eplb` is upstream's entry point (hierarchical when the
//! expert groups divide over the nodes, global otherwise, as SGLang's
//! default); `eplb_hierarchical` and `eplb_global` force one. The
//! hierarchical policy also needs every node to have the same number of
//! expert dies; where it does not, the global policy runs and a note says so.
//!
//! The loads are the counts the workload gives where it gives them
//! (`RoutingStats::balance_loads`): a `counts(...)` file's recorded counts,
//! a trace's own steps; otherwise the routing source's first steps.

use super::eplb_upstream::{rebalance_experts, rebalance_experts_hierarchical};
use moec_runtime::machine::DieId;

/// Which of upstream's policies to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Upstream's choice: hierarchical when the groups divide over the nodes.
    Upstream,
    Hierarchical,
    Global,
}

/// The expert dies as upstream's GPUs, and their nodes.
pub struct Gpus {
    /// The dies in GPU order: by node, then by id.
    pub dies: Vec<DieId>,
    /// Nodes when every node has the same number of dies, else `None`.
    pub nodes: Option<usize>,
}

impl Gpus {
    /// `dies` (the expert dies) grouped by `node_of`.
    pub fn new(dies: &[DieId], node_of: impl Fn(DieId) -> u32) -> Gpus {
        let mut ordered: Vec<(u32, DieId)> = dies.iter().map(|&d| (node_of(d), d)).collect();
        ordered.sort_unstable();
        let sizes: Vec<usize> = ordered.chunk_by(|a, b| a.0 == b.0).map(<[_]>::len).collect();
        let equal = sizes.windows(2).all(|w| w[0] == w[1]);
        Gpus {
            dies: ordered.into_iter().map(|(_, d)| d).collect(),
            nodes: equal.then_some(sizes.len().max(1)),
        }
    }
}

/// EPLB's layouts: `[layer][expert]` the dies of its slots (ascending, a
/// die twice for two slots), empty for dense layers; and what a reader
/// should know about the policy that ran.
pub struct Placed {
    pub layouts: Vec<Vec<Vec<DieId>>>,
    pub note: String,
}

/// Places every MoE layer (`loads[layer]` per expert; empty for a dense
/// layer) over `gpus` with `groups` expert groups and at least `redundant`
/// extra slots a layer, rounded up so every die gets as many.
pub fn place(
    loads: &[Vec<f64>],
    groups: usize,
    gpus: &Gpus,
    redundant: usize,
    policy: Policy,
) -> Result<Placed, String> {
    let n = gpus.dies.len();
    let moe: Vec<usize> = (0..loads.len()).filter(|&l| !loads[l].is_empty()).collect();
    let experts = moe.first().map_or(0, |&l| loads[l].len());
    let mut layouts = vec![Vec::new(); loads.len()];
    if moe.is_empty() || n == 0 {
        return Ok(Placed {
            layouts,
            note: String::new(),
        });
    }
    let slots = (experts + redundant).div_ceil(n) * n;
    let weight: Vec<Vec<f32>> = moe
        .iter()
        .map(|&l| loads[l].iter().map(|&x| x as f32).collect())
        .collect();
    let groups = groups.max(1);
    let (result, ran) = match (policy, gpus.nodes) {
        (Policy::Global, _) => (
            rebalance_experts_hierarchical(&weight, slots, 1, 1, n),
            "global".to_string(),
        ),
        (_, None) => (
            rebalance_experts_hierarchical(&weight, slots, 1, 1, n),
            "global (the nodes hold different numbers of expert dies)".to_string(),
        ),
        (Policy::Upstream, Some(nodes)) => {
            let hierarchical = groups.is_multiple_of(nodes);
            let ran = if hierarchical {
                format!("hierarchical ({groups} groups over {})", plural(nodes, "node"))
            } else {
                format!("global ({groups} groups do not divide over {})", plural(nodes, "node"))
            };
            (rebalance_experts(&weight, slots, groups, nodes, n), ran)
        }
        (Policy::Hierarchical, Some(nodes)) if groups.is_multiple_of(nodes) => (
            rebalance_experts_hierarchical(&weight, slots, groups, nodes, n),
            format!("hierarchical ({groups} groups over {})", plural(nodes, "node")),
        ),
        (Policy::Hierarchical, Some(nodes)) => (
            rebalance_experts_hierarchical(&weight, slots, 1, 1, n),
            format!("global ({groups} groups do not divide over {})", plural(nodes, "node")),
        ),
    };
    let result = result.map_err(|e| e.0)?;
    let per_gpu = slots / n;
    for (row, &l) in moe.iter().enumerate() {
        let mut layer = vec![Vec::new(); experts];
        for (s, &e) in result.physical_to_logical[row].iter().enumerate() {
            layer[e].push(gpus.dies[s / per_gpu]);
        }
        for dies in &mut layer {
            dies.sort();
        }
        layouts[l] = layer;
    }
    Ok(Placed {
        layouts,
        note: format!("eplb: {ran} policy, {slots} slots a layer ({per_gpu} a die)"),
    })
}

/// `1 node`, `4 nodes`.
fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// One copy per die: the layouts with each die's second slot of an expert
/// dropped, for the plans whose migration policies track holders as a set
/// (a die holds an expert or not).
pub fn distinct(mut layouts: Vec<Vec<Vec<DieId>>>) -> Vec<Vec<Vec<DieId>>> {
    for dies in layouts.iter_mut().flatten() {
        dies.dedup();
    }
    layouts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dies(n: u32) -> Vec<DieId> {
        (0..n).map(DieId).collect()
    }

    #[test]
    fn two_slots_of_one_expert_on_one_die_stay_two() {
        // Upstream's first golden-style case by hand: 4 experts, 8 slots on
        // 2 GPUs; the hottest expert gets 4 slots, so some GPU holds two.
        let gpus = Gpus::new(&dies(2), |_| 0);
        let placed = place(&[vec![100.0, 10.0, 10.0, 10.0]], 1, &gpus, 4, Policy::Global).unwrap();
        let layer = &placed.layouts[0];
        let slots: usize = layer.iter().map(Vec::len).sum();
        assert_eq!(slots, 8);
        assert!(layer[0].windows(2).any(|w| w[0] == w[1]), "{layer:?}");
        for d in 0..2 {
            assert_eq!(layer.iter().flatten().filter(|&&x| x == DieId(d)).count(), 4);
        }
    }

    #[test]
    fn upstream_chooses_hierarchical_when_groups_divide_over_the_nodes() {
        // 16 experts in 4 groups over 2 nodes of 2 dies: each group's experts
        // stay on one node.
        let gpus = Gpus::new(&dies(4), |d| d.0 / 2);
        assert_eq!(gpus.nodes, Some(2));
        let mut loads = vec![1.0; 16];
        loads[0] = 40.0;
        loads[5] = 30.0;
        let placed = place(&[loads.clone()], 4, &gpus, 4, Policy::Upstream).unwrap();
        assert!(placed.note.contains("hierarchical"), "{}", placed.note);
        for g in 0..4 {
            let homes: std::collections::BTreeSet<u32> = (g * 4..g * 4 + 4)
                .flat_map(|e| placed.layouts[0][e].iter().map(|&d| d.0 / 2))
                .collect();
            assert_eq!(homes.len(), 1, "group {g} spans nodes: {:?}", placed.layouts[0]);
        }
        // Three groups do not divide over 2 nodes: upstream runs the global policy.
        let placed = place(&[vec![1.0; 12]], 3, &gpus, 4, Policy::Upstream).unwrap();
        assert!(placed.note.contains("global"), "{}", placed.note);
    }

    #[test]
    fn unequal_nodes_run_the_global_policy_and_dense_layers_stay_empty() {
        let gpus = Gpus::new(&dies(3), |d| u32::from(d.0 > 0));
        assert_eq!(gpus.nodes, None);
        let placed = place(&[Vec::new(), vec![5.0, 1.0, 1.0]], 1, &gpus, 3, Policy::Hierarchical).unwrap();
        assert!(placed.layouts[0].is_empty());
        assert!(placed.note.contains("different numbers"), "{}", placed.note);
        assert_eq!(placed.layouts[1].iter().map(Vec::len).sum::<usize>(), 6);
        for holders in &distinct(placed.layouts)[1] {
            assert!(holders.windows(2).all(|w| w[0] != w[1]), "{holders:?}");
        }
    }
}
