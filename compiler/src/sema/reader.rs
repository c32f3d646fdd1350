//! Reading a block's settings with types, units and ranges checked.
//!
//! A [`BlockReader`] is asked for each key a block may hold (`int`,
//! `quantity`, `choice`, `section` ...). Every key asked for becomes a known
//! key, so [`BlockReader::finish`] can report the keys nobody asked for with
//! "did you mean" against exactly the keys this block accepts: the schema is
//! the reading code itself, and cannot drift from it.

use super::suggest::did_you_mean;
use super::units::{self, Dim};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{Block, Call, Ident, Stmt, Value, ValueKind};
use crate::syntax::Span;

/// Reads one block. `what` names it in messages ("model `m`").
pub struct BlockReader<'a> {
    what: String,
    block: &'a Block,
    head: Span,
    known: Vec<&'static str>,
    pub diags: Vec<Diagnostic>,
}

impl<'a> BlockReader<'a> {
    /// A reader for `block`; missing keys are reported at `head`.
    pub fn new(what: impl Into<String>, head: Span, block: &'a Block) -> BlockReader<'a> {
        BlockReader {
            what: what.into(),
            block,
            head,
            known: Vec::new(),
            diags: Vec::new(),
        }
    }

    /// The statement for `key`, reporting duplicates.
    fn stmt(&mut self, key: &'static str) -> Option<&'a Stmt> {
        self.known.push(key);
        let mut found = self.block.stmts.iter().filter(|s| s.key().text == key);
        let first = found.next()?;
        if let Some(second) = found.next() {
            self.diags.push(
                Diagnostic::error(
                    Code::E0005,
                    second.key().span,
                    format!("`{key}` is set twice in {}", self.what),
                )
                .with_label("set again here")
                .with_secondary(first.key().span, "first set here")
                .with_hint("remove one of them"),
            );
        }
        Some(first)
    }

    /// Where `key`'s value is written, if it is (no checks, no reports).
    pub fn span_of(&self, key: &str) -> Option<Span> {
        self.block.stmts.iter().find_map(|s| match s {
            Stmt::Assign { key: k, value, .. } if k.text == key => Some(value.span),
            _ => None,
        })
    }

    /// The value of `key = value`.
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        match self.stmt(key)? {
            Stmt::Assign { value, .. } => Some(value),
            other => {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0007,
                        other.span(),
                        format!("`{key}` in {} takes a value", self.what),
                    )
                    .with_label("not a `key = value` setting")
                    .with_hint(format!("write `{key} = ...`")),
                );
                None
            }
        }
    }

    /// A required value; reports E0006 with `example` as the hint.
    pub fn required(&mut self, key: &'static str, example: &str) -> Option<&'a Value> {
        let v = self.value(key);
        if v.is_none() && !self.block.stmts.iter().any(|s| s.key().text == key) {
            self.missing(key, example);
        }
        v
    }

    /// Reports that `key` is missing.
    pub fn missing(&mut self, key: &str, example: &str) {
        self.diags.push(
            Diagnostic::error(Code::E0006, self.head, format!("{} has no `{key}`", self.what))
                .with_label(format!("`{key}` is required here"))
                .with_hint(format!("add `{example}`")),
        );
    }

    /// `key label? { ... }`: the optional label and the block.
    pub fn section(&mut self, key: &'static str) -> Option<(Option<&'a Ident>, &'a Block, Span)> {
        match self.stmt(key)? {
            Stmt::Section { label, body, span, .. } => Some((label.as_ref(), body, *span)),
            other => {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0007,
                        other.span(),
                        format!("`{key}` in {} is a block", self.what),
                    )
                    .with_label("expected `{ ... }`")
                    .with_hint(format!("write `{key} {{ ... }}`")),
                );
                None
            }
        }
    }

    /// `key { ... }` with no label: a label is reported (it would be ignored).
    pub fn plain_section(&mut self, key: &'static str) -> Option<(Option<&'a Ident>, &'a Block, Span)> {
        let found = self.section(key)?;
        if let Some(label) = found.0 {
            self.diags.push(
                Diagnostic::error(
                    Code::E0007,
                    label.span,
                    format!("`{key}` in {} takes no label", self.what),
                )
                .with_label("remove this")
                .with_hint(format!("write `{key} {{ ... }}`")),
            );
        }
        Some(found)
    }

    /// Every `key label? { ... }` section (repeatable, as a machine's `kind`s).
    pub fn sections(&mut self, key: &'static str) -> Vec<(Option<&'a Ident>, &'a Block, Span)> {
        self.known.push(key);
        self.block
            .stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Section {
                    key: k,
                    label,
                    body,
                    span,
                } if k.text == key => Some((label.as_ref(), body, *span)),
                _ => None,
            })
            .collect()
    }

    /// Every bare call named `key` (repeatable, as in `defects`).
    pub fn calls(&mut self, key: &'static str) -> Vec<&'a Call> {
        self.known.push(key);
        self.block
            .stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Call(c) if c.name.text == key => Some(c),
                _ => None,
            })
            .collect()
    }

    /// An optional integer in `min..=max`.
    pub fn int(&mut self, key: &'static str, min: u64, max: u64) -> Option<u64> {
        let v = self.value(key)?;
        self.check(int(v, key, min, max))
    }

    /// A required integer in `min..=max`.
    pub fn req_int(&mut self, key: &'static str, min: u64, max: u64, example: &str) -> Option<u64> {
        let v = self.required(key, example)?;
        self.check(int(v, key, min, max))
    }

    /// An optional number in `min..=max`.
    pub fn float(&mut self, key: &'static str, min: f64, max: f64) -> Option<f64> {
        let v = self.value(key)?;
        self.check(float(v, key, min, max))
    }

    /// An optional quantity of dimension `dim`, in base units.
    pub fn quantity(&mut self, key: &'static str, dim: Dim) -> Option<f64> {
        let v = self.value(key)?;
        self.check(quantity(v, key, dim))
    }

    /// A required quantity of dimension `dim`, in base units.
    pub fn req_quantity(&mut self, key: &'static str, dim: Dim, example: &str) -> Option<f64> {
        let v = self.required(key, example)?;
        self.check(quantity(v, key, dim))
    }

    /// An optional name from `choices`.
    pub fn choice(&mut self, key: &'static str, choices: &[&'static str]) -> Option<(&'static str, Span)> {
        let v = self.value(key)?;
        self.check(choice(v, key, choices).map(|c| (c, v.span)))
    }

    /// Records the error of a value check and passes the value on.
    pub fn check<T>(&mut self, r: Result<T, Diagnostic>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// Reports every key nobody asked for, and hands back all diagnostics.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        for s in &self.block.stmts {
            let key = s.key();
            if !self.known.contains(&key.text.as_str()) {
                let hint = did_you_mean(&key.text, self.known.iter().copied())
                    .unwrap_or_else(|| format!("{} takes: {}", self.what, self.known.join(", ")));
                self.diags.push(
                    Diagnostic::error(
                        Code::E0004,
                        key.span,
                        format!("unknown setting `{}` in {}", key.text, self.what),
                    )
                    .with_label("not known here")
                    .with_hint(hint),
                );
            }
        }
        self.diags
    }
}

/// An integer in `min..=max`.
pub fn int(v: &Value, key: &str, min: u64, max: u64) -> Result<u64, Diagnostic> {
    let n = match &v.kind {
        ValueKind::Number(n) => n,
        other => return Err(wrong_type(v, key, "an integer", other.describe())),
    };
    if n.is_float {
        return Err(Diagnostic::error(
            Code::E0008,
            v.span,
            format!("`{key}` must be a whole number, found {}", n.text),
        )
        .with_label("not a whole number"));
    }
    match n.integer {
        Some(i) if (min..=max).contains(&i) => Ok(i),
        Some(i) => Err(out_of_range(v.span, key, &i.to_string(), min as f64, max as f64)),
        None if n.value < 0.0 => Err(out_of_range(v.span, key, &n.text, min as f64, max as f64)),
        None => Err(
            Diagnostic::error(Code::E0008, v.span, format!("`{key}` = {} is too large", n.text))
                .with_label(format!("at most {max}")),
        ),
    }
}

/// A plain number in `min..=max`.
pub fn float(v: &Value, key: &str, min: f64, max: f64) -> Result<f64, Diagnostic> {
    match &v.kind {
        ValueKind::Number(n) if n.value.is_finite() && n.value >= min && n.value <= max => Ok(n.value),
        ValueKind::Number(n) => Err(out_of_range(v.span, key, &n.text, min, max)),
        other => Err(wrong_type(v, key, "a number", other.describe())),
    }
}

/// A quantity of dimension `dim`, converted to base units; must be positive.
pub fn quantity(v: &Value, key: &str, dim: Dim) -> Result<f64, Diagnostic> {
    let (number, unit) = match &v.kind {
        ValueKind::Quantity { number, unit } => (number, unit),
        ValueKind::Number(_) => {
            return Err(Diagnostic::error(
                Code::E0003,
                v.span,
                format!("`{key}` needs a unit: expected {}", dim.expected()),
            )
            .with_label("a bare number")
            .with_hint(format!("write it with its unit, e.g. `{key} = {}`", example_of(dim))));
        }
        other => return Err(wrong_type(v, key, dim.expected(), other.describe())),
    };
    let Some((found, factor)) = units::lookup(&unit.text) else {
        return Err(
            Diagnostic::error(Code::E0002, unit.span, format!("unknown unit `{}`", unit.text))
                .with_label("not a unit moec knows")
                .with_hint(
                    units::suggest(&unit.text).unwrap_or_else(|| "see `moec explain E0002` for the units".into()),
                ),
        );
    };
    if found != dim {
        return Err(Diagnostic::error(
            Code::E0003,
            v.span,
            format!("`{key}` expects {}, found {}", dim.expected(), found.noun()),
        )
        .with_label(format!("this is {}", found.noun())));
    }
    let value = number.value * factor;
    // A zero time is an ideal (a latency-free link); a zero rate or size is nonsense.
    let in_range = if dim == Dim::Time { value >= 0.0 } else { value > 0.0 };
    if !(value.is_finite() && in_range) {
        let must = if dim == Dim::Time { "zero or more" } else { "positive" };
        return Err(
            Diagnostic::error(Code::E0008, v.span, format!("`{key}` must be {must} and finite"))
                .with_label("out of range"),
        );
    }
    Ok(value)
}

/// A name from `choices`.
pub fn choice(v: &Value, key: &str, choices: &[&'static str]) -> Result<&'static str, Diagnostic> {
    let ValueKind::Name(name) = &v.kind else {
        return Err(wrong_type(
            v,
            key,
            &format!("one of {}", choices.join(", ")),
            v.kind.describe(),
        ));
    };
    choices
        .iter()
        .copied()
        .find(|c| c == name)
        .ok_or_else(|| unknown_choice(v.span, key, name, choices))
}

/// E0017 for a name outside `choices`.
pub fn unknown_choice(span: Span, key: &str, name: &str, choices: &[&str]) -> Diagnostic {
    let hint = match did_you_mean(name, choices.iter().copied()) {
        Some(d) => format!("{d} ({key} is one of {})", choices.join(", ")),
        None => format!("{key} is one of {}", choices.join(", ")),
    };
    Diagnostic::error(Code::E0017, span, format!("unknown {key} `{name}`"))
        .with_label("not a known choice")
        .with_hint(hint)
}

/// E0007 "expected X, found Y".
pub fn wrong_type(v: &Value, key: &str, expected: &str, found: &str) -> Diagnostic {
    Diagnostic::error(
        Code::E0007,
        v.span,
        format!("`{key}` expects {expected}, found {found}"),
    )
    .with_label(format!("this is {found}"))
}

fn out_of_range(span: Span, key: &str, text: &str, min: f64, max: f64) -> Diagnostic {
    let range = if max >= 1e15 {
        format!("at least {min}")
    } else {
        format!("between {min} and {max}")
    };
    Diagnostic::error(
        Code::E0008,
        span,
        format!("`{key}` = {text} is out of range: it must be {range}"),
    )
    .with_label("out of range")
}

fn example_of(dim: Dim) -> &'static str {
    match dim {
        Dim::Compute => "2250 TFLOPS",
        Dim::Size => "180 GB",
        Dim::Bandwidth => "900 GB/s",
        Dim::Time => "20 ns",
    }
}
