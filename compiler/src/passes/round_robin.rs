//! Round-robin expert parallelism: the baseline every placement is
//! measured against.
//!
//! Expert e of every layer goes to the e mod N-th alive die (dies in id
//! order, so row-major on a mesh; defective dies skipped). Everything else
//! (embedding, attention, gates, shared experts, dense FFNs, LM head) is
//! data-parallel: every alive die holds a copy and serves its share of the
//! batch. Dispatch and combine run on every die, as the all-to-all they are.

use super::PassContext;
use crate::ir::{Annotation, Ir, Op, Sharding};

/// Places every node of `ir`.
pub fn place(ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
    let dies = cx.machine.alive_dies();
    if dies.is_empty() {
        return Err("the machine has no alive die".into());
    }
    let indices: Vec<_> = ir.graph.node_indices().collect();
    for i in indices {
        let node = &mut ir.graph[i];
        let placed = match node.op {
            Op::Expert { expert, .. } => vec![dies[expert.0 as usize % dies.len()]],
            _ => dies.clone(),
        };
        node.ann = Annotation { dies: placed, sharding: Sharding::Whole };
    }
    Ok(())
}
