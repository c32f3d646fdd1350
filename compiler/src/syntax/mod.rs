//! Front end: text to syntax tree, and the syntax tree back to canonical text.
//!
//! `parser` runs the pest grammar (grammar/moe.pest) with item-level error
//! recovery; `ast` is the tree; `format` is `moec fmt`.

pub mod ast;
pub mod format;
mod lexical;
pub mod parser;
mod span;

pub use parser::parse;
pub use span::{FileId, Span};
