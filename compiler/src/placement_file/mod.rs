//! Placement files: a compiled expert placement in the formats serving
//! engines read (SGLang, vllm-ascend, TensorRT-LLM) and in moec's own,
//! written by `moec compile --emit placement --format F` and read back by a
//! plan's `placement = file("...")`. `docs/PLACEMENT_FORMATS.md` describes
//! each format and how moec maps its devices.
//!
//! Two in-memory forms sit between the files and the IR. [`ExpertLayout`]
//! is what the IR and the schedule hold: per layer, the dies of every
//! expert. [`slots::DeviceSlots`] is what engines hold: per MoE layer, per
//! device, the expert in each slot. Devices are the machine's alive dies in
//! id order, and every device has the same number of slots, as engines
//! require. Each format's file (`sglang.rs`, `vllm_ascend.rs`, `trtllm.rs`,
//! `moec.rs`) converts one of these forms to text and back; this file picks
//! the format, reads the file and reports problems as [`Problem`]s, one
//! diagnostic code per kind.

mod json;
mod moec;
mod sglang;
mod slots;
mod trtllm;
mod vllm_ascend;
mod yaml;

use crate::diag::{Code, Diagnostic};
use crate::source::{SourceReader, MAX_FILE_BYTES};
use crate::syntax::Span;
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::model::{LayerKind, ModelSpec};
use moec_runtime::units::Bytes;
use std::path::Path;

/// A placement file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// SGLang's `--init-expert-location` JSON: `physical_to_logical_map`.
    Sglang,
    /// vllm-ascend's expert map JSON (`expert_map_path`).
    VllmAscend,
    /// TensorRT-LLM's `moe_load_balancer.yaml`.
    Trtllm,
    /// moec's own versioned JSON: every expert's replicas as dies.
    Moec,
}

impl Format {
    /// Every format, in the order the documentation lists them.
    pub const ALL: [Format; 4] = [Format::Sglang, Format::VllmAscend, Format::Trtllm, Format::Moec];

    /// The spelling on the command line and in `file(..., format = "...")`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Sglang => "sglang",
            Format::VllmAscend => "vllm-ascend",
            Format::Trtllm => "trtllm",
            Format::Moec => "moec",
        }
    }

    /// The format spelled `name`.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The engine's name, for messages.
    fn engine(self) -> &'static str {
        match self {
            Format::Sglang => "SGLang",
            Format::VllmAscend => "vllm-ascend",
            Format::Trtllm => "TensorRT-LLM",
            Format::Moec => "moec",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per layer of the model, the dies holding a replica of each expert, in
/// ascending id order without repeats (dense layers: empty). The shape of
/// the schedule's `Placement::experts`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpertLayout {
    pub experts: Vec<Vec<Vec<DieId>>>,
}

/// What kind of problem a placement file has; each kind is one code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// E0035: the file cannot be read.
    Unreadable,
    /// E0036: the text is none of the formats, or breaks its format's rules.
    Malformed,
    /// E0037: the file does not describe the plan's model.
    Model,
    /// E0038: the file's devices or dies are not the machine's alive dies.
    Machine,
    /// E0039: slots do not divide evenly over the devices.
    Slots,
    /// E0020: padding slots would not fit a die's memory.
    Memory,
}

impl ProblemKind {
    /// The diagnostic code of this kind.
    pub fn code(self) -> Code {
        match self {
            ProblemKind::Unreadable => Code::E0035,
            ProblemKind::Malformed => Code::E0036,
            ProblemKind::Model => Code::E0037,
            ProblemKind::Machine => Code::E0038,
            ProblemKind::Slots => Code::E0039,
            ProblemKind::Memory => Code::E0020,
        }
    }
}

/// A problem reading or writing a placement file, with a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
    pub hint: String,
}

impl Problem {
    fn new(kind: ProblemKind, message: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            kind,
            message: message.into(),
            hint: hint.into(),
        }
    }

    fn malformed(message: impl Into<String>) -> Problem {
        Problem::new(
            ProblemKind::Malformed,
            message,
            "the formats are described in docs/PLACEMENT_FORMATS.md",
        )
    }

    /// As a diagnostic at `span`: the `file(...)` call it was read from, or
    /// the plan whose placement `--emit placement` refused to write.
    pub fn into_diagnostic(self, span: Option<Span>) -> Diagnostic {
        let d = match span {
            Some(span) => Diagnostic::error(self.kind.code(), span, self.message).with_label(match self.kind {
                ProblemKind::Unreadable => "cannot read this file",
                ProblemKind::Malformed => "in this placement file",
                ProblemKind::Model => "this placement is for another model",
                ProblemKind::Machine => "this placement is for another machine",
                ProblemKind::Slots => "this placement's slots do not divide over the devices",
                ProblemKind::Memory => "this placement does not fit",
            }),
            None => Diagnostic::global(self.kind.code(), self.message),
        };
        d.with_hint(self.hint)
    }
}

/// The model and machine a placement file is written for or read against.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub model: &'a ModelSpec,
    pub machine: &'a Machine,
}

impl Target<'_> {
    /// Routed experts per MoE layer (0 for a dense model).
    fn experts(&self) -> u64 {
        self.model.moe.as_ref().map_or(0, |m| m.experts)
    }

    /// The model's MoE layers, ascending.
    fn moe_layers(&self) -> Vec<u64> {
        (0..self.model.layers)
            .filter(|&l| self.model.layer_kind(l) == LayerKind::Moe)
            .collect()
    }

    /// The devices of the engine formats: the alive dies in id order.
    fn devices(&self) -> Vec<DieId> {
        self.machine.alive_dies()
    }

    /// E0037 unless the model has MoE layers: a placement places experts.
    fn require_moe(&self) -> Result<(), Problem> {
        if self.experts() == 0 || self.moe_layers().is_empty() {
            return Err(Problem::new(
                ProblemKind::Model,
                format!(
                    "model `{}` has no MoE layers: there is no expert placement",
                    self.model.name
                ),
                "placement files place routed experts; use a model with a `moe { ... }` block",
            ));
        }
        Ok(())
    }
}

/// What the engine formats do with dies that hold fewer experts than
/// others (engines give every device the same number of slots).
#[derive(Clone, Copy, Debug)]
pub enum Padding<'a> {
    /// Refuse with E0039, naming the dies and their counts.
    Refuse,
    /// Fill each short die's spare slots with its own experts again (id
    /// order), if `free[die id]`, the memory left on each die, holds the
    /// extra copies (E0020 otherwise). Read back, the repeats are extra
    /// slots, as an engine would load them.
    Repeat { free: &'a [Bytes] },
}

/// Writes `layout` (compiled from plan `plan`) in `format`. Engine formats
/// need the same number of experts on every alive die in every MoE layer:
/// `padding` says what to do when they differ.
pub fn write(
    format: Format,
    layout: &ExpertLayout,
    plan: &str,
    target: Target,
    padding: Padding,
) -> Result<String, Problem> {
    target.require_moe()?;
    match format {
        Format::Moec => Ok(moec::write(layout, plan, target)),
        engine => {
            let slots = slots::DeviceSlots::from_layout(layout, target, engine, padding)?;
            Ok(match engine {
                Format::Sglang => sglang::write(&slots, target),
                Format::VllmAscend => vllm_ascend::write(&slots),
                _ => trtllm::write(&slots),
            })
        }
    }
}

/// Reads the placement file at `path` (through `reader`, so tests can hold
/// it in memory) in `format`, or the format its content shows, and checks
/// it against the model and machine.
pub fn read(
    reader: &dyn SourceReader,
    path: &Path,
    format: Option<Format>,
    target: Target,
) -> Result<ExpertLayout, Problem> {
    let shown = path.display();
    let bytes = reader.read(path).map_err(|e| {
        Problem::new(
            ProblemKind::Unreadable,
            format!("cannot read placement file `{shown}`: {e}"),
            "paths in file(\"...\") are relative to the folder of the .moe file that holds the plan",
        )
    })?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Problem::new(
            ProblemKind::Unreadable,
            format!(
                "placement file `{shown}` is {} bytes; moec reads files up to {MAX_FILE_BYTES} bytes",
                bytes.len()
            ),
            "a placement of every expert of the largest models is far smaller; is this the right file?",
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Problem::malformed(format!(
            "placement file `{shown}` is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, format, target).map_err(|mut p| {
        p.message = format!("`{shown}`: {}", p.message);
        p
    })
}

/// Parses a placement file's text in `format` (or the format its content
/// shows) and checks it against the model and machine.
pub fn parse(text: &str, format: Option<Format>, target: Target) -> Result<ExpertLayout, Problem> {
    target.require_moe()?;
    let format = match format {
        Some(f) => f,
        None => detect(text)?,
    };
    let parsed = match format {
        Format::Moec => moec::read(text, target),
        engine => match engine {
            Format::Sglang => sglang::read(text, target),
            Format::VllmAscend => vllm_ascend::read(text, target),
            _ => trtllm::read(text, target),
        }
        .and_then(|slots| slots.into_layout(target, engine)),
    };
    parsed.map_err(|mut p| {
        // A file of another format than the one named fails in confusing
        // ways (missing keys); say what it looks like instead.
        if p.kind == ProblemKind::Malformed {
            if let Ok(seen) = detect(text) {
                if seen != format {
                    p.hint = format!("the file looks like {seen}, not {format}: drop `format = ...` or name {seen}");
                }
            }
        }
        p
    })
}

/// The format of a placement file's text, from its keys. Three formats are
/// JSON objects told apart by their keys; TensorRT-LLM's is YAML (of which
/// JSON is a subset, so a JSON object with its keys is TensorRT-LLM's too).
pub fn detect(text: &str) -> Result<Format, Problem> {
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => o,
        Ok(other) => {
            return Err(Problem::malformed(format!(
                "a placement file is a JSON object or a YAML mapping, found a JSON {}",
                json::kind(&other)
            )))
        }
        Err(e) => {
            // Text that starts like JSON is meant as JSON: its error is the useful one.
            if text.trim_start().starts_with(['{', '[']) {
                return Err(Problem::malformed(format!("invalid JSON: {e}")));
            }
            let keys = yaml::top_level_keys(text).map_err(Problem::malformed)?;
            if keys.iter().any(|k| trtllm::KEYS.contains(&k.as_str())) {
                return Ok(Format::Trtllm);
            }
            return Err(Problem::malformed(format!(
                "not JSON, and a YAML mapping without TensorRT-LLM's keys (found: {})",
                list_or_none(&keys)
            )));
        }
    };
    let has = |k: &str| object.contains_key(k);
    if object.get("format").and_then(|f| f.as_str()) == Some(moec::FORMAT_NAME) {
        Ok(Format::Moec)
    } else if has("physical_to_logical_map") {
        Ok(Format::Sglang)
    } else if has("layer_list") || has("moe_layer_count") {
        Ok(Format::VllmAscend)
    } else if trtllm::KEYS.iter().any(|k| has(k)) {
        Ok(Format::Trtllm)
    } else {
        let keys: Vec<String> = object.keys().cloned().collect();
        Err(Problem::malformed(format!(
            "a JSON object with none of the formats' keys (found: {})",
            list_or_none(&keys)
        )))
    }
}

/// `a, b, c` (the first few), or `none`.
fn list_or_none(keys: &[String]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    let shown: Vec<&str> = keys.iter().take(6).map(String::as_str).collect();
    let more = if keys.len() > shown.len() { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}
