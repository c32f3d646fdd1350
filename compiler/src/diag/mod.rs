//! Diagnostics: every error and warning moec reports about its input.
//!
//! A [`Diagnostic`] has a stable [`Code`] (documented in `codes.rs` and by
//! `moec explain`), a message naming the offending thing, a primary span, and
//! where it helps secondary labels and a hint. Rendering goes through
//! codespan-reporting so the output looks like rustc's.

mod codes;
mod render;

pub use codes::Code;
pub use render::render;

use crate::syntax::Span;

/// How bad it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One report about the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub span: Span,
    /// False for diagnostics about the command line rather than a file
    /// (`--plan` naming no plan): they render without a source snippet.
    pub has_span: bool,
    /// Text under the primary span (may be empty).
    pub label: String,
    /// Other places that explain the error.
    pub secondary: Vec<(Span, String)>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error with `code` at `span`.
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            has_span: true,
            label: String::new(),
            secondary: Vec::new(),
            hint: None,
        }
    }

    /// An error about the command line, with no source position.
    pub fn global(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            has_span: false,
            ..Diagnostic::error(code, Span::default(), message)
        }
    }

    /// A warning with `code` at `span`.
    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// Sets the text under the primary span.
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    /// Adds a secondary label.
    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, label.into()));
        self
    }

    /// Sets the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the hint if there is one.
    pub fn with_hint_opt(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A collection of diagnostics, in the order they were found.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records one.
    pub fn push(&mut self, d: Diagnostic) {
        self.list.push(d);
    }

    /// Records many.
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.list.extend(ds);
    }

    /// True if any is an error.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.list.iter().filter(|d| d.is_error()).count()
    }

    /// All of them, sorted by file and position so output is stable.
    pub fn sorted(&self) -> Vec<Diagnostic> {
        let mut v = self.list.clone();
        v.sort_by_key(|d| (d.span.file, d.span.start, d.code));
        v.dedup();
        v
    }

    /// The raw list.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.list
    }
}
