//! The parser: source text to [`SourceFile`], with error recovery.
//!
//! The grammar (grammar/moe.pest) is run item by item: the lexical scan
//! cuts the file where top-level items start, each piece is parsed on its
//! own, and an error in one item is reported without hiding the errors of
//! the next. Deep nesting is refused before pest runs, and pest's call limit
//! bounds the work on adversarial input.

use super::ast::*;
use super::lexical::{self, MAX_NESTING};
use super::span::{FileId, Span};
use crate::diag::{Code, Diagnostic};
use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "../grammar/moe.pest"]
struct MoeGrammar;

/// Bound on pest's rule calls per item: generous for any real file,
/// small enough that garbage input fails fast.
const CALL_LIMIT: usize = 20_000_000;

/// Parses one file. Always returns a tree (possibly missing the items that
/// had errors) and the syntax errors found.
pub fn parse(file: FileId, text: &str) -> (SourceFile, Vec<Diagnostic>) {
    let scan = lexical::scan(file, text);
    let mut diagnostics = Vec::new();
    if scan.max_depth > MAX_NESTING {
        diagnostics.push(
            Diagnostic::error(
                Code::E0019,
                Span::new(file, scan.deepest_at, scan.deepest_at + 1),
                format!(
                    "brackets nest {} levels deep; moec reads at most {MAX_NESTING}",
                    scan.max_depth
                ),
            )
            .with_label("too deep"),
        );
        return (
            SourceFile {
                items: Vec::new(),
                comments: scan.comments,
            },
            diagnostics,
        );
    }
    pest::set_call_limit(std::num::NonZeroUsize::new(CALL_LIMIT));

    let mut cuts = vec![0];
    cuts.extend(scan.item_starts.iter().copied().filter(|&s| s > 0));
    cuts.push(text.len());
    let mut items = Vec::new();
    for w in cuts.windows(2) {
        let (start, end) = (w[0], w[1]);
        let piece = &text[start..end];
        match MoeGrammar::parse(Rule::file, piece) {
            Ok(mut pairs) => {
                let lower = Lower { file, offset: start };
                if let Some(file_pair) = pairs.next() {
                    for p in file_pair.into_inner() {
                        match p.as_rule() {
                            Rule::import => items.push(Item::Import(lower.import(p))),
                            Rule::decl => items.push(Item::Decl(lower.decl(p))),
                            _ => {}
                        }
                    }
                }
            }
            Err(e) => diagnostics.push(syntax_error(file, text, start, &e)),
        }
    }
    for item in &items {
        if let Item::Decl(d) = item {
            check_separators(file, text, &d.body, &mut diagnostics);
        }
    }
    (
        SourceFile {
            items,
            comments: scan.comments,
        },
        diagnostics,
    )
}

/// Statements end at `;` or a line end. The grammar lets whitespace run
/// over lines, so `phase = decode context = 128` would parse as two
/// statements; this is where that is refused.
fn check_separators(file: FileId, text: &str, block: &Block, diagnostics: &mut Vec<Diagnostic>) {
    for pair in block.stmts.windows(2) {
        let (a, b) = (pair[0].span(), pair[1].span());
        let between = text.get(a.end..b.start).unwrap_or(";");
        if !separated(between) {
            diagnostics.push(
                Diagnostic::error(
                    Code::E0001,
                    Span::new(file, b.start, b.start + pair[1].key().text.len()),
                    "two statements on one line need a `;` between them",
                )
                .with_label("a new statement starts here")
                .with_hint(format!("write `; {}` or start a new line", pair[1].key().text)),
            );
        }
    }
    for stmt in &block.stmts {
        match stmt {
            Stmt::Section { body, .. } => check_separators(file, text, body, diagnostics),
            Stmt::Assign {
                value:
                    Value {
                        kind: ValueKind::Configured { body, .. },
                        ..
                    },
                ..
            } => check_separators(file, text, body, diagnostics),
            _ => {}
        }
    }
}

/// Whether the text between two statements holds a `;` or a line end
/// outside block comments (a line comment always ends in a line end).
fn separated(between: &str) -> bool {
    let mut rest = between;
    loop {
        match rest.find("/*") {
            Some(start) => {
                if rest[..start].contains([';', '\n']) {
                    return true;
                }
                match rest[start + 2..].find("*/") {
                    Some(end) => rest = &rest[start + 2 + end + 2..],
                    None => return false,
                }
            }
            None => return rest.contains([';', '\n']),
        }
    }
}

/// Converts a pest error into an E0001 naming what was expected and found.
fn syntax_error(file: FileId, text: &str, offset: usize, e: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = offset
        + match e.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        };
    let found = found_at(text, pos);
    let span = Span::new(file, pos, pos + found.len_in_source);
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&str> = positives.iter().map(|r| describe(*r)).collect();
            // At a value position pest lists every value form; say it once.
            if words.contains(&"a list") && words.contains(&"a number") {
                words.retain(|w| {
                    !matches!(
                        *w,
                        "a list" | "a number" | "a name" | "a string" | "a tuple" | "a setting"
                    )
                });
                words.push("a value");
            }
            words.sort();
            words.dedup();
            words
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let message = if expected.is_empty() {
        format!("cannot parse this input (found {})", found.words)
    } else {
        format!("expected {}, found {}", join_or(&expected), found.words)
    };
    let hint = expected_hint(&expected, &found.words);
    Diagnostic::error(Code::E0001, span, message)
        .with_label("unexpected here")
        .with_hint_opt(hint)
}

struct Found {
    words: String,
    len_in_source: usize,
}

/// What stands at `pos`, in words: a token, a character or the end.
fn found_at(text: &str, pos: usize) -> Found {
    let rest = text.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return Found {
            words: "the end of the file".into(),
            len_in_source: 0,
        };
    };
    if c.is_ascii_alphanumeric() || c == '_' {
        let tok: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(40)
            .collect();
        return Found {
            words: format!("`{tok}`"),
            len_in_source: tok.len(),
        };
    }
    let words = match c {
        '\n' | '\r' => "the end of the line".to_string(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    };
    Found {
        words,
        len_in_source: c.len_utf8(),
    }
}

fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI | Rule::decl | Rule::item_kind | Rule::import | Rule::import_kw => {
            "an item (`model`, `machine`, `workload`, `plan` or `import`)"
        }
        Rule::name => "a name",
        Rule::key => "a setting name",
        Rule::block => "`{`",
        Rule::assign | Rule::section | Rule::call_stmt | Rule::call => "a setting",
        Rule::value | Rule::arg | Rule::named_arg | Rule::configured => "a value",
        Rule::quantity | Rule::number => "a number",
        Rule::unit => "a unit",
        Rule::string | Rule::string_body => "a string",
        Rule::list => "a list",
        Rule::tuple => "a tuple",
        _ => "more input",
    }
}

fn join_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn expected_hint(expected: &[&str], found: &str) -> Option<String> {
    if found == "`=`" && expected.contains(&"a value") {
        return Some("one `=` is enough: `key = value`".into());
    }
    if expected.iter().any(|e| e.starts_with("an item")) {
        return Some(
            "a file holds `model`, `machine`, `workload` and `plan` items and `import \"file.moe\"` lines".into(),
        );
    }
    if expected.contains(&"a value") {
        return Some("a value is a number (`61`), a quantity (`900 GB/s`), a name (`bf16`), a string, a call (`mesh(8, 8)`) or a list".into());
    }
    None
}

/// Lowers pest pairs to the AST, shifting spans by the piece's offset.
struct Lower {
    file: FileId,
    offset: usize,
}

impl Lower {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, self.offset + s.start(), self.offset + s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            span: self.span(&p),
            text: p.as_str().to_string(),
        }
    }

    fn import(&self, p: Pair<Rule>) -> Import {
        let span = self.span(&p);
        let s = p.into_inner().find(|q| q.as_rule() == Rule::string);
        let (path, path_span) = match s {
            Some(s) => (unescape(s.as_str()), self.span(&s)),
            None => (String::new(), span),
        };
        Import { path, path_span, span }
    }

    fn decl(&self, p: Pair<Rule>) -> Decl {
        let span = self.span(&p);
        let mut kind = DeclKind::Model;
        let mut name = Ident {
            text: String::new(),
            span,
        };
        let mut body = Block {
            stmts: Vec::new(),
            span,
        };
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::item_kind => {
                    kind = match q.as_str() {
                        "machine" => DeclKind::Machine,
                        "workload" => DeclKind::Workload,
                        "plan" => DeclKind::Plan,
                        _ => DeclKind::Model,
                    }
                }
                Rule::name => name = self.ident(q),
                Rule::block => body = self.block(q),
                _ => {}
            }
        }
        Decl { kind, name, body, span }
    }

    fn block(&self, p: Pair<Rule>) -> Block {
        let span = self.span(&p);
        let stmts = p.into_inner().filter_map(|q| self.stmt(q)).collect();
        Block { stmts, span }
    }

    fn stmt(&self, p: Pair<Rule>) -> Option<Stmt> {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::assign => {
                let mut inner = p.into_inner();
                let key = self.ident(inner.next()?);
                let value = self.value(inner.next()?);
                Some(Stmt::Assign { key, value, span })
            }
            Rule::section => {
                let mut key = None;
                let mut label = None;
                let mut body = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::key => key = Some(self.ident(q)),
                        Rule::name => label = Some(self.ident(q)),
                        Rule::block => body = Some(self.block(q)),
                        _ => {}
                    }
                }
                Some(Stmt::Section {
                    key: key?,
                    label,
                    body: body?,
                    span,
                })
            }
            Rule::call_stmt => Some(Stmt::Call(self.call(p.into_inner().next()?))),
            _ => None,
        }
    }

    fn call(&self, p: Pair<Rule>) -> Call {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = inner.next().map(|n| self.ident(n)).unwrap_or(Ident {
            text: String::new(),
            span,
        });
        let args = inner.map(|a| self.arg(a)).collect();
        Call { name, args, span }
    }

    fn arg(&self, p: Pair<Rule>) -> Arg {
        let span = self.span(&p);
        let Some(inner) = p.into_inner().next() else {
            return Arg {
                name: None,
                value: Value {
                    kind: ValueKind::List(Vec::new()),
                    span,
                },
            };
        };
        if inner.as_rule() == Rule::named_arg {
            let mut parts = inner.into_inner();
            let name = parts.next().map(|k| self.ident(k));
            let value = parts.next().map(|v| self.value(v)).unwrap_or(Value {
                kind: ValueKind::List(Vec::new()),
                span,
            });
            Arg { name, value }
        } else {
            Arg {
                name: None,
                value: self.value(inner),
            }
        }
    }

    fn value(&self, p: Pair<Rule>) -> Value {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::number => ValueKind::Number(number(p.as_str())),
            Rule::quantity => {
                let mut inner = p.into_inner();
                let n = inner.next().map(|n| number(n.as_str())).unwrap_or_else(|| number("0"));
                let unit = inner.next().map(|u| self.ident(u)).unwrap_or(Ident {
                    text: String::new(),
                    span,
                });
                ValueKind::Quantity { number: n, unit }
            }
            Rule::string => ValueKind::Str(unescape(p.as_str())),
            Rule::name => ValueKind::Name(p.as_str().to_string()),
            Rule::call => ValueKind::Call(self.call(p)),
            Rule::configured => {
                let mut inner = p.into_inner();
                let name = inner.next().map(|n| self.ident(n)).unwrap_or(Ident {
                    text: String::new(),
                    span,
                });
                let body = inner.next().map(|b| self.block(b)).unwrap_or(Block {
                    stmts: Vec::new(),
                    span,
                });
                ValueKind::Configured { name, body }
            }
            Rule::list => ValueKind::List(p.into_inner().map(|v| self.value(v)).collect()),
            Rule::tuple => ValueKind::Tuple(p.into_inner().map(|v| self.value(v)).collect()),
            _ => ValueKind::List(Vec::new()),
        };
        Value { kind, span }
    }
}

/// Reads a number as written; `integer` is set when it is a whole number
/// that fits `u64`.
pub fn number(text: &str) -> Number {
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let is_float = clean.contains(['.', 'e', 'E']);
    let value = clean.parse::<f64>().unwrap_or(f64::NAN);
    let integer = if is_float { None } else { clean.parse::<u64>().ok() };
    Number {
        text: text.to_string(),
        value,
        integer,
        is_float,
    }
}

/// The contents of a string literal (the quotes stripped, escapes read).
fn unescape(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> SourceFile {
        let (f, d) = parse(FileId(0), src);
        assert!(d.is_empty(), "unexpected diagnostics: {d:?}");
        f
    }

    #[test]
    fn statements_end_at_newlines_or_semicolons() {
        let a = ok("model m {\n  layers = 61\n  hidden = 7168\n}");
        let b = ok("model m { layers = 61; hidden = 7168 }");
        let keys = |f: &SourceFile| match &f.items[0] {
            Item::Decl(d) => d.body.stmts.iter().map(|s| s.key().text.clone()).collect::<Vec<_>>(),
            Item::Import(_) => vec![],
        };
        assert_eq!(keys(&a), ["layers", "hidden"]);
        assert_eq!(keys(&a), keys(&b));
    }

    #[test]
    fn a_number_at_the_end_of_a_line_does_not_take_the_next_key_as_unit() {
        let f = ok("workload w {\n  batch = 256\n  steps = 3\n}");
        let Item::Decl(d) = &f.items[0] else { panic!() };
        let Stmt::Assign { value, .. } = &d.body.stmts[0] else {
            panic!()
        };
        assert!(matches!(value.kind, ValueKind::Number(_)));
    }

    #[test]
    fn quantities_calls_and_configured_values() {
        let f = ok("machine m { link { bandwidth = 900 GB/s }\n topology = mesh(8, 8, wafers = (2, 2)) }\nplan p { migration = ni_balancer { every = 10 } }");
        let Item::Decl(m) = &f.items[0] else { panic!() };
        let Stmt::Section { body, .. } = &m.body.stmts[0] else {
            panic!()
        };
        let Stmt::Assign { value, .. } = &body.stmts[0] else {
            panic!()
        };
        let ValueKind::Quantity { number, unit } = &value.kind else {
            panic!()
        };
        assert_eq!((number.integer, unit.text.as_str()), (Some(900), "GB/s"));
        let Stmt::Assign { value, .. } = &m.body.stmts[1] else {
            panic!()
        };
        let ValueKind::Call(c) = &value.kind else { panic!() };
        assert_eq!(c.args.len(), 3);
        assert_eq!(c.args[2].name.as_ref().map(|n| n.text.as_str()), Some("wafers"));
        let Item::Decl(p) = &f.items[1] else { panic!() };
        let Stmt::Assign { value, .. } = &p.body.stmts[0] else {
            panic!()
        };
        assert!(matches!(value.kind, ValueKind::Configured { .. }));
    }

    #[test]
    fn errors_in_two_items_are_both_reported_and_good_items_kept() {
        let src = "model a { hidden = = 1 }\nmodel b { layers = 2 }\nmodel c { x = }\n";
        let (f, d) = parse(FileId(0), src);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.code == Code::E0001));
        assert_eq!(&src[d[0].span.range()], "=");
        assert_eq!(f.items.len(), 1);
    }

    #[test]
    fn statements_on_one_line_need_a_semicolon() {
        let (_, d) = parse(FileId(0), "workload w { batch = 8; phase = decode context = 128 }");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("need a `;`"));
        let (_, d) = parse(
            FileId(0),
            "workload w { batch = 8 /* ; */ phase = decode\n context = 1 /* x */; steps = 2 }",
        );
        assert_eq!(d.len(), 1, "{d:?}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let src = format!("model m {{ x = {}{} }}", "[".repeat(100_000), "]".repeat(100_000));
        let (_, d) = parse(FileId(0), &src);
        assert_eq!(d[0].code, Code::E0019);
    }

    #[test]
    fn numbers_keep_text_and_know_integers() {
        assert_eq!(number("1_000").integer, Some(1000));
        assert_eq!(number("1.5").integer, None);
        assert!(number("1e3").is_float);
        assert_eq!(number("99999999999999999999999").integer, None);
    }
}
