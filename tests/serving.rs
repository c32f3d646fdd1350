//! Serving figures, the physical bound and the batch search: the bound
//! against a hand count on a 2x2 mesh (tests/serving/tiny.moe), no
//! simulated step of the examples under its bound, the serving section of
//! the report, and the search's answer a neighbour of a failure.

mod common;

use common::{checked, root};
use moec::driver::CompileOptions;
use moec_runtime::machine::Machine;
use moec_runtime::routing::{LayerRouting, StepRouting};
use moec_runtime::run::{run, RunOptions};
use moec_runtime::schedule::Schedule;
use moec_runtime::sim::bound::{step_bound, BoundTerm};
use moec_runtime::sim::engine::{simulate_step, SimOptions, DEFAULT_NETWORK_QUANTUM};
use moec_runtime::workload::SloMetric;

fn schedule(file: &str, plan: &str, batch: Option<u64>) -> Schedule {
    let session = checked(&root().join(file));
    let options = CompileOptions {
        plan: Some(plan.into()),
        batch,
        ..Default::default()
    };
    session.schedule(&options, &mut |_, _| {}).expect("compiles")
}

fn timing(steps: u64) -> RunOptions {
    RunOptions {
        steps: Some(steps),
        numerics: None,
        trace_steps: 0,
        network_quantum: DEFAULT_NETWORK_QUANTUM,
        faults: Vec::new(),
    }
}

fn close(got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-12 * want.abs().max(1e-30), "{got} != {want}");
}

/// One decode step of the tiny model: four sequences, one a die (round
/// robin: expert e on die e), tokens 0, 1 and 2 to expert 3 and token 3 to
/// expert 0. Every term by hand, bf16 (2 bytes), hidden 64:
///
/// - per token: attention 2 x 16,384 params + 2 x 2 heads x 16 context x 64
///   = 36,864 FLOPs; gate 2 x 256 = 512; one expert 2 x 16,384 = 32,768;
///   LM head 2 x 2,048 = 4,096.
/// - die 3 runs its token and expert 3 for three: 139,776 FLOPs; reads the
///   embedding row (128 B), attention weights (32,768) and its KV cache
///   (16 x 256 B = 4,096), the gate (512), expert 3 (32,768), the LM head
///   (4,096): 74,368 B, as die 0 does (expert 0, one token).
/// - in all 4 x 74,240 FLOPs; each weight once and all four caches:
///   512 + 32,768 + 16,384 + 512 + 2 x 32,768 + 4,096 = 119,808 B.
/// - network (128 B a token): die 3 receives three dispatches and a combine
///   (512 B) over its two links, and sends as much; the column cut carries
///   three transfers (384 B) each way over two links, as the row cut does.
#[test]
fn the_bound_of_a_step_is_its_hand_count_on_a_2x2_mesh() {
    let s = schedule("tests/serving/tiny.moe", "default", None);
    let machine = Machine::build(s.machine.clone()).expect("builds");
    let routing = StepRouting {
        tokens: 4,
        top_k: 1,
        layers: vec![LayerRouting {
            layer: 0,
            experts: vec![3, 3, 3, 0],
            weights: Vec::new(),
        }],
    };
    let b = step_bound(&s, &machine, &routing);
    let (peak, bw, link) = (1e12, 100e9, 10e9);
    close(b.die_compute_s, 139_776.0 / peak);
    close(b.die_memory_s, 74_368.0 / bw);
    close(b.die_links_s, 512.0 / (2.0 * link));
    close(b.cut_s, 384.0 / (2.0 * link));
    close(b.machine_compute_s, 4.0 * 74_240.0 / (4.0 * peak));
    close(b.machine_memory_s, 119_808.0 / (4.0 * bw));
    assert_eq!(b.binding(), BoundTerm::DieMemory);
    close(b.bound_s(), 74_368.0 / bw);
    close(b.machine_s(), 119_808.0 / (4.0 * bw));
    // The simulated step is above it: launches, activations, latencies.
    let step = simulate_step(&s, &machine, &routing, SimOptions::default()).expect("simulates");
    assert!(step.latency_s > b.bound_s(), "{} <= {}", step.latency_s, b.bound_s());
}

/// No simulated step comes in under its bound: data-parallel and
/// tensor-parallel attention, switches, a cluster and meshes, decode and
/// prefill, expert replicas and split experts, a die and a link failing
/// mid-run, experts migrating. (The simulator rounds each kernel to the
/// picosecond, hence the slack of a picosecond a kernel.)
#[test]
fn no_simulated_step_is_below_its_bound_on_the_examples() {
    let struck = |specs: &[&str]| -> Vec<moec_runtime::fault::Fault> {
        specs.iter().map(|s| s.parse().expect("a good spec")).collect()
    };
    let cases = [
        ("examples/mixtral-8x7b-h100.moe", "default"),
        ("examples/mixtral-8x7b-h100.moe", "prefill"),
        ("examples/mixtral-8x7b-h200.moe", "default"),
        ("examples/mixtral-8x7b-nmp.moe", "default"),
        ("examples/mixtral-8x7b-nmp.moe", "mesh_4x8_prefill"),
        ("examples/qwen3-235b-wafer.moe", "tp_attention"),
        ("examples/moeshard-a100.moe", "moeshard_unfused"),
        ("examples/qwen3-235b-wafer.moe", "er_mapping"),
        ("tests/serving/tiny.moe", "default"),
        ("tests/serving/tiny.moe", "prefill"),
        ("tests/serving/tiny.moe", "prefill_two_batch"),
        ("tests/migration/drift.moe", "invasive"),
        ("tests/migration/drift.moe", "dynamic_placement"),
    ]
    .map(|(file, plan)| (file, plan, Vec::new()));
    let faulted = [
        ("tests/faults/mesh.moe", "eplb", struck(&["die(1,0)@step=1"])),
        ("tests/faults/mesh.moe", "tp", struck(&["link((1,0),(2,0))@step=1"])),
    ];
    for (file, plan, faults) in cases.into_iter().chain(faulted) {
        let s = schedule(file, plan, None);
        let options = RunOptions { faults, ..timing(3) };
        let out = run(&s, &options, &mut |_, _| {}).expect("runs");
        let kernels = s.programs.iter().map(|p| p.instrs.len()).max().unwrap_or(0) as f64;
        for step in &out.report.per_step {
            assert!(step.bound_s > 0.0, "{file} {plan}: step {} has no bound", step.step);
            assert!(
                step.latency_s + kernels * 1e-12 >= step.bound_s,
                "{file} {plan}: step {} took {} s, under its bound {} s",
                step.step,
                step.latency_s,
                step.bound_s
            );
        }
        let b = &out.report.bound;
        assert!(
            b.ratio >= 1.0 - 1e-9 && b.machine_ratio >= b.ratio,
            "{file} {plan}: {b:?}"
        );
        assert!(b.machine_s <= b.mean_s * (1.0 + 1e-12), "{file} {plan}: {b:?}");
    }
}

#[test]
fn the_report_has_serving_figures_a_price_and_the_slo() {
    let s = schedule("tests/serving/tiny.moe", "default", None);
    let out = run(&s, &timing(2), &mut |_, _| {}).expect("runs");
    let r = &out.report;
    let v = &r.serving;
    let tokens_per_s = 4.0 * 2.0 / r.per_step.iter().map(|s| s.latency_s).sum::<f64>();
    close(v.tokens_per_s, tokens_per_s);
    close(v.tokens_per_s_per_die, tokens_per_s / 4.0);
    assert_eq!(v.tokens_per_s_per_die, r.tokens_per_s_per_die);
    let tpot = v.tpot.expect("decode has a TPOT");
    assert_eq!((tpot.p50_s, tpot.p99_s), (r.latency.p50_s, r.latency.p99_s));
    assert!(v.ttft.is_none());
    // Four dies at $2.50 an hour.
    close(v.tokens_per_dollar.expect("priced"), tokens_per_s * 3600.0 / 10.0);
    let slo = v.slo.expect("the workload states one");
    assert_eq!(slo.metric, SloMetric::Tpot);
    close(slo.target_s, 50e-6);
    assert_eq!(slo.met, r.latency.p99_s <= slo.target_s);

    let s = schedule("tests/serving/tiny.moe", "prefill", None);
    let out = run(&s, &timing(1), &mut |_, _| {}).expect("runs");
    let v = &out.report.serving;
    assert!(v.tpot.is_none() && v.ttft.is_some());
    assert_eq!(v.slo.map(|s| s.metric), Some(SloMetric::Ttft));
    // The keys are in the JSON.
    let json: serde_json::Value = serde_json::from_str(&out.report.to_json()).expect("json");
    for key in [
        "tokens_per_s",
        "tokens_per_s_per_die",
        "tpot",
        "ttft",
        "tokens_per_dollar",
        "slo",
    ] {
        assert!(json["serving"].get(key).is_some(), "serving.{key}");
    }
    for key in ["mean_s", "machine_s", "ratio", "machine_ratio", "binding", "terms"] {
        assert!(json["bound"].get(key).is_some(), "bound.{key}");
    }
    assert!(json["per_step"][0]["bound_s"].as_f64().is_some());
}

/// The search's answer meets the target and the batch after it does not,
/// both probed; the same search twice gives the same probes.
#[test]
fn the_batch_search_ends_next_to_a_failure() {
    let session = checked(&root().join("tests/serving/tiny.moe"));
    let search = moec::batch_search::search(&session, Some("default"), Some(2)).expect("searches");
    let found = search.found.clone().expect("batch 1 meets 50 us");
    let failing = search.first_failing.clone().expect("some batch misses 50 us");
    assert!(
        found.met && found.p99_s.is_some_and(|p| p <= search.slo.target_s),
        "{found:?}"
    );
    assert_eq!(failing.batch, found.batch + 1);
    assert!(!failing.met);
    // Monotone where probed: every pass below every failure.
    for p in &search.probes {
        assert_eq!(p.met, p.batch <= found.batch, "{:?}", search.probes);
    }
    // Rerun the two neighbours on their own: the same verdicts.
    for (batch, met) in [(found.batch, true), (failing.batch, false)] {
        let s = schedule("tests/serving/tiny.moe", "default", Some(batch));
        let out = run(&s, &timing(2), &mut |_, _| {}).expect("runs");
        assert_eq!(out.report.latency.p99_s <= search.slo.target_s, met, "batch {batch}");
    }
    let again = moec::batch_search::search(&session, Some("default"), Some(2)).expect("searches");
    assert_eq!(again.probes, search.probes);
}
