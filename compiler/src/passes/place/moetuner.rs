//! MoETuner (Go et al., 2025): expert placement by two integer programs
//! that use how tokens move from one MoE layer to the next.
//!
//! **ILP 1**, per MoE layer: group the `E` experts into `G = min(E, D)`
//! clusters, one per device, with balanced load. Binary `x[c][e]`; each
//! expert in exactly one cluster (the paper leaves this out; without it the
//! program may drop experts); each cluster non-empty and holding at most
//! `ceil(E / G)` experts (so memory stays as even as round robin's);
//! minimise `sum_c |T_c - mean|`, `T_c = sum_e P[e] x[c][e]`, the absolute
//! value linearised by `d_c >= +-(T_c - mean)`.
//!
//! **ILP 2**, over all MoE layers: place each layer's clusters on devices.
//! `C[l][c1][c2]` tokens from cluster `c1` of layer `l` to cluster `c2` of
//! the next; binary `y[l][c][g]`, each cluster on one device, each device at
//! most one cluster per layer; minimise `sum_l z_l` with, for every device
//! pair `g1 != g2`, `z_l >= sum C[l][c1][c2] w / B[g1][g2]`, where
//! `w >= y[l][c1][g1] + y[l+1][c2][g2] - 1` linearises the product and
//! `B[g1][g2]` is the route's bandwidth (`1 / sum over its links of
//! 1 / bandwidth`): each layer pays its worst device pair.
//!
//! Both are solved by HiGHS (`passes/milp.rs`; microlp where HiGHS is not
//! built) to the paper's 2.5% gap (it used Gurobi), under a node budget and
//! a time limit, warm started from a greedy solution (largest load first
//! into the lightest cluster with room; each next layer's cluster onto the
//! free device that keeps most of its tokens where they are). The gap is
//! reported against the search's own bound (HiGHS's dual bound; microlp's
//! LP relaxation). Programs larger than [`Caps`] are not handed to the
//! solver: the greedy solution
//! stands, and the report says so.

use crate::passes::milp::{self, Ended, Limits, Program};
use crate::passes::PassContext;
use good_lp::{constraint, variable, Constraint, Expression, Variable};
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::model::LayerKind;
use std::collections::BTreeMap;

/// When each program stops: the paper's 2.5% gap, a node budget that
/// decides on any machine, and seconds as a backstop. Layers run one after
/// another, so ILP 1's limits are per layer.
pub const ILP1_LIMITS: Limits = Limits {
    time_s: 2.0,
    rel_gap: 0.025,
    nodes: 2_000,
};
pub const ILP2_LIMITS: Limits = Limits {
    time_s: 10.0,
    rel_gap: 0.025,
    nodes: 500,
};

/// The limits and size caps a compile gives the programs: the defaults, or
/// `seconds` each with no node budget and caps past the papers' setups.
fn limits_of(cx: &PassContext) -> (Limits, Limits, Caps) {
    match cx.milp_seconds {
        None => (ILP1_LIMITS, ILP2_LIMITS, Caps::DEFAULT),
        Some(seconds) => {
            let open = Limits {
                time_s: seconds,
                rel_gap: 0.025,
                nodes: u64::MAX,
            };
            (open, open, Caps::EXTENDED)
        }
    }
}

/// `layouts[layer][expert]`: the dies of each expert (empty for dense layers).
pub type Layouts = Vec<Vec<Vec<DieId>>>;

/// MoETuner's layout of every layer, and one line per program on how it
/// was solved.
pub fn place(cx: &PassContext, dies: &[DieId]) -> Result<(Layouts, Vec<String>), String> {
    let stats = cx.stats_with_transitions()?;
    let moe_layers: Vec<usize> = (0..cx.model.layers)
        .filter(|&l| cx.model.layer_kind(l) == LayerKind::Moe)
        .map(|l| l as usize)
        .collect();
    let experts = cx.model.moe.as_ref().map_or(0, |m| m.experts) as usize;
    let clusters = experts.min(dies.len());
    let mut notes = Vec::new();
    let (ilp1, ilp2, caps) = limits_of(cx);
    let mut clusters_of = Vec::with_capacity(moe_layers.len());
    let mut worst: Option<(usize, Solved)> = None;
    for &l in &moe_layers {
        let (assign, solved) = cluster_layer(&stats.loads[l], clusters, ilp1, caps);
        if worst
            .as_ref()
            .is_none_or(|(_, w)| solved.gap().unwrap_or(1.0) > w.gap().unwrap_or(1.0))
        {
            worst = Some((l, solved));
        }
        clusters_of.push(assign);
    }
    if let Some((l, w)) = worst {
        notes.push(format!(
            "moetuner ILP 1 ({} layers, {clusters} clusters, {}): layer with the widest gap {l}: spread {:.3}, {}{}",
            moe_layers.len(),
            milp::solver_name(),
            w.objective,
            w.status,
            gap_text(&w)
        ));
    }
    let transitions: Vec<BTreeMap<(u32, u32), f64>> =
        moe_layers.iter().map(|&l| stats.transitions[l].clone()).collect();
    // In tokens per second, so that costs come out in seconds.
    let token_bytes = (cx.model.hidden * cx.model.dtype.bytes()) as f64;
    let bandwidth: Vec<Vec<f64>> = route_bandwidths(cx.machine, dies)
        .into_iter()
        .map(|row| row.into_iter().map(|b| b / token_bytes).collect())
        .collect();
    let (devices, solved) = assign_devices(&clusters_of, &transitions, &bandwidth, ilp2, caps);
    notes.push(format!(
        "moetuner ILP 2 ({} layers on {} dies, {}): cost {:.3e} s, {}{}",
        moe_layers.len(),
        dies.len(),
        milp::solver_name(),
        solved.objective,
        solved.status,
        gap_text(&solved)
    ));
    let mut layouts: Vec<Vec<Vec<DieId>>> = vec![Vec::new(); cx.model.layers as usize];
    for (i, &l) in moe_layers.iter().enumerate() {
        layouts[l] = clusters_of[i].iter().map(|&c| vec![dies[devices[i][c]]]).collect();
    }
    Ok((layouts, notes))
}

fn gap_text(s: &Solved) -> String {
    s.gap()
        .map_or(String::new(), |g| format!(", gap {:.1}% to the bound", 100.0 * g))
}

/// `B[g1][g2]`: the bandwidth of the route between two dies, as one link
/// that takes as long per byte as the route's links one after another.
fn route_bandwidths(machine: &Machine, dies: &[DieId]) -> Vec<Vec<f64>> {
    dies.iter()
        .map(|&a| {
            dies.iter()
                .map(|&b| {
                    let per_byte: f64 = machine.route(a, b).map_or(f64::INFINITY, |r| {
                        r.links.iter().map(|&id| 1.0 / machine.link(id).spec.bandwidth.0).sum()
                    });
                    if a == b || per_byte <= 0.0 {
                        f64::INFINITY
                    } else {
                        1.0 / per_byte
                    }
                })
                .collect()
        })
        .collect()
}

/// The program sizes handed to the solver; past them the greedy solution
/// stands. The defaults keep a compile within seconds (ILP 2 on 8 GPUs, 127
/// thousand products, spends 20 s in HiGHS's root node alone);
/// `--milp-seconds` lifts them to the papers' setups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Binaries (`x` or `y`).
    pub binaries: usize,
    /// ILP 2's linearised products (`w`).
    pub products: usize,
}

impl Caps {
    pub const DEFAULT: Caps = Caps {
        binaries: 4096,
        products: 65_536,
    };
    pub const EXTENDED: Caps = Caps {
        binaries: 65_536,
        products: 4_194_304,
    };
}

/// How one program was solved.
#[derive(Clone, Debug, PartialEq)]
pub struct Solved {
    /// The objective of the solution kept.
    pub objective: f64,
    /// The best lower bound the search proved (`None` when not solved).
    pub bound: Option<f64>,
    pub status: Status,
}

/// How a program's solve ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Proven optimal by the solver.
    Optimal,
    /// Optimal because every feasible solution is equally good.
    AllEqual(&'static str),
    /// The time limit ended the search with a feasible solution.
    TimeLimit,
    /// The node budget ended the search with a feasible solution.
    NodeLimit,
    /// The search stopped within the requested gap.
    GapLimit,
    /// The greedy solution stands; why.
    Greedy(String),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Optimal => f.write_str("optimal"),
            Status::AllEqual(why) => write!(f, "optimal ({why})"),
            Status::TimeLimit => f.write_str("time limit"),
            Status::NodeLimit => f.write_str("node limit"),
            Status::GapLimit => f.write_str("gap limit"),
            Status::Greedy(why) => write!(f, "greedy ({why})"),
        }
    }
}

impl Solved {
    /// Relative gap to the bound, when known (0 when proven optimal: an
    /// LP relaxation's bound is weak on these programs).
    pub fn gap(&self) -> Option<f64> {
        if matches!(self.status, Status::Optimal | Status::AllEqual(_)) {
            return Some(0.0);
        }
        Some(relative_gap(self.objective, self.bound?))
    }
}

/// How far `objective` may be above the optimum that `bound` proves, as a
/// fraction of it (0 for an objective of 0). NodeBalance reports the same.
pub fn relative_gap(objective: f64, bound: f64) -> f64 {
    if objective.abs() < 1e-12 {
        0.0
    } else {
        ((objective - bound) / objective.abs()).max(0.0)
    }
}

/// ILP 1 for one layer: each expert's cluster (`0..clusters`).
pub fn cluster_layer(loads: &[f64], clusters: usize, limits: Limits, caps: Caps) -> (Vec<usize>, Solved) {
    let experts = loads.len();
    let cap = experts.div_ceil(clusters.max(1));
    let mean = loads.iter().sum::<f64>() / clusters.max(1) as f64;
    let greedy = greedy_clusters(loads, clusters, cap);
    let spread = |assign: &[usize]| {
        let mut t = vec![0.0; clusters];
        for (e, &c) in assign.iter().enumerate() {
            t[c] += loads[e];
        }
        t.iter().map(|x| (x - mean).abs()).sum::<f64>()
    };
    let greedy_objective = spread(&greedy);
    if cap == 1 {
        // One expert per cluster: every feasible assignment has the same
        // spread, which the LP bound cannot prove in time.
        let solved = Solved {
            objective: greedy_objective,
            bound: Some(greedy_objective),
            status: Status::AllEqual("one expert per cluster: every assignment is equal"),
        };
        return (greedy, solved);
    }
    if experts * clusters > caps.binaries {
        return (
            greedy,
            too_large(greedy_objective, experts * clusters, caps.binaries, "binaries"),
        );
    }
    let build = |integer: bool| {
        let mut p = Program::new();
        let x: Vec<Vec<Variable>> = (0..clusters)
            .map(|_| (0..experts).map(|_| p.add(binary(integer))).collect())
            .collect();
        let d: Vec<Variable> = (0..clusters).map(|_| p.add(variable().min(0.0))).collect();
        let objective: Expression = d.iter().sum();
        let mut rows: Vec<Constraint> = Vec::new();
        for e in 0..experts {
            rows.push(constraint!(x.iter().map(|xc| xc[e]).sum::<Expression>() == 1.0));
        }
        for c in 0..clusters {
            let count: Expression = x[c].iter().sum();
            rows.push(constraint!(count.clone() >= 1.0));
            rows.push(constraint!(count <= cap as f64));
            let load: Expression = x[c].iter().zip(loads).map(|(&v, &p)| p * v).sum();
            rows.push(constraint!(d[c] >= load.clone() - mean));
            rows.push(constraint!(d[c] >= mean - load));
        }
        // Clusters are interchangeable: expert 0 goes to cluster 0.
        rows.push(constraint!(x[0][0] == 1.0));
        (p, objective, rows, x, d)
    };
    let relaxed_bound = |limits: Limits| {
        let (p, objective, rows, _, _) = build(false);
        p.minimise(objective, rows, &[], limits).ok().map(|s| s.objective)
    };
    let (program, objective, rows, x, d) = build(true);
    // The warm start: the greedy clusters, relabelled so expert 0 is in cluster 0.
    let first = greedy[0];
    let relabel = |c: usize| {
        if c == first {
            0
        } else if c == 0 {
            first
        } else {
            c
        }
    };
    let start: Vec<usize> = greedy.iter().map(|&c| relabel(c)).collect();
    let mut warm: Vec<(Variable, f64)> = Vec::new();
    for (c, xc) in x.iter().enumerate() {
        for (e, &v) in xc.iter().enumerate() {
            warm.push((v, f64::from(u8::from(start[e] == c))));
        }
    }
    let mut totals = vec![0.0; clusters];
    for (e, &c) in start.iter().enumerate() {
        totals[c] += loads[e];
    }
    warm.extend(d.iter().zip(&totals).map(|(&v, t)| (v, (t - mean).abs())));
    let outcome = program.minimise(objective, rows, &warm, limits);
    let read = |s: &milp::Solution| -> Vec<usize> {
        (0..experts)
            .map(|e| (0..clusters).find(|&c| s.value(x[c][e]) > 0.5).unwrap_or(0))
            .collect()
    };
    keep_better(
        outcome,
        (read, |a: &Vec<usize>| spread(a)),
        (start, greedy_objective),
        || relaxed_bound(limits),
    )
}

/// ILP 2: for each MoE layer (in order) its clusters' devices.
/// `clusters_of[l][e]` is layer `l`'s clustering; `transitions[l]` its
/// tokens to the next layer by expert pair; `bandwidth[g1][g2]` between devices.
pub fn assign_devices(
    clusters_of: &[Vec<usize>],
    transitions: &[BTreeMap<(u32, u32), f64>],
    bandwidth: &[Vec<f64>],
    limits: Limits,
    caps: Caps,
) -> (Vec<Vec<usize>>, Solved) {
    let layers = clusters_of.len();
    let devices = bandwidth.len();
    let clusters = clusters_of.iter().flatten().max().map_or(0, |&c| c + 1);
    // C[l][c1][c2]: tokens from cluster c1 of layer l to cluster c2 of layer l + 1.
    let flows: Vec<Vec<Vec<f64>>> = (0..layers.saturating_sub(1))
        .map(|l| {
            let mut m = vec![vec![0.0; clusters]; clusters];
            for (&(a, b), &n) in transitions.get(l).into_iter().flatten() {
                let (Some(&c1), Some(&c2)) = (clusters_of[l].get(a as usize), clusters_of[l + 1].get(b as usize))
                else {
                    continue;
                };
                m[c1][c2] += n;
            }
            m
        })
        .collect();
    let cost = |assign: &[Vec<usize>]| -> f64 {
        (0..flows.len())
            .map(|l| layer_cost(&flows[l], &assign[l], &assign[l + 1], bandwidth))
            .sum()
    };
    let greedy = greedy_devices(&flows, clusters, devices, layers);
    let greedy_objective = cost(&greedy);
    let binaries = layers * clusters * devices;
    let products = flows.len() * clusters * clusters * devices * devices;
    if binaries > caps.binaries {
        return (greedy, too_large(greedy_objective, binaries, caps.binaries, "binaries"));
    }
    if products > caps.products {
        return (
            greedy,
            too_large(greedy_objective, products, caps.products, "product terms"),
        );
    }
    let build = |integer: bool| {
        let mut p = Program::new();
        let y: Vec<Vec<Vec<Variable>>> = (0..layers)
            .map(|_| {
                (0..clusters)
                    .map(|_| (0..devices).map(|_| p.add(binary(integer))).collect())
                    .collect()
            })
            .collect();
        let z: Vec<Variable> = flows.iter().map(|_| p.add(variable().min(0.0))).collect();
        // w for every (layer, c1, g1, c2, g2) with traffic and g1 != g2.
        let mut w: BTreeMap<(usize, usize, usize, usize, usize), Variable> = BTreeMap::new();
        for (l, m) in flows.iter().enumerate() {
            for (c1, row) in m.iter().enumerate() {
                for (c2, &n) in row.iter().enumerate() {
                    if n <= 0.0 {
                        continue;
                    }
                    for g1 in 0..devices {
                        for g2 in (0..devices).filter(|&g2| g2 != g1) {
                            w.insert((l, c1, g1, c2, g2), p.add(variable().min(0.0).max(1.0)));
                        }
                    }
                }
            }
        }
        let objective: Expression = z.iter().sum();
        let mut rows: Vec<Constraint> = Vec::new();
        for yl in &y {
            for yc in yl {
                rows.push(constraint!(yc.iter().sum::<Expression>() == 1.0));
            }
            for g in 0..devices {
                rows.push(constraint!(yl.iter().map(|yc| yc[g]).sum::<Expression>() <= 1.0));
            }
        }
        for (&(l, c1, g1, c2, g2), &v) in &w {
            rows.push(constraint!(v >= y[l][c1][g1] + y[l + 1][c2][g2] - 1.0));
        }
        for (l, m) in flows.iter().enumerate() {
            for (g1, from) in bandwidth.iter().enumerate() {
                for (g2, &b) in from.iter().enumerate().filter(|&(g2, _)| g2 != g1) {
                    let mut load = Expression::from(0.0);
                    for (c1, row) in m.iter().enumerate() {
                        for (c2, &n) in row.iter().enumerate() {
                            if let Some(&v) = w.get(&(l, c1, g1, c2, g2)) {
                                load += (n / b) * v;
                            }
                        }
                    }
                    rows.push(constraint!(z[l] >= load));
                }
            }
        }
        (p, objective, rows, y, z, w)
    };
    let relaxed_bound = |limits: Limits| {
        let (p, objective, rows, ..) = build(false);
        p.minimise(objective, rows, &[], limits).ok().map(|s| s.objective)
    };
    let (program, objective, rows, y, z, w) = build(true);
    let mut warm: Vec<(Variable, f64)> = Vec::new();
    for (l, yl) in y.iter().enumerate() {
        for (c, yc) in yl.iter().enumerate() {
            warm.extend(
                yc.iter()
                    .enumerate()
                    .map(|(g, &v)| (v, f64::from(u8::from(greedy[l][c] == g)))),
            );
        }
    }
    for (&(l, c1, g1, c2, g2), &v) in &w {
        warm.push((v, f64::from(u8::from(greedy[l][c1] == g1 && greedy[l + 1][c2] == g2))));
    }
    for (l, &v) in z.iter().enumerate() {
        warm.push((v, layer_cost(&flows[l], &greedy[l], &greedy[l + 1], bandwidth)));
    }
    let outcome = program.minimise(objective, rows, &warm, limits);
    let read = |s: &milp::Solution| -> Vec<Vec<usize>> {
        y.iter()
            .map(|yl| {
                yl.iter()
                    .map(|yc| (0..devices).find(|&g| s.value(yc[g]) > 0.5).unwrap_or(0))
                    .collect()
            })
            .collect()
    };
    keep_better(
        outcome,
        (read, |a: &Vec<Vec<usize>>| cost(a)),
        (greedy, greedy_objective),
        || relaxed_bound(limits),
    )
}

/// The solver's solution if it is no worse than the greedy one (the warm
/// start should guarantee it; rounding may not), else the greedy one. The
/// bound is the search's own, or `relaxed()`'s (the LP relaxation) where
/// the solver reports none.
fn keep_better<T>(
    outcome: Result<milp::Solution, String>,
    (read, cost): (impl Fn(&milp::Solution) -> T, impl Fn(&T) -> f64),
    (greedy, greedy_objective): (T, f64),
    relaxed: impl Fn() -> Option<f64>,
) -> (T, Solved) {
    let s = match outcome {
        Ok(s) => s,
        Err(e) => {
            let status = Status::Greedy(format!("the solver failed: {e}"));
            return (
                greedy,
                Solved {
                    objective: greedy_objective,
                    bound: relaxed(),
                    status,
                },
            );
        }
    };
    let status = match s.ended {
        Ended::Optimal => Status::Optimal,
        Ended::TimeLimit => Status::TimeLimit,
        Ended::GapLimit => Status::GapLimit,
        Ended::NodeLimit => Status::NodeLimit,
    };
    let bound = s.bound.or_else(relaxed);
    let found = read(&s);
    let objective = cost(&found);
    let (kept, objective) = if objective <= greedy_objective + 1e-9 {
        (found, objective)
    } else {
        (greedy, greedy_objective)
    };
    (
        kept,
        Solved {
            objective,
            bound,
            status,
        },
    )
}

/// One transition's cost: its worst device pair.
fn layer_cost(flow: &[Vec<f64>], here: &[usize], there: &[usize], bandwidth: &[Vec<f64>]) -> f64 {
    let devices = bandwidth.len();
    let mut pair = vec![vec![0.0; devices]; devices];
    for (c1, row) in flow.iter().enumerate() {
        for (c2, &n) in row.iter().enumerate() {
            let (g1, g2) = (here[c1], there[c2]);
            if g1 != g2 {
                pair[g1][g2] += n / bandwidth[g1][g2];
            }
        }
    }
    pair.iter().flatten().copied().fold(0.0, f64::max)
}

fn binary(integer: bool) -> good_lp::VariableDefinition {
    if integer {
        variable().binary()
    } else {
        variable().min(0.0).max(1.0)
    }
}

/// The greedy solution of a program too large to hand the solver.
fn too_large(objective: f64, size: usize, cap: usize, what: &str) -> Solved {
    Solved {
        objective,
        bound: None,
        status: Status::Greedy(format!("{size} {what}, over the {cap} the solver is given")),
    }
}

/// Largest load first into the lightest cluster with room (ties: lower id).
fn greedy_clusters(loads: &[f64], clusters: usize, cap: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by(|&a, &b| loads[b].total_cmp(&loads[a]).then(a.cmp(&b)));
    let mut total = vec![0.0f64; clusters];
    let mut count = vec![0usize; clusters];
    let mut assign = vec![0; loads.len()];
    for (i, e) in order.into_iter().enumerate() {
        // The first `clusters` experts open one cluster each, so none stays empty.
        let c = if i < clusters {
            i
        } else {
            (0..clusters)
                .filter(|&c| count[c] < cap)
                .min_by(|&a, &b| total[a].total_cmp(&total[b]).then(a.cmp(&b)))
                .unwrap_or(0)
        };
        assign[e] = c;
        total[c] += loads[e];
        count[c] += 1;
    }
    assign
}

/// Layer 0's cluster `c` on device `c`; each next layer's clusters, most
/// incoming tokens first, onto the free device where most of their tokens
/// already are.
fn greedy_devices(flows: &[Vec<Vec<f64>>], clusters: usize, devices: usize, layers: usize) -> Vec<Vec<usize>> {
    let mut assign: Vec<Vec<usize>> = vec![(0..clusters).collect()];
    for l in 1..layers {
        let m = &flows[l - 1];
        let prev = &assign[l - 1];
        let mut order: Vec<usize> = (0..clusters).collect();
        let incoming = |c2: usize| -> f64 { m.iter().map(|row| row[c2]).sum() };
        order.sort_by(|&a, &b| incoming(b).total_cmp(&incoming(a)).then(a.cmp(&b)));
        let mut taken = vec![false; devices];
        let mut here = vec![0; clusters];
        for c2 in order {
            let stay = |g: usize| -> f64 { (0..clusters).filter(|&c1| prev[c1] == g).map(|c1| m[c1][c2]).sum() };
            let g = (0..devices)
                .filter(|&g| !taken[g])
                .max_by(|&a, &b| stay(a).total_cmp(&stay(b)).then(b.cmp(&a)))
                .unwrap_or(0);
            taken[g] = true;
            here[c2] = g;
        }
        assign.push(here);
    }
    assign
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assignment of `n` items to `k` bins, as vectors of bins.
    fn all_assignments(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0..k.pow(n as u32))
            .map(|mut code| {
                (0..n)
                    .map(|_| {
                        let b = code % k;
                        code /= k;
                        b
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn ilp1_finds_the_brute_force_optimum() {
        for loads in [[9.0, 1.0, 4.0, 6.0], [5.0, 5.0, 1.0, 1.0], [10.0, 3.0, 3.0, 2.0]] {
            let (assign, solved) = cluster_layer(&loads, 2, ILP1_LIMITS, Caps::DEFAULT);
            let mean = loads.iter().sum::<f64>() / 2.0;
            let spread = |a: &[usize]| -> f64 {
                (0..2)
                    .map(|c| {
                        let t: f64 = a.iter().zip(&loads).filter(|(&x, _)| x == c).map(|(_, p)| p).sum();
                        (t - mean).abs()
                    })
                    .sum()
            };
            let best = all_assignments(4, 2)
                .into_iter()
                .filter(|a| (0..2).all(|c| (1..=2).contains(&a.iter().filter(|&&x| x == c).count())))
                .map(|a| spread(&a))
                .fold(f64::INFINITY, f64::min);
            assert!(
                (solved.objective - best).abs() < 1e-9,
                "{loads:?}: {solved:?} vs {best}"
            );
            assert!((spread(&assign) - best).abs() < 1e-9);
            assert_eq!(solved.status, Status::Optimal);
            assert!(solved.gap().is_some_and(|g| g < 1e-6) || best > 0.0);
        }
    }

    #[test]
    fn ilp2_finds_the_brute_force_optimum_over_three_layers() {
        // 4 experts in 2 clusters per layer, 2 devices, 3 layers; the link
        // from device 1 to device 0 is slow, so the optimum keeps heavy
        // transitions local or on the fast direction.
        let clusters_of = vec![vec![0, 0, 1, 1], vec![0, 1, 0, 1], vec![1, 0, 0, 1]];
        let mut t0 = BTreeMap::new();
        t0.insert((0, 1), 8.0);
        t0.insert((2, 0), 5.0);
        t0.insert((3, 3), 2.0);
        let mut t1 = BTreeMap::new();
        t1.insert((1, 1), 6.0);
        t1.insert((0, 2), 7.0);
        t1.insert((3, 0), 3.0);
        let transitions = vec![t0, t1, BTreeMap::new()];
        let bandwidth = vec![vec![1.0, 2.0], vec![0.5, 1.0]];
        let (assign, solved) = assign_devices(&clusters_of, &transitions, &bandwidth, ILP2_LIMITS, Caps::DEFAULT);
        // Brute force: each layer's clusters on the 2 devices, as a permutation.
        let perms = [vec![0, 1], vec![1, 0]];
        let mut best = f64::INFINITY;
        for a in &perms {
            for b in &perms {
                for c in &perms {
                    let layout = [a.clone(), b.clone(), c.clone()];
                    let cost: f64 = (0..2)
                        .map(|l| {
                            let mut flow = vec![vec![0.0; 2]; 2];
                            for (&(e1, e2), &n) in &transitions[l] {
                                flow[clusters_of[l][e1 as usize]][clusters_of[l + 1][e2 as usize]] += n;
                            }
                            layer_cost(&flow, &layout[l], &layout[l + 1], &bandwidth)
                        })
                        .sum();
                    best = best.min(cost);
                }
            }
        }
        assert!((solved.objective - best).abs() < 1e-9, "{solved:?} vs {best}");
        assert_eq!(solved.status, Status::Optimal);
        assert!(assign.iter().all(|l| l.len() == 2 && l[0] != l[1]));
        assert!(solved.bound.is_some_and(|b| b <= best + 1e-9));
    }

    #[test]
    fn greedy_clusters_are_non_empty_and_within_capacity() {
        let loads = [50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let assign = greedy_clusters(&loads, 4, 2);
        for c in 0..4 {
            let n = assign.iter().filter(|&&x| x == c).count();
            assert!((1..=2).contains(&n), "{assign:?}");
        }
        // The hot expert shares its cluster with the lightest company.
        let hot = assign[0];
        assert_eq!(assign.iter().filter(|&&x| x == hot).count(), 2);
    }
}
