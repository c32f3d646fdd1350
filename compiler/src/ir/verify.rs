//! The IR verifier, run after every pass.
//!
//! Structural breakage is a bug in moec (a pass or the builder) and is
//! reported as such; a die that cannot hold what was placed on it is the
//! user's infeasible request and says exactly what does not fit where.

use super::memory::die_loads;
use super::{Ir, Op};
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
    DoesNotFit { die: String, need: Bytes, have: Bytes, detail: String },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Broken(m) => write!(f, "broken IR: {m}"),
            VerifyError::Unplaced(m) => write!(f, "not placed: {m}"),
            VerifyError::DoesNotFit { die, need, have, detail } => {
                write!(f, "die {die} needs {need} but has {have} of memory: {detail}")
            }
        }
    }
}

/// Checks every invariant that holds after any pass. Placement may be
/// partial, but what is placed must be valid and fit.
pub fn verify(ir: &Ir, machine: &Machine) -> Vec<VerifyError> {
    let mut errors = Vec::new();
    structure(ir, &mut errors);
    annotations(ir, machine, &mut errors);
    if errors.is_empty() {
        memory(ir, machine, &mut errors);
    }
    errors
}

/// [`verify`], and every node placed: what the end of a pipeline requires.
pub fn verify_placed(ir: &Ir, machine: &Machine) -> Vec<VerifyError> {
    let mut errors = verify(ir, machine);
    let unplaced: Vec<String> = ir.nodes().filter(|(_, n)| !n.ann.is_placed()).map(|(i, n)| describe(i.index(), n)).collect();
    if let Some(first) = unplaced.first() {
        errors.push(VerifyError::Unplaced(format!("{} node(s), the first {first}", unplaced.len())));
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
    if petgraph::algo::is_cyclic_directed(g) {
        errors.push(VerifyError::Broken("the graph has a cycle".into()));
    }
    for e in g.edge_indices() {
        let t = &g[e];
        let elems = t.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        if t.bytes.0 != elems.saturating_mul(t.dtype.bytes()) {
            errors.push(VerifyError::Broken(format!("edge {} carries {:?} but claims {}", e.index(), t.shape, t.bytes)));
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
                errors.push(VerifyError::Broken(format!("dispatch %{} feeds {}, not an expert", i.index(), describe(s.index(), succ))));
                continue;
            };
            if succ.layer != layer || !seen.insert(expert) {
                errors.push(VerifyError::Broken(format!("expert e{} appears twice or in the wrong layer", expert.0)));
            }
            let feeds_combine = g.neighbors_directed(s, Direction::Outgoing).any(|c| matches!(g[c].op, Op::Combine { .. }) && g[c].layer == layer);
            if !feeds_combine {
                errors.push(VerifyError::Broken(format!("{} does not feed its layer's combine", describe(s.index(), succ))));
            }
        }
        if seen.len() as u64 != experts || seen.iter().enumerate().any(|(k, e)| e.0 as usize != k) {
            errors.push(VerifyError::Broken(format!("dispatch %{} reaches {} of {experts} expert ids", i.index(), seen.len())));
        }
    }
}

fn annotations(ir: &Ir, machine: &Machine, errors: &mut Vec<VerifyError>) {
    for (i, n) in ir.nodes() {
        let ann = &n.ann;
        let mut seen = BTreeSet::new();
        for &d in &ann.dies {
            if d.0 >= machine.die_count() || !machine.is_alive(d) {
                errors.push(VerifyError::Broken(format!("{} is placed on {}, which is dead or absent", describe(i.index(), n), label(machine, d))));
            }
            if !seen.insert(d) {
                errors.push(VerifyError::Broken(format!("{} lists {} twice", describe(i.index(), n), label(machine, d))));
            }
        }
        let ways = ann.sharding.ways() as usize;
        if ann.is_placed() && (ways == 0 || ann.dies.len() % ways != 0) {
            errors.push(VerifyError::Broken(format!("{} has {} dies for {ways}-way sharding", describe(i.index(), n), ann.dies.len())));
        }
    }
}

fn memory(ir: &Ir, machine: &Machine, errors: &mut Vec<VerifyError>) {
    let have = machine.spec().die.memory;
    for load in die_loads(ir, machine) {
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
