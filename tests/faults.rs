//! Faults injected during a run (`moec run --fail`): a failed link carries
//! nothing from its step on, a failed die loses no token and keeps the
//! numeric check, lost experts come back from a replica or the host as
//! counted, and a fault that cannot strike is an error, not a panic.

mod common;

use moec::driver::CompileOptions;
use moec_runtime::fault::Fault;
use moec_runtime::machine::{DieId, LinkId, Machine};
use moec_runtime::numerics::{NumericConfig, TOLERANCE};
use moec_runtime::run::{run, RunOptions, RunOutput};
use moec_runtime::schedule::Schedule;

fn schedule(plan: &str) -> Schedule {
    let session = common::checked(&common::root().join("tests/faults/mesh.moe"));
    let options = CompileOptions {
        plan: Some(plan.into()),
        ..Default::default()
    };
    session.schedule(&options, &mut |_, _| {}).expect("compiles")
}

fn faults(specs: &[&str]) -> Vec<Fault> {
    specs.iter().map(|s| s.parse().expect("a good spec")).collect()
}

/// Six steps, every one traced, with the numeric check at width 16 or not.
fn options(numerics: bool, specs: &[&str]) -> RunOptions {
    RunOptions {
        steps: Some(6),
        numerics: numerics.then(|| NumericConfig {
            width: Some(16),
            ..NumericConfig::default()
        }),
        trace_steps: 6,
        network_quantum: 0.0,
        faults: faults(specs),
    }
}

/// A run with faults; its error's message, after checking that every
/// error a fault causes is reported as a fault's (E0044 at the CLI).
fn run_with(s: &Schedule, numerics: bool, specs: &[&str]) -> Result<RunOutput, String> {
    run(s, &options(numerics, specs), &mut |_, _| {}).map_err(|e| {
        assert_eq!(e.kind, moec_runtime::run::RunErrorKind::Fault, "{e}");
        e.message
    })
}

/// Both directions of the link between `a` and `b`.
fn both_ways(m: &Machine, a: DieId, b: DieId) -> [LinkId; 2] {
    [
        m.link_between(a.node(), b.node()).expect("neighbours"),
        m.link_between(b.node(), a.node()).expect("neighbours"),
    ]
}

#[test]
fn a_failed_link_carries_no_byte_from_its_step_on() {
    let s = schedule("eplb");
    let m = Machine::build(s.machine.clone()).unwrap();
    let quiet = run_with(&s, false, &[]).unwrap();
    // The busiest link of the run without faults.
    let busiest = (0..m.links().len())
        .max_by(|&a, &b| {
            let sum = |i: usize| quiet.traced.iter().map(|r| r.link_bytes[i]).sum::<f64>();
            sum(a).total_cmp(&sum(b)).then(b.cmp(&a))
        })
        .unwrap();
    let link = &m.links()[busiest];
    let (a, b) = (DieId(link.from.0), DieId(link.to.0));
    let (ca, cb) = (m.coord(a).unwrap(), m.coord(b).unwrap());
    let spec = format!("link(({},{}),({},{}))@step=3", ca.x, ca.y, cb.x, cb.y);
    let out = run_with(&s, false, &[&spec]).unwrap();
    let ids = both_ways(&m, a, b);
    let carried = |step: usize| ids.iter().map(|l| out.traced[step].link_bytes[l.index()]).sum::<f64>();
    assert!(
        (0..3).all(|step| carried(step) > 0.0),
        "the link was used before it failed"
    );
    for step in 3..6 {
        assert_eq!(carried(step), 0.0, "step {step} used the failed link");
    }
    // Everything else goes on: every token, every step.
    assert!(out.traced.iter().all(|r| r.tokens == s.workload.tokens_per_step()));
    let f = &out.report.faults[..];
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].what, format!("link {ca}-{cb}"));
    assert_eq!(
        (
            f[0].rehomed_sequences,
            f[0].restored_from_replica,
            f[0].reloaded_from_host
        ),
        (0, 0, 0)
    );
    assert!(out.report.per_step[3].fault && !out.report.per_step[2].fault);
    assert!(f[0].step_latency_s > 0.0 && f[0].median_latency_s > 0.0);
}

/// Per layer, the experts with a copy on `die`, each with its number of copies.
fn copies_on(s: &Schedule, die: DieId) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for (l, layer) in s.placement.experts.iter().enumerate() {
        for (e, dies) in layer.iter().enumerate() {
            if dies.contains(&die) {
                v.push((l, e, dies.len()));
            }
        }
    }
    v
}

#[test]
fn a_failed_die_loses_no_token_and_its_experts_come_back() {
    let s = schedule("eplb");
    let m = Machine::build(s.machine.clone()).unwrap();
    // A die holding both a replicated expert and one with no other copy.
    let die = m
        .alive_dies()
        .into_iter()
        .find(|&d| {
            let c = copies_on(&s, d);
            c.iter().any(|x| x.2 > 1) && c.iter().any(|x| x.2 == 1)
        })
        .expect("EPLB replicates some experts and not others");
    let lost = copies_on(&s, die);
    let homed = s.placement.sequences.iter().filter(|&&d| d == die).count() as u64;
    let at = m.coord(die).unwrap();
    let spec = format!("die({},{})@step=2", at.x, at.y);
    let out = run_with(&s, true, &[&spec]).unwrap();

    let r = &out.report;
    let check = r.numeric_check.as_ref().expect("numerics ran");
    assert!(check.max_rel_error < TOLERANCE, "{check:?}");
    // No token dropped: every step pushed the whole batch through.
    assert!(out.traced.iter().all(|x| x.tokens == s.workload.tokens_per_step()));
    let f = &r.faults[0];
    assert_eq!(f.what, format!("die {at}"));
    assert_eq!(f.rehomed_sequences, homed);
    let replicated = lost.iter().filter(|x| x.2 > 1).count() as u64;
    let single = lost.iter().filter(|x| x.2 == 1).count() as u64;
    assert_eq!(
        (f.restored_from_replica, f.reloaded_from_host),
        (replicated, single),
        "{:#?}",
        f.notes
    );
    // One note per lost copy, naming it and where it went.
    for (l, e, _) in &lost {
        let head = format!("expert {e} of layer {l}: its copy on die {at} restored on die ");
        assert!(f.notes.iter().any(|n| n.starts_with(&head)), "{head} in {:#?}", f.notes);
    }
    assert!(f.recovery_s > 0.0, "restoring weights takes time");
    // The fault step carried the restored weights stop-the-world, and the
    // host's went through the io at its bandwidth: at least their bytes over it.
    let io = s.machine.io.as_ref().unwrap().bandwidth.0;
    let host_bytes = single as f64 * s.model.expert_bytes().0 as f64;
    assert!(
        out.traced[2].latency_s >= host_bytes / io,
        "{} vs {}",
        out.traced[2].latency_s,
        host_bytes / io
    );
    assert!(out.traced[2].migration_bytes >= (replicated + single) * s.model.expert_bytes().0);
    // The re-homed sequences rebuild their KV caches: a prefill of their
    // context on the 7 surviving dies' peak compute, which the fault step waits for.
    let (model, context) = (&s.model, s.workload.context());
    let per_token: f64 = (0..model.layers).map(|i| model.layer_flops(i, context / 2).0).sum();
    let expected = per_token * (homed * context) as f64 / (7.0 * s.machine.die.compute.0);
    assert!(
        homed > 0 && (f.kv_rebuild_s - expected).abs() <= 1e-9 * expected,
        "{} vs {expected}",
        f.kv_rebuild_s
    );
    assert!(
        f.step_latency_s >= out.traced[1].latency_s.min(out.traced[3].latency_s) + f.kv_rebuild_s,
        "the fault step waits for the rebuild: {f:#?}"
    );
    // The dead die computes nothing and no link to it carries a byte.
    for step in 2..6 {
        let x = &out.traced[step];
        assert_eq!(x.die_busy_s[die.index()], 0.0, "step {step}");
        for l in m.links().iter().filter(|l| l.from == die.node() || l.to == die.node()) {
            assert_eq!(x.link_bytes[l.id.index()], 0.0, "step {step}");
        }
    }
    assert!(out.traced[1].die_busy_s[die.index()] > 0.0);
}

#[test]
fn a_failed_die_in_an_attention_group_dissolves_the_group() {
    let s = schedule("tp");
    assert!(!s.placement.attention_groups.is_empty());
    let group = s.placement.attention_groups[0].clone();
    let m = Machine::build(s.machine.clone()).unwrap();
    let at = m.coord(group[0]).unwrap();
    let homed = s.placement.sequences.iter().filter(|d| group.contains(d)).count() as u64;
    let spec = format!("die({},{})@step=1", at.x, at.y);
    let out = run_with(&s, true, &[&spec]).unwrap();
    let check = out.report.numeric_check.as_ref().expect("numerics ran");
    assert!(check.max_rel_error < TOLERANCE, "{check:?}");
    assert!(out.traced.iter().all(|x| x.tokens == s.workload.tokens_per_step()));
    let f = &out.report.faults[0];
    assert_eq!(f.rehomed_sequences, homed, "the whole group's sequences move");
    assert!(f.notes.iter().any(|n| n.contains("dissolved")), "{:#?}", f.notes);
    // The survivor of the group runs no attention from then on.
    let survivor = group[1];
    for x in &out.traced[1..] {
        let attention = x
            .spans
            .iter()
            .filter(|sp| sp.die == survivor && matches!(sp.op, moec_runtime::schedule::Op::Attention { .. }))
            .map(|sp| sp.end_s - sp.start_s)
            .sum::<f64>();
        let before = out.traced[0]
            .spans
            .iter()
            .filter(|sp| sp.die == survivor && matches!(sp.op, moec_runtime::schedule::Op::Attention { .. }))
            .map(|sp| sp.end_s - sp.start_s)
            .sum::<f64>();
        assert!(attention < before, "{attention} vs {before}");
    }
}

#[test]
fn token_domains_and_a_last_group_recover_too() {
    for (plan, note) in [
        ("er_mapping", "dissolved"),
        ("one_group", "attention runs data-parallel on its survivors"),
    ] {
        let s = schedule(plan);
        let out = run_with(&s, true, &["die(1,0)@step=2"]).unwrap();
        let check = out.report.numeric_check.as_ref().expect("numerics ran");
        assert!(check.max_rel_error < TOLERANCE, "{plan}: {check:?}");
        assert!(out.traced.iter().all(|x| x.tokens == s.workload.tokens_per_step()));
        let f = &out.report.faults[0];
        assert!(f.notes.iter().any(|n| n.contains(note)), "{plan}: {:#?}", f.notes);
        assert!(f.rehomed_sequences > 0 && f.reloaded_from_host > 0, "{plan}: {f:#?}");
    }
}

#[test]
fn faults_at_one_step_and_in_sequence_recover_in_turn() {
    let s = schedule("eplb");
    let out = run_with(
        &s,
        true,
        &["die(3,1)@step=4", "die(1,0)@step=1", "link((3,0),(3,1))@step=1"],
    )
    .unwrap();
    let steps: Vec<u64> = out.report.faults.iter().map(|f| f.step).collect();
    assert_eq!(steps, [1, 1, 4]);
    assert!(out.report.numeric_check.as_ref().unwrap().max_rel_error < TOLERANCE);
    assert!(out.traced.iter().all(|x| x.tokens == s.workload.tokens_per_step()));
    // Deterministic, byte for byte.
    let again = run_with(
        &s,
        true,
        &["die(3,1)@step=4", "die(1,0)@step=1", "link((3,0),(3,1))@step=1"],
    )
    .unwrap();
    assert_eq!(out.report.to_json(), again.report.to_json());
    assert!(out.report.to_json().contains("\"faults\": ["));
}

#[test]
fn faults_that_cannot_strike_are_errors_not_panics() {
    let s = schedule("eplb");
    let err = |specs: &[&str]| run_with(&s, false, specs).map(|_| ()).unwrap_err();
    assert_eq!(
        err(&["die(4,0)@step=1"]),
        "fault `die(4, 0)@step=1`: outside the 4x2 mesh"
    );
    assert_eq!(
        err(&["die(1,1)@step=1", "die(1,1)@step=3"]),
        "fault `die(1, 1)@step=3`: die (1, 1) is already dead"
    );
    assert_eq!(
        err(&["die(5)@step=1"]),
        "fault `die(5)@step=1`: a mesh names its dies by coordinates: write die(x, y)"
    );
    assert!(err(&["die(1,1)@step=6"]).contains("never strikes"));
    assert!(err(&["link((0,0),(2,0))@step=1"]).contains("not mesh neighbours"));
    // Cutting (0, 0) off: the error names the fault and the cut.
    let cut = err(&["link((0,0),(1,0))@step=1", "link((0,0),(0,1))@step=2"]);
    assert!(
        cut.starts_with("fault `link((0, 0), (0, 1))@step=2`: the machine cannot run after it: defects cut the mesh"),
        "{cut}"
    );
    // Without io, an expert whose only copy died cannot come back.
    let no_io = schedule("no_io");
    let e = run_with(&no_io, false, &["die(1,0)@step=1"]).map(|_| ()).unwrap_err();
    assert!(e.contains("no io to reload it from the host"), "{e}");
}

#[test]
fn a_schedule_read_back_from_json_fails_the_same() {
    let s = schedule("eplb");
    let back = Schedule::from_json(&s.to_json()).unwrap();
    let a = run_with(&s, false, &["die(2,1)@step=2"]).unwrap();
    let b = run_with(&back, false, &["die(2,1)@step=2"]).unwrap();
    assert_eq!(a.report.to_json(), b.report.to_json());
}

#[test]
fn two_dies_failing_in_one_step_are_recovered_together() {
    // The first die's recovery may restore a copy onto the second, or
    // from it: each pair of neighbouring dies, failing in that order at
    // one step.
    let s = schedule("eplb");
    let m = Machine::build(s.machine.clone()).unwrap();
    let dies = m.alive_dies();
    let spec = |d: DieId| {
        let at = m.coord(d).unwrap();
        format!("die({},{})@step=2", at.x, at.y)
    };
    let mut recovered = 0;
    let mut pairs = 0;
    for &a in &dies {
        // Neighbours: the nearest die is where a lost copy goes first.
        for &b in dies.iter().filter(|&&b| m.hops(a, b) == Some(1)) {
            pairs += 1;
            let (fa, fb) = (spec(a), spec(b));
            let options = RunOptions {
                steps: Some(3),
                trace_steps: 3,
                ..options(true, &[&fa, &fb])
            };
            match run(&s, &options, &mut |_, _| {}) {
                Ok(out) => {
                    recovered += 1;
                    let check = out.report.numeric_check.as_ref().expect("numerics ran");
                    assert!(check.max_rel_error < TOLERANCE, "{fa} {fb}: {check:?}");
                    assert!(out.traced.iter().all(|x| x.tokens == s.workload.tokens_per_step()));
                    assert_eq!(out.report.faults.len(), 2);
                }
                // Only a machine the two faults leave unusable may refuse.
                Err(e) => assert!(e.message.contains("cannot run after it"), "{fa} {fb}: {e}"),
            }
        }
    }
    assert!(recovered * 2 > pairs, "{recovered} of {pairs} pairs recovered");
}
