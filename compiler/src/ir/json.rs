//! The IR's JSON form (`--emit json`): the header, then every node with its
//! inputs and annotations, in node order. Stable key order (serde's field
//! order), so the same IR gives the same bytes.

use super::{Header, Ir, Node};
use serde::Serialize;

#[derive(Serialize)]
struct JsonIr<'a> {
    version: u32,
    header: &'a Header,
    nodes: Vec<JsonNode<'a>>,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    id: usize,
    inputs: Vec<usize>,
    #[serde(flatten)]
    node: &'a Node,
}

/// Version of the JSON layout; bumped when a key changes meaning.
pub const JSON_VERSION: u32 = 1;

/// The JSON form of `ir`, pretty-printed.
pub fn print(ir: &Ir) -> String {
    let nodes = ir
        .nodes()
        .map(|(i, node)| JsonNode {
            id: i.index(),
            inputs: ir.inputs(i).iter().map(|p| p.index()).collect(),
            node,
        })
        .collect();
    let doc = JsonIr {
        version: JSON_VERSION,
        header: &ir.header,
        nodes,
    };
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}
