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
//! - `chunked(d)` (FSMoE's pipeline): each MoE layer's tokens dispatched,
//!   computed and combined in `d` chunks, one chunk's experts under the
//!   next one's all-to-all; `chunked(auto)`: `d` per layer from FSMoE's
//!   alpha-beta task model, fitted on the simulated machine (`fsmoe.rs`).
//! - `monta(n)` (MoNTA): a token bound for a split expert crosses to one
//!   part of it, which forwards it inside the expert's group, in `n`
//!   chunks; `monta(auto)`: relay or not, and `n` per layer, from MoNTA's
//!   formula on the traffic volumes and link bandwidths (`monta.rs`).
//! - `auto`: `none`, `two_batch`, `chunked(auto)` and `monta(auto)`
//!   lowered and their steps simulated (`probe/step_time.rs`); the fastest
//!   kept, ties to the simpler form, every form's time left in a note.
//!
//! The form changes no number a token computes (micro-batches and chunks
//! share no data, and the relay moves rows over other links, not what a
//! die computes), only when and where the work happens; it runs after the
//! placement and the parallel form, whose choices it takes as they are.

pub mod fsmoe;
pub mod monta;

use crate::ir::{Ir, Op, Overlap};
use crate::passes::probe::step_time::step_time;
use crate::passes::{Pass, PassContext};
use moec_runtime::model::LayerKind;
use moec_runtime::schedule::{MAX_CHUNKS, MAX_MICRO_BATCHES};
use std::fmt;

/// What a plan asks for (`overlap = ...`): one form, or the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlapChoice {
    /// `none` or `two_batch`.
    Fixed(PlainOverlap),
    /// `micro_batches(m)`: the two-batch program with `m` micro-batches
    /// (`micro_batches(2)` is `two_batch`, `micro_batches(1)` is `none`).
    MicroBatches(u32),
    /// `chunked(d)`: every MoE layer in `d` chunks.
    Chunked(u32),
    /// `chunked(auto)`: FSMoE's choice of `d` per layer.
    ChunkedByModel,
    /// `monta(n)`: MoNTA's relay of split experts' tokens, in `n` chunks.
    Monta(u32),
    /// `monta(auto)`: MoNTA's strategy per layer (relay or not, `n`) from
    /// the traffic volumes and the links' bandwidths.
    MontaByModel,
    /// Every form simulated, the fastest kept.
    Auto,
}

/// The forms without settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainOverlap {
    None,
    TwoBatch,
}

impl PlainOverlap {
    fn form(self) -> Overlap {
        match self {
            PlainOverlap::None => Overlap::None,
            PlainOverlap::TwoBatch => Overlap::TwoBatch,
        }
    }
}

impl OverlapChoice {
    /// Every choice, as the language spells it.
    pub const SPELLINGS: &'static [&'static str] = &[
        "none",
        "two_batch",
        "micro_batches(m)",
        "chunked(d)",
        "chunked(auto)",
        "monta(n)",
        "monta(auto)",
        "auto",
    ];

    /// The choices a plan names without arguments.
    pub fn names() -> Vec<&'static str> {
        vec!["none", "two_batch", "auto"]
    }

    /// The forms `auto` tries, and `moec compare` gives rows, in order.
    pub const TRIED: &'static [OverlapChoice] = &[
        OverlapChoice::Fixed(PlainOverlap::None),
        OverlapChoice::Fixed(PlainOverlap::TwoBatch),
        OverlapChoice::ChunkedByModel,
        OverlapChoice::MontaByModel,
    ];

    /// From its spelling (`none`, `two_batch`, `chunked(4)`,
    /// `chunked(auto)`, `monta(4)`, `monta(auto)`, `auto`).
    pub fn parse(text: &str) -> Result<OverlapChoice, String> {
        let text = text.trim();
        match text {
            "none" => return Ok(OverlapChoice::Fixed(PlainOverlap::None)),
            "two_batch" => return Ok(OverlapChoice::Fixed(PlainOverlap::TwoBatch)),
            "auto" => return Ok(OverlapChoice::Auto),
            _ => {}
        }
        let call = |name: &str| {
            text.strip_prefix(name)
                .map(str::trim)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
        };
        let (name, arg) = match (call("chunked"), call("monta"), call("micro_batches")) {
            (Some(arg), _, _) => ("chunked", arg),
            (_, Some(arg), _) => ("monta", arg),
            (_, _, Some(arg)) => ("micro_batches", arg),
            _ => {
                return Err(format!(
                    "no overlap form `{text}` (forms: {})",
                    OverlapChoice::SPELLINGS.join(", ")
                ))
            }
        };
        match (name, arg, arg.parse::<u32>()) {
            ("chunked", "auto", _) => Ok(OverlapChoice::ChunkedByModel),
            ("monta", "auto", _) => Ok(OverlapChoice::MontaByModel),
            ("chunked", _, Ok(d)) if (1..=MAX_CHUNKS).contains(&d) => Ok(OverlapChoice::Chunked(d)),
            ("monta", _, Ok(d)) if (1..=MAX_CHUNKS).contains(&d) => Ok(OverlapChoice::Monta(d)),
            ("micro_batches", _, Ok(m)) if (1..=MAX_MICRO_BATCHES).contains(&m) => Ok(OverlapChoice::MicroBatches(m)),
            _ => Err(format!(
                "`{name}` takes a chunk count from 1 to {MAX_CHUNKS}, or auto; found `{arg}`"
            )),
        }
    }
}

impl fmt::Display for OverlapChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverlapChoice::Fixed(PlainOverlap::None) => f.write_str("none"),
            OverlapChoice::Fixed(PlainOverlap::TwoBatch) => f.write_str("two_batch"),
            OverlapChoice::MicroBatches(m) => write!(f, "micro_batches({m})"),
            OverlapChoice::Chunked(d) => write!(f, "chunked({d})"),
            OverlapChoice::ChunkedByModel => f.write_str("chunked(auto)"),
            OverlapChoice::Monta(n) => write!(f, "monta({n})"),
            OverlapChoice::MontaByModel => f.write_str("monta(auto)"),
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
        let arg = arg.ok_or(
            "`overlap` needs a form: overlap(none), overlap(two_batch), overlap(chunked(4)), overlap(chunked(auto)), overlap(monta(4)), overlap(monta(auto)), overlap(auto)",
        )?;
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
            OverlapChoice::Auto => fastest(ir, cx)?,
            choice => form_of(choice, ir, cx)?,
        };
        ir.overlap = form.clone();
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

/// The form a choice other than `auto` gives.
fn form_of(choice: OverlapChoice, ir: &mut Ir, cx: &PassContext) -> Result<Overlap, String> {
    let uniform = |d: u32| on_moe_layers(cx, d);
    Ok(match choice {
        OverlapChoice::Fixed(plain) => plain.form(),
        OverlapChoice::MicroBatches(1) => Overlap::None,
        OverlapChoice::MicroBatches(2) => Overlap::TwoBatch,
        OverlapChoice::MicroBatches(m) => Overlap::MicroBatches(m),
        OverlapChoice::Chunked(d) => Overlap::Chunked(uniform(d)),
        OverlapChoice::ChunkedByModel => Overlap::Chunked(fsmoe::chunks(ir, cx)?),
        OverlapChoice::Monta(n) => Overlap::Monta(uniform(n)),
        OverlapChoice::MontaByModel => monta::strategy(ir, cx)?,
        OverlapChoice::Auto => return Err("`auto` is not one form".into()),
    })
}

/// Per model layer: `d` on the MoE layers, 0 on the dense ones (the shape
/// of `Overlap::Chunked` and `Overlap::Monta`).
fn on_moe_layers(cx: &PassContext, d: u32) -> Vec<u32> {
    (0..cx.model.layers)
        .map(|l| if cx.model.layer_kind(l) == LayerKind::Moe { d } else { 0 })
        .collect()
}

/// The form whose simulated step is fastest (ties to the earlier, simpler
/// one in `OverlapChoice::TRIED`); each form's time goes in a note.
fn fastest(ir: &mut Ir, cx: &PassContext) -> Result<Overlap, String> {
    let mut best: Option<(f64, Overlap)> = None;
    let mut tried = Vec::new();
    for &choice in OverlapChoice::TRIED {
        let mut trial = ir.clone();
        trial.overlap = form_of(choice, &mut trial, cx)?;
        // What a model's choice noted (its fit, its volumes) is kept.
        ir.header
            .notes
            .extend(trial.header.notes.iter().skip(ir.header.notes.len()).cloned());
        // A model's choice may be a form already timed (monta(auto) without
        // a split expert is none).
        if tried.contains(&trial.overlap) {
            continue;
        }
        tried.push(trial.overlap.clone());
        let seconds = step_time(&trial, cx)?;
        ir.header.notes.push(format!(
            "overlap(auto): {} {:.3} ms a step (simulated)",
            trial.overlap,
            seconds * 1e3
        ));
        if best.as_ref().is_none_or(|(b, _)| seconds < *b) {
            best = Some((seconds, trial.overlap));
        }
    }
    let (seconds, form) = best.ok_or("no overlap form to try")?;
    ir.header
        .notes
        .push(format!("overlap(auto): chose {form} at {:.3} ms a step", seconds * 1e3));
    Ok(form)
}
