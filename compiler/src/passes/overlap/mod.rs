//! `overlap(FORM)`: how a step's work overlaps on each die, recorded on the
//! IR (`Ir::overlap`) for the lowering to realise in each die's program
//! (`lower/program.rs`).
//!
//! - `none`: one batch; a layer's dispatch and combine wait for every
//!   token, and only the shared experts run under the dispatch.
//! - `two_batch` (SGLang's two-batch overlap, DeepSeek's decode and prefill
//!   overlap): each die's sequences split in two micro-batches; while one
//!   micro-batch's dispatch or combine is in flight, the die computes the
//!   other's attention or experts. It is the baseline every other overlap
//!   is compared with.
//!
//! The form changes no number a token computes (micro-batches share no
//! data), only when the work happens; it runs after the placement and the
//! parallel form, whose choices it takes as they are.

use crate::ir::{Ir, Op, Overlap};
use crate::passes::{Pass, PassContext};

/// The `overlap(...)` pass.
pub struct OverlapPass {
    form: Overlap,
}

impl OverlapPass {
    /// From the pass argument: a form as the language spells it.
    pub fn new(arg: Option<&str>) -> Result<OverlapPass, String> {
        let arg = arg.ok_or("`overlap` needs a form: overlap(none), overlap(two_batch)")?;
        Ok(OverlapPass {
            form: Overlap::parse(arg)?,
        })
    }
}

impl Pass for OverlapPass {
    fn name(&self) -> String {
        format!("overlap({})", self.form)
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        ir.overlap = self.form;
        let m = u64::from(self.form.micro_batches());
        if m == 1 {
            return Ok(());
        }
        // Sequences are homed on the attention dies in contiguous blocks
        // (the lowering's rule); a die with fewer than m of them leaves a
        // micro-batch empty there, and overlaps nothing.
        let homes = ir
            .nodes()
            .find(|(_, n)| matches!(n.op, Op::Attention { .. }))
            .map_or(0, |(_, n)| n.ann.dies.len() as u64);
        let batch = cx.workload.batch;
        let fewest = batch / homes.max(1);
        if fewest < m {
            ir.header.notes.push(format!(
                "overlap({}): {batch} sequences over {homes} attention dies leave some die fewer than {m}; its micro-batches are uneven or empty, and it overlaps less",
                self.form
            ));
        }
        Ok(())
    }
}
