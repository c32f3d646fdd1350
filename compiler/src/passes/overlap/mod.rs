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
//! - `auto`: each form lowered and its step simulated
//!   (`probe/step_time.rs`); the fastest kept, ties to the simpler form,
//!   every form's time left in a note.
//!
//! The form changes no number a token computes (micro-batches share no
//! data), only when the work happens; it runs after the placement and the
//! parallel form, whose choices it takes as they are.

use crate::ir::{Ir, Op, Overlap};
use crate::passes::probe::step_time::step_time;
use crate::passes::{Pass, PassContext};
use std::fmt;

/// What a plan asks for (`overlap = ...`): one form, or the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlapChoice {
    Fixed(Overlap),
    /// Every form simulated, the fastest kept.
    Auto,
}

impl OverlapChoice {
    /// Every choice's name, as the language spells it.
    pub fn names() -> Vec<&'static str> {
        Overlap::ALL.iter().map(|(n, _)| *n).chain(["auto"]).collect()
    }

    /// From its name (`none`, `two_batch`, `auto`).
    pub fn parse(text: &str) -> Result<OverlapChoice, String> {
        match text.trim() {
            "auto" => Ok(OverlapChoice::Auto),
            other => Overlap::parse(other)
                .map(OverlapChoice::Fixed)
                .map_err(|e| format!("{e}, or auto")),
        }
    }
}

impl fmt::Display for OverlapChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverlapChoice::Fixed(o) => write!(f, "{o}"),
            OverlapChoice::Auto => f.write_str("auto"),
        }
    }
}

/// The `overlap(...)` pass.
pub struct OverlapPass {
    choice: OverlapChoice,
}

impl OverlapPass {
    /// From the pass argument: a form as the language spells it, or `auto`.
    pub fn new(arg: Option<&str>) -> Result<OverlapPass, String> {
        let arg = arg.ok_or("`overlap` needs a form: overlap(none), overlap(two_batch), overlap(auto)")?;
        Ok(OverlapPass {
            choice: OverlapChoice::parse(arg)?,
        })
    }
}

impl Pass for OverlapPass {
    fn name(&self) -> String {
        format!("overlap({})", self.choice)
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        let form = match self.choice {
            OverlapChoice::Fixed(form) => form,
            OverlapChoice::Auto => fastest(ir, cx)?,
        };
        ir.overlap = form;
        let m = u64::from(form.micro_batches());
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
                "overlap({form}): {batch} sequences over {homes} attention dies leave some die fewer than {m}; its micro-batches are uneven or empty, and it overlaps less"
            ));
        }
        Ok(())
    }
}

/// The form whose simulated step is fastest (ties to the earlier, simpler
/// one in `Overlap::ALL`); each form's time goes in a note.
fn fastest(ir: &mut Ir, cx: &PassContext) -> Result<Overlap, String> {
    let mut best: Option<(f64, Overlap)> = None;
    for &(name, form) in Overlap::ALL {
        let mut trial = ir.clone();
        trial.overlap = form;
        let seconds = step_time(&trial, cx)?;
        ir.header.notes.push(format!(
            "overlap(auto): {name} {:.3} ms a step (simulated)",
            seconds * 1e3
        ));
        if best.is_none_or(|(b, _)| seconds < b) {
            best = Some((seconds, form));
        }
    }
    let (seconds, form) = best.ok_or("no overlap form to try")?;
    ir.header
        .notes
        .push(format!("overlap(auto): chose {form} at {:.3} ms a step", seconds * 1e3));
    Ok(form)
}
