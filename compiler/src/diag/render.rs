//! Turning diagnostics into the text a person reads.

use super::{Diagnostic, Severity};
use crate::source::SourceMap;
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::term::{self, Config};

/// Renders diagnostics as rustc-style text (no colour: the output goes to
/// files and snapshots as often as to a terminal).
pub fn render(sources: &SourceMap, diagnostics: &[Diagnostic]) -> String {
    let config = Config::default();
    let mut out = String::new();
    for d in diagnostics {
        let cs = to_codespan(d);
        if term::emit_to_string(&mut out, &config, sources.files(), &cs).is_err() {
            // A span outside its file would be our bug; still say the message.
            out.push_str(&format!(
                "{}[{}]: {}\n",
                severity_word(d.severity),
                d.code.as_str(),
                d.message
            ));
        }
    }
    out
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn to_codespan(d: &Diagnostic) -> CsDiagnostic<usize> {
    let base = match d.severity {
        Severity::Error => CsDiagnostic::error(),
        Severity::Warning => CsDiagnostic::warning(),
    };
    let mut labels = Vec::new();
    if d.has_span {
        labels.push(Label::primary(d.span.file.0, d.span.range()).with_message(d.label.clone()));
    }
    for (span, text) in &d.secondary {
        labels.push(Label::secondary(span.file.0, span.range()).with_message(text.clone()));
    }
    let mut notes = Vec::new();
    if let Some(h) = &d.hint {
        notes.push(format!("hint: {h}"));
    }
    base.with_code(d.code.as_str())
        .with_message(d.message.clone())
        .with_labels(labels)
        .with_notes(notes)
}
