//! A lexical pre-scan of a source file, run before the grammar.
//!
//! It finds the comments (pest skips them, `fmt` needs them back), the
//! deepest bracket nesting (refused past a limit, so the recursive-descent
//! parser can never overflow the stack), and the places where top-level items
//! start, so the parser can parse item by item and recover after an error.

use super::ast::Comment;
use super::span::{FileId, Span};

/// Deepest bracket nesting moec parses.
pub const MAX_NESTING: usize = 64;

/// What the scan found.
pub struct Scan {
    pub comments: Vec<Comment>,
    pub max_depth: usize,
    /// Byte offset of the deepest opening bracket, for the error span.
    pub deepest_at: usize,
    /// Byte offsets where a top-level item (`model`, `import`, ...) starts.
    pub item_starts: Vec<usize>,
}

const ITEM_KEYWORDS: [&str; 5] = ["model", "machine", "workload", "plan", "import"];

/// Scans `text`. Strings and comments are skipped so that braces inside
/// them do not count.
pub fn scan(file: FileId, text: &str) -> Scan {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    let mut deepest_at = 0usize;
    let mut item_starts = Vec::new();
    let mut line_start = true;
    let mut i = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if line_start && b != b' ' && b != b'\t' && b != b'\n' && b != b'\r' {
            line_start = false;
            // An item keyword opens a new item at depth 0, or at column 0
            // whatever the depth: that is how a missing `}` is recovered from.
            let at_column_0 = i == 0 || bytes[i - 1] == b'\n';
            if (depth == 0 || at_column_0) && starts_item(&text[i..]) {
                item_starts.push(i);
                depth = 0;
            }
        }
        match b {
            b'\n' => {
                line_start = true;
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = line_comment(file, text, i, &mut comments),
            b'#' => i = line_comment(file, text, i, &mut comments),
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map(|p| i + 2 + p + 2).unwrap_or(bytes.len());
                comments.push(Comment {
                    text: text[i..end].to_string(),
                    span: Span::new(file, i, end),
                });
                i = end;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max_depth {
                    max_depth = depth;
                    deepest_at = i;
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    Scan {
        comments,
        max_depth,
        deepest_at,
        item_starts,
    }
}

fn starts_item(rest: &str) -> bool {
    ITEM_KEYWORDS.iter().any(|kw| {
        rest.starts_with(kw)
            && rest[kw.len()..]
                .chars()
                .next()
                .is_some_and(|c| c == ' ' || c == '\t' || c == '"')
    })
}

fn line_comment(file: FileId, text: &str, start: usize, comments: &mut Vec<Comment>) -> usize {
    let end = text[start..].find('\n').map(|p| start + p).unwrap_or(text.len());
    let body = text[start..end].trim_end();
    comments.push(Comment {
        text: body.to_string(),
        span: Span::new(file, start, start + body.len()),
    });
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_items_comments_and_depth() {
        let src = "// head\nmodel a { x = [1, [2]] } # tail\n  plan p { s = \"{\" }\n/* b */ machine m {}";
        let s = scan(FileId(0), src);
        assert_eq!(
            s.comments.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
            ["// head", "# tail", "/* b */"]
        );
        assert_eq!(s.max_depth, 3);
        // `machine` after a block comment on the same line is not at a line start.
        assert_eq!(s.item_starts, vec![8, 42]);
    }

    #[test]
    fn an_item_at_column_0_starts_even_inside_an_unclosed_block() {
        let src = "model a {\n  x = 1\nplan p {}\n";
        assert_eq!(scan(FileId(0), src).item_starts, vec![0, 18]);
    }
}
