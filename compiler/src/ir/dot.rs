//! The IR's Graphviz form (`--emit dot`): one cluster per layer, nodes
//! labelled with their operation and placement, edges with their tensor.

use super::{Ir, Op};
use moec_runtime::machine::Machine;
use std::fmt::Write;

/// The DOT text of `ir`.
pub fn print(ir: &Ir, machine: &Machine) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&ir.header.plan));
    let _ = writeln!(
        out,
        "  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    let mut open_layer = None;
    for (i, n) in ir.nodes() {
        if n.layer != open_layer {
            if open_layer.is_some() {
                out.push_str("  }\n");
            }
            if let Some(l) = n.layer {
                let _ = writeln!(out, "  subgraph cluster_layer{} {{\n    label=\"layer {}\";", l.0, l.0);
            }
            open_layer = n.layer;
        }
        let mut label = n.op.mnemonic();
        if let Op::Expert { expert, .. } = n.op {
            let _ = write!(label, " e{}", expert.0);
        }
        if n.ann.is_placed() {
            let where_ = match n.ann.dies.as_slice() {
                [one] => machine.die_label(*one),
                many => format!("{} dies", many.len()),
            };
            let _ = write!(label, "\\n@ {where_}");
        }
        let pad = if n.layer.is_some() { "    " } else { "  " };
        let _ = writeln!(out, "{pad}n{} [label=\"{}\"];", i.index(), escape(&label));
    }
    if open_layer.is_some() {
        out.push_str("  }\n");
    }
    for e in ir.graph.edge_indices() {
        let Some((a, b)) = ir.graph.edge_endpoints(e) else {
            continue;
        };
        let t = &ir.graph[e];
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"[{}] {}\"];",
            a.index(),
            b.index(),
            shape.join(","),
            t.dtype.name()
        );
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('"', "\\\"")
}
