//! Micro-batches that overlap: the two-batch timeline against its closed
//! form, and the numbers a split step computes.

mod common;

use moec::driver::CompileOptions;
use moec_runtime::machine::Machine;
use moec_runtime::routing::{LayerRouting, StepRouting};
use moec_runtime::schedule::{Op, Schedule};
use moec_runtime::sim::engine::{simulate_step, SimOptions, Span, StepResult};

/// One MoE layer on two dies, two sequences homed on each; expert 0 lives
/// on die 0 and expert 1 on die 1, `link` the bandwidth between them.
fn two_dies(link: &str, overlap: &str) -> String {
    two_dies_running(link, overlap, "phase = decode; batch = 4; context = 256")
}

/// [`two_dies`] under the workload `shape` (phase, batch, lengths).
fn two_dies_running(link: &str, overlap: &str, shape: &str) -> String {
    format!(
        r#"
model one_layer {{
  layers = 1
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention mha {{ heads = 8; head_dim = 128 }}
  moe {{ experts = 2; top_k = 1; expert_ffn = 2048 }}
}}
machine pair {{
  topology = mesh(2, 1)
  die {{ compute = 10 TFLOPS; memory = 1 GB; memory_bw = 100 GB/s }}
  link {{ bandwidth = {link}; latency = 0 ns }}
}}
workload decode {{
  {shape}
  routing = uniform(seed = 1)
}}
plan p {{
  model = one_layer
  machine = pair
  workload = decode
  placement = round_robin
  overlap = {overlap}
}}
"#
    )
}

fn compile(text: &str) -> Schedule {
    compile_both(text).1
}

/// The IR and the schedule of plan `p` in `text`.
fn compile_both(text: &str) -> (moec::ir::Ir, Schedule) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pair.moe");
    std::fs::write(&path, text).expect("written");
    let session = common::checked(&path);
    let options = CompileOptions {
        plan: Some("p".into()),
        ..Default::default()
    };
    let ir = session.compile(&options, &mut |_, _| {}).expect("compiles");
    let schedule = session.schedule(&options, &mut |_, _| {}).expect("lowers");
    (ir, schedule)
}

/// Every token crosses to the other die: sequences 0 and 1 (die 0) choose
/// expert 1, sequences 2 and 3 (die 1) expert 0.
fn crossing() -> StepRouting {
    StepRouting {
        tokens: 4,
        top_k: 1,
        layers: vec![LayerRouting {
            layer: 0,
            experts: vec![1, 1, 0, 0],
            weights: Vec::new(),
        }],
    }
}

fn simulate(s: &Schedule) -> StepResult {
    let machine = Machine::build(s.machine.clone()).expect("machine");
    let options = SimOptions {
        network_quantum: 0.0,
        ..SimOptions::default()
    };
    simulate_step(s, &machine, &crossing(), options).expect("simulates")
}

/// Die 0's span of `name` for micro-batch `j`.
fn span<'a>(r: &'a StepResult, name: &str, j: u32) -> &'a Span {
    r.spans
        .iter()
        .find(|s| s.die.0 == 0 && s.op.name() == name && s.micro_batch == j)
        .unwrap_or_else(|| panic!("no {name} of micro-batch {j} on die 0"))
}

fn duration(r: &StepResult, name: &str, j: u32) -> f64 {
    let s = span(r, name, j);
    s.end_s - s.start_s
}

/// Two picoseconds: each duration is rounded once to the clock's picosecond.
const CLOCK: f64 = 2e-12;

#[test]
fn two_micro_batches_hide_the_dispatch_exactly_under_the_other_attention() {
    // A first run tells the compute times (the roofline's), which the
    // dispatch is then made to match: one token's row over the link takes
    // exactly micro-batch 1's attention and gate.
    let first = simulate(&compile(&two_dies("100 GB/s", "two_batch")));
    let under = duration(&first, "attention", 1) + duration(&first, "gate", 1);
    let row_bytes = 1024.0 * 2.0;
    let bandwidth = row_bytes / under;
    let s = compile(&two_dies(&format!("{} GB/s", bandwidth / 1e9), "two_batch"));
    assert_eq!(s.micro_batches, 2);
    let r = simulate(&s);
    let x = row_bytes / bandwidth; // one row, one hop, no latency
    let d = |name: &str, j: u32| duration(&r, name, j);
    // The compute stream runs without a gap: both embeds, micro-batch 0's
    // attention and gate (its dispatch starts), micro-batch 1's (which
    // hide that dispatch), then the experts as their tokens are in.
    let t1 = d("embed", 0) + d("embed", 1) + d("attention", 0) + d("gate", 0);
    let t2 = t1 + d("attention", 1) + d("gate", 1);
    assert!((x - (t2 - t1)).abs() < CLOCK, "the link was sized to hide the dispatch");
    let experts0 = t2.max(t1 + x);
    assert!(
        (span(&r, "experts", 0).start_s - t2).abs() < CLOCK,
        "dispatch 0 fully hidden"
    );
    let combine0 = experts0 + d("experts", 0) + x;
    let experts1 = (t2 + x).max(experts0 + d("experts", 0));
    let combine1 = experts1 + d("experts", 1) + x;
    let head0 = combine0.max(experts1 + d("experts", 1)) + d("lm_head", 0);
    let end = combine1.max(head0) + d("lm_head", 1);
    assert!(
        (r.latency_s - end).abs() < 8.0 * CLOCK,
        "simulated {} s, closed form {end} s",
        r.latency_s
    );
    // Micro-batch 0's experts wait for nothing: the dispatch took exactly
    // the time micro-batch 1's attention and gate computed.
    assert!((span(&r, "experts", 0).start_s - span(&r, "gate", 1).end_s).abs() < CLOCK);
}

#[test]
fn one_batch_waits_for_its_dispatch_and_two_batches_split_every_kernel() {
    let one = compile(&two_dies("100 GB/s", "none"));
    let two = compile(&two_dies("100 GB/s", "two_batch"));
    // The same program, once per micro-batch, on two streams.
    let ops = |s: &Schedule, j: u32| -> Vec<Op> {
        s.programs[0]
            .instrs
            .iter()
            .filter(|i| i.micro_batch == j)
            .map(|i| i.op.clone())
            .collect()
    };
    let sorted = |mut v: Vec<Op>| {
        v.sort_by_key(|o| o.name());
        v
    };
    assert_eq!(sorted(ops(&two, 0)), sorted(ops(&one, 0)));
    assert_eq!(sorted(ops(&two, 1)), sorted(ops(&one, 0)));
    assert!(one.programs[0].instrs.iter().all(|i| i.stream == 0));
    for i in &two.programs[0].instrs {
        assert_eq!(i.stream == 0, i.op.is_compute(), "{:?}", i.op);
    }
    // Without overlap the experts start when the dispatch has arrived.
    let r = simulate(&one);
    let dispatch = span(&r, "dispatch", 0);
    assert!((span(&r, "experts", 0).start_s - dispatch.end_s).abs() < CLOCK);
    assert!(dispatch.end_s > dispatch.start_s);
}

#[test]
fn a_split_step_computes_what_the_dense_reference_does() {
    use moec_runtime::numerics::{NumericConfig, Numerics};
    let s = compile(&two_dies("100 GB/s", "two_batch"));
    let mut numerics = Numerics::new(&s, &NumericConfig::default()).expect("numerics");
    let step = numerics.step(0, Some(&crossing()));
    assert!(step.passed(), "max rel error {}", step.max_rel_error);
    // Every token crossed to the other die and back.
    assert_eq!(step.rows_copied, 8);
}

#[test]
fn overlap_auto_keeps_the_faster_form() {
    use moec::ir::Overlap;
    // A prefill over a slow link: the all-to-all is worth hiding. A decode
    // over a fast one: a second weight read is not worth it.
    let cases = [
        ("1 GB/s", "phase = prefill; batch = 4; seq_len = 256", Overlap::TwoBatch),
        ("1000 GB/s", "phase = decode; batch = 4; context = 256", Overlap::None),
    ];
    for (link, shape, expected) in cases {
        let (ir, schedule) = compile_both(&two_dies_running(link, "auto", shape));
        assert_eq!(ir.overlap, expected, "{link}, {shape}: {:?}", ir.header.notes);
        assert_eq!(schedule.micro_batches, expected.micro_batches());
        // The notes time both forms and the choice is the faster.
        let times: Vec<f64> = ir
            .header
            .notes
            .iter()
            .filter(|n| n.ends_with("ms a step (simulated)"))
            .map(|n| n.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        // none, two_batch, chunked(auto).
        assert_eq!(times.len(), 3, "{:?}", ir.header.notes);
        let chosen = if expected == Overlap::None { times[0] } else { times[1] };
        assert_eq!(chosen, times.iter().copied().fold(f64::INFINITY, f64::min));
    }
}

#[test]
fn the_chrome_trace_gives_each_stream_its_track() {
    let s = compile(&two_dies("100 GB/s", "two_batch"));
    let machine = Machine::build(s.machine.clone()).expect("machine");
    let options = SimOptions {
        network_quantum: 0.0,
        record_flows: true,
        ..SimOptions::default()
    };
    let r = simulate_step(&s, &machine, &crossing(), options).expect("simulates");
    let trace: serde_json::Value =
        serde_json::from_str(&moec_runtime::report::chrome::render(&machine, &[r])).expect("JSON");
    let events = trace
        .as_array()
        .or_else(|| trace["traceEvents"].as_array())
        .expect("events");
    let named = |tid: u64| {
        events
            .iter()
            .find(|e| e["ph"] == "M" && e["pid"] == 1 && e["tid"] == tid)
            .map(|e| e["args"]["name"].as_str().unwrap_or_default().to_string())
    };
    // Two dies: die 0's communication stream is track 2.
    assert!(named(2).is_some_and(|n| n.ends_with("stream 1")), "{:?}", named(2));
    for e in events.iter().filter(|e| e["ph"] == "X" && e["pid"] == 1) {
        let name = e["name"].as_str().unwrap_or_default();
        let comm = name.starts_with("dispatch") || name.starts_with("combine");
        let tid = e["tid"].as_u64().unwrap_or_default();
        assert_eq!(comm, tid >= 2, "{name} on track {tid}");
        assert!(name.contains(" mb"), "{name}");
    }
}

/// A prefill of 4 sequences of `seq_len` on [`two_dies`]' pair: die 0's
/// tokens (sequences 0 and 1) all choose expert 1 on die 1, die 1's
/// expert 0.
fn crossing_prefill(seq_len: usize) -> StepRouting {
    let tokens = 4 * seq_len;
    StepRouting {
        tokens,
        top_k: 1,
        layers: vec![LayerRouting {
            layer: 0,
            experts: (0..tokens).map(|t| u32::from(t < tokens / 2)).collect(),
            weights: Vec::new(),
        }],
    }
}

fn simulate_on(s: &Schedule, routing: &StepRouting) -> StepResult {
    let machine = Machine::build(s.machine.clone()).expect("machine");
    let options = SimOptions {
        network_quantum: 0.0,
        ..SimOptions::default()
    };
    simulate_step(s, &machine, routing, options).expect("simulates")
}

/// Die 0's span of `name` in chunk `c`.
fn chunk_span<'a>(r: &'a StepResult, name: &str, c: u32) -> &'a Span {
    r.spans
        .iter()
        .find(|s| s.die.0 == 0 && s.op.name() == name && s.chunk == c)
        .unwrap_or_else(|| panic!("no {name} of chunk {c} on die 0"))
}

#[test]
fn chunks_pipeline_in_fsmoe_time_in_both_regimes() {
    use moec::passes::fsmoe::{pipeline_time, Task};
    const SEQ: usize = 256;
    let shape = format!("phase = prefill; batch = 4; seq_len = {SEQ}");
    let d = 4u32;
    // A fast link: the experts dominate. A slow one: the all-to-all does.
    for (link, comm_bound) in [("400 GB/s", false), ("2 GB/s", true)] {
        let s = compile(&two_dies_running(link, &format!("chunked({d})"), &shape));
        assert_eq!(s.chunks, vec![d]);
        let r = simulate_on(&s, &crossing_prefill(SEQ));
        // FSMoE's per-chunk task times, read off chunk 0: its model holds
        // here (equal chunks, one link each way, no latency).
        let took = |name: &str, c: u32| {
            let x = chunk_span(&r, name, c);
            x.end_s - x.start_s
        };
        let (a2a, exp) = (took("dispatch", 0), took("experts", 0));
        for c in 0..d {
            assert!((took("dispatch", c) - a2a).abs() < CLOCK, "chunk {c}'s dispatch");
            assert!((took("experts", c) - exp).abs() < CLOCK, "chunk {c}'s experts");
        }
        assert_eq!(2.0 * f64::from(d - 1) * a2a >= f64::from(d) * exp, comm_bound, "{link}");
        let at = |t: f64| Task { alpha: t, beta: 0.0 };
        let model = pipeline_time(at(a2a), at(exp), d);
        let pipeline = chunk_span(&r, "combine", d - 1).end_s - chunk_span(&r, "dispatch", 0).start_s;
        assert!(
            (pipeline - model).abs() < 16.0 * CLOCK,
            "{link}: simulated {pipeline} s, FSMoE's formula {model} s"
        );
        // The pipeline beats one chunk whenever it hides anything.
        let one = simulate_on(
            &compile(&two_dies_running(link, "chunked(1)", &shape)),
            &crossing_prefill(SEQ),
        );
        let whole = chunk_span(&one, "combine", 0).end_s - chunk_span(&one, "dispatch", 0).start_s;
        assert!(pipeline < whole, "{link}: {pipeline} s in {d} chunks, {whole} s in one");
    }
}

#[test]
fn a_chunked_step_computes_what_the_dense_reference_does() {
    use moec_runtime::numerics::{NumericConfig, Numerics};
    let shape = "phase = prefill; batch = 4; seq_len = 16";
    let s = compile(&two_dies_running("100 GB/s", "chunked(4)", shape));
    // Each MoE instruction once per chunk, the rest once.
    let count = |name: &str| s.programs[0].instrs.iter().filter(|i| i.op.name() == name).count();
    assert_eq!((count("dispatch"), count("experts"), count("combine")), (4, 4, 4));
    assert_eq!((count("attention"), count("gate")), (1, 1));
    let mut numerics = Numerics::new(&s, &NumericConfig::default()).expect("numerics");
    let step = numerics.step(0, Some(&crossing_prefill(16)));
    assert!(step.passed(), "max rel error {}", step.max_rel_error);
}

#[test]
fn chunked_auto_fits_fsmoe_and_says_so() {
    let shape = "phase = prefill; batch = 4; seq_len = 256";
    let (ir, schedule) = compile_both(&two_dies_running("2 GB/s", "chunked(auto)", shape));
    let note = ir
        .header
        .notes
        .iter()
        .find(|n| n.starts_with("overlap(chunked(auto))"))
        .unwrap_or_else(|| panic!("no FSMoE note: {:?}", ir.header.notes));
    assert!(note.contains("simulated"), "{note}");
    assert_eq!(schedule.chunks.len(), 1);
    assert!([1, 2, 4, 8].contains(&schedule.chunks[0]), "{:?}", schedule.chunks);
}

/// Two nodes of four GPUs, attention and experts split four ways inside
/// each node (`attention = tp(4)`, `parallel = tp(4)`): eight experts,
/// `contiguous`, so experts 0-3 live on node 0's group and 4-7 on node 1's.
fn two_nodes(overlap: &str, shape: &str) -> String {
    format!(
        r#"
model small {{
  layers = 2
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention mha {{ heads = 8; head_dim = 128 }}
  moe {{ experts = 8; top_k = 2; expert_ffn = 2048 }}
}}
machine nodes {{
  topology = cluster(nodes = 2, per_node = 4)
  die {{ compute = 100 TFLOPS; memory = 8 GB; memory_bw = 1 TB/s }}
  link {{ bandwidth = 400 GB/s; latency = 500 ns }}
  inter_node {{ bandwidth = 25 GB/s; latency = 2 us }}
}}
workload w {{
  {shape}
  routing = zipf(s = 0.2, seed = 3)
}}
plan p {{
  model = small
  machine = nodes
  workload = w
  placement = contiguous
  attention = tp(4)
  parallel = tp(4)
  overlap = {overlap}
}}
"#
    )
}

/// The first step of the schedule's own workload routing.
fn first_step(s: &Schedule) -> StepRouting {
    moec_runtime::routing::RoutingGenerator::new(&s.model, &s.workload)
        .expect("generator")
        .step(0)
        .expect("routing")
}

/// Bytes of a step's dispatch that cross a node boundary.
fn inter_node_dispatch_bytes(s: &Schedule) -> u64 {
    let machine = Machine::build(s.machine.clone()).expect("machine");
    let routing = first_step(s);
    let traffic = moec_runtime::sim::traffic::step_traffic(s, &machine, &routing);
    traffic
        .layers
        .iter()
        .flatten()
        .flat_map(|l| &l.dispatch)
        .filter(|(a, b, _)| machine.node_of(*a) != machine.node_of(*b))
        .map(|p| p.2)
        .sum()
}

#[test]
fn montas_relay_cuts_the_inter_node_all_to_all_by_exactly_the_tp_factor() {
    let shape = "phase = prefill; batch = 8; seq_len = 64";
    let unsplit = compile(&two_nodes("none", shape));
    let relayed = compile(&two_nodes("monta(1)", shape));
    assert!(relayed.placement.relay_parts && !unsplit.placement.relay_parts);
    let (u, r) = (inter_node_dispatch_bytes(&unsplit), inter_node_dispatch_bytes(&relayed));
    assert!(r > 0, "some tokens cross the nodes");
    assert_eq!(u, 4 * r, "unsplit {u} B, relayed {r} B");
    // The relay forwards inside the node: each expert group all-gathers.
    let count = |s: &Schedule, name: &str| s.programs[0].instrs.iter().filter(|i| i.op.name() == name).count();
    assert_eq!(
        (
            count(&relayed, "expert_all_gather"),
            count(&relayed, "expert_reduce_scatter")
        ),
        (2, 2)
    );
    assert_eq!(count(&unsplit, "expert_all_gather"), 0);
    // Faster over the slow NIC.
    let step = |s: &Schedule| simulate_on(s, &first_step(s)).latency_s;
    let (tu, tr) = (step(&unsplit), step(&relayed));
    assert!(tr < tu, "unsplit {tu} s, relayed {tr} s");
}

#[test]
fn a_relayed_step_computes_what_the_dense_reference_does() {
    use moec_runtime::numerics::{NumericConfig, Numerics};
    let s = compile(&two_nodes("monta(2)", "phase = prefill; batch = 8; seq_len = 8"));
    let mut numerics = Numerics::new(&s, &NumericConfig::default()).expect("numerics");
    let step = numerics.step(0, None);
    assert!(step.passed(), "max rel error {}", step.max_rel_error);
}

#[test]
fn monta_auto_relays_where_the_nic_is_the_bottleneck_and_says_why() {
    let (ir, schedule) = compile_both(&two_nodes("monta(auto)", "phase = prefill; batch = 8; seq_len = 64"));
    let note = ir
        .header
        .notes
        .iter()
        .find(|n| n.starts_with("monta(auto)"))
        .unwrap_or_else(|| panic!("no MoNTA note: {:?}", ir.header.notes));
    assert!(note.contains("(4.00x less)") && note.ends_with("relays"), "{note}");
    assert!(schedule.placement.relay_parts);
}
