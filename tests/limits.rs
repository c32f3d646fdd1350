//! One test per documented limit (issue 16): the largest input the
//! language allows either runs, within the memory docs/ARCHITECTURE.md
//! states ("Where limits are enforced"), or is refused up front with E0046
//! saying the size and the limit, before any of the work. The limits on
//! products of sizes live in `compiler/src/budget.rs`.

mod common;

use common::{moec, text};
use std::path::PathBuf;

/// A model of `layers` layers and `experts` experts (top 2) on `topology`
/// under `workload`, written to a scratch file.
fn plan(name: &str, layers: u64, experts: u64, topology: &str, workload: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moec-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let file = dir.join(format!("{name}.moe"));
    std::fs::write(
        &file,
        format!(
            "model m {{
  layers = {layers}
  hidden = 64
  vocab = 100
  attention mha {{ heads = 2; head_dim = 32 }}
  moe {{ experts = {experts}; top_k = 2; expert_ffn = 16 }}
}}
machine g {{
  topology = {topology}
  die {{ compute = 100 TFLOPS; memory = 1000 GB; memory_bw = 1 TB/s }}
  link {{ bandwidth = 100 GB/s; latency = 100 ns }}
}}
workload w {{ {workload}; routing = zipf(s = 1.0, seed = 1) }}
plan p {{ model = m; machine = g; workload = w{extra} }}
"
        ),
    )
    .expect("scratch file");
    file
}

/// `moec check FILE` refuses with E0046, naming `what`.
fn refused_at_check(file: &PathBuf, what: &str) {
    let o = moec(&["check", file.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error[E0046]") && err.contains(what), "{err}");
}

fn runs_one_step(file: &PathBuf) {
    let o = moec(&["run", file.to_str().unwrap(), "--no-numerics", "--steps", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

const DECODE: &str = "phase = decode; batch = 16; context = 16";

#[test]
fn layers_at_their_limit_compile_and_run() {
    // 100,000 layers on 2 dies: 200,000 die-layers, under 2^18. A recursive
    // cycle check once overflowed the stack from about 16,300 layers.
    let file = plan("layers", 100_000, 2, "mesh(2, 1)", DECODE, "");
    let o = moec(&["compile", file.to_str().unwrap(), "--emit", "schedule"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    runs_one_step(&file);
    // On 4 dies the same model is 400,000 die-layers: refused before compiling.
    refused_at_check(
        &plan("layers4", 100_000, 2, "mesh(2, 2)", DECODE, ""),
        "alive dies x layers",
    );
}

#[test]
fn experts_at_their_limit_run_and_their_product_with_layers_is_bounded() {
    // 65,536 experts on 4 MoE layers: 262,144 expert nodes (about 140 MB).
    runs_one_step(&plan("experts", 4, 65_536, "mesh(2, 2)", DECODE, ""));
    // 200 MoE layers of them: 13 million nodes, past 2^23.
    refused_at_check(
        &plan("experts200", 200, 65_536, "mesh(2, 2)", DECODE, ""),
        "MoE layers x experts is 200 x 65536",
    );
}

#[test]
fn dies_at_their_limit_are_refused_before_any_work() {
    // mesh(1024, 1024) is the 2^20 dies the language allows; one layer on
    // each is already 2^20 die-layers (about 4 GiB when a step runs).
    refused_at_check(&plan("dies", 1, 2, "mesh(1024, 1024)", DECODE, ""), "1048576 x 1");
    // NI-Balancer's cold-route table grows as dies^2: 16,000 dies (6.3 GB
    // once) are refused before it is built, though 16,000 x 4 die-layers
    // would be simulated.
    refused_at_check(
        &plan("dies-ni", 4, 8, "mesh(4, 4000)", DECODE, "; migration = ni_balancer"),
        "dies NI-Balancer plans on is 16000",
    );
    // One more row is past the language's own bound (E0018, at the topology).
    let o = moec(&[
        "check",
        plan("dies+", 1, 2, "mesh(1024, 1025)", DECODE, "").to_str().unwrap(),
    ]);
    assert!(text(&o.stderr).contains("error[E0018]"), "{}", text(&o.stderr));
}

#[test]
fn steps_at_their_limit_compile_at_once_unless_a_policy_plans_over_them() {
    let workload = "phase = decode; batch = 16; context = 16; steps = 16777216";
    // Nothing is done per step at compile time without migration.
    let file = plan("steps", 4, 8, "mesh(2, 2)", workload, "");
    let o = moec(&["compile", file.to_str().unwrap(), "--emit", "schedule"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // A migration policy plays every step forward: refused up front.
    refused_at_check(
        &plan("steps-ni", 4, 8, "mesh(2, 2)", workload, "; migration = ni_balancer"),
        "steps x MoE layers a migration policy plans over is 16777216 x 4",
    );
    // Past the limit on the command line: refused by the argument parser.
    let o = moec(&["run", file.to_str().unwrap(), "--steps", "16777217"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn a_batch_at_its_limit_runs_and_a_prefill_of_it_is_refused() {
    // 2^24 sequences of decode, top 2 on 4 MoE layers: 2^27 routing
    // choices, about 0.7 GB when the step runs.
    runs_one_step(&plan(
        "batch",
        4,
        8,
        "mesh(2, 2)",
        "phase = decode; batch = 16777216; context = 16",
        "",
    ));
    // Prefill multiplies it by the prompt: 2^48 tokens a step.
    refused_at_check(
        &plan(
            "prefill",
            4,
            8,
            "mesh(2, 2)",
            "phase = prefill; batch = 16777216; seq_len = 16777216",
            "",
        ),
        "routing choices a step",
    );
}

#[test]
fn netbench_messages_are_bounded_by_their_total() {
    let machine = "examples/machines/wafer-8x8.moe";
    // A million a die is the flag's own limit; on 64 dies, lengthened up to
    // 16 times, that is a billion messages: refused before simulating.
    let o = moec(&["netbench", machine, "--messages", "1000000"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error[E0046]") && err.contains("--messages 65536 or fewer"),
        "{err}"
    );
    let o = moec(&["netbench", machine, "--messages", "1000001"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}
