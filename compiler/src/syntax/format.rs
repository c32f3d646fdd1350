//! `moec fmt`: the canonical layout of a `.moe` file.
//!
//! Two-space indents, one statement a line, `key = value` with single
//! spaces, one blank line between items, at most one blank line kept between
//! statements, every comment kept in place. A section or configured value
//! whose statements are all simple and fit in [`WIDTH`] columns stays on one
//! line (`die { compute = 2250 TFLOPS; memory = 180 GB }`). Numbers and units
//! keep their spelling. Formatting formatted text changes nothing.

use super::ast::*;

/// Widest line the formatter joins a block into.
pub const WIDTH: usize = 100;

/// Formats a parsed file. `text` is the source it was parsed from (for
/// comments and blank lines).
pub fn format(file: &SourceFile, text: &str) -> String {
    let mut f = Formatter {
        text,
        comments: &file.comments,
        next_comment: 0,
        out: String::new(),
        indent: 0,
    };
    for (i, item) in file.items.iter().enumerate() {
        let span = item.span();
        if i > 0 {
            // One blank line between items; consecutive imports stay together
            // unless the source separated them.
            let both_imports = matches!((&file.items[i - 1], item), (Item::Import(_), Item::Import(_)));
            let first = f
                .comments
                .get(f.next_comment)
                .map_or(span.start, |c| c.span.start.min(span.start));
            if (!both_imports || f.blank_before(first)) && !f.out.ends_with("\n\n") {
                f.out.push('\n');
            }
        }
        let before = f.next_comment;
        f.leading_comments(span.start, true);
        if f.next_comment > before && f.blank_before(span.start) && !f.out.ends_with("\n\n") {
            f.out.push('\n');
        }
        match item {
            Item::Import(imp) => {
                f.line(&format!("import {}", quote(&imp.path)));
            }
            Item::Decl(d) => {
                f.open_line(&format!("{} {} {{", d.kind.keyword(), d.name.text), &d.body);
                f.block_body(&d.body);
                f.line("}");
            }
        }
        let limit = file.items.get(i + 1).map_or(text.len(), |next| next.span().start);
        f.trailing_comment(span.end, limit);
    }
    f.leading_comments(text.len(), !file.items.is_empty());
    let mut out = f.out;
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

struct Formatter<'a> {
    text: &'a str,
    comments: &'a [Comment],
    next_comment: usize,
    out: String,
    indent: usize,
}

impl Formatter<'_> {
    fn pad(&self) -> String {
        "  ".repeat(self.indent)
    }

    fn line(&mut self, s: &str) {
        let pad = self.pad();
        self.out.push_str(&pad);
        self.out.push_str(s);
        self.out.push('\n');
    }

    /// A line that opens `block`: a comment on the same source line as the
    /// `{`, before the first statement, stays on it.
    fn open_line(&mut self, s: &str, block: &Block) {
        self.line(s);
        let limit = block.stmts.first().map_or(block.span.end, |st| st.span().start);
        self.trailing_comment(block.span.start + 1, limit);
    }

    /// Comments before `pos` that are not yet written, each on its own line.
    /// `keep_blank` keeps one blank line the source had before a comment.
    fn leading_comments(&mut self, pos: usize, keep_blank: bool) {
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start >= pos {
                break;
            }
            if keep_blank
                && self.blank_before(c.span.start)
                && !self.out.ends_with("\n\n")
                && !self.out.ends_with("{\n")
            {
                self.out.push('\n');
            }
            let text = c.text.clone();
            self.line(&text);
            self.next_comment += 1;
        }
    }

    /// A comment that starts after `end`, on the same source line and before
    /// `limit` (where the next statement starts), goes on the line just written.
    fn trailing_comment(&mut self, end: usize, limit: usize) {
        let Some(c) = self.comments.get(self.next_comment) else {
            return;
        };
        let between = self.text.get(end..c.span.start).unwrap_or("\n");
        if c.span.start >= end && c.span.start < limit && !between.contains('\n') && !c.text.contains('\n') {
            self.out.pop();
            self.out.push(' ');
            self.out.push_str(&c.text);
            self.out.push('\n');
            self.next_comment += 1;
        }
    }

    /// Whether the source has an empty line right before `pos`.
    fn blank_before(&self, pos: usize) -> bool {
        let before = &self.text[..pos.min(self.text.len())];
        let trimmed = before.trim_end_matches([' ', '\t']);
        let Some(rest) = trimmed.strip_suffix('\n') else {
            return false;
        };
        rest.trim_end_matches([' ', '\t', '\r']).ends_with('\n')
    }

    fn has_comment_within(&self, span: crate::syntax::Span) -> bool {
        self.comments[self.next_comment..]
            .iter()
            .any(|c| c.span.start >= span.start && c.span.start < span.end)
    }

    fn block_body(&mut self, block: &Block) {
        self.indent += 1;
        for (i, stmt) in block.stmts.iter().enumerate() {
            let span = stmt.span();
            self.leading_comments(span.start, i > 0);
            if i > 0 && self.blank_before(span.start) && !self.out.ends_with("\n\n") {
                self.out.push('\n');
            }
            self.stmt(stmt);
            let limit = block.stmts.get(i + 1).map_or(block.span.end, |next| next.span().start);
            self.trailing_comment(span.end, limit);
        }
        // Comments after the last statement, before the closing brace.
        self.leading_comments(block.span.end.saturating_sub(1), !block.stmts.is_empty());
        self.indent -= 1;
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Assign { key, value, .. } => match &value.kind {
                ValueKind::Configured { name, body }
                    if !self.fits_inline(body, key.text.len() + name.text.len() + 3) =>
                {
                    self.open_line(&format!("{} = {} {{", key.text, name.text), body);
                    self.block_body(body);
                    self.line("}");
                }
                _ => {
                    let v = self.value(value);
                    self.line(&format!("{} = {v}", key.text));
                }
            },
            Stmt::Section { key, label, body, .. } => {
                let head = match label {
                    Some(l) => format!("{} {}", key.text, l.text),
                    None => key.text.clone(),
                };
                if self.fits_inline(body, head.len()) {
                    let inline = self.inline_block(body);
                    self.line(&format!("{head} {inline}"));
                } else {
                    self.open_line(&format!("{head} {{"), body);
                    self.block_body(body);
                    self.line("}");
                }
            }
            Stmt::Call(c) => {
                let c = self.call(c);
                self.line(&c);
            }
        }
    }

    /// A block goes on one line when it holds no sections and no comments
    /// and the line stays within [`WIDTH`].
    fn fits_inline(&self, body: &Block, head_len: usize) -> bool {
        if self.has_comment_within(body.span) || body.stmts.iter().any(|s| matches!(s, Stmt::Section { .. })) {
            return false;
        }
        if body.stmts.iter().any(|s| {
            matches!(
                s,
                Stmt::Assign {
                    value: Value {
                        kind: ValueKind::Configured { .. },
                        ..
                    },
                    ..
                }
            )
        }) {
            return false;
        }
        self.indent * 2 + head_len + 1 + self.inline_block(body).len() <= WIDTH
    }

    fn inline_block(&self, body: &Block) -> String {
        if body.stmts.is_empty() {
            return "{}".into();
        }
        let parts: Vec<String> = body
            .stmts
            .iter()
            .map(|s| match s {
                Stmt::Assign { key, value, .. } => format!("{} = {}", key.text, self.value(value)),
                Stmt::Call(c) => self.call(c),
                Stmt::Section { .. } => String::new(),
            })
            .collect();
        format!("{{ {} }}", parts.join("; "))
    }

    fn value(&self, v: &Value) -> String {
        match &v.kind {
            ValueKind::Number(n) => n.text.clone(),
            ValueKind::Quantity { number, unit } => format!("{} {}", number.text, unit.text),
            ValueKind::Str(s) => quote(s),
            ValueKind::Name(n) => n.clone(),
            ValueKind::Call(c) => self.call(c),
            ValueKind::Configured { name, body } => format!("{} {}", name.text, self.inline_block(body)),
            ValueKind::List(items) => format!("[{}]", self.values(items)),
            ValueKind::Tuple(items) => format!("({})", self.values(items)),
        }
    }

    fn values(&self, items: &[Value]) -> String {
        items.iter().map(|v| self.value(v)).collect::<Vec<_>>().join(", ")
    }

    fn call(&self, c: &Call) -> String {
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| match &a.name {
                Some(n) => format!("{} = {}", n.text, self.value(&a.value)),
                None => self.value(&a.value),
            })
            .collect();
        format!("{}({})", c.name.text, args.join(", "))
    }
}

/// A string literal for `s`, escaping what must be escaped.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::{parse, FileId};

    fn fmt(src: &str) -> String {
        let (f, d) = parse(FileId(0), src);
        assert!(d.is_empty(), "{d:?}");
        format(&f, src)
    }

    #[test]
    fn lays_out_canonically_and_keeps_comments() {
        let src = "// a model\nmodel  m{layers=61;hidden =7168 // wide\n\n\n  moe{experts=256\n top_k=8}\n attention mla { heads = 128 }}\nplan p{migration=ni_balancer{every=10}}";
        let want = "// a model\nmodel m {\n  layers = 61\n  hidden = 7168 // wide\n\n  moe { experts = 256; top_k = 8 }\n  attention mla { heads = 128 }\n}\n\nplan p {\n  migration = ni_balancer { every = 10 }\n}\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn formatting_twice_changes_nothing() {
        let src = "import \"x.moe\"\n# note\nmachine w { topology = mesh(8, 8)\n defects { die(7, 7); link((3, 3), (3, 4)) } /* end */\n}\n";
        let once = fmt(src);
        assert_eq!(fmt(&once), once);
    }

    #[test]
    fn a_comment_inside_a_section_keeps_it_multiline() {
        let src = "model m { moe {\n  // hot\n  experts = 8 } }";
        let out = fmt(src);
        assert!(out.contains("  moe {\n    // hot\n    experts = 8\n  }\n"), "{out}");
    }
}
