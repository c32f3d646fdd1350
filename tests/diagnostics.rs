//! One bad input per diagnostic code (tests/diagnostics/*.moe).
//!
//! Each file's first line says what it must produce:
//!
//! ```text
//! // expect: E0004 "hiden"
//! ```
//!
//! The file is checked (and, if that finds no error, its plan compiled);
//! every diagnostic must carry that code, the first one's primary span must
//! cover exactly the quoted text (`""`: no span, a command-line error), and
//! the rendered output is a reviewed snapshot. Every code `moec explain`
//! knows must have a file here. Files the inputs read are held in memory
//! beside them: placement files from `tests/diagnostics/placements/`, data
//! files (routing counts) from `tests/diagnostics/data/` as `data/<name>`.

use moec::diag::{render, Code, Diagnostic};
use moec::driver::{self, CompileOptions};
use moec::source::MemoryReader;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/diagnostics");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.retain(|p| p.extension().is_some_and(|x| x == "moe"));
    v.sort();
    v
}

/// `// expect: CODE "text"`.
fn directive(text: &str) -> (Code, String) {
    let line = text.lines().next().unwrap_or("");
    let rest = line
        .strip_prefix("// expect: ")
        .unwrap_or_else(|| panic!("first line must be `// expect: CODE \"span\"`: {line}"));
    let (code, quoted) = rest.split_once(' ').unwrap();
    let quoted = quoted.trim();
    let inner = &quoted[1..quoted.len() - 1];
    (
        Code::parse(code).unwrap_or_else(|| panic!("unknown code {code}")),
        inner.replace("\\\"", "\""),
    )
}

/// Checks (and compiles, when checking passes) a file held in memory under
/// its bare name, so rendered paths do not depend on the checkout; the
/// placement files are held as `placements/NAME`.
fn diagnose(name: &str, text: &str) -> (String, Vec<Diagnostic>, String) {
    let mut reader = MemoryReader::default();
    reader.0.insert(PathBuf::from(name), text.as_bytes().to_vec());
    let placements = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/diagnostics/placements");
    for entry in std::fs::read_dir(placements).unwrap() {
        let path = entry.unwrap().path();
        let held = Path::new("placements").join(path.file_name().unwrap());
        reader.0.insert(held, std::fs::read(&path).unwrap());
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/diagnostics/data");
    for entry in std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()) {
        let rel = Path::new("data").join(entry.file_name().unwrap());
        reader.0.insert(rel, std::fs::read(&entry).unwrap());
    }
    let session = driver::check(&reader, Path::new(name)).unwrap();
    let mut diags = session.diagnostics.sorted();
    if !session.has_errors() && !session.program.plans.is_empty() {
        if let Err(d) = session.compile(&CompileOptions::default(), &mut |_, _| {}) {
            diags.push(d);
        }
    }
    let rendered = render(&session.loaded.sources, &diags);
    let source = session.loaded.sources.text(moec::syntax::FileId(0)).to_string();
    (rendered, diags, source)
}

#[test]
fn each_bad_input_produces_exactly_its_code_at_its_span() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    let mut covered = BTreeSet::new();
    settings.bind(|| {
        for path in cases() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let (code, span_text) = directive(&text);
            let (rendered, diags, source) = diagnose(&name, &text);
            assert!(!diags.is_empty(), "{name}: no diagnostic");
            let codes: BTreeSet<&str> = diags.iter().map(|d| d.code.as_str()).collect();
            assert_eq!(codes, BTreeSet::from([code.as_str()]), "{name}:\n{rendered}");
            let first = &diags[0];
            let got = if first.has_span {
                &source[first.span.range()]
            } else {
                ""
            };
            assert_eq!(got, span_text, "{name}: wrong span\n{rendered}");
            covered.insert(code);
            insta::assert_snapshot!(format!("diagnostics.{}", name.trim_end_matches(".moe")), rendered);
        }
    });
    // Raised only by the command line (a file it names, a schedule, a
    // `--fail` spec): tests/cli.rs, `command_line_errors_have_codes_and_spans`;
    // a run's failed numeric check (E0047): tests/cli.rs; a placement a file
    // cannot express (E0048): tests/placement_files.rs.
    let command_line = [Code::E0042, Code::E0043, Code::E0044, Code::E0047, Code::E0048];
    let missing: Vec<&str> = Code::all()
        .filter(|c| !covered.contains(c) && !command_line.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a test file in tests/diagnostics: {missing:?}"
    );
}

#[test]
fn two_broken_items_give_two_errors_in_one_run() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/diagnostics/E0001-two-items.moe"))
            .unwrap();
    let (_, diags, _) = diagnose("two.moe", &text);
    assert_eq!(diags.len(), 2, "{diags:?}");
}

#[test]
fn errors_in_several_items_are_all_reported() {
    let text = "model a { layers = 2; hidden = 64; vocab = 10; dense_ffn = 128; dtype = bf17; attention mha { heads = 2; head_dim = 32 } }\n\
                machine b { topology = mesh(2, 2); die { compute = 1 TFLOPS; memory = 1 TB/s; memory_bw = 1 TB/s }; link { bandwidth = 1 GB/s; latency = 1 ns } }\n\
                workload c { phase = decoed; batch = 1; context = 1 }\n";
    let (_, diags, _) = diagnose("many.moe", text);
    let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["E0017", "E0003", "E0017"]);
}
