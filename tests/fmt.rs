//! `moec fmt`: every example is in canonical layout, formatting is
//! idempotent, and formatting never changes what a file means.

mod common;

use moec::driver;
use moec::source::MemoryReader;
use moec::syntax::{format::format, parse, FileId};
use std::path::PathBuf;

fn fmt(text: &str) -> String {
    let (ast, diags) = parse(FileId(0), text);
    assert!(diags.is_empty(), "{diags:?}");
    format(&ast, text)
}

#[test]
fn every_example_is_already_formatted() {
    for path in common::all_example_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            fmt(&text),
            text,
            "{} is not in canonical layout: run `moec fmt --write` on it",
            path.display()
        );
    }
}

#[test]
fn formatting_is_idempotent_on_a_messy_file() {
    let messy = "# lead\nmodel   m{layers=2;hidden=64 // h\n vocab=100\n\n\n attention  mha{heads=2\nhead_dim=32}\n moe { experts = 4 ; top_k = 2 ; expert_ffn = 128 } }\n\n\n\nworkload w{phase=decode;batch=1_024;context=8;routing=zipf(s=1.2,seed=3)}/* tail */";
    let once = fmt(messy);
    assert_eq!(fmt(&once), once);
    assert!(once.contains("batch = 1_024"), "numbers keep their spelling:\n{once}");
    for c in ["# lead", "// h", "/* tail */"] {
        assert!(once.contains(c), "comment {c} lost:\n{once}");
    }
}

/// Formats every example file in memory, then checks that each plan
/// compiles to byte-identical IR from the formatted and the original files.
#[test]
fn formatting_preserves_meaning() {
    let root = common::root().join("examples");
    let mut original = MemoryReader::default();
    let mut formatted = MemoryReader::default();
    for path in common::all_example_files() {
        let rel = PathBuf::from(path.strip_prefix(&root).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        // Mess the layout up first, so the formatter has work to do.
        let messy = text.replace("\n  ", "\n").replace(" = ", "=");
        formatted.0.insert(rel.clone(), fmt(&messy).into_bytes());
        original.0.insert(rel, text.into_bytes());
    }
    // The data files examples read (routing counts), as they are.
    for path in common::example_data_files() {
        let rel = PathBuf::from(path.strip_prefix(&root).unwrap());
        let bytes = std::fs::read(&path).unwrap();
        formatted.0.insert(rel.clone(), bytes.clone());
        original.0.insert(rel, bytes);
    }
    for path in common::examples() {
        let rel = PathBuf::from(path.file_name().unwrap());
        let a = driver::check(&original, &rel).unwrap();
        let b = driver::check(&formatted, &rel).unwrap();
        assert_eq!(a.has_errors(), b.has_errors(), "{}", rel.display());
        assert_eq!(a.program.plans.len(), b.program.plans.len(), "{}", rel.display());
        // A plan compiles from its checked settings and items alone, so
        // equal settings (wherever they were written) and equal items are
        // equal compiles.
        for (pa, pb) in a.program.plans.iter().zip(&b.program.plans) {
            let what = format!("{}: plan {}", rel.display(), pa.name);
            assert_eq!(
                without_spans(&format!("{pa:?}")),
                without_spans(&format!("{pb:?}")),
                "{what}"
            );
            assert_eq!(a.program.model(pa.model), b.program.model(pb.model), "{what}: model");
            assert_eq!(
                a.program.machine(pa.machine).map(|m| m.spec()),
                b.program.machine(pb.machine).map(|m| m.spec()),
                "{what}: machine"
            );
            assert_eq!(
                a.program.workload(pa.workload),
                b.program.workload(pb.workload),
                "{what}: workload"
            );
            assert!(a.program.model(pa.model).is_some(), "{what} has no model");
        }
    }
}

/// `Debug` text with every `Span { .. }` (where a thing was written, which
/// formatting moves) replaced by `Span`.
fn without_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("Span {") {
        out.push_str(&rest[..at]);
        out.push_str("Span");
        rest = rest[at..].find('}').map_or("", |end| &rest[at + end + 1..]);
    }
    out.push_str(rest);
    out
}

#[test]
fn spans_are_dropped_and_nothing_else() {
    assert_eq!(
        without_spans("Plan { a: 1, span: Span { file: FileId(0), start: 3, end: 9 }, b: Span { file: FileId(1), start: 0, end: 1 } }"),
        "Plan { a: 1, span: Span, b: Span }"
    );
}
