//! DeepSeek's expert-parallel load balancer (EPLB), global and hierarchical
//! policies: the baseline every serving engine uses.
//!
//! Global, per MoE layer, from the measured expert loads: **replicate** — each
//! redundant slot adds a replica to the expert with the largest load per
//! replica; then **pack** — the physical experts (each carrying its
//! expert's load divided by its replica count), heaviest first, each into
//! the lightest die that still has room, every die getting the same number
//! of slots. No cross-layer and no topology term: that is what the later
//! placements add. If packing puts two replicas of one expert on the same
//! die, the die holds one copy (and serves both shares).
//!
//! Hierarchical (DeepSeek's policy when the expert groups divide evenly over
//! the nodes, that is cluster nodes or wafers, whose inside is faster than
//! between them): pack the expert *groups* onto nodes by their total load
//! (equal group counts per node), so group-limited routing keeps a token's
//! experts within few nodes; then inside each node, replicate its experts
//! into the node's share of the slots and pack them onto its dies. When
//! the groups do not divide over the nodes (or the nodes have unequal alive
//! dies), it is the global policy, as in DeepSeek's code.

use moec_runtime::machine::DieId;

/// Replica counts per expert after adding `redundant` replicas, each to the
/// expert with the largest load per replica (ties: the lower id).
pub fn replicate(loads: &[f64], redundant: usize) -> Vec<u32> {
    let mut count = vec![1u32; loads.len()];
    for _ in 0..redundant {
        let mut best = 0;
        for e in 1..loads.len() {
            if loads[e] / f64::from(count[e]) > loads[best] / f64::from(count[best]) {
                best = e;
            }
        }
        if let Some(c) = count.get_mut(best) {
            *c += 1;
        }
    }
    count
}

/// Packs `weights` into `packs` packs of equal item count (the item count
/// must divide evenly): heaviest item first, into the lightest pack with
/// room (ties: the lower pack). Returns each item's pack.
pub fn pack(weights: &[f64], packs: usize) -> Vec<usize> {
    let per = weights.len() / packs.max(1);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut load = vec![0.0f64; packs];
    let mut items = vec![0usize; packs];
    let mut out = vec![0usize; weights.len()];
    for i in order {
        let Some(p) = (0..packs)
            .filter(|&p| items[p] < per)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
        else {
            continue;
        };
        out[i] = p;
        load[p] += weights[i];
        items[p] += 1;
    }
    out
}

/// The dies of every expert of one layer: `loads` per expert, over the
/// alive `dies`, with at least `redundant` extra slots (rounded up so every
/// die gets the same number of slots).
pub fn place_layer(loads: &[f64], dies: &[DieId], redundant: usize) -> Vec<Vec<DieId>> {
    let n = dies.len().max(1);
    let slots = (loads.len() + redundant).div_ceil(n) * n;
    let count = replicate(loads, slots - loads.len());
    // Physical experts: each replica of e, in expert order.
    let physical: Vec<usize> = (0..loads.len())
        .flat_map(|e| std::iter::repeat_n(e, count[e] as usize))
        .collect();
    let weights: Vec<f64> = physical.iter().map(|&e| loads[e] / f64::from(count[e])).collect();
    let packed = pack(&weights, n);
    let mut placed: Vec<Vec<DieId>> = vec![Vec::new(); loads.len()];
    for (slot, &e) in physical.iter().enumerate() {
        let die = dies[packed[slot]];
        if !placed[e].contains(&die) {
            placed[e].push(die);
        }
    }
    for p in &mut placed {
        p.sort();
    }
    placed
}

/// The hierarchical policy for one layer: `loads` per expert in `groups`
/// contiguous groups, over `nodes` (each node's alive dies), with at least
/// `redundant` extra slots. Falls back to [`place_layer`] over all dies when
/// the groups do not divide over the nodes or the nodes differ in size.
pub fn place_layer_hierarchical(
    loads: &[f64],
    groups: usize,
    nodes: &[Vec<DieId>],
    redundant: usize,
) -> Vec<Vec<DieId>> {
    let all: Vec<DieId> = nodes.iter().flatten().copied().collect();
    let per_node = nodes.first().map_or(0, Vec::len);
    let even = groups > 0
        && !nodes.is_empty()
        && groups.is_multiple_of(nodes.len())
        && loads.len().is_multiple_of(groups)
        && per_node > 0
        && nodes.iter().all(|n| n.len() == per_node);
    if !even {
        return place_layer(loads, &all, redundant);
    }
    let group_size = loads.len() / groups;
    let group_loads: Vec<f64> = loads.chunks(group_size).map(|g| g.iter().sum()).collect();
    let node_of_group = pack(&group_loads, nodes.len());
    let slots = (loads.len() + redundant).div_ceil(all.len()) * all.len();
    let slots_per_node = slots / nodes.len();
    let mut placed: Vec<Vec<DieId>> = vec![Vec::new(); loads.len()];
    for (node, dies) in nodes.iter().enumerate() {
        // The node's experts, in id order, and their loads.
        let experts: Vec<usize> = (0..loads.len())
            .filter(|&e| node_of_group[e / group_size] == node)
            .collect();
        let node_loads: Vec<f64> = experts.iter().map(|&e| loads[e]).collect();
        for (e, holders) in experts
            .iter()
            .zip(place_layer(&node_loads, dies, slots_per_node - experts.len()))
        {
            placed[*e] = holders;
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_go_to_the_heaviest_per_replica() {
        // 90 splits twice (90 -> 45, 45 -> 30), then 40 beats 30.
        assert_eq!(replicate(&[90.0, 40.0, 10.0, 5.0], 3), vec![3, 2, 1, 1]);
    }

    #[test]
    fn packing_is_heaviest_first_into_the_lightest_pack_with_equal_counts() {
        let weights = [10.0, 9.0, 8.0, 7.0, 2.0, 1.0];
        let p = pack(&weights, 2);
        // 10 -> A, 9 -> B, 8 -> B (17), 7 -> A (17), then A and B tie at 17:
        // 2 -> A, and A is full (3 items), so 1 -> B.
        assert_eq!(p, vec![0, 1, 1, 0, 0, 1]);
        for pack in 0..2 {
            assert_eq!(p.iter().filter(|&&x| x == pack).count(), 3);
        }
    }

    #[test]
    fn hierarchical_keeps_each_group_on_one_node_and_balances_the_nodes() {
        // 16 experts in 4 groups of 4 over 2 nodes of 2 dies; groups 0 and 1
        // are hot, so packing by group load puts them on different nodes.
        let nodes = vec![vec![DieId(0), DieId(1)], vec![DieId(2), DieId(3)]];
        let mut loads = vec![1.0; 16];
        loads[0] = 40.0;
        loads[5] = 30.0;
        let placed = place_layer_hierarchical(&loads, 4, &nodes, 4);
        let node = |d: DieId| d.0 / 2;
        for g in 0..4 {
            let homes: std::collections::BTreeSet<u32> = (g * 4..g * 4 + 4)
                .flat_map(|e| placed[e].iter().map(|&d| node(d)))
                .collect();
            assert_eq!(homes.len(), 1, "group {g} spans nodes: {placed:?}");
        }
        let node_of_group = |g: usize| node(placed[g * 4][0]);
        assert_ne!(node_of_group(0), node_of_group(1));
        // Equal slots per die (5 each: 16 experts + 4 redundant over 4 dies),
        // and the hot experts replicated inside their node.
        assert!(placed[0].len() >= 2 && placed[5].len() >= 2, "{placed:?}");
        assert!(placed.iter().all(|d| !d.is_empty()));
    }

    #[test]
    fn hierarchical_is_global_when_groups_do_not_divide_over_the_nodes() {
        let nodes = vec![vec![DieId(0)], vec![DieId(1)], vec![DieId(2)]];
        let loads = [5.0, 1.0, 1.0, 1.0, 3.0, 2.0];
        let all: Vec<DieId> = nodes.iter().flatten().copied().collect();
        assert_eq!(
            place_layer_hierarchical(&loads, 2, &nodes, 3),
            place_layer(&loads, &all, 3)
        );
    }

    #[test]
    fn a_layer_is_balanced_better_than_round_robin() {
        let dies: Vec<DieId> = (0..4).map(DieId).collect();
        let loads = [100.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0];
        let placed = place_layer(&loads, &dies, 4);
        // The hot expert gets the most replicas, every expert at least one.
        assert!(placed.iter().all(|d| !d.is_empty()));
        assert!(placed[0].len() >= 3, "{placed:?}");
        // Load per die when each expert's tokens split evenly over its replicas.
        let mut per_die = [0.0; 4];
        for (e, holders) in placed.iter().enumerate() {
            for d in holders {
                per_die[d.0 as usize] += loads[e] / holders.len() as f64;
            }
        }
        let max = per_die.iter().copied().fold(0.0, f64::max);
        // Round robin would put 100 + 10 on one die: 110.
        assert!(max < 60.0, "{per_die:?}");
    }
}
