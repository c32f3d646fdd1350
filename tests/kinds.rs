//! Machines with more than one kind of die: the language, the checks, and
//! every cost asking the die's own kind (compute, memory bandwidth,
//! memory, price).

mod common;

use common::{moec, text};
use moec_runtime::machine::{DieId, LinkKind, Machine};
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::schedule::Schedule;
use moec_runtime::sim::engine::{simulate_step, SimOptions};

/// Two nodes of two GPUs; node 1's are of kind `fast` (twice the memory
/// bandwidth and compute, a higher price) when `kind` is the default.
fn two_kinds(kind: &str) -> String {
    format!(
        r#"
model small {{
  layers = 2
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention mha {{ heads = 8; head_dim = 128 }}
  moe {{ experts = 4; top_k = 1; expert_ffn = 2048 }}
}}
machine pair_of_pairs {{
  topology = cluster(nodes = 2, per_node = 2)
  die {{ compute = 100 TFLOPS; memory = 8 GB; memory_bw = 1 TB/s; price = 1.0 }}
  {kind}
  link {{ bandwidth = 400 GB/s; latency = 500 ns }}
  inter_node {{ bandwidth = 50 GB/s; latency = 2 us }}
}}
workload w {{
  phase = decode
  batch = 8
  context = 1024
  routing = uniform(seed = 1)
}}
plan p {{
  model = small
  machine = pair_of_pairs
  workload = w
  placement = round_robin
}}
"#
    )
}

const FAST: &str = "kind fast { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; price = 3.0; nodes = [1] }";

fn written(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    common::written(text, "kinds.moe")
}

fn schedule(text: &str) -> Schedule {
    common::schedule_of(text, "p")
}

#[test]
fn a_kind_claims_its_nodes_and_the_rest_are_the_machines_die() {
    let s = schedule(&two_kinds(FAST));
    let m = Machine::build(s.machine.clone()).expect("machine");
    let compute: Vec<f64> = (0..4).map(|d| m.die_spec(DieId(d)).compute.0).collect();
    assert_eq!(compute, [1e14, 1e14, 2e14, 2e14]);
    assert_eq!(s.machine.kind_name_of(DieId(3)), "fast");
    assert_eq!(s.machine.kind_name_of(DieId(0)), "die");
    // The machine's price is every die's: 2 x $1 + 2 x $3 an hour.
    assert_eq!(m.price_per_hour(), Some(8.0));
    let (_dir, path) = written(&two_kinds(FAST));
    let out = text(&moec(&["check", path.to_str().expect("utf-8")]).stdout);
    assert!(
        out.contains("2 of die: 100 TFLOPS and 8 GB, $1 a die-hour; 2 of fast: 200 TFLOPS and 8 GB, $3 a die-hour"),
        "{out}"
    );
}

#[test]
fn a_kind_may_bring_its_own_nic_and_port() {
    let kind = "kind fast { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; nodes = [1]\n    inter_node { bandwidth = 100 GB/s; latency = 1 us }\n    link { bandwidth = 900 GB/s; latency = 250 ns } }";
    let s = schedule(&two_kinds(kind));
    let m = Machine::build(s.machine.clone()).expect("machine");
    // Per die: the bandwidth of its link into the spine and into its node's switch.
    let bandwidth = |d: u32, kind: LinkKind| {
        m.links()
            .iter()
            .find(|l| l.from == DieId(d).node() && l.kind == kind)
            .map(|l| l.spec.bandwidth.0)
            .expect("a link")
    };
    assert_eq!(bandwidth(0, LinkKind::InterNode), 50e9);
    assert_eq!(bandwidth(3, LinkKind::InterNode), 100e9);
    assert_eq!(bandwidth(1, LinkKind::IntraNode), 400e9);
    assert_eq!(bandwidth(2, LinkKind::IntraNode), 900e9);
}

#[test]
fn each_die_computes_at_its_kinds_rate() {
    let s = schedule(&two_kinds(FAST));
    let machine = Machine::build(s.machine.clone()).expect("machine");
    let routing = RoutingGenerator::new(&s.model, &s.workload)
        .expect("routing")
        .step(0)
        .expect("a step");
    let r = simulate_step(&s, &machine, &routing, SimOptions::default()).expect("simulates");
    // Two sequences a die: the same attention everywhere, memory-bound,
    // so the fast kind's takes half the time less half a launch.
    let attention = |d: u32| {
        let x = r
            .spans
            .iter()
            .find(|x| x.die.0 == d && x.op.name() == "attention")
            .expect("an attention span");
        x.end_s - x.start_s
    };
    let launch = 1e-6;
    let (slow, fast) = (attention(0), attention(2));
    assert!(
        ((slow - launch) / 2.0 - (fast - launch)).abs() < 1e-9,
        "slow {slow} s, fast {fast} s"
    );
    // The bound takes each die's own rates: the machine's memory bandwidth
    // is 2 x 1 + 2 x 2 TB/s against 4 x 1 TB/s without the kind.
    let plain = schedule(&two_kinds(""));
    let plain_machine = Machine::build(plain.machine.clone()).expect("machine");
    let with = moec_runtime::sim::bound::step_bound(&s, &machine, &routing);
    let without = moec_runtime::sim::bound::step_bound(&plain, &plain_machine, &routing);
    let ratio = with.machine_memory_s / without.machine_memory_s;
    assert!((ratio - 4.0 / 6.0).abs() < 1e-12, "{ratio}");
}

#[test]
fn bad_kinds_are_diagnostics_at_the_kind() {
    let cases = [
        (
            "kind fast { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; nodes = [2] }",
            "node 2 is past the cluster's 2 nodes",
        ),
        (
            "kind fast { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; dies = [1, 7] }",
            "kind `fast` names die 7, but the machine has 4",
        ),
        (
            "kind a { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; dies = [1] }\n  kind b { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; dies = [1] }",
            "die 1 is of kind `a` and of kind `b`",
        ),
        (
            "kind fast { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s }",
            "has no `nodes`",
        ),
        ("kind { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; dies = [1] }", "has no name"),
        (
            "kind fast { compute = 200 TFLOPS; memory = 8 GB; memory_bw = 2 TB/s; dies = [1]; unknown = 3 }",
            "unknown setting `unknown`",
        ),
    ];
    for (kind, message) in cases {
        let (_dir, path) = written(&two_kinds(kind));
        let o = moec(&["check", path.to_str().expect("utf-8")]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{kind}: {err}");
        assert!(err.contains(message), "{kind}: {err}");
        assert!(err.contains("kinds.moe:"), "{kind}: no span: {err}");
    }
}

#[test]
fn a_region_of_a_mesh_is_a_kind() {
    let text = two_kinds("")
        .replace("topology = cluster(nodes = 2, per_node = 2)", "topology = mesh(4, 2)")
        .replace("inter_node { bandwidth = 50 GB/s; latency = 2 us }", "")
        .replace(
            "die { compute = 100 TFLOPS",
            "kind edge { compute = 50 TFLOPS; memory = 8 GB; memory_bw = 1 TB/s; region = ((3, 1), (2, 0)) }\n  die { compute = 100 TFLOPS",
        );
    let s = schedule(&text);
    // Columns 2-3 of both rows: dies 2, 3, 6 and 7, whichever corner comes first.
    let edge: Vec<u32> = (0..8).filter(|&d| s.machine.kind_name_of(DieId(d)) == "edge").collect();
    assert_eq!(edge, [2, 3, 6, 7]);
    let (_dir, path) = written(&text.replace("((3, 1), (2, 0))", "((3, 1), (4, 0))"));
    let err = text_of_check(&path);
    assert!(err.contains("(4, 0) is off the mesh"), "{err}");
}

fn text_of_check(path: &std::path::Path) -> String {
    let o = moec(&["check", path.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    text(&o.stderr)
}
