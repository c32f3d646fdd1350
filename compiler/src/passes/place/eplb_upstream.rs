//! DeepSeek's EPLB exactly as its code computes it (`eplb.py`,
//! `rebalance_experts`, deepseek-ai/EPLB at d52c72d): the same steps in the
//! same order, in float32, with the same tie order, so that the
//! `physical_to_logical_map` it returns is upstream's slot for slot
//! (`tests/eplb.rs` checks 25 cases upstream computed). `eplb.rs` maps its
//! slots onto dies for the `eplb` placements.
//!
//! What a reimplementation easily gets wrong, and this does not: slots are
//! slots, so two replicas of one expert may share a GPU (an engine splits
//! that expert's tokens over both); loads are float32 and per-replica
//! shares are float32 quotients; packing skips the sort when each pack
//! takes one item; and the entry point chooses the hierarchical policy
//! whenever the groups divide over the nodes, as SGLang's default does.
//!
//! Tie orders, as torch on the CPU gives them: its default (unstable)
//! descending sort is libstdc++'s `std::sort` (introsort: median-of-three
//! quicksort, a heapsort past the depth limit, insertion sort below 16
//! items), so equal weights land where that algorithm puts them, and it is
//! reproduced here step for step (`introsort`); `max` returns the first
//! maximum, and Python's `min` the first minimum.

/// Upstream's result for every layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebalanced {
    /// `[layer][physical slot]`: the logical expert each slot holds; slot
    /// `s` lives on GPU `s / (num_replicas / num_gpus)`.
    pub physical_to_logical: Vec<Vec<usize>>,
    /// `[layer][physical slot]`: which replica of its expert the slot is.
    pub replica_rank: Vec<Vec<usize>>,
    /// `[layer][logical expert]`: its number of replicas.
    pub logical_count: Vec<Vec<usize>>,
}

/// Why upstream's asserts would fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// `balanced_packing`: items into `packs` packs of equal count, heaviest
/// first, each into the lightest pack with room. Returns each item's pack
/// and its rank in the pack.
fn balanced_packing(weight: &[f32], packs: usize) -> (Vec<usize>, Vec<usize>) {
    let n = weight.len();
    let per_pack = n / packs;
    if per_pack == 1 {
        return ((0..n).collect(), vec![0; n]);
    }
    // torch's `weight.sort(-1, descending=True).indices`.
    let mut pairs: Vec<(f32, usize)> = weight.iter().copied().zip(0..).collect();
    introsort(&mut pairs, &|a: &(f32, usize), b: &(f32, usize)| a.0 > b.0);
    let order: Vec<usize> = pairs.into_iter().map(|(_, i)| i).collect();
    let mut pack_weight = vec![0.0f32; packs];
    let mut pack_items = vec![0usize; packs];
    let (mut pack_of, mut rank) = (vec![0usize; n], vec![0usize; n]);
    for item in order {
        // The first lightest pack with room.
        let mut best: Option<usize> = None;
        for p in 0..packs {
            if pack_items[p] < per_pack && best.is_none_or(|b| pack_weight[p] < pack_weight[b]) {
                best = Some(p);
            }
        }
        let Some(p) = best else { continue };
        pack_of[item] = p;
        rank[item] = pack_items[p];
        pack_weight[p] += weight[item];
        pack_items[p] += 1;
    }
    (pack_of, rank)
}

/// libstdc++'s `std::sort` (what torch's CPU sort calls when it need not
/// be stable), on `v` under the strict order `less`.
fn introsort<T: Copy>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    const THRESHOLD: usize = 16;
    fn depth_limit(n: usize) -> usize {
        2 * (usize::BITS - 1 - n.leading_zeros()) as usize
    }
    fn insertion<T: Copy>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
        for i in 1..v.len() {
            let x = v[i];
            if less(&x, &v[0]) {
                v.copy_within(0..i, 1);
                v[0] = x;
            } else {
                linear_insert(v, i, less);
            }
        }
    }
    /// `__unguarded_linear_insert`: a smaller element is known to be before `i`.
    fn linear_insert<T: Copy>(v: &mut [T], mut i: usize, less: &dyn Fn(&T, &T) -> bool) {
        let x = v[i];
        while less(&x, &v[i - 1]) {
            v[i] = v[i - 1];
            i -= 1;
        }
        v[i] = x;
    }
    fn loop_<T: Copy>(v: &mut [T], mut depth: usize, less: &dyn Fn(&T, &T) -> bool) {
        let mut last = v.len();
        while last > THRESHOLD {
            if depth == 0 {
                heapsort(&mut v[..last], less);
                return;
            }
            depth -= 1;
            // `__move_median_to_first(first, first + 1, mid, last - 1)`.
            let (a, b, c) = (1, last / 2, last - 1);
            let median = if less(&v[a], &v[b]) {
                if less(&v[b], &v[c]) {
                    b
                } else if less(&v[a], &v[c]) {
                    c
                } else {
                    a
                }
            } else if less(&v[a], &v[c]) {
                a
            } else if less(&v[b], &v[c]) {
                c
            } else {
                b
            };
            v.swap(0, median);
            // `__unguarded_partition(first + 1, last, first)`.
            let (mut lo, mut hi) = (1, last);
            let cut = loop {
                while less(&v[lo], &v[0]) {
                    lo += 1;
                }
                hi -= 1;
                while less(&v[0], &v[hi]) {
                    hi -= 1;
                }
                if lo >= hi {
                    break lo;
                }
                v.swap(lo, hi);
                lo += 1;
            };
            loop_(&mut v[cut..last], depth, less);
            last = cut;
        }
    }
    let n = v.len();
    if n < 2 {
        return;
    }
    loop_(v, depth_limit(n), less);
    // `__final_insertion_sort`.
    if n > THRESHOLD {
        insertion(&mut v[..THRESHOLD], less);
        for i in THRESHOLD..n {
            linear_insert(v, i, less);
        }
    } else {
        insertion(v, less);
    }
}

/// libstdc++'s `__adjust_heap` (with its `__push_heap`), for `heapsort`.
fn adjust_heap<T: Copy>(v: &mut [T], mut hole: usize, len: usize, x: T, less: &dyn Fn(&T, &T) -> bool) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len % 2 == 0 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    // `__push_heap`.
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && less(&v[parent], &x) {
        v[hole] = v[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    v[hole] = x;
}
/// libstdc++'s `__partial_sort(first, last, last)`, where its introsort
/// goes past the depth limit: make a heap, then sort it.
fn heapsort<T: Copy>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    let len = v.len();
    if len >= 2 {
        let mut parent = (len - 2) / 2;
        loop {
            let x = v[parent];
            adjust_heap(v, parent, len, x, less);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let x = v[last];
        v[last] = v[0];
        adjust_heap(v, 0, last, x, less);
    }
}

/// `replicate_experts`: `num_phy` slots for the row's experts, each extra
/// slot to the expert with the largest load per replica. Returns each
/// slot's expert, its replica rank, and each expert's count.
fn replicate_experts(weight: &[f32], num_phy: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let num_log = weight.len();
    let mut phy2log: Vec<usize> = (0..num_phy).collect();
    let mut rank = vec![0usize; num_phy];
    let mut count = vec![1usize; num_log];
    for slot in num_log..num_phy {
        // The first maximum of weight / count, in float32.
        let mut best = 0;
        for e in 1..num_log {
            if weight[e] / count[e] as f32 > weight[best] / count[best] as f32 {
                best = e;
            }
        }
        phy2log[slot] = best;
        rank[slot] = count[best];
        count[best] += 1;
    }
    (phy2log, rank, count)
}

/// The inverse of a permutation.
fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// `rebalance_experts_hierarchical` on one layer's loads.
fn hierarchical_layer(
    weight: &[f32],
    num_physical: usize,
    (num_groups, num_nodes, num_gpus): (usize, usize, usize),
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let num_logical = weight.len();
    let group_size = num_logical / num_groups;
    let groups_per_node = num_groups / num_nodes;
    let per_gpu = num_physical / num_gpus;
    let per_node_log = num_logical / num_nodes;
    let per_node_phy = num_physical / num_nodes;
    // Step 1: expert groups to nodes.
    let tokens_per_group: Vec<f32> = weight.chunks(group_size).map(|g| g.iter().sum()).collect();
    let (group_pack, group_rank) = balanced_packing(&tokens_per_group, num_nodes);
    let log2mlog: Vec<usize> = (0..num_logical)
        .map(|e| {
            let g = e / group_size;
            (group_pack[g] * groups_per_node + group_rank[g]) * group_size + e % group_size
        })
        .collect();
    let mlog2log = inverse(&log2mlog);
    // Step 2: replicas within each node; step 3: a node's slots to its GPUs.
    let mut pphy2log = Vec::with_capacity(num_physical);
    let mut pphy_rank = Vec::with_capacity(num_physical);
    let mut mlog_count = Vec::with_capacity(num_logical);
    for node in 0..num_nodes {
        let tokens_per_mlog: Vec<f32> = (0..per_node_log)
            .map(|i| weight[mlog2log[node * per_node_log + i]])
            .collect();
        let (phy2mlog, phy_rank, count) = replicate_experts(&tokens_per_mlog, per_node_phy);
        let tokens_per_phy: Vec<f32> = phy2mlog.iter().map(|&m| tokens_per_mlog[m] / count[m] as f32).collect();
        let (pack, rank) = balanced_packing(&tokens_per_phy, num_gpus / num_nodes);
        let phy2pphy: Vec<usize> = pack.iter().zip(&rank).map(|(&p, &r)| p * per_gpu + r).collect();
        let pphy2phy = inverse(&phy2pphy);
        for &phy in &pphy2phy {
            pphy2log.push(mlog2log[phy2mlog[phy] + node * per_node_log]);
            pphy_rank.push(phy_rank[phy]);
        }
        mlog_count.extend(count);
    }
    let logical_count = log2mlog.iter().map(|&m| mlog_count[m]).collect();
    (pphy2log, pphy_rank, logical_count)
}

/// `rebalance_experts`: every layer's loads (`weight[layer][expert]`) to
/// `num_replicas` slots over `num_gpus` GPUs in `num_nodes` nodes, the
/// hierarchical policy when `num_groups` divides over the nodes, else the
/// global one (upstream's hierarchical with one group and one node).
pub fn rebalance_experts(
    weight: &[Vec<f32>],
    num_replicas: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
) -> Result<Rebalanced, Refused> {
    let (groups, nodes) = if num_nodes > 0 && num_groups.is_multiple_of(num_nodes) {
        (num_groups, num_nodes)
    } else {
        (1, 1)
    };
    rebalance_experts_hierarchical(weight, num_replicas, groups, nodes, num_gpus)
}

/// `rebalance_experts_hierarchical` on every layer, after upstream's
/// asserts (refused here): the policy [`rebalance_experts`] chooses, given
/// directly. With one group and one node it is the global policy.
pub fn rebalance_experts_hierarchical(
    weight: &[Vec<f32>],
    num_replicas: usize,
    groups: usize,
    nodes: usize,
    num_gpus: usize,
) -> Result<Rebalanced, Refused> {
    let experts = weight.first().map_or(0, Vec::len);
    let checks = [
        (
            groups > 0 && experts.is_multiple_of(groups),
            "the experts divide into the groups",
        ),
        (
            nodes > 0 && groups.is_multiple_of(nodes),
            "the groups divide over the nodes",
        ),
        (
            num_gpus > 0 && num_gpus.is_multiple_of(nodes),
            "the GPUs divide over the nodes",
        ),
        (
            num_gpus > 0 && num_replicas.is_multiple_of(num_gpus),
            "the slots divide over the GPUs",
        ),
        (num_replicas >= experts, "every expert has a slot"),
        (experts.is_multiple_of(nodes), "the experts divide over the nodes"),
        (num_replicas.is_multiple_of(nodes), "the slots divide over the nodes"),
        (
            weight.iter().all(|l| l.len() == experts),
            "every layer has the same experts",
        ),
    ];
    if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(Refused(format!(
            "EPLB needs {what} ({experts} experts, {groups} groups, {nodes} nodes, {num_gpus} GPUs, {num_replicas} slots)"
        )));
    }
    let mut out = Rebalanced {
        physical_to_logical: Vec::with_capacity(weight.len()),
        replica_rank: Vec::with_capacity(weight.len()),
        logical_count: Vec::with_capacity(weight.len()),
    };
    for layer in weight {
        let (phy2log, rank, count) = hierarchical_layer(layer, num_replicas, (groups, nodes, num_gpus));
        out.physical_to_logical.push(phy2log);
        out.replica_rank.push(rank);
        out.logical_count.push(count);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_introsort_sorts_and_keeps_every_item() {
        // Many ties and sizes on both sides of the insertion-sort threshold.
        let mut rng = moec_runtime::rng::Rng::new(7);
        for n in [0usize, 1, 2, 15, 16, 17, 33, 100, 320, 1000] {
            let mut v: Vec<(f32, usize)> = (0..n).map(|i| ((rng.next_u64() % 7) as f32, i)).collect();
            introsort(&mut v, &|a: &(f32, usize), b: &(f32, usize)| a.0 > b.0);
            assert!(v.windows(2).all(|w| w[0].0 >= w[1].0), "n {n}");
            let mut ids: Vec<usize> = v.iter().map(|x| x.1).collect();
            ids.sort_unstable();
            assert_eq!(ids, (0..n).collect::<Vec<_>>());
        }
        // The heapsort the introsort falls back on past its depth limit.
        for n in [2usize, 3, 16, 17, 100] {
            let mut v: Vec<(f32, usize)> = (0..n).map(|i| ((rng.next_u64() % 5) as f32, i)).collect();
            heapsort(&mut v, &|a: &(f32, usize), b: &(f32, usize)| a.0 > b.0);
            assert!(v.windows(2).all(|w| w[0].0 >= w[1].0), "n {n}");
        }
    }
}
