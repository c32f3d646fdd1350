//! Attention and experts on separate pools of dies (`disaggregate { ... }`):
//! the pools are disjoint and verified, each side stays on its pool, and
//! every token reaches every expert it chose and comes back once a layer.

mod common;

use common::{moec, text};
use moec_runtime::schedule::Schedule;

/// Two nodes of two GPUs, node 1's of kind `big`; `pools` is the plan's
/// `disaggregate` section (or nothing), `extra` more plan settings.
fn plan(pools: &str, extra: &str) -> String {
    format!(
        r#"
model small {{
  layers = 2
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention mha {{ heads = 8; head_dim = 128 }}
  moe {{ experts = 4; top_k = 2; expert_ffn = 2048 }}
}}
machine pair_of_pairs {{
  topology = cluster(nodes = 2, per_node = 2)
  die {{ compute = 100 TFLOPS; memory = 8 GB; memory_bw = 1 TB/s }}
  kind big {{ compute = 200 TFLOPS; memory = 8 GB; memory_bw = 1 TB/s; nodes = [1] }}
  link {{ bandwidth = 400 GB/s; latency = 500 ns }}
  inter_node {{ bandwidth = 50 GB/s; latency = 2 us }}
}}
workload w {{
  phase = decode
  batch = 8
  context = 256
  routing = uniform(seed = 1)
}}
plan p {{
  model = small
  machine = pair_of_pairs
  workload = w
  placement = round_robin
  {extra}
  {pools}
}}
"#
    )
}

fn written(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    common::written(text, "pools.moe")
}

fn schedule(text: &str) -> Schedule {
    common::schedule_of(text, "p")
}

#[test]
fn each_side_stays_on_its_pool_and_every_token_crosses_both_ways() {
    use moec_runtime::numerics::{NumericConfig, Numerics};
    let s = schedule(&plan("disaggregate { attention = die; experts = big }", ""));
    // Tokens live on node 0, experts on node 1.
    assert!(
        s.placement.sequences.iter().all(|d| d.0 < 2),
        "{:?}",
        s.placement.sequences
    );
    for layer in s.placement.experts.iter() {
        for holders in layer {
            assert!(!holders.is_empty() && holders.iter().all(|d| d.0 >= 2), "{holders:?}");
        }
    }
    let mut numerics = Numerics::new(&s, &NumericConfig::default()).expect("numerics");
    let step = numerics.step(0, None);
    assert!(step.passed(), "max rel error {}", step.max_rel_error);
    // 8 tokens x 2 choices x 2 MoE layers, out to the experts and back.
    assert_eq!(step.rows_copied, 2 * 8 * 2 * 2);
    // Ping-ponging three micro-batches between the pools changes when, not what.
    let s = schedule(&plan(
        "disaggregate { attention = die; experts = big }",
        "overlap = micro_batches(3)",
    ));
    assert_eq!(s.micro_batches, 3);
    let mut numerics = Numerics::new(&s, &NumericConfig::default()).expect("numerics");
    let step = numerics.step(0, None);
    assert!(step.passed(), "max rel error {}", step.max_rel_error);
    assert_eq!(step.rows_copied, 2 * 8 * 2 * 2);
    // The same plan colocated keeps some choices at home.
    let colocated = schedule(&plan("", ""));
    let mut numerics = Numerics::new(&colocated, &NumericConfig::default()).expect("numerics");
    assert!(numerics.step(0, None).rows_copied < 2 * 8 * 2 * 2);
}

#[test]
fn the_ir_shows_the_pools_and_memory_follows_them() {
    let (_dir, path) = written(&plan("disaggregate { attention = [0, 1]; experts = [2, 3] }", ""));
    let o = moec(&["compile", path.to_str().expect("utf-8"), "--emit", "ir"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(out.contains("; pools: attention on 2 dies, experts on 2 dies"), "{out}");
    // The expert pool holds no attention weights or KV cache, the attention
    // pool no experts. A row: `; die experts expert-w other-w kv total used`,
    // each size a number and a unit.
    let row = |die: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("; {die} ")))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let (attention, experts) = (row("n0.gpu0"), row("n1.gpu0"));
    assert_eq!(attention[2..5], ["0", "0", "B"], "{attention:?}");
    assert_eq!(experts[5..9], ["0", "B", "0", "B"], "{experts:?}");
}

#[test]
fn bad_pools_are_diagnostics() {
    let cases = [
        (
            "disaggregate { attention = [0, 1]; experts = [1, 2] }",
            "",
            "is in both pools",
        ),
        (
            "disaggregate { attention = die; experts = huge }",
            "",
            "unknown kind `huge`",
        ),
        ("disaggregate { attention = [0, 1] }", "", "has no `experts`"),
        (
            "disaggregate { attention = [0, 1]; experts = [2, 9] }",
            "",
            "out of range",
        ),
        (
            "disaggregate { attention = die; experts = big }",
            "parallel = tp(2)",
            "puts attention and experts on separate pools",
        ),
    ];
    for (pools, extra, message) in cases {
        let (_dir, path) = written(&plan(pools, extra));
        let o = moec(&["check", path.to_str().expect("utf-8")]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{pools}: {err}");
        assert!(err.contains(message), "{pools}: {err}");
    }
}
