//! How a step's work overlaps on a die: as one batch, or split into
//! micro-batches whose communication runs under one another's compute.
//!
//! This is what `overlap = ...` names in a plan and what the `overlap(...)`
//! pass records on the IR (`passes/overlap/`); the lowering turns it into
//! the order and streams of each die's program (`lower/program.rs`).

use std::fmt;

/// The overlap form of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Overlap {
    /// One batch: each layer's dispatch and combine wait for the whole
    /// batch, and only the shared experts run under the dispatch.
    #[default]
    None,
    /// Two-batch overlap (SGLang's TBO, DeepSeek's decode and prefill
    /// overlap): the batch split in two micro-batches; while one's
    /// dispatch or combine is in flight, the die computes the other's
    /// attention or experts.
    TwoBatch,
}

impl Overlap {
    /// Every form, as the language spells it.
    pub const ALL: &'static [(&'static str, Overlap)] = &[("none", Overlap::None), ("two_batch", Overlap::TwoBatch)];

    /// Micro-batches the step is split into.
    pub fn micro_batches(self) -> u32 {
        match self {
            Overlap::None => 1,
            Overlap::TwoBatch => 2,
        }
    }

    /// From its name (`none`, `two_batch`).
    pub fn parse(text: &str) -> Result<Overlap, String> {
        let text = text.trim();
        Overlap::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, o)| *o)
            .ok_or_else(|| {
                let names: Vec<&str> = Overlap::ALL.iter().map(|(n, _)| *n).collect();
                format!("no overlap form `{text}` (forms: {})", names.join(", "))
            })
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Overlap::ALL.iter().find(|(_, o)| o == self).map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}
