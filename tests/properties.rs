//! Properties that hold for every input: the front end never panics (on
//! random bytes or on random soups of the language's own tokens), `fmt` is
//! idempotent on whatever parses, and compiling is deterministic.

mod common;

use moec::driver;
use moec::source::MemoryReader;
use moec::syntax::{format::format, parse, FileId};
use proptest::prelude::*;
use std::path::Path;

/// Runs the whole front end (load, parse, check, compile every plan) on bytes.
fn front_end(bytes: &[u8]) {
    let mut reader = MemoryReader::default();
    reader.0.insert("input.moe".into(), bytes.to_vec());
    let session = driver::check(&reader, Path::new("input.moe")).expect("in memory");
    let _ = moec::diag::render(&session.loaded.sources, &session.diagnostics.sorted());
    if !session.has_errors() {
        for plan in &session.program.plans {
            let opts = driver::CompileOptions {
                plan: Some(plan.name.clone()),
                ..Default::default()
            };
            let _ = session.compile(&opts, &mut |_, _| {});
        }
    }
}

const TOKENS: &[&str] = &[
    "model",
    "machine",
    "workload",
    "plan",
    "import",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    ";",
    ",",
    "\n",
    " ",
    "\"x.moe\"",
    "layers",
    "hidden",
    "vocab",
    "moe",
    "experts",
    "top_k",
    "expert_ffn",
    "attention",
    "mha",
    "gqa",
    "mla",
    "heads",
    "head_dim",
    "topology",
    "mesh",
    "switch",
    "cluster",
    "die",
    "link",
    "defects",
    "compute",
    "memory",
    "memory_bw",
    "bandwidth",
    "latency",
    "phase",
    "decode",
    "prefill",
    "batch",
    "context",
    "routing",
    "zipf",
    "s",
    "0",
    "1",
    "2",
    "8",
    "4096",
    "1.5",
    "-3",
    "99999999999999999999",
    "GB",
    "TB/s",
    "TFLOPS",
    "ns",
    "GBps",
    "m",
    "w",
    "p",
    "//c\n",
    "/*",
    "*/",
    "#",
    "é",
    "\u{0}",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        front_end(&bytes);
    }

    #[test]
    fn token_soups_never_panic(text in soup()) {
        front_end(text.as_bytes());
    }

    #[test]
    fn fmt_is_idempotent_on_whatever_parses(text in soup()) {
        let (ast, diags) = parse(FileId(0), &text);
        if diags.is_empty() {
            let once = format(&ast, &text);
            let (again, d2) = parse(FileId(0), &once);
            prop_assert!(d2.is_empty(), "formatted text does not parse: {once:?}");
            prop_assert_eq!(format(&again, &once), once);
        }
    }
}

#[test]
fn empty_and_enormous_inputs_are_handled() {
    front_end(b"");
    front_end(&vec![b'{'; 1 << 20]);
    front_end(&vec![b'a'; (16 << 20) + 1]);
    let nested = format!("model m {{ x = {}{} }}", "(1, ".repeat(10_000), ")".repeat(10_000));
    front_end(nested.as_bytes());
}

#[test]
fn compiling_twice_gives_identical_output() {
    let path = common::root().join("examples/deepseek-v3-wafer.moe");
    let a = common::compile_printing(&common::checked(&path), "default", None);
    let b = common::compile_printing(&common::checked(&path), "default", None);
    assert_eq!(a, b);
}

/// A compiled schedule, as JSON, to mutate.
fn schedule_json() -> String {
    let path = common::root().join("examples/deepseekmoe-16b-nmp.moe");
    let session = common::checked(&path);
    session
        .schedule(&driver::CompileOptions::default(), &mut |_, _| {})
        .unwrap()
        .to_json()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A hand-edited schedule is untrusted input: whatever number is changed
    /// to whatever value, reading and running it must not panic.
    #[test]
    fn edited_schedules_never_panic_the_runtime(pick in 0usize..4000, value in prop::sample::select(vec!["0", "1", "-1", "3", "4294967296", "1e300", "0.5"])) {
        let json = schedule_json();
        let mut spots = Vec::new();
        let bytes = json.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'.') {
                let end = (i..bytes.len()).find(|&j| !(bytes[j].is_ascii_digit() || bytes[j] == b'.' || bytes[j] == b'e' || bytes[j] == b'-')).unwrap_or(bytes.len());
                spots.push((i, end));
                i = end;
            } else {
                i += 1;
            }
        }
        let (a, b) = spots[pick % spots.len()];
        let edited = format!("{}{}{}", &json[..a], value, &json[b..]);
        if let Ok(s) = moec_runtime::schedule::Schedule::from_json(&edited) {
            let options = moec_runtime::run::RunOptions {
                steps: Some(1),
                numerics: Some(moec_runtime::numerics::NumericConfig { width: Some(8), ..Default::default() }),
                trace_steps: 1,
                network_quantum: 0.02,
            };
            let _ = moec_runtime::run::run(&s, &options, &mut |_, _| {});
        }
    }
}
