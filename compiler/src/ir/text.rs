//! The IR's text form: what `--emit ir`, `--print-after` and the snapshot
//! tests show. Stable: the same IR always prints the same bytes.
//!
//! ```text
//! layer 3:
//!   %9 = expert e0 ffn=2048 swiglu (%8) -> [8, 7168] bf16 weights=88.08 MB @(0, 0)
//! ```
//!
//! Each node is one line: its number, operation and attributes, inputs,
//! output tensor, weights (and KV cache), and placement after `@` (`@all`:
//! every alive die holds a copy; `@?`: not placed yet; `@tp4[a, b, c, d]
//! [e, f, g, h]`: split over groups of 4, each in ring order). A per-die memory table
//! closes the listing once anything is placed.

use super::memory::die_loads;
use super::{Ir, Node, Op, Sharding, Travel, WeightMove};
use moec_runtime::machine::Machine;
use std::fmt::Write;
use std::ops::RangeInclusive;

/// What to print.
#[derive(Clone, Debug, Default)]
pub struct TextOptions {
    /// Only these layers (embed and LM head always print).
    pub layers: Option<RangeInclusive<u32>>,
}

/// The text form of `ir` on `machine`.
pub fn print(ir: &Ir, machine: &Machine, options: &TextOptions) -> String {
    let h = &ir.header;
    let mut out = String::new();
    let _ = writeln!(out, "; moec IR of plan `{}`", h.plan);
    let _ = writeln!(
        out,
        "; model {}, machine {} ({} dies, {} alive), workload {} ({} tokens a step)",
        h.model, h.machine, h.dies, h.alive_dies, h.workload, h.tokens_per_step
    );
    let passes = if h.passes.is_empty() {
        "none".to_string()
    } else {
        h.passes.join(", ")
    };
    let _ = writeln!(out, "; passes run: {passes}");
    if let Some(p) = &ir.pools {
        let _ = writeln!(
            out,
            "; pools: attention on {} dies, experts on {} dies",
            p.attention.len(),
            p.experts.len()
        );
    }
    if let Some(f) = ir.capacity_factor {
        let _ = writeln!(
            out,
            "; capacity: factor {f} (every die sends each expert max(ceil(k T {f} / E), 4) rows, padded, as DeepSpeed-MoE)"
        );
    }
    // The A2E and E2A transfers' transport, when not the ideal one.
    match ir.transport {
        moec_runtime::schedule::Transport::Direct => {}
        moec_runtime::schedule::Transport::M2n => {
            let _ = writeln!(
                out,
                "; transfers: m2n (dispatch and combine as M2N writes: a cost a message, no group sync)"
            );
        }
        moec_runtime::schedule::Transport::Nccl => {
            let _ = writeln!(
                out,
                "; transfers: nccl (dispatch and combine as NCCL-style all-to-alls: group sync, a cost a message)"
            );
        }
    }
    match &ir.overlap {
        super::Overlap::None => {}
        super::Overlap::Chunked(_) | super::Overlap::Monta(_) => {
            let _ = writeln!(out, "; overlap: {} (chunks per MoE layer)", ir.overlap);
        }
        o => {
            let _ = writeln!(out, "; overlap: {o} ({} micro-batches)", o.micro_batches());
        }
    }
    for note in &h.notes {
        let _ = writeln!(out, "; note: {note}");
    }
    let all_alive = machine.alive_dies();
    let mut current_layer = None;
    let shown = |n: &Node| match (n.layer, &options.layers) {
        (Some(l), Some(range)) => range.contains(&l.0),
        _ => true,
    };
    // Moves are added after the step's nodes; they print after them, in
    // their own list, so each layer's step nodes stay together.
    let is_move = |n: &Node| matches!(n.op, Op::Migrate(_) | Op::Replicate(_) | Op::Evict(_));
    for (i, n) in ir.nodes() {
        if !shown(n) || is_move(n) {
            continue;
        }
        if n.layer != current_layer {
            current_layer = n.layer;
            match n.layer {
                Some(l) => {
                    let _ = writeln!(out, "layer {}:", l.0);
                }
                None => out.push('\n'),
            }
        }
        let indent = if n.layer.is_some() { "  " } else { "" };
        node_line(ir, machine, &all_alive, i, indent, &mut out);
    }
    let moves: Vec<_> = ir.nodes().filter(|(_, n)| is_move(n) && shown(n)).collect();
    if !moves.is_empty() {
        let _ = writeln!(out, "\nmoves over the run:");
        for (i, n) in moves {
            let indent = format!("  layer {}: ", n.layer.map_or(0, |l| l.0));
            node_line(ir, machine, &all_alive, i, &indent, &mut out);
        }
    }
    if ir.nodes().any(|(_, n)| n.ann.is_placed()) {
        memory_table(ir, machine, &mut out);
    }
    out
}

/// One node's line: number, operation, inputs, output, weights, placement.
fn node_line(
    ir: &Ir,
    machine: &Machine,
    all_alive: &[moec_runtime::machine::DieId],
    i: petgraph::stable_graph::NodeIndex,
    indent: &str,
    out: &mut String,
) {
    let n = &ir.graph[i];
    let inputs = ranges(&ir.inputs(i).iter().map(|p| p.index()).collect::<Vec<_>>());
    let _ = write!(out, "{indent}%{} = {}", i.index(), op_text(&n.op));
    if !inputs.is_empty() {
        let _ = write!(out, " ({})", inputs.join(", "));
    }
    let shape: Vec<String> = n.out.shape.iter().map(u64::to_string).collect();
    let _ = write!(out, " -> [{}] {}", shape.join(", "), n.out.dtype.name());
    if n.weights.0 > 0 {
        let _ = write!(out, " weights={}", n.weights);
    }
    if n.state.0 > 0 {
        let _ = write!(out, " kv={}", n.state);
    }
    let _ = writeln!(out, " @{}", placement(n, machine, all_alive));
}

/// Node numbers with runs folded: `%3, %5..%260`.
fn ranges(ids: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if j >= i + 2 {
            format!("%{}..%{}", ids[i], ids[j])
        } else {
            format!("%{}", ids[i])
        });
        if j < i + 2 {
            j = i;
        }
        i = j + 1;
    }
    out
}

/// A move's source, destinations, bytes, steps and travel, e.g.
/// `d12 -> d21 88.08 MB steps 40..=41 until 90 legs d12->d13 attention, d13->d21 moe chunks 8.39 MB`.
fn move_text(w: &WeightMove) -> String {
    // A broadcast reaches most of the machine: its count says enough.
    let to: Vec<String> = if w.to.len() > 4 {
        vec![format!("{} dies", w.to.len())]
    } else {
        w.to.iter().map(|d| format!("d{}", d.0)).collect()
    };
    let t = &w.timing;
    let mut s = format!(
        "d{} -> {} {} steps {}..={}",
        w.from.0,
        to.join(","),
        w.bytes,
        t.start,
        t.effective
    );
    if let Some(u) = t.until {
        let _ = write!(s, " until {u}");
    }
    match &w.travel {
        Travel::StopTheWorld => s.push_str(" stop-the-world"),
        Travel::Legs { legs, chunk } => {
            let legs: Vec<String> = legs
                .iter()
                .map(|l| format!("d{}->d{} {}", l.from.0, l.to.0, l.phase.name()))
                .collect();
            let _ = write!(s, " legs {} chunks {chunk}", legs.join(", "));
        }
        Travel::Tree { edges, pieces } => {
            let _ = write!(s, " tree of {} edges, {pieces} pieces", edges.len());
        }
    }
    s
}

fn op_text(op: &Op) -> String {
    let m = op.mnemonic();
    match op {
        Op::Embed { vocab } | Op::LmHead { vocab } => format!("{m} vocab={vocab}"),
        Op::Attention { heads, .. } => format!("{m} heads={heads}"),
        Op::Gate {
            experts,
            top_k,
            groups,
            topk_groups,
            ..
        } if *groups > 1 => {
            format!("{m} experts={experts} top_k={top_k} groups={topk_groups}/{groups}")
        }
        Op::Gate { experts, top_k, .. } => format!("{m} experts={experts} top_k={top_k}"),
        Op::Dispatch { .. } | Op::Combine { .. } => m,
        Op::Expert {
            expert,
            ffn,
            activation,
        } => format!("{m} e{} ffn={ffn} {}", expert.0, activation.name()),
        Op::SharedExpert { count, ffn, activation } => format!("{m} x{count} ffn={ffn} {}", activation.name()),
        Op::DenseFfn { ffn, activation } => format!("{m} ffn={ffn} {}", activation.name()),
        Op::Migrate(w) | Op::Replicate(w) => format!("{m} e{} {}", w.expert.0, move_text(w)),
        Op::Evict(e) => format!("{m} e{} from d{} at step {}", e.expert.0, e.die.0, e.step),
    }
}

fn placement(n: &Node, machine: &Machine, all_alive: &[moec_runtime::machine::DieId]) -> String {
    let text = dies(n, machine, all_alive);
    if n.ann.unfused {
        text + " unfused"
    } else {
        text
    }
}

fn dies(n: &Node, machine: &Machine, all_alive: &[moec_runtime::machine::DieId]) -> String {
    let ann = &n.ann;
    if !ann.is_placed() {
        return "?".into();
    }
    let even = |ffn: u64, k: usize| ann.columns.iter().all(|&c| c * k as u64 == ffn);
    if let (false, Op::Expert { ffn, .. }) = (ann.columns.is_empty(), &n.op) {
        let k = ann.sharding.ways().max(1) as usize;
        if !even(*ffn, k) {
            // Uneven parts (HD-MoE's hybrid): each die with its columns.
            let parts: Vec<String> = (ann.dies.iter().zip(&ann.columns))
                .map(|(&d, c)| format!("{}:{c}", machine.die_label(d)))
                .collect();
            return format!("cols[{}]", parts.join(", "));
        }
    }
    let form = match ann.sharding {
        Sharding::Whole => String::new(),
        Sharding::Rows(k) => format!("rows{k}"),
        Sharding::Cols(k) => format!("cols{k}"),
        Sharding::Tp(k) => format!("tp{k}"),
        Sharding::Domains(k) => format!("domains{k}"),
    };
    if ann.dies == all_alive {
        return format!("{form}all");
    }
    if ann.dies.len() == 1 && form.is_empty() {
        return machine.die_label(ann.dies[0]);
    }
    let label = |ds: &[moec_runtime::machine::DieId]| -> String {
        ds.iter().map(|&d| machine.die_label(d)).collect::<Vec<_>>().join(", ")
    };
    let ways = ann.sharding.ways().max(1) as usize;
    if ways > 1 && ann.dies.len() > ways {
        // Groups one after another, each in its own brackets.
        let groups: Vec<String> = ann.dies.chunks(ways).map(|g| format!("[{}]", label(g))).collect();
        return format!("{form}{}", groups.join(" "));
    }
    format!("{form}[{}]", label(&ann.dies))
}

fn memory_table(ir: &Ir, machine: &Machine, out: &mut String) {
    let spec = machine.spec();
    let capacity = match spec.kinds.is_empty() {
        true => format!("capacity {}", spec.die.memory),
        false => {
            let kinds: Vec<String> = std::iter::once(format!("die {}", spec.die.memory))
                .chain(spec.kinds.iter().map(|k| format!("{} {}", k.name, k.die.memory)))
                .collect();
            format!("capacity by kind: {}", kinds.join(", "))
        }
    };
    let _ = writeln!(out, "\n; memory per die ({capacity})");
    if ir.shadow_slots > 0 {
        let per_die = die_loads(ir, machine)
            .iter()
            .map(|l| l.shadow_bytes)
            .max()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "; total includes {} shadow slots a MoE layer ({per_die} a die) kept free for replicas",
            ir.shadow_slots
        );
    }
    let _ = writeln!(
        out,
        "; {:<12} {:>7} {:>12} {:>12} {:>12} {:>12} {:>6}",
        "die", "experts", "expert w", "other w", "kv cache", "total", "used"
    );
    for load in die_loads(ir, machine) {
        if !machine.is_alive(load.die) {
            let _ = writeln!(out, "; {:<12} dead", machine.die_label(load.die));
            continue;
        }
        let used = 100.0 * load.total().as_f64() / machine.die_spec(load.die).memory.as_f64();
        let _ = writeln!(
            out,
            "; {:<12} {:>7} {:>12} {:>12} {:>12} {:>12} {:>5.1}%",
            machine.die_label(load.die),
            load.experts,
            load.expert_bytes.to_string(),
            load.other_bytes.to_string(),
            load.state_bytes.to_string(),
            load.total().to_string(),
            used
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_of_three_or_more_fold() {
        assert_eq!(super::ranges(&[1, 3, 4, 5, 6, 9, 10]), ["%1", "%3..%6", "%9", "%10"]);
    }
}
