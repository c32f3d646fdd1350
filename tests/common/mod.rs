//! Shared by the integration tests: where the examples are, compiling a
//! file with every IR print captured, and running the `moec` binary.

#![allow(dead_code)]

use moec::driver::{self, CompileOptions, Session};
use moec::passes::PrintAfter;
use moec::source::FsReader;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The top-level example files (not the imported models and machines), sorted.
pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "moe"))
        .collect();
    v.sort();
    v
}

/// Every file under examples/ whose name passes `keep`, sorted.
fn walk_examples(keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, keep, out);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&root().join("examples"), keep, &mut v);
    v.sort();
    v
}

/// Every .moe file under examples/, imported ones included, sorted.
pub fn all_example_files() -> Vec<PathBuf> {
    walk_examples(&|p| p.extension().is_some_and(|x| x == "moe"))
}

/// The data files under examples/ that .moe files name (routing counts), sorted.
pub fn example_data_files() -> Vec<PathBuf> {
    walk_examples(&|p| p.extension().is_some_and(|x| x == "json" || x == "csv"))
}

/// Steps the tests that compile every example plan over.
pub const SNAPSHOT_STEPS: u64 = 12;

/// Checks a file from disk; panics with the rendered diagnostics on errors.
pub fn checked(path: &Path) -> Session {
    let s = driver::check(&FsReader, path).expect("readable");
    if s.has_errors() {
        panic!(
            "{}: {}",
            path.display(),
            moec::diag::render(&s.loaded.sources, &s.diagnostics.sorted())
        );
    }
    s
}

/// `text` written as `name` in a fresh temporary directory: the directory
/// (removed when dropped) and the file's path.
pub fn written(text: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("written");
    (dir, path)
}

/// Plan `plan` of the source `text`, checked, compiled and lowered.
pub fn schedule_of(text: &str, plan: &str) -> moec_runtime::schedule::Schedule {
    let (_dir, path) = written(text, "test.moe");
    let session = checked(&path);
    let options = CompileOptions {
        plan: Some(plan.into()),
        ..Default::default()
    };
    session.schedule(&options, &mut |_, _| {}).expect("lowers")
}

/// Compiles `plan` of a checked session, returning the IR text after every
/// pass (name, text) limited to `layers`.
pub fn compile_printing(
    session: &Session,
    plan: &str,
    layers: Option<std::ops::RangeInclusive<u32>>,
) -> Vec<(String, String)> {
    let p = session.program.plan(plan).expect("plan exists");
    let machine = session.program.machine(p.machine).expect("machine checked");
    let options = CompileOptions {
        plan: Some(plan.into()),
        passes: None,
        migration: None,
        // Migration plans over the run's steps; twelve show every kind of
        // move node without planning a 1,000-step run per snapshot.
        steps: Some(SNAPSHOT_STEPS),
        print_after: PrintAfter::All,
        batch: None,
        milp_seconds: None,
    };
    let text_options = moec::ir::text::TextOptions { layers };
    let mut printed = Vec::new();
    let mut print = |pass: &str, ir: &moec::ir::Ir| {
        printed.push((pass.to_string(), moec::ir::text::print(ir, machine, &text_options)))
    };
    if let Err(d) = session.compile(&options, &mut print) {
        panic!("{plan}: {}", moec::diag::render(&session.loaded.sources, &[d]));
    }
    printed
}

/// Runs the `moec` binary from the workspace root.
pub fn moec(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_moec"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("moec runs")
}

/// A process's output as text, for messages and `contains` checks.
pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// The first step of a schedule's own workload routing, simulated at the
/// exact network (every flow's span kept when `record_flows`).
pub fn simulate_first_step(
    s: &moec_runtime::schedule::Schedule,
    record_flows: bool,
) -> moec_runtime::sim::engine::StepResult {
    use moec_runtime::sim::engine::{simulate_step, SimOptions};
    let machine = moec_runtime::machine::Machine::build(s.machine.clone()).expect("machine");
    let routing = moec_runtime::routing::RoutingGenerator::new(&s.model, &s.workload)
        .expect("generator")
        .step(0)
        .expect("routing");
    let options = SimOptions {
        network_quantum: 0.0,
        record_flows,
        ..SimOptions::default()
    };
    simulate_step(s, &machine, &routing, options).expect("simulates")
}
