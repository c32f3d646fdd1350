//! The syntax tree: what the parser read, with a span on everything.
//!
//! The tree is deliberately generic (items hold blocks of statements, values
//! are numbers, quantities, names, calls ...): which keys an item accepts is
//! decided by `sema`, which can then say "did you mean" instead of a bare
//! parse error. `fmt` prints this tree back, so it keeps numbers as written.

use super::span::Span;

/// One parsed source file.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceFile {
    pub items: Vec<Item>,
    /// Every comment in the file, in order; `fmt` puts them back.
    pub comments: Vec<Comment>,
}

/// A comment as written (`// ...`, `# ...` or `/* ... */`).
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Import(Import),
    Decl(Decl),
}

impl Item {
    /// The span of the whole item.
    pub fn span(&self) -> Span {
        match self {
            Item::Import(i) => i.span,
            Item::Decl(d) => d.span,
        }
    }
}

/// `import "other.moe"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    pub path: String,
    pub path_span: Span,
    pub span: Span,
}

/// The four kinds of declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeclKind {
    Model,
    Machine,
    Workload,
    Plan,
}

impl DeclKind {
    /// The keyword that introduces it.
    pub fn keyword(self) -> &'static str {
        match self {
            DeclKind::Model => "model",
            DeclKind::Machine => "machine",
            DeclKind::Workload => "workload",
            DeclKind::Plan => "plan",
        }
    }
}

/// `model deepseek_v3 { ... }` and its siblings.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub kind: DeclKind,
    pub name: Ident,
    pub body: Block,
    pub span: Span,
}

/// A name with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub text: String,
    pub span: Span,
}

/// `{ stmt* }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

/// One statement inside a block.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `key = value`
    Assign { key: Ident, value: Value, span: Span },
    /// `key label? { ... }`, as in `attention mla { ... }`
    Section {
        key: Ident,
        label: Option<Ident>,
        body: Block,
        span: Span,
    },
    /// `die(7, 7)`, a bare call (used by `defects`)
    Call(Call),
}

impl Stmt {
    /// The span of the whole statement.
    pub fn span(&self) -> Span {
        match self {
            Stmt::Assign { span, .. } | Stmt::Section { span, .. } => *span,
            Stmt::Call(c) => c.span,
        }
    }

    /// The key (or call name) the statement starts with.
    pub fn key(&self) -> &Ident {
        match self {
            Stmt::Assign { key, .. } | Stmt::Section { key, .. } => key,
            Stmt::Call(c) => &c.name,
        }
    }
}

/// A number as written, with its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Number {
    /// The text as written (fmt keeps it).
    pub text: String,
    pub value: f64,
    /// The value as an integer, when written as one and in range.
    pub integer: Option<u64>,
    /// Written with a fraction or exponent.
    pub is_float: bool,
}

/// A value with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

/// The value forms of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    Number(Number),
    /// `900 GB/s`
    Quantity {
        number: Number,
        unit: Ident,
    },
    Str(String),
    Name(String),
    Call(Call),
    /// `ni_balancer { every = 10 }`
    Configured {
        name: Ident,
        body: Block,
    },
    List(Vec<Value>),
    Tuple(Vec<Value>),
}

impl ValueKind {
    /// What this value is, in words, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Number(n) if n.is_float => "a number",
            ValueKind::Number(_) => "an integer",
            ValueKind::Quantity { .. } => "a quantity with a unit",
            ValueKind::Str(_) => "a string",
            ValueKind::Name(_) => "a name",
            ValueKind::Call(_) => "a call",
            ValueKind::Configured { .. } => "a configured name",
            ValueKind::List(_) => "a list",
            ValueKind::Tuple(_) => "a tuple",
        }
    }
}

/// `name(arg, key = arg, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// One argument of a call, positional or named.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Value,
}
