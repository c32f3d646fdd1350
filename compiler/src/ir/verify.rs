//! The IR verifier, run after every pass.
//!
//! Structural breakage is a bug in moec (a pass or the builder) and is
//! reported as such; a die that cannot hold what was placed on it is the
//! user's infeasible request and says exactly what does not fit where.

use super::memory::die_loads;
use super::{Ir, Node, Op, Sharding};
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::units::Bytes;
use petgraph::Direction;
use std::collections::BTreeSet;
use std::fmt;

/// A failed check.
#[derive(Clone, Debug, PartialEq)]
pub enum VerifyError {
    /// An IR invariant does not hold: a bug in moec.
    Broken(String),
    /// A node is not placed where the pipeline's end requires it.
    Unplaced(String),
    /// A die holds more than its memory.
    DoesNotFit {
        die: String,
        need: Bytes,
        have: Bytes,
        detail: String,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Broken(m) => write!(f, "broken IR: {m}"),
            VerifyError::Unplaced(m) => write!(f, "not placed: {m}"),
            VerifyError::DoesNotFit {
                die,
                need,
                have,
                detail,
            } => {
                write!(f, "die {die} needs {need} but has {have} of memory: {detail}")
            }
        }
    }
}

/// Checks every invariant that holds after any pass. Placement may be
/// partial, but what is placed must be valid and fit.
pub fn verify(ir: &Ir, machine: &Machine) -> Vec<VerifyError> {
    let mut errors = verify_shape(ir, machine);
    if errors.is_empty() {
        memory(ir, machine, &mut errors);
    }
    errors
}

/// [`verify`] without the memory check: for an IR a later pass of its
/// pipeline will reshape (a placement of whole experts that
/// `parallel(...)` then splits may not fit until it does).
pub fn verify_shape(ir: &Ir, machine: &Machine) -> Vec<VerifyError> {
    let mut errors = Vec::new();
    structure(ir, &mut errors);
    annotations(ir, machine, &mut errors);
    moves(ir, machine, &mut errors);
    errors
}

/// [`verify`], and every node placed: what the end of a pipeline requires.
pub fn verify_placed(ir: &Ir, machine: &Machine) -> Vec<VerifyError> {
    let mut errors = verify(ir, machine);
    let unplaced: Vec<String> = ir
        .nodes()
        .filter(|(_, n)| !n.ann.is_placed())
        .map(|(i, n)| describe(i.index(), n))
        .collect();
    if let Some(first) = unplaced.first() {
        errors.push(VerifyError::Unplaced(format!(
            "{} node(s), the first {first}",
            unplaced.len()
        )));
    }
    errors
}

fn describe(index: usize, n: &super::Node) -> String {
    let layer = n.layer.map(|l| format!(" of layer {}", l.0)).unwrap_or_default();
    let expert = match n.op {
        Op::Expert { expert, .. } => format!(" e{}", expert.0),
        _ => String::new(),
    };
    format!("%{index} {}{expert}{layer}", n.op.mnemonic())
}

fn structure(ir: &Ir, errors: &mut Vec<VerifyError>) {
    let g = &ir.graph;
    // A topological sort, not `is_cyclic_directed`: that one recurses once
    // per node on a path and overflows the stack past ~16,000 layers.
    if petgraph::algo::toposort(g, None).is_err() {
        errors.push(VerifyError::Broken("the graph has a cycle".into()));
    }
    for e in g.edge_indices() {
        let t = &g[e];
        let elems = t.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        if t.bytes.0 != elems.saturating_mul(t.dtype.bytes()) {
            errors.push(VerifyError::Broken(format!(
                "edge {} carries {:?} but claims {}",
                e.index(),
                t.shape,
                t.bytes
            )));
        }
    }
    // Every MoE layer: dispatch -> one node per expert id -> combine.
    for (i, n) in ir.nodes() {
        let Op::Dispatch { experts, .. } = n.op else { continue };
        let layer = n.layer;
        let mut seen = BTreeSet::new();
        for s in g.neighbors_directed(i, Direction::Outgoing) {
            let succ = &g[s];
            let Op::Expert { expert, .. } = succ.op else {
                errors.push(VerifyError::Broken(format!(
                    "dispatch %{} feeds {}, not an expert",
                    i.index(),
                    describe(s.index(), succ)
                )));
                continue;
            };
            if succ.layer != layer || !seen.insert(expert) {
                errors.push(VerifyError::Broken(format!(
                    "expert e{} appears twice or in the wrong layer",
                    expert.0
                )));
            }
            let feeds_combine = g
                .neighbors_directed(s, Direction::Outgoing)
                .any(|c| matches!(g[c].op, Op::Combine { .. }) && g[c].layer == layer);
            if !feeds_combine {
                errors.push(VerifyError::Broken(format!(
                    "{} does not feed its layer's combine",
                    describe(s.index(), succ)
                )));
            }
        }
        if seen.len() as u64 != experts || seen.iter().enumerate().any(|(k, e)| e.0 as usize != k) {
            errors.push(VerifyError::Broken(format!(
                "dispatch %{} reaches {} of {experts} expert ids",
                i.index(),
                seen.len()
            )));
        }
    }
}

/// A `Migrate` or `Replicate` node takes exactly its expert's node as
/// input, sends from an alive die to alive dies other than it, and its
/// steps are in order.
fn moves(ir: &Ir, machine: &Machine, errors: &mut Vec<VerifyError>) {
    for (i, n) in ir.nodes() {
        let expert = match &n.op {
            Op::Migrate(w) | Op::Replicate(w) => w.expert,
            Op::Evict(e) => e.expert,
            _ => continue,
        };
        let inputs = ir.inputs(i);
        let fed_by_expert = match inputs.as_slice() {
            [e] => {
                matches!(ir.graph[*e].op, Op::Expert { expert: x, .. } if x == expert) && ir.graph[*e].layer == n.layer
            }
            _ => false,
        };
        let alive = |d: DieId| d.0 < machine.die_count() && machine.is_alive(d);
        let Some(w) = n.op.weight_move() else {
            if !fed_by_expert {
                errors.push(VerifyError::Broken(format!(
                    "{} is not fed by exactly its expert e{}",
                    describe(i.index(), n),
                    expert.0
                )));
            } else if let Op::Evict(e) = &n.op {
                if !alive(e.die) {
                    errors.push(VerifyError::Broken(format!(
                        "{} drops a copy on a dead die",
                        describe(i.index(), n)
                    )));
                }
            }
            continue;
        };
        let t = &w.timing;
        let problem = if !fed_by_expert {
            Some(format!("is not fed by exactly its expert e{}", w.expert.0))
        } else if !alive(w.from) || w.to.iter().any(|&d| !alive(d) || d == w.from) || w.to.is_empty() {
            Some("sends from or to a dead die, or to its own source".to_string())
        } else if t.effective < t.start || t.until.is_some_and(|u| u <= t.effective) {
            Some(format!("has steps out of order ({t:?})"))
        } else {
            None
        };
        if let Some(p) = problem {
            errors.push(VerifyError::Broken(format!("{} {p}", describe(i.index(), n))));
        }
    }
}

/// Under disaggregation: the pools disjoint, every routed expert on the
/// expert pool and every attention on the attention pool.
fn pools(ir: &Ir, machine: &Machine, errors: &mut Vec<VerifyError>) {
    let Some(pools) = &ir.pools else { return };
    if let Some(d) = pools.overlap() {
        errors.push(VerifyError::Broken(format!(
            "{} is in both the attention and the expert pool",
            label(machine, d)
        )));
    }
    for (i, n) in ir.nodes() {
        let pool = match n.op {
            Op::Expert { .. } => &pools.experts,
            Op::Attention { .. } => &pools.attention,
            _ => continue,
        };
        if let Some(&d) = n.ann.dies.iter().find(|d| pool.binary_search(d).is_err()) {
            errors.push(VerifyError::Broken(format!(
                "{} is placed on {}, outside its pool",
                describe(i.index(), n),
                label(machine, d)
            )));
        }
    }
}

fn annotations(ir: &Ir, machine: &Machine, errors: &mut Vec<VerifyError>) {
    pools(ir, machine, errors);
    for (i, n) in ir.nodes() {
        let ann = &n.ann;
        let mut seen = BTreeSet::new();
        for &d in &ann.dies {
            if d.0 >= machine.die_count() || !machine.is_alive(d) {
                errors.push(VerifyError::Broken(format!(
                    "{} is placed on {}, which is dead or absent",
                    describe(i.index(), n),
                    label(machine, d)
                )));
            }
            // A whole expert may hold two slots on one die (EPLB's packing
            // does that); anything else on a die twice is a bug.
            let slots = matches!(n.op, Op::Expert { .. }) && ann.columns.is_empty();
            if !seen.insert(d) && !slots {
                errors.push(VerifyError::Broken(format!(
                    "{} lists {} twice",
                    describe(i.index(), n),
                    label(machine, d)
                )));
            }
        }
        let ways = ann.sharding.ways() as usize;
        if ann.is_placed() && (ways == 0 || ann.dies.len() % ways != 0) {
            errors.push(VerifyError::Broken(format!(
                "{} has {} dies for {ways}-way sharding",
                describe(i.index(), n),
                ann.dies.len()
            )));
        }
        if let Some(problem) = split_problem(n) {
            errors.push(VerifyError::Broken(format!("{} {problem}", describe(i.index(), n))));
        }
    }
}

/// Why a split expert's columns do not cover it exactly once per copy, if
/// they do not: one count per die, none zero, each run of `ways` dies
/// adding up to the expert's FFN.
fn split_problem(n: &Node) -> Option<String> {
    let ann = &n.ann;
    if ann.columns.is_empty() {
        return None;
    }
    let Op::Expert { ffn, .. } = n.op else {
        return Some("has expert columns but is not an expert".into());
    };
    let ways = ann.sharding.ways().max(1) as usize;
    if !matches!(ann.sharding, Sharding::Cols(_)) || ann.columns.len() != ann.dies.len() {
        return Some(format!(
            "has {} column counts for {} dies ({:?})",
            ann.columns.len(),
            ann.dies.len(),
            ann.sharding
        ));
    }
    if ann.columns.contains(&0) {
        return Some("holds a part of no columns".into());
    }
    ann.columns
        .chunks(ways)
        .map(|copy| copy.iter().sum::<u64>())
        .find(|&sum| sum != ffn)
        .map(|sum| format!("has a copy whose parts cover {sum} of its {ffn} columns"))
}

fn memory(ir: &Ir, machine: &Machine, errors: &mut Vec<VerifyError>) {
    for load in die_loads(ir, machine) {
        let have = machine.die_spec(load.die).memory;
        if load.total() > have {
            errors.push(VerifyError::DoesNotFit {
                die: label(machine, load.die),
                need: load.total(),
                have,
                detail: format!(
                    "{} experts ({}), other weights {}, KV cache {}",
                    load.experts, load.expert_bytes, load.other_bytes, load.state_bytes
                ),
            });
        }
    }
}

fn label(machine: &Machine, d: DieId) -> String {
    machine.die_label(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{self, CompileOptions};
    use crate::source::MemoryReader;
    use std::path::Path;

    fn compiled(memory: &str) -> (driver::Session, Ir) {
        let src = format!(
            "model m {{ layers = 2; hidden = 32; vocab = 50; attention mha {{ heads = 4; head_dim = 8 }}
                      moe {{ experts = 4; top_k = 2; expert_ffn = 16 }} }}
             machine w {{ topology = mesh(2, 1); die {{ compute = 1 TFLOPS; memory = {memory}; memory_bw = 1 TB/s }}
                         link {{ bandwidth = 100 GB/s; latency = 10 ns }} }}
             workload d {{ phase = decode; batch = 8; context = 32 }}
             plan default {{ model = m; machine = w; workload = d }}"
        );
        let mut reader = MemoryReader::default();
        reader.0.insert("t.moe".into(), src.into_bytes());
        let session = driver::check(&reader, Path::new("t.moe")).unwrap();
        let ir = session.compile(&CompileOptions::default(), &mut |_, _| {}).unwrap();
        (session, ir)
    }

    fn machine(s: &driver::Session) -> &Machine {
        s.program.machine(0).unwrap()
    }

    #[test]
    fn a_placed_ir_verifies() {
        let (s, ir) = compiled("1 GB");
        assert_eq!(verify_placed(&ir, machine(&s)), vec![]);
    }

    #[test]
    fn a_missing_expert_is_caught() {
        let (s, mut ir) = compiled("1 GB");
        let e = ir
            .nodes()
            .find(|(_, n)| matches!(n.op, Op::Expert { .. }))
            .map(|(i, _)| i)
            .unwrap();
        ir.graph.remove_node(e);
        let errors = verify(&ir, machine(&s));
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, VerifyError::Broken(m) if m.contains("3 of 4 expert ids"))),
            "{errors:?}"
        );
    }

    #[test]
    fn a_dead_or_absent_die_and_bad_sharding_are_caught() {
        let (s, mut ir) = compiled("1 GB");
        let first = ir.graph.node_indices().next().unwrap();
        ir.graph[first].ann.dies.push(DieId(7));
        ir.graph[first].ann.sharding = super::super::Sharding::Tp(2);
        let errors = verify(&ir, machine(&s));
        assert!(
            errors.iter().any(|e| e.to_string().contains("dead or absent")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("3 dies for 2-way sharding")),
            "{errors:?}"
        );
    }

    #[test]
    fn an_unplaced_node_fails_the_end_of_pipeline_check() {
        let (s, mut ir) = compiled("1 GB");
        let last = ir.graph.node_indices().next_back().unwrap();
        ir.graph[last].ann = Default::default();
        assert!(verify(&ir, machine(&s)).is_empty());
        assert!(
            matches!(verify_placed(&ir, machine(&s)).as_slice(), [VerifyError::Unplaced(m)] if m.contains("lm_head"))
        );
    }

    #[test]
    fn overfull_dies_say_what_does_not_fit_where() {
        let (s, ir) = compiled("1 GB");
        let tiny = {
            let mut spec = machine(&s).spec().clone();
            spec.die.memory = Bytes(10_000);
            Machine::build(spec).unwrap()
        };
        let errors = verify(&ir, &tiny);
        assert_eq!(errors.len(), 2, "both dies overflow: {errors:?}");
        let msg = errors[0].to_string();
        assert!(
            msg.starts_with("die (0, 0) needs") && msg.contains("4 experts"),
            "{msg}"
        );
    }
}
