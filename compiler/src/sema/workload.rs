//! Checking a `workload` item into a [`WorkloadSpec`].

use super::reader::{self, wrong_type, BlockReader};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{Decl, Value, ValueKind};
use moec_runtime::workload::{Phase, RoutingSource, WorkloadSpec};
use std::path::Path;

/// Reads a workload. `base_dir` is the folder of its file, against which a
/// trace path is resolved.
pub fn check(decl: &Decl, base_dir: &Path, diags: &mut Vec<Diagnostic>) -> Option<WorkloadSpec> {
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
        Some(v) => r.check(routing(v, base_dir)),
        None => Some(RoutingSource::Uniform { seed: 0 }),
    };
    let (context_span, seq_span) = (r.span_of("context"), r.span_of("seq_len"));
    diags.extend(r.finish());

    let phase = phase?;
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
    })
}

/// `uniform`, `uniform(seed = 1)`, `zipf(s = 1.2, layer_corr = 0.6, drift = 0.02, seed = 7)`, `trace("file")`,
/// `gate` / `gate(seed = 1)`.
fn routing(v: &Value, base_dir: &Path) -> Result<RoutingSource, Diagnostic> {
    let (name, args) = match &v.kind {
        ValueKind::Name(n) => (n.as_str(), &[][..]),
        ValueKind::Call(c) => (c.name.text.as_str(), c.args.as_slice()),
        other => {
            return Err(wrong_type(
                v,
                "routing",
                "uniform, zipf(...) or trace(\"file\")",
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
        "trace" => &[],
        other => {
            return Err(reader::unknown_choice(
                v.span,
                "routing",
                other,
                &["uniform", "zipf", "trace"],
            ))
        }
    };
    for a in args {
        let ok = match &a.name {
            Some(n) => allowed.contains(&n.text.as_str()),
            None => name == "trace",
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
                "zipf" => {
                    "write zipf(s = 1.2, layer_corr = 0.6, drift = 0.02, seed = 7); every argument is optional but s"
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
        _ => {
            let path = match args {
                [a] => match &a.value.kind {
                    ValueKind::Str(s) => (s, a.value.span),
                    other => return Err(wrong_type(&a.value, "trace", "a file name in quotes", other.describe())),
                },
                _ => {
                    return Err(Diagnostic::error(Code::E0018, v.span, "trace takes one file name")
                        .with_label("here")
                        .with_hint("write trace(\"path/to/trace.json\")"))
                }
            };
            let resolved = base_dir.join(path.0);
            if !resolved.is_file() {
                return Err(
                    Diagnostic::error(Code::E0022, path.1, format!("routing trace `{}` not found", path.0))
                        .with_label(format!("looked for {}", resolved.display()))
                        .with_hint("trace paths are relative to the .moe file"),
                );
            }
            Ok(RoutingSource::Trace {
                path: resolved.display().to_string(),
            })
        }
    }
}
