//! Expert migration over a run, end to end from `tests/migration/drift.moe`
//! (a small model on a 4x4 mesh under ER-Mapping, routing drifting fast):
//! the policies compile to move nodes, lower to migrations and broadcasts,
//! run with real weights, and do what their papers say.

mod common;

use moec::driver::CompileOptions;
use moec_runtime::machine::Machine;
use moec_runtime::report::RunReport;
use moec_runtime::run::{run, RunOptions, RunOutput};
use moec_runtime::schedule::{MigrationKind, Schedule, Window};

fn schedule(plan: &str, steps: u64) -> Schedule {
    let session = common::checked(&common::root().join("tests/migration/drift.moe"));
    let options = CompileOptions {
        plan: Some(plan.into()),
        steps: Some(steps),
        ..Default::default()
    };
    session.schedule(&options, &mut |_, _| {}).expect("compiles")
}

fn run_plan(s: &Schedule, steps: u64, numerics: bool, trace_steps: u64) -> RunOutput {
    let options = RunOptions {
        steps: Some(steps),
        numerics: numerics.then(|| moec_runtime::numerics::NumericConfig {
            width: Some(32),
            ..Default::default()
        }),
        trace_steps,
        network_quantum: 0.02,
        faults: Vec::new(),
    };
    run(s, &options, &mut |_, _| {}).expect("runs")
}

fn numbers_hold(r: &RunReport) {
    let n = r.numeric_check.as_ref().expect("numerics ran");
    assert!(n.max_abs_error < 1e-3 && n.max_rel_error < 1e-3, "{n:?}");
}

/// Mean die imbalance over the second half of the run, where drift has
/// moved the loads away from what the placement saw.
fn late_imbalance(r: &RunReport) -> f64 {
    let late = &r.per_step[r.per_step.len() / 2..];
    late.iter().map(|p| p.imbalance).sum::<f64>() / late.len() as f64
}

#[test]
fn ni_balancer_replicas_compute_the_same_numbers_on_their_new_dies() {
    let s = schedule("ni_balancer", 16);
    assert!(s.migrations.iter().any(|m| m.kind == MigrationKind::Replicate));
    let out = run_plan(&s, 16, true, 0);
    assert!(out.report.migration.applied > 0, "{:?}", out.report.migration);
    numbers_hold(&out.report);
}

#[test]
fn ni_balancer_keeps_the_dies_balanced_while_static_drifts() {
    let steps = 24;
    let balanced = run_plan(&schedule("ni_balancer", steps), steps, false, 0).report;
    let still = run_plan(&schedule("static", steps), steps, false, 0).report;
    let (b, s) = (late_imbalance(&balanced), late_imbalance(&still));
    eprintln!("late die imbalance: ni_balancer {b:.3}, static {s:.3}");
    assert!(b < s, "ni_balancer {b} vs static {s}");
    // Non-invasive: the chunks ride cold links in their windows, so the
    // steps are barely delayed (well under a tenth of the weights' flight).
    let m = &balanced.migration;
    assert!(m.transfer_s > 0.0);
    assert!(m.stall_s < 0.1 * m.transfer_s, "{m:?}");
}

#[test]
fn a_non_invasive_chunk_never_shares_a_link_with_a_flow_of_its_phase() {
    let steps = 12;
    let s = schedule("ni_balancer", steps);
    let machine = Machine::build(s.machine.clone()).unwrap();
    let out = run_plan(&s, steps, false, steps);
    let mut checked = 0;
    for step in &out.traced {
        for chunk in step.flows.iter().filter(|f| f.migration) {
            let phase = chunk.phase.expect("non-invasive chunks travel in a phase's window");
            let links = machine.route(chunk.src, chunk.dst).unwrap().links;
            for other in step.flows.iter().filter(|f| !f.migration && f.phase == Some(phase)) {
                let overlap = other.start_s < chunk.end_s && chunk.start_s < other.end_s;
                if !overlap {
                    continue;
                }
                let theirs = machine.route(other.src, other.dst).unwrap().links;
                let shared: Vec<_> = links.iter().filter(|l| theirs.contains(l)).collect();
                assert!(
                    shared.is_empty(),
                    "a chunk {}->{} in a {phase:?} window shares links {shared:?} with a {phase:?} flow {}->{}",
                    chunk.src,
                    chunk.dst,
                    other.src,
                    other.dst
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no migration chunk travelled in the traced steps");
}

#[test]
fn invasive_rebalancing_stops_the_world_and_keeps_the_numbers() {
    let steps = 14;
    let s = schedule("invasive", steps);
    let moves: Vec<_> = s.migrations.iter().filter(|m| m.kind != MigrationKind::Evict).collect();
    assert!(!moves.is_empty());
    assert!(moves
        .iter()
        .all(|m| m.chunks.iter().all(|c| c.window == Window::StopTheWorld)));
    // Rebalances at steps 6 and 12 only.
    assert!(s.migrations.iter().all(|m| m.effective_step % 6 == 0));
    let out = run_plan(&s, steps, true, 0);
    numbers_hold(&out.report);
    let stalled: Vec<u64> = (out.report.per_step.iter().enumerate())
        .filter(|(_, p)| p.migration_stall_s > 0.0)
        .map(|(i, _)| i as u64)
        .collect();
    assert_eq!(stalled, vec![6, 12]);
}

#[test]
fn dynamic_placement_broadcasts_hot_experts_and_keeps_the_numbers() {
    let steps = 10;
    let s = schedule("dynamic_placement", steps);
    assert!(!s.broadcasts.is_empty());
    let machine = Machine::build(s.machine.clone()).unwrap();
    // Each broadcast reaches every die.
    for b in &s.broadcasts {
        let mut holders = b.holders();
        holders.sort();
        assert_eq!(holders, machine.alive_dies(), "{b:?}");
    }
    let out = run_plan(&s, steps, true, 0);
    numbers_hold(&out.report);
    assert!(out.report.migration.bytes > 0.0);
    // The pass keeps only broadcasts that fit under attention on the
    // simulator; the run measures them the same way (each step again
    // without its pieces), so they add next to nothing to the steps.
    let total: f64 = out.report.per_step.iter().map(|s| s.latency_s).sum();
    let stall = out.report.migration.stall_s;
    assert!(stall <= 0.02 * total, "broadcasts stall {stall} s of {total} s");
}

#[test]
fn migration_chunks_are_deterministic_and_carry_the_expert_before_it_serves() {
    let a = schedule("ni_balancer", 8);
    let b = schedule("ni_balancer", 8);
    assert_eq!(a.to_json(), b.to_json());
    for m in a.migrations.iter().filter(|m| m.kind == MigrationKind::Replicate) {
        // Non-invasive: every chunk in a phase's window, none stop-the-world.
        assert!(m
            .chunks
            .iter()
            .all(|c| matches!(c.window, Window::Attention { .. } | Window::Moe { .. })));
        // Each leg carries the whole expert once, all before the copy serves.
        let sent: u64 = m.chunks.iter().map(|c| c.bytes).sum();
        assert!(sent > 0 && sent.is_multiple_of(m.bytes), "{m:?}");
        assert!(m.chunks.iter().all(|c| c.step < m.effective_step), "{m:?}");
    }
}
