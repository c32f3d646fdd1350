//! Checking a `workload` item into a [`WorkloadSpec`], its routing source
//! included: traces and count files are read (through the [`SourceReader`],
//! like the .moe files) and parsed here, counts also selected from, so
//! their errors point at the argument at fault; calibration targets get the
//! checks that need no model. What needs the model (counts and traces
//! that fit it, calibrations it can reach) waits for a plan (`plan.rs`).

use super::reader::{self, wrong_type, BlockReader};
use super::suggest::did_you_mean;
use super::units::Dim;
use crate::diag::{Code, Diagnostic};
use crate::source::{SourceReader, MAX_FILE_BYTES};
use crate::syntax::ast::{Arg, Block, Decl, Value, ValueKind};
use crate::syntax::Span;
use moec_runtime::routing::calibrate::{CalibrationError, CalibrationTarget, SkewTarget};
use moec_runtime::routing::counts::{
    parse_counts, parse_crosslayer, select, CountFileRole, CountKey, CountSelection, CountVariant, CountsError,
};
use moec_runtime::routing::skewed::SkewedParams;
use moec_runtime::routing::{parse_trace, Trace};
use moec_runtime::units::Seconds;
use moec_runtime::workload::{Phase, RoutingSource, Slo, SloMetric, WorkloadSpec};
use std::path::Path;
use std::sync::Arc;

/// Where a workload's `routing = ...` is written: plan-level diagnostics
/// about the source (counts that do not fit the model, an unreachable
/// calibration) point here.
#[derive(Clone, Debug)]
pub struct RoutingSite {
    /// The whole value, e.g. `counts(...)`.
    pub value: Span,
    /// Each named argument's value.
    pub args: Vec<(String, Span)>,
    /// A `trace(...)`'s contents, read once here and checked against each
    /// plan's model (E0045) before anything is compiled.
    pub trace: Option<Arc<Trace>>,
}

impl RoutingSite {
    /// The value of argument `name`, or the whole value when it is not written.
    pub fn arg(&self, name: &str) -> Span {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.value, |(_, s)| *s)
    }
}

/// Reads a workload. `base_dir` is the folder of its file, against which
/// trace and count paths are resolved; `files` reads the count files. Also
/// gives where its routing is written, when it is.
pub fn check(
    decl: &Decl,
    base_dir: &Path,
    files: &dyn SourceReader,
    diags: &mut Vec<Diagnostic>,
) -> (Option<WorkloadSpec>, Option<RoutingSite>) {
    let mut site = decl.body.stmts.iter().find_map(|s| match s {
        crate::syntax::ast::Stmt::Assign { key, value, .. } if key.text == "routing" => Some(site_of(value)),
        _ => None,
    });
    let mut trace = None;
    let spec = check_spec(decl, base_dir, files, &mut trace, diags);
    if let Some(site) = &mut site {
        site.trace = trace.map(Arc::new);
    }
    (spec, site)
}

fn site_of(v: &Value) -> RoutingSite {
    let args = match &v.kind {
        ValueKind::Call(c) => c
            .args
            .iter()
            .filter_map(|a| Some((a.name.as_ref()?.text.clone(), a.value.span)))
            .collect(),
        _ => Vec::new(),
    };
    RoutingSite {
        value: v.span,
        args,
        trace: None,
    }
}

fn check_spec(
    decl: &Decl,
    base_dir: &Path,
    files: &dyn SourceReader,
    trace: &mut Option<Trace>,
    diags: &mut Vec<Diagnostic>,
) -> Option<WorkloadSpec> {
    let what = format!("workload `{}`", decl.name.text);
    let mut r = BlockReader::new(&what, decl.name.span, &decl.body);
    let phase = match r.choice("phase", &["decode", "prefill"]) {
        Some(("prefill", _)) => Some(Phase::Prefill),
        Some(_) => Some(Phase::Decode),
        None => {
            if r.span_of("phase").is_none() {
                r.missing("phase", "phase = decode");
            }
            None
        }
    };
    let batch = r.req_int("batch", 1, 1 << 24, "batch = 256");
    let context = r.int("context", 1, 1 << 24);
    let seq_len = r.int("seq_len", 1, 1 << 24);
    let steps = r.int("steps", 1, 1 << 24).unwrap_or(1);
    let routing = match r.value("routing") {
        Some(v) => r.check(routing(v, base_dir, files, trace)),
        None => Some(RoutingSource::Uniform { seed: 0 }),
    };
    let (context_span, seq_span) = (r.span_of("context"), r.span_of("seq_len"));
    let slo = r
        .plain_section("slo")
        .map(|(_, body, span)| slo_targets(&what, span, body, diags));
    diags.extend(r.finish());

    let phase = phase?;
    let slo = match slo {
        Some(targets) => Some(slo_of_phase(phase, targets?, diags)?),
        None => None,
    };
    let length = match (phase, context, seq_len) {
        (Phase::Decode, Some(c), None) => c,
        (Phase::Prefill, None, Some(s)) => s,
        (Phase::Decode, _, Some(_)) => {
            diags.push(
                Diagnostic::error(
                    Code::E0023,
                    seq_span.unwrap_or(decl.name.span),
                    "a decode workload has a `context`, not a `seq_len`",
                )
                .with_label("prefill setting in a decode workload")
                .with_hint("write `context = ...`: the tokens behind each new token"),
            );
            return None;
        }
        (Phase::Prefill, Some(_), _) => {
            diags.push(
                Diagnostic::error(
                    Code::E0023,
                    context_span.unwrap_or(decl.name.span),
                    "a prefill workload has a `seq_len`, not a `context`",
                )
                .with_label("decode setting in a prefill workload")
                .with_hint("write `seq_len = ...`: the prompt length"),
            );
            return None;
        }
        (Phase::Decode, None, None) => {
            diags.push(
                Diagnostic::error(Code::E0006, decl.name.span, format!("{what} has no `context`"))
                    .with_label("`context` is required here")
                    .with_hint("add `context = 4096`"),
            );
            return None;
        }
        (Phase::Prefill, None, None) => {
            diags.push(
                Diagnostic::error(Code::E0006, decl.name.span, format!("{what} has no `seq_len`"))
                    .with_label("`seq_len` is required here")
                    .with_hint("add `seq_len = 4096`"),
            );
            return None;
        }
    };
    Some(WorkloadSpec {
        name: decl.name.text.clone(),
        phase,
        batch: batch?,
        seq_len: length,
        steps,
        routing: routing?,
        slo,
    })
}

/// The targets an `slo { ... }` block writes, each with where its value is.
struct SloTargets {
    tpot: Option<(f64, Span)>,
    ttft: Option<(f64, Span)>,
    /// The block, for a block that names no target.
    span: Span,
}

/// The longest latency target: an hour, the longest time a machine may
/// declare (and far past any service's).
const MAX_SLO_S: f64 = 3600.0;

/// Reads `slo { tpot = 50 ms }` / `slo { ttft = 2 s }`: times, positive and
/// at most an hour. `None` when a target is refused (reported).
fn slo_targets(what: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> Option<SloTargets> {
    let mut r = BlockReader::new(format!("the slo of {what}"), span, body);
    let mut ok = true;
    let mut target = |r: &mut BlockReader, key: &'static str| -> Option<(f64, Span)> {
        let written = r.span_of(key);
        let value = r.quantity(key, Dim::Time);
        match (value, written) {
            (Some(v), Some(at)) if v > 0.0 && v <= MAX_SLO_S => Some((v, at)),
            (Some(v), Some(at)) => {
                r.diags.push(
                    Diagnostic::error(
                        Code::E0008,
                        at,
                        format!(
                            "`{key}` = {} is out of range: a target is more than 0 s and at most an hour",
                            Seconds(v)
                        ),
                    )
                    .with_label("out of range"),
                );
                ok = false;
                None
            }
            (None, Some(_)) => {
                ok = false;
                None
            }
            _ => None,
        }
    };
    let tpot = target(&mut r, "tpot");
    let ttft = target(&mut r, "ttft");
    diags.extend(r.finish());
    if ok && tpot.is_none() && ttft.is_none() && body.stmts.is_empty() {
        diags.push(
            Diagnostic::error(Code::E0006, span, format!("the slo of {what} names no target"))
                .with_label("an empty `slo` block")
                .with_hint("add `tpot = 50 ms` (decode) or `ttft = 2 s` (prefill), or remove the block"),
        );
        return None;
    }
    (ok && (tpot.is_some() || ttft.is_some())).then_some(SloTargets { tpot, ttft, span })
}

/// The target of the workload's phase: `tpot` for decode, `ttft` for
/// prefill; the other phase's key is E0023 at its value.
fn slo_of_phase(phase: Phase, t: SloTargets, diags: &mut Vec<Diagnostic>) -> Option<Slo> {
    let (own, other, other_key, own_key) = match phase {
        Phase::Decode => (t.tpot, t.ttft, "ttft", "tpot"),
        Phase::Prefill => (t.ttft, t.tpot, "tpot", "ttft"),
    };
    if let Some((_, at)) = other {
        let phase_name = if phase == Phase::Decode { "decode" } else { "prefill" };
        diags.push(
            Diagnostic::error(
                Code::E0023,
                at,
                format!("a {phase_name} workload's slo bounds `{own_key}`, not `{other_key}`"),
            )
            .with_label(format!("`{other_key}` has no meaning for a {phase_name} step"))
            .with_hint(match phase {
                Phase::Decode => {
                    "a decode step gives each sequence its next token: write `tpot = ...` (time per output token)"
                }
                Phase::Prefill => {
                    "a prefill step gives each sequence its first token: write `ttft = ...` (time to first token)"
                }
            }),
        );
        return None;
    }
    let Some((target_s, _)) = own else {
        diags.push(
            Diagnostic::error(Code::E0006, t.span, format!("this slo has no `{own_key}`"))
                .with_label(format!("`{own_key}` is required here")),
        );
        return None;
    };
    Some(Slo {
        metric: SloMetric::of(phase),
        target_s,
    })
}

/// Every routing source's name, for "unknown routing" hints.
const SOURCES: &[&str] = &["uniform", "zipf", "skewed", "trace", "counts", "calibrated", "gate"];

/// `uniform`, `uniform(seed = 1)`, `zipf(s = 1.2, layer_corr = 0.6, drift = 0.02, seed = 7)`,
/// `skewed(hot = 0.1, boost = 0.6, seed = 7)`, `trace("file")`,
/// `counts("file", model = "m", domain = "d", variant = topk, crosslayer = "file", seed = 1)`,
/// `calibrated(skew = 1.3, dependency = 0.64, drift = 0.02, seed = 1)`, `gate` / `gate(seed = 1)`.
fn routing(
    v: &Value,
    base_dir: &Path,
    files: &dyn SourceReader,
    trace: &mut Option<Trace>,
) -> Result<RoutingSource, Diagnostic> {
    let (name, args) = match &v.kind {
        ValueKind::Name(n) => (n.as_str(), &[][..]),
        ValueKind::Call(c) => (c.name.text.as_str(), c.args.as_slice()),
        other => {
            return Err(wrong_type(
                v,
                "routing",
                "uniform, zipf(...), skewed(...), trace(\"file\"), counts(\"file\", ...), calibrated(...) or gate",
                other.describe(),
            ))
        }
    };
    let named = |key: &str| {
        args.iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.text == key))
            .map(|a| &a.value)
    };
    let allowed: &[&str] = match name {
        "uniform" | "gate" => &["seed"],
        "zipf" => &["s", "layer_corr", "drift", "seed"],
        "skewed" => &["hot", "boost", "seed"],
        "trace" => &[],
        "counts" => &["model", "domain", "variant", "crosslayer", "seed"],
        "calibrated" => &["skew", "dependency", "drift", "seed"],
        other => return Err(reader::unknown_choice(v.span, "routing", other, SOURCES)),
    };
    let takes_path = matches!(name, "trace" | "counts");
    for a in args {
        let ok = match &a.name {
            Some(n) => allowed.contains(&n.text.as_str()),
            None => takes_path,
        };
        if !ok {
            return Err(Diagnostic::error(
                Code::E0018,
                a.value.span,
                format!("`{name}` does not take this argument"),
            )
            .with_label("unexpected")
            .with_hint(match name {
                "uniform" => "write uniform or uniform(seed = 7)",
                "gate" => "write gate or gate(seed = 7)",
                "zipf" => {
                    "write zipf(s = 1.2, layer_corr = 0.6, drift = 0.02, seed = 7); every argument is optional but s"
                }
                "skewed" => "write skewed(hot = 0.1, boost = 0.6, seed = 7); every argument is optional",
                "counts" => {
                    "write counts(\"expert_counts.json\", model = \"mistral\", domain = \"arxiv\", variant = topk, \
                     crosslayer = \"crosslayer_counts.json\", seed = 1); all but the file are optional"
                }
                "calibrated" => {
                    "write calibrated(skew = 1.3, dependency = 0.64, drift = 0.02, seed = 1); skew may be a list with \
                     one value per MoE layer, and all but skew are optional"
                }
                _ => "write trace(\"path/to/trace.json\")",
            }));
        }
    }
    let seed = match named("seed") {
        Some(s) => reader::int(s, "seed", 0, u64::MAX)?,
        None => 0,
    };
    match name {
        "uniform" => Ok(RoutingSource::Uniform { seed }),
        "gate" => Ok(RoutingSource::Gate { seed }),
        "zipf" => {
            let s = match named("s") {
                Some(s) => reader::float(s, "s", 0.0, 10.0)?,
                None => {
                    return Err(Diagnostic::error(Code::E0018, v.span, "zipf needs its exponent `s`")
                        .with_label("no `s`")
                        .with_hint("write zipf(s = 1.2)"))
                }
            };
            let layer_corr = named("layer_corr")
                .map(|x| reader::float(x, "layer_corr", 0.0, 1.0))
                .transpose()?
                .unwrap_or(0.0);
            let drift = named("drift")
                .map(|x| reader::float(x, "drift", 0.0, 1.0))
                .transpose()?
                .unwrap_or(0.0);
            Ok(RoutingSource::Zipf {
                s,
                layer_corr,
                drift,
                seed,
            })
        }
        "skewed" => {
            let defaults = SkewedParams::MOESHARD;
            let hot = named("hot").map(skewed_hot).transpose()?.unwrap_or(defaults.hot);
            let boost = named("boost")
                .map(|x| {
                    reader::float(x, "boost", 0.0, 1e15).map_err(|d| {
                        d.with_hint(
                            "the probability added to each hot expert before renormalising, >= 0 \
                             (MoEShard's is 0.6; 0 is uniform routing)",
                        )
                    })
                })
                .transpose()?
                .unwrap_or(defaults.boost);
            Ok(RoutingSource::Skewed { hot, boost, seed })
        }
        "counts" => counts(v, args, base_dir, files, seed),
        "calibrated" => {
            let skew = match named("skew") {
                Some(x) => skew(x)?,
                None => {
                    return Err(
                        Diagnostic::error(Code::E0018, v.span, "calibrated needs the `skew` to aim at")
                            .with_label("no `skew`")
                            .with_hint(
                                "write calibrated(skew = 1.3), or with a cross-layer dependency \
                                        calibrated(skew = 1.3, dependency = 0.64)",
                            ),
                    )
                }
            };
            let dependency = named("dependency")
                .map(|x| reader::float(x, "dependency", 0.0, 1.0))
                .transpose()?;
            let drift = named("drift")
                .map(|x| reader::float(x, "drift", 0.0, 1.0))
                .transpose()?
                .unwrap_or(0.0);
            Ok(RoutingSource::Calibrated {
                skew,
                dependency,
                drift,
                seed,
            })
        }
        _ => {
            let (text, span) = path_arg(v, args, "trace")?;
            let resolved = base_dir.join(text);
            let bytes = match files.read_data(&resolved, moec_runtime::input::MAX_DATA_FILE_BYTES) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(
                        Diagnostic::error(Code::E0022, span, format!("routing trace `{text}` not found"))
                            .with_label(format!("looked for {}", resolved.display()))
                            .with_hint("trace paths are relative to the .moe file"),
                    )
                }
                Err(e) => {
                    return Err(Diagnostic::error(
                        Code::E0045,
                        span,
                        format!("cannot read routing trace `{text}`: {e}"),
                    )
                    .with_label("this trace"))
                }
            };
            let path = resolved.display().to_string();
            let parsed = String::from_utf8(bytes)
                .map_err(|e| format!("{path}: not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
                .and_then(|t| parse_trace(&t, &path));
            *trace = Some(parsed.map_err(|e| {
                Diagnostic::error(Code::E0045, v.span, e)
                    .with_label("this trace")
                    .with_hint("docs/TRACES.md gives the format")
            })?);
            Ok(RoutingSource::Trace { path })
        }
    }
}

/// `skewed`'s `hot`: the fraction of the experts that are hot, in (0, 1]
/// (E0008 outside: no expert hot, or more than all of them).
fn skewed_hot(v: &Value) -> Result<f64, Diagnostic> {
    match &v.kind {
        ValueKind::Number(n) if n.value > 0.0 && n.value <= 1.0 => Ok(n.value),
        ValueKind::Number(n) => Err(Diagnostic::error(
            Code::E0008,
            v.span,
            format!(
                "`hot` = {} is out of range: it must be more than 0 and at most 1",
                n.text
            ),
        )
        .with_label("out of range")
        .with_hint(
            "the fraction of the experts that are hot: the first ceil(hot x experts), at least one \
             (MoEShard's is 0.1; 1 is uniform routing)",
        )),
        other => Err(wrong_type(v, "hot", "a number", other.describe())),
    }
}

/// The one positional file name of `trace(...)` or `counts(...)`.
fn path_arg<'a>(v: &Value, args: &'a [Arg], what: &str) -> Result<(&'a str, Span), Diagnostic> {
    let positional: Vec<&Arg> = args.iter().filter(|a| a.name.is_none()).collect();
    let example = if what == "trace" {
        "write trace(\"path/to/trace.json\")"
    } else {
        "write counts(\"path/to/expert_counts.json\", ...): the file first, then the named settings"
    };
    match positional.as_slice() {
        [a] => match &a.value.kind {
            ValueKind::Str(s) => Ok((s.as_str(), a.value.span)),
            other => Err(wrong_type(&a.value, what, "a file name in quotes", other.describe())),
        },
        _ => Err(
            Diagnostic::error(Code::E0018, v.span, format!("{what} takes one file name"))
                .with_label("here")
                .with_hint(example),
        ),
    }
}

/// A skew: one number, or a list with one per MoE layer; each at least 1
/// (E0034 below: max / mean cannot be below 1).
fn skew(v: &Value) -> Result<SkewTarget, Diagnostic> {
    let one = |x: &Value| -> Result<f64, Diagnostic> {
        let s = reader::float(x, "skew", 0.0, 1e9)?;
        let target = CalibrationTarget {
            skew: SkewTarget::Every(s),
            dependency: None,
        };
        target.check().map_err(|e| calibration_error(&e, x.span))?;
        Ok(s)
    };
    match &v.kind {
        ValueKind::List(items) if !items.is_empty() => {
            Ok(SkewTarget::PerLayer(items.iter().map(one).collect::<Result<_, _>>()?))
        }
        ValueKind::List(_) => Err(wrong_type(v, "skew", "a number or a list of numbers", "an empty list")),
        _ => one(v).map(SkewTarget::Every),
    }
}

/// E0034 for an unreachable calibration target, at `span`.
pub fn calibration_error(e: &CalibrationError, span: Span) -> Diagnostic {
    let hint = match e {
        CalibrationError::SkewBelowOne { .. } => {
            "skew = 1 is uniform routing; real layers measure 1.07 (Mixtral) to 7.8 \
                                                  (OLMoE per domain)"
                .to_string()
        }
        CalibrationError::SkewTooHigh { max, .. } => format!("aim at {max:.2} or less"),
        CalibrationError::SkewList { layers, .. } => {
            format!("give one skew for every layer, or a list of {layers} values")
        }
        CalibrationError::DependencyTooLow { min, .. } => {
            format!("aim at {min:.3} or more, or leave `dependency` out for independent layers")
        }
        CalibrationError::DependencyTooHigh { max, .. } => format!("aim at {max:.3} or less"),
        CalibrationError::OneLayer => "leave `dependency` out".to_string(),
        CalibrationError::FewExperts { .. } => "leave `dependency` out, or aim at 1".to_string(),
        CalibrationError::DependencyOutOfRange { .. } => "a fraction between 0 and 1".to_string(),
        CalibrationError::Model(_) => "fix the model first".to_string(),
    };
    Diagnostic::error(Code::E0034, span, e.to_string())
        .with_label("cannot be reached")
        .with_hint(hint)
}

/// `counts("file", model = "m", domain = "d", variant = topk, crosslayer = "file", seed = 1)`:
/// reads, parses and selects now, so every error has its argument's span.
fn counts(
    v: &Value,
    args: &[Arg],
    base_dir: &Path,
    files: &dyn SourceReader,
    seed: u64,
) -> Result<RoutingSource, Diagnostic> {
    let arg = |key: &str| {
        args.iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.text == key))
            .map(|a| &a.value)
    };
    let string = |key: &str| -> Result<Option<(String, Span)>, Diagnostic> {
        match arg(key) {
            None => Ok(None),
            Some(x) => match &x.kind {
                ValueKind::Str(s) => Ok(Some((s.clone(), x.span))),
                other => Err(wrong_type(x, key, "a name in quotes", other.describe())),
            },
        }
    };
    let (path, path_span) = path_arg(v, args, "counts")?;
    let variant = match arg("variant") {
        None => None,
        Some(x) => {
            let names: Vec<&'static str> = CountVariant::ALL.iter().map(|(n, _)| *n).collect();
            let n = reader::choice(x, "variant", &names)?;
            CountVariant::ALL.iter().find(|(m, _)| *m == n).map(|(_, c)| *c)
        }
    };
    let model = string("model")?;
    let domain = string("domain")?;
    let cross = string("crosslayer")?;
    let text = read_data(base_dir, path, path_span, files)?;
    let file = parse_counts(&text, path).map_err(|e| counts_error(&e, v, path_span, None, args))?;
    let cross_file = match &cross {
        Some((c, span)) => {
            let text = read_data(base_dir, c, *span, files)?;
            Some(parse_crosslayer(&text, c).map_err(|e| counts_error(&e, v, path_span, Some(*span), args))?)
        }
        None => None,
    };
    let selection = CountSelection {
        model: model.map(|m| m.0),
        domain: domain.map(|d| d.0),
        variant,
    };
    let picked = select(
        &file,
        path,
        &selection,
        cross_file.as_ref().zip(cross.as_ref().map(|c| c.0.as_str())),
    )
    .map_err(|e| counts_error(&e, v, path_span, cross.as_ref().map(|c| c.1), args))?;
    Ok(RoutingSource::Counts {
        counts: Box::new(picked),
        seed,
    })
}

/// The text of a routing data file, or E0030.
fn read_data(base_dir: &Path, path: &str, span: Span, files: &dyn SourceReader) -> Result<String, Diagnostic> {
    let resolved = base_dir.join(path);
    let unreadable = |why: String| {
        Diagnostic::error(
            Code::E0030,
            span,
            format!("routing data `{path}` cannot be read: {why}"),
        )
        .with_label(format!("looked for {}", resolved.display()))
        .with_hint("data paths are relative to the .moe file")
    };
    let bytes = files.read(&resolved).map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(unreadable(format!(
            "it is {} bytes; moec reads files up to {MAX_FILE_BYTES} bytes",
            bytes.len()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        unreadable(format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// A count-file error as a diagnostic at the argument at fault: E0031 at
/// the file, E0032 at the setting that names nothing (or the call, when the
/// setting is missing), E0018 at a setting the file kind does not take.
fn counts_error(e: &CountsError, v: &Value, path: Span, cross: Option<Span>, args: &[Arg]) -> Diagnostic {
    let arg_span = |key: CountKey| {
        args.iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.text == key.name()))
            .map(|a| a.value.span)
    };
    let file_span = |role: CountFileRole| match role {
        CountFileRole::Crosslayer => cross.unwrap_or(path),
        CountFileRole::Counts => path,
    };
    match e {
        CountsError::Malformed { role, .. } => Diagnostic::error(Code::E0031, file_span(*role), e.to_string())
            .with_label("not usable routing data")
            .with_hint("docs/TRACES.md describes the count formats moec reads"),
        CountsError::NotFound {
            role,
            key,
            given,
            present,
            ..
        } => {
            let (span, label) = match (arg_span(*key), role) {
                (Some(s), CountFileRole::Counts) => (s, "not in the file".to_string()),
                (_, CountFileRole::Crosslayer) => (file_span(*role), format!("lacks this {}", key.name())),
                (None, CountFileRole::Counts) if given.is_some() => (path, format!("lacks this {}", key.name())),
                (None, CountFileRole::Counts) => (v.span, format!("which {}?", key.name())),
            };
            let hint = given
                .as_deref()
                .and_then(|g| did_you_mean(g, present.iter().map(String::as_str)))
                .map(|d| format!("{d} ({}s in the file: {})", key.name(), present.join(", ")))
                .unwrap_or_else(|| match key {
                    CountKey::Variant => format!("the variants there: {}", present.join(", ")),
                    _ => format!("write {} = \"...\", one of: {}", key.name(), present.join(", ")),
                });
            Diagnostic::error(Code::E0032, span, e.to_string())
                .with_label(label)
                .with_hint(hint)
        }
        CountsError::NotApplicable { key, why, .. } => Diagnostic::error(
            Code::E0018,
            arg_span(*key).unwrap_or(cross.unwrap_or(v.span)),
            format!("`counts` does not take `{}` for this file: {why}", key.name()),
        )
        .with_label("does not apply")
        .with_hint("an SGLang record takes counts(\"file.json\", seed = 1)"),
    }
}
