//! What the main job's stages cost: compiling DeepSeek-V3 for the 8x8 wafer
//! (front end, placement, lowering), simulating one decode step (with the
//! network exact and with `moec run`'s default quantum; also at batch 8192,
//! where the network dominates), and one step of the numeric check at the
//! default reduced width.
//!
//! `cargo bench -p moec --bench pipeline`. The machine is shared and noisy:
//! compare ratios measured in one run, not absolute times across runs.

use moec::driver::{self, CompileOptions};
use moec::source::{FsReader, MemoryReader};
use moec_runtime::machine::Machine;
use moec_runtime::numerics::{NumericConfig, Numerics};
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::schedule::Schedule;
use moec_runtime::sim::engine::{simulate_step, SimOptions};
use std::collections::BTreeMap;
use std::path::Path;

fn main() {
    divan::main();
}

fn main_job() -> Schedule {
    example("deepseek-v3-wafer.moe")
}

fn example(file: &str) -> Schedule {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    let session = driver::check(&FsReader, &path).expect("readable");
    session
        .schedule(&CompileOptions::default(), &mut |_, _| {})
        .expect("compiles")
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn compile_deepseek_v3_wafer() -> Schedule {
    main_job()
}

/// Issue 4's aim: `placement = auto` on DeepSeek-V3 over four wafers
/// (every applicable placement compiled and timed on one simulated step;
/// `her_mapping`'s `tp(16)` lets the token-domain layouts take part) in
/// under a minute.
#[divan::bench(sample_count = 2, sample_size = 1)]
fn compile_deepseek_v3_four_wafers_auto() -> Schedule {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deepseek-v3-4wafers.moe");
    let session = driver::check(&FsReader, &path).expect("readable");
    let options = CompileOptions {
        plan: Some("her_mapping".into()),
        passes: Some("place(auto)".into()),
        ..Default::default()
    };
    session.schedule(&options, &mut |_, _| {}).expect("compiles")
}

/// One decode step of the main job, timing only; the counter is the
/// simulator's events (items/s = events per second).
#[divan::bench(args = [0.0, 0.02], sample_count = 3, sample_size = 1)]
fn simulate_one_decode_step(bencher: divan::Bencher, quantum: f64) {
    simulate_step_of(bencher, main_job(), quantum);
}

/// DeepSeek-V3 decode on four wafers (256 dies, batch 1024), timing only,
/// at `moec run`'s default quantum.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn simulate_one_decode_step_four_wafers(bencher: divan::Bencher) {
    simulate_step_of(bencher, example("deepseek-v3-4wafers.moe"), 0.02);
}

/// DeepSeek-V3 decode on the 8x8 wafer at batch 8192 (the drifting-routing
/// runs' workload), timing only, at `moec run`'s default quantum: `default`
/// is ER-mapping with `tp(16)` attention (many small ring transfers),
/// `ep` is EPLB with data-parallel attention (all-to-alls of thousands of
/// flows, where the network's rate recomputes dominate).
#[divan::bench(args = ["default", "ep"], sample_count = 3, sample_size = 1)]
fn simulate_one_decode_step_batch_8k(bencher: divan::Bencher, plan: &str) {
    simulate_step_of(bencher, batch_8k(plan), 0.02);
}

/// The batch-8192 plans, compiled from a source held in memory beside the
/// example model and machine it imports.
fn batch_8k(plan: &str) -> Schedule {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (model, machine) = (
        examples.join("models/deepseek-v3.moe"),
        examples.join("machines/wafer-8x8.moe"),
    );
    let source = format!(
        "import \"{}\"\nimport \"{}\"\n\
         workload d8k {{ phase = decode; batch = 8192; context = 512; steps = 1000; \
         routing = zipf(s = 0.3, layer_corr = 0.6, drift = 0.02, seed = 7) }}\n\
         plan default {{ model = deepseek_v3; machine = wafer_8x8; workload = d8k; \
         placement = er_mapping; redundant_experts = 0; attention = tp(16) }}\n\
         plan ep {{ model = deepseek_v3; machine = wafer_8x8; workload = d8k; \
         placement = eplb; redundant_experts = 64; attention = dp }}\n",
        model.display(),
        machine.display()
    );
    let root = examples.join("batch-8k.moe");
    let mut files = BTreeMap::new();
    files.insert(root.clone(), source.into_bytes());
    for path in [model, machine] {
        let bytes = std::fs::read(&path).expect("example readable");
        files.insert(path, bytes);
    }
    let session = driver::check(&MemoryReader(files), &root).expect("readable");
    let options = CompileOptions {
        plan: Some(plan.into()),
        ..Default::default()
    };
    session.schedule(&options, &mut |_, _| {}).expect("compiles")
}

fn simulate_step_of(bencher: divan::Bencher, schedule: Schedule, quantum: f64) {
    let machine = Machine::build(schedule.machine.clone()).expect("valid");
    let routing = RoutingGenerator::new(&schedule.model, &schedule.workload)
        .expect("routing")
        .step(0)
        .expect("synthetic");
    let options = SimOptions {
        record_flows: false,
        network_quantum: quantum,
        ..SimOptions::default()
    };
    let events = simulate_step(&schedule, &machine, &routing, options)
        .expect("runs")
        .events;
    bencher
        .counter(divan::counter::ItemsCount::new(events))
        .bench_local(|| simulate_step(&schedule, &machine, &routing, options).expect("runs"));
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn numeric_check_one_step(bencher: divan::Bencher) {
    let schedule = main_job();
    let routing = RoutingGenerator::new(&schedule.model, &schedule.workload)
        .expect("routing")
        .step(0)
        .expect("synthetic");
    let mut numerics = Numerics::new(&schedule, &NumericConfig::default()).expect("fits");
    bencher.bench_local(|| numerics.step(0, Some(&routing)));
}
