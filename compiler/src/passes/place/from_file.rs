//! `from_file`: the experts exactly where a placement file says. The plan's
//! `placement = file("...")` was read and checked against the model and
//! machine when the plan was checked (`placement_file`); this pass puts
//! every expert on the dies the file gives it and places everything else
//! as `place` does for every algorithm (attention data-parallel or over
//! `tp(k)` groups, the rest on every alive die). The verifier then checks
//! that every die holds what the file put on it.

use super::{GroupLayout, Place};
use crate::ir::Ir;
use crate::passes::Pass;
use crate::passes::PassContext;

/// The pass; its placement comes from [`PassContext::placement_file`].
pub struct FromFile;

impl Pass for FromFile {
    fn name(&self) -> String {
        "from_file".into()
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        let layout = cx
            .placement_file
            .ok_or("`from_file` places a plan's `placement = file(\"...\")`, and this plan names no file")?;
        Place::apply(ir, cx, &layout.experts, GroupLayout::Compact)
    }
}
