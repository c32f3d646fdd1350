//! Relocation: the numerics following a placement that changes between
//! steps (expert moves, replicas and evictions, broadcast trees, sequences
//! re-homed off a dead die), with the copied weights coming from the source
//! die's own buffer.

use super::*;
use crate::schedule::{Broadcast, Migration, MigrationKind, WeightSource};

/// The MoE layer whose experts the tests move (not the last: what it
/// computes flows on through another layer before the check).
const LAYER: u32 = 2;

fn migration(kind: MigrationKind, expert: u32, source: WeightSource, to: u32) -> Migration {
    Migration {
        kind,
        layer: LAYER,
        expert,
        source,
        to: DieId(to),
        bytes: 0,
        effective_step: 1,
        chunks: Vec::new(),
    }
}

/// `s` with `migrations` applied to its placement, in order.
fn migrated(s: &Schedule, migrations: &[Migration]) -> Schedule {
    let mut next = s.clone();
    for m in migrations {
        next.placement.apply(m).expect("the migration applies");
    }
    next
}

/// The arrival a Replicate or Move brings.
fn arrival(m: &Migration) -> Arrival {
    Arrival {
        layer: m.layer,
        expert: m.expert,
        to: m.to,
        source: m.source,
    }
}

/// Decode of 8 sequences (token `t` is sequence `t`, homed on die `t % 4`)
/// over 5 cached positions; experts round-robin (`e % 4`).
fn base() -> Schedule {
    schedule(tiny_model(mha()), decode(8, 5))
}

/// The tokens that chose `expert` of `LAYER` in `step`.
fn choosers(step: &NumericStep, expert: u32) -> Vec<usize> {
    let layer = step.routing.layer(LAYER).expect("an MoE layer");
    let chosen = layer.experts.chunks(step.routing.top_k.max(1));
    chosen
        .enumerate()
        .filter(|(_, c)| c.contains(&expert))
        .map(|(t, _)| t)
        .collect()
}

/// The expert of `LAYER` the most tokens chose in `step`.
fn busiest(step: &NumericStep) -> u32 {
    (0..8)
        .max_by_key(|&e| (choosers(step, e).len(), u32::MAX - e))
        .expect("8 experts")
}

/// The executor's hidden states and logits of step 0 (bit for bit).
fn outputs(n: &mut Numerics) -> (Vec<f32>, Vec<f32>) {
    let ids = n.ctx.layout.token_ids(n.ctx.seed, 0, n.ctx.model.vocab);
    let run = n.executor.run(&n.ctx, &ids, None);
    (run.forward.hidden, run.forward.logits)
}

#[test]
fn a_moved_expert_computes_the_same_numbers_on_its_new_die() {
    let s = base();
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    let before = n.step(0, None);
    assert!(before.passed(), "{before:?}");
    let e = busiest(&before);
    let from = e % DIES;
    let to = (from + 1) % DIES;
    let rows = n
        .executor
        .computed
        .get(&(from as usize, LAYER, e))
        .copied()
        .unwrap_or(0);
    assert!(rows > 0, "expert {e} receives tokens on die {from}");

    let m = migration(MigrationKind::Move, e, WeightSource::Die(DieId(from)), to);
    let moved = migrated(&s, std::slice::from_ref(&m));
    n.relocate(&moved, &[arrival(&m)]).expect("relocates");
    assert!(
        !n.executor.holds_expert(from as usize, LAYER, e),
        "the old die dropped it"
    );
    assert!(n.executor.holds_expert(to as usize, LAYER, e));

    let after = n.step(0, None);
    assert!(after.passed() && after.max_rel_error < 1e-5, "{after:?}");
    assert_eq!(after.routing, before.routing);
    // The expert's rows are now computed on the new die, and only there.
    assert_eq!(n.executor.computed.get(&(to as usize, LAYER, e)), Some(&rows));
    assert_eq!(n.executor.computed.get(&(from as usize, LAYER, e)), None);
    assert!(n.step(1, None).passed());
    // The relocated executor is the one built for the new placement.
    let fresh = outputs(&mut Numerics::new(&moved, &full_width()).expect("runs"));
    assert_eq!(outputs(&mut n), fresh);
}

#[test]
fn a_moved_expert_carries_its_source_dies_numbers() {
    let s = base();
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    let e = busiest(&n.step(0, None));
    let from = e % DIES;
    let to = (from + 2) % DIES;
    let m = migration(MigrationKind::Move, e, WeightSource::Die(DieId(from)), to);
    let moved = migrated(&s, std::slice::from_ref(&m));

    let mut clean = n.clone();
    clean.relocate(&moved, &[arrival(&m)]).expect("relocates");
    assert!(clean.step(0, None).passed());

    // A fault in the source die's memory travels with the copy: the host's
    // copy is intact, so only a copy of the source's buffer carries it.
    assert!(n.executor.corrupt_expert(from as usize, LAYER, e));
    n.relocate(&moved, &[arrival(&m)]).expect("relocates");
    assert!(!n.executor.holds_expert(from as usize, LAYER, e));
    let step = n.step(0, None);
    assert!(!step.passed() && step.max_rel_error > 1e-2, "{step:?}");

    // From the host instead, the same move is clean again.
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    assert!(n.executor.corrupt_expert(from as usize, LAYER, e));
    let host = Arrival {
        source: WeightSource::Host,
        ..arrival(&m)
    };
    n.relocate(&moved, &[host]).expect("relocates");
    assert!(n.step(0, None).passed());
}

#[test]
fn relocations_that_would_invent_weights_are_refused() {
    let s = base();
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    let reference = outputs(&mut n);
    let e = 5;
    let (from, to, other) = (e % DIES, (e + 1) % DIES, (e + 2) % DIES);
    let m = migration(MigrationKind::Move, e, WeightSource::Die(DieId(from)), to);
    let moved = migrated(&s, std::slice::from_ref(&m));

    // A source die that does not hold the expert.
    let wrong_source = Arrival {
        source: WeightSource::Die(DieId(other)),
        ..arrival(&m)
    };
    let err = n.relocate(&moved, &[wrong_source]).expect_err("refused");
    assert!(
        err.contains(&format!("its source die {other} does not hold it")),
        "{err}"
    );
    // The copy is new on its die, but no arrival names it.
    let err = n.relocate(&moved, &[]).expect_err("refused");
    assert!(
        err.contains(&format!("expert {e} of layer {LAYER} is new on die {to}")) && err.contains("no arrival"),
        "{err}"
    );
    // An arrival the new placement does not ask for, and one to a holder.
    let stray = Arrival {
        to: DieId(other),
        ..arrival(&m)
    };
    let err = n.relocate(&moved, &[arrival(&m), stray]).expect_err("refused");
    assert!(err.contains("arrival 1") && err.contains("no whole copy"), "{err}");
    let twice = n.relocate(&moved, &[arrival(&m), arrival(&m)]).expect_err("refused");
    assert!(twice.contains("already holds it"), "{twice}");
    // A schedule for another model.
    let mut other_model = moved.clone();
    other_model.model.vocab = 128;
    assert!(n.relocate(&other_model, &[arrival(&m)]).is_err());

    // Nothing changed on the way.
    assert!(n.executor.holds_expert(from as usize, LAYER, e));
    assert!(!n.executor.holds_expert(to as usize, LAYER, e));
    assert_eq!(outputs(&mut n), reference);
}

#[test]
fn sequences_rehomed_off_a_dead_die_still_compute_every_token() {
    let dead = 3u32;
    // Data-parallel attention, and TP groups {0, 1}, {3, 2} that the fault
    // breaks up (the survivors run attention whole).
    let cases = [
        (base(), false),
        (schedule(tiny_model(gqa()), prefill(4, 3)), false),
        (
            tp_schedule(tiny_model(gqa()), decode(8, 5), &[&[0, 1], &[3, 2]], &[0, 3]),
            true,
        ),
    ];
    for (s, tp) in cases {
        let what = format!("{:?} tp {tp}", s.workload.phase);
        let mut n = Numerics::new(&s, &full_width()).expect("runs");
        assert!(n.step(0, None).passed(), "{what}");
        assert!(!n.executor.tokens_of(dead as usize).is_empty(), "{what}");

        // Every expert copy on the dead die replicated from the host to a
        // survivor, then evicted; its sequences homed on the survivors.
        let mut next = s.clone();
        let mut arrivals = Vec::new();
        for (l, layer) in s.placement.experts.iter().enumerate() {
            for (e, dies) in layer.iter().enumerate() {
                if !dies.contains(&DieId(dead)) {
                    continue;
                }
                let to = (e as u32 + 1) % dead;
                let mut replicate = migration(MigrationKind::Replicate, e as u32, WeightSource::Host, to);
                replicate.layer = l as u32;
                let evict = Migration {
                    kind: MigrationKind::Evict,
                    to: DieId(dead),
                    ..replicate.clone()
                };
                next.placement.apply(&replicate).expect("applies");
                next.placement.apply(&evict).expect("applies");
                arrivals.push(arrival(&replicate));
            }
        }
        for (i, home) in next.placement.sequences.iter_mut().enumerate() {
            if home.0 == dead {
                *home = DieId(i as u32 % dead);
            }
        }
        if tp {
            next.placement.attention_groups.clear();
            let instrs = program(&next.model);
            for p in &mut next.programs {
                p.instrs = instrs.clone();
            }
        }
        next.programs[dead as usize].instrs.clear();
        n.relocate(&next, &arrivals).expect("relocates");

        for step in 0..2 {
            let r = n.step(step, None);
            assert!(r.passed() && r.max_rel_error < 1e-5, "{what} step {step}: {r:?}");
            assert_eq!(r.routing.tokens, n.ctx.layout.tokens());
        }
        // The dead die holds nothing; the survivors hold every token.
        assert!(n.executor.tokens_of(dead as usize).is_empty(), "{what}");
        assert!(!n.executor.holds_dense_weights(dead as usize), "{what}");
        assert!(
            (0..8).all(|e| !n.executor.holds_expert(dead as usize, LAYER, e)),
            "{what}"
        );
        let mut held: Vec<usize> = (0..DIES as usize)
            .flat_map(|d| n.executor.tokens_of(d).to_vec())
            .collect();
        held.sort_unstable();
        let tokens = n.ctx.layout.tokens();
        assert_eq!(held, (0..tokens).collect::<Vec<_>>(), "{what}");
        // Every token's row came back (a lost token would leave zeros).
        let (hidden, logits) = outputs(&mut n);
        let vocab = n.ctx.model.vocab as usize;
        assert!(hidden.chunks(16).all(|row| row.iter().any(|&v| v != 0.0)), "{what}");
        assert!(logits.chunks(vocab).all(|row| row.iter().any(|&v| v != 0.0)), "{what}");
    }
}

#[test]
fn a_replica_then_its_eviction_return_to_the_original_holders_and_numbers() {
    let s = base();
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    let first = n.step(0, None);
    let original = outputs(&mut n);
    // An expert some of whose tokens live away from its die: the replica on
    // such a token's home serves it (the copy on the home die first).
    let (e, to) = (0..8u32)
        .find_map(|e| {
            let away = choosers(&first, e)
                .into_iter()
                .map(|t| t as u32 % DIES)
                .find(|&d| d != e % DIES)?;
            Some((e, away))
        })
        .expect("some token chose an expert on another die");
    let from = e % DIES;

    let replicate = migration(MigrationKind::Replicate, e, WeightSource::Die(DieId(from)), to);
    let replicated = migrated(&s, std::slice::from_ref(&replicate));
    assert_eq!(replicated.placement.experts[LAYER as usize][e as usize].len(), 2);
    n.relocate(&replicated, &[arrival(&replicate)]).expect("relocates");
    let step = n.step(0, None);
    assert!(step.passed() && step.max_rel_error < 1e-5, "{step:?}");
    assert!(n.executor.holds_expert(from as usize, LAYER, e) && n.executor.holds_expert(to as usize, LAYER, e));
    assert!(n
        .executor
        .computed
        .get(&(to as usize, LAYER, e))
        .is_some_and(|&r| r > 0));

    let evict = migration(MigrationKind::Evict, e, WeightSource::Die(DieId(to)), to);
    let back = migrated(&replicated, std::slice::from_ref(&evict));
    assert_eq!(back.placement, s.placement);
    n.relocate(&back, &[]).expect("relocates");
    assert!(!n.executor.holds_expert(to as usize, LAYER, e));
    assert!(n.executor.holds_expert(from as usize, LAYER, e));
    assert_eq!(outputs(&mut n), original, "bit for bit the numbers before the replica");
}

#[test]
fn a_broadcast_tree_forwards_its_copies_and_leaves_the_numbers() {
    let s = base();
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    let original = outputs(&mut n);
    let e = busiest(&n.step(0, None));
    let from = e % DIES;
    let (a, b) = ((from + 1) % DIES, (from + 2) % DIES);
    let broadcast = Broadcast {
        layer: LAYER,
        expert: e,
        from: DieId(from),
        steps: 1..2,
        bytes: 0,
        tree: vec![(DieId(from), DieId(a)), (DieId(a), DieId(b))],
        pieces: 1,
    };
    let during = Schedule {
        placement: s.placement.with_broadcasts(&[&broadcast]),
        ..s.clone()
    };
    assert!(during.placement.is_balanced(LAYER as usize, e));
    let down_the_tree: Vec<Arrival> = broadcast
        .tree
        .iter()
        .map(|&(parent, child)| Arrival {
            layer: LAYER,
            expert: e,
            to: child,
            source: WeightSource::Die(parent),
        })
        .collect();
    // A child before its parent has received the copy has nothing to forward.
    let reversed: Vec<Arrival> = down_the_tree.iter().rev().copied().collect();
    let err = n.relocate(&during, &reversed).expect_err("refused");
    assert!(err.contains(&format!("its source die {a} does not hold it")), "{err}");

    n.relocate(&during, &down_the_tree).expect("relocates");
    for d in [from, a, b] {
        assert!(n.executor.holds_expert(d as usize, LAYER, e), "die {d}");
    }
    let step = n.step(0, None);
    assert!(step.passed() && step.max_rel_error < 1e-5, "{step:?}");
    let holders = n.executor.computed.keys().filter(|k| (k.1, k.2) == (LAYER, e)).count();
    assert!(holders > 1, "the broadcast copies serve tokens");

    // After the layer the copies are dropped.
    n.relocate(&s, &[]).expect("relocates");
    assert!(!n.executor.holds_expert(a as usize, LAYER, e) && !n.executor.holds_expert(b as usize, LAYER, e));
    assert_eq!(outputs(&mut n), original);
}
