//! The bodies of moec's fuzz targets. Each takes untrusted bytes through the
//! same path the command line takes them; the only property checked is the
//! one issue 16 asks of every input: no panic, no hang, no runaway
//! allocation (libFuzzer's `-timeout` and `-rss_limit_mb` catch the last
//! two), and, where the input is valid, what moec writes reads back.
//!
//! The fuzz binaries (`fuzz_targets/`) call these; so does
//! `tests/fuzz_corpus.rs`, which replays every committed corpus input
//! (`fuzz/corpus/<target>/`, seeds and every crash found) on each
//! `cargo test`. How to run the fuzzers: docs/ARCHITECTURE.md, "Fuzzing".

use moec::driver::{self, CompileOptions};
use moec::source::MemoryReader;
use moec_runtime::run::{run, RunOptions};
use moec_runtime::schedule::Schedule;
use std::path::Path;

/// Plans compiled per input: enough to reach every plan-level option
/// without letting one input multiply its cost.
const PLANS_PER_INPUT: usize = 3;

/// A `.moe` source through load, parse, check, diagnostics rendering,
/// compile and lowering of (up to three of) its plans; a lowered schedule
/// must survive its own JSON round trip.
pub fn front_end(data: &[u8]) {
    let mut reader = MemoryReader::default();
    reader.0.insert("fuzz.moe".into(), data.to_vec());
    compile_all(&reader, Path::new("fuzz.moe"));
}

/// A schedule file (what `moec compile --emit schedule` writes, or anything
/// else) through reading, validation and one simulated step, with and
/// without the numeric executor.
pub fn schedule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(schedule) = Schedule::from_json(text) else {
        return;
    };
    for numerics in [false, true] {
        let options = RunOptions {
            steps: Some(1),
            numerics: numerics.then(|| moec_runtime::numerics::NumericConfig {
                width: Some(8),
                ..Default::default()
            }),
            trace_steps: 1,
            network_quantum: 0.05,
            faults: Vec::new(),
        };
        let _ = run(&schedule, &options, &mut |_, _| {});
    }
}

/// The data files a `.moe` names, each behind a small fixed model: the
/// first byte picks what the rest is (a placement in whatever format it
/// shows, or in each engine's named format; expert counts; cross-layer
/// counts; a routing trace).
pub fn data_file(data: &[u8]) {
    let Some((&kind, content)) = data.split_first() else {
        return;
    };
    let (placement, routing) = match kind % 8 {
        0 => (r#"file("data")"#, "zipf(s = 1.0, seed = 3)"),
        1 => (r#"file("data", format = "sglang")"#, "zipf(s = 1.0, seed = 3)"),
        2 => (r#"file("data", format = "vllm-ascend")"#, "zipf(s = 1.0, seed = 3)"),
        3 => (r#"file("data", format = "trtllm")"#, "zipf(s = 1.0, seed = 3)"),
        4 => (r#"file("data", format = "moec")"#, "zipf(s = 1.0, seed = 3)"),
        5 => ("eplb", r#"counts("data", model = "mistral", seed = 7)"#),
        6 => (
            "eplb",
            r#"counts("counts", model = "mistral", variant = topk, crosslayer = "data", seed = 7)"#,
        ),
        _ => ("eplb", r#"trace("data")"#),
    };
    let source = format!(
        "model tiny {{
  layers = 4
  dense_layers = 1
  dense_ffn = 64
  hidden = 32
  vocab = 50
  attention gqa {{ heads = 4; kv_heads = 2; head_dim = 8 }}
  moe {{ experts = 8; top_k = 2; expert_ffn = 16 }}
}}
machine mesh_2x2 {{
  topology = mesh(2, 2)
  die {{ compute = 1 TFLOPS; memory = 1 GB; memory_bw = 1 TB/s }}
  link {{ bandwidth = 100 GB/s; latency = 10 ns }}
}}
workload decode {{ phase = decode; batch = 16; context = 64; steps = 2; routing = {routing} }}
plan p {{ model = tiny; machine = mesh_2x2; workload = decode; placement = {placement}; redundant_experts = 4 }}
"
    );
    let mut reader = MemoryReader::default();
    reader.0.insert("fuzz.moe".into(), source.into_bytes());
    reader.0.insert("data".into(), content.to_vec());
    reader.0.insert("counts".into(), COUNTS.as_bytes().to_vec());
    compile_all(&reader, Path::new("fuzz.moe"));
}

/// Valid expert counts for the cross-layer variant to sit beside: one
/// domain of the bundled OLMoE-analysis file, Mixtral's shape (8 experts,
/// top 2) on its three recorded layers.
const COUNTS: &str = r#"{"meta": {"models": {"mistral": {"num_experts": 8, "top_k": 2}}, "layers_recorded": [0, 7, 15]},
"counts": {"mistral": {"arxiv": {"topk": {"0": [55713, 52019, 52619, 50522, 44401, 66285, 44770, 51463],
"7": [51886, 50083, 56626, 44230, 52075, 54595, 49243, 59054], "15": [61212, 52639, 40083, 25549, 60053, 61162, 60951, 56143]}}}}}"#;

fn compile_all(reader: &MemoryReader, root: &Path) {
    let Ok(session) = driver::check(reader, root) else {
        return;
    };
    let _ = moec::diag::render(&session.loaded.sources, &session.diagnostics.sorted());
    if session.has_errors() {
        return;
    }
    for plan in session.program.plans.iter().take(PLANS_PER_INPUT) {
        let options = CompileOptions {
            plan: Some(plan.name.clone()),
            steps: Some(1),
            ..CompileOptions::default()
        };
        if let Ok(schedule) = session.schedule(&options, &mut |_, _| {}) {
            let text = schedule.to_json();
            let back = Schedule::from_json(&text).expect("a lowered schedule reads back");
            assert_eq!(back.to_json(), text, "a lowered schedule's JSON round-trips");
        }
    }
}
