//! End-to-end tests of the numerics: the distributed executor against the
//! dense reference on tiny models with hand-built schedules, placement
//! transparency, fault detection, schedule checks and width selection.

use super::executor::Fault;
use super::reference::forward;
use super::*;
use crate::machine::tests::spec;
use crate::machine::{DieId, Topology};
use crate::model::{Activation, DType, GateKind, LayerKind, ModelSpec, MoeSpec};
use crate::routing::LayerRouting;
use crate::schedule::{DieProgram, Instr, InstrId, Op, Placement, SCHEDULE_VERSION};
use crate::workload::Phase;

mod relocation;

const DIES: u32 = 4;

/// hidden 16, 4 layers (the first dense), 8 experts top-2 in 2 groups (1
/// kept), one shared expert.
fn tiny_model(attention: AttentionSpec) -> ModelSpec {
    ModelSpec {
        name: "tiny".into(),
        layers: 4,
        dense_layers: 1,
        moe_every: 1,
        hidden: 16,
        vocab: 64,
        dtype: DType::Fp32,
        attention,
        dense_ffn: 32,
        moe: Some(MoeSpec {
            experts: 8,
            shared_experts: 1,
            shared_ffn: 12,
            top_k: 2,
            expert_ffn: 8,
            activation: Activation::Swiglu,
            gate: GateKind::Sigmoid,
            groups: 2,
            topk_groups: 1,
        }),
    }
}

fn mha() -> AttentionSpec {
    AttentionSpec::Mha { heads: 4, head_dim: 4 }
}

fn gqa() -> AttentionSpec {
    AttentionSpec::Gqa {
        heads: 4,
        kv_heads: 2,
        head_dim: 4,
    }
}

fn mla() -> AttentionSpec {
    AttentionSpec::Mla {
        heads: 2,
        q_lora_rank: 8,
        kv_lora_rank: 8,
        head_dim: 4,
        rope_dim: 2,
        v_head_dim: 4,
    }
}

fn decode(batch: u64, context: u64) -> WorkloadSpec {
    WorkloadSpec {
        name: "decode".into(),
        phase: Phase::Decode,
        batch,
        seq_len: context,
        steps: 2,
        routing: RoutingSource::Gate { seed: 7 },
        slo: None,
    }
}

fn prefill(batch: u64, seq_len: u64) -> WorkloadSpec {
    WorkloadSpec {
        name: "prefill".into(),
        phase: Phase::Prefill,
        batch,
        seq_len,
        ..decode(0, 0)
    }
}

/// A program builder: each instruction gets the next id.
#[derive(Default)]
struct Program {
    instrs: Vec<Instr>,
}

impl Program {
    fn push(&mut self, op: Op, deps: &[u32]) -> u32 {
        let id = self.instrs.len() as u32;
        self.instrs
            .push(Instr::new(InstrId(id), op, deps.iter().map(|&d| InstrId(d)).collect()));
        id
    }
}

/// Every die runs the whole forward: Embed; per layer Attention, then Gate,
/// Dispatch, SharedExperts, Experts, Combine (MoE) or DenseFfn; LmHead.
fn program(model: &ModelSpec) -> Vec<Instr> {
    let mut p = Program::default();
    let mut last = p.push(Op::Embed, &[]);
    for layer in 0..model.layers as u32 {
        let attention = p.push(Op::Attention { layer }, &[last]);
        if model.layer_kind(u64::from(layer)) == LayerKind::Moe {
            let gate = p.push(Op::Gate { layer }, &[attention]);
            let dispatch = p.push(Op::Dispatch { layer }, &[gate]);
            p.push(Op::SharedExperts { layer }, &[attention]);
            let experts = p.push(Op::Experts { layer, unfused: false }, &[dispatch]);
            last = p.push(Op::Combine { layer }, &[experts]);
        } else {
            last = p.push(Op::DenseFfn { layer }, &[attention]);
        }
    }
    p.push(Op::LmHead, &[last]);
    p.instrs
}

/// A 2x2 mesh, sequences and (via `expert_die`) experts spread over it.
fn schedule_with(model: ModelSpec, workload: WorkloadSpec, expert_die: impl Fn(u32, u32) -> u32) -> Schedule {
    let experts = model.moe.as_ref().map_or(0, |m| m.experts) as u32;
    let placement = Placement {
        experts: (0..model.layers as u32)
            .map(|l| match model.layer_kind(u64::from(l)) {
                LayerKind::Moe => (0..experts).map(|e| vec![DieId(expert_die(l, e))]).collect(),
                LayerKind::Dense => Vec::new(),
            })
            .collect(),
        sequences: (0..workload.batch).map(|s| DieId(s as u32 % DIES)).collect(),
        attention_groups: Vec::new(),
        token_domains: Vec::new(),
        expert_columns: Vec::new(),
        balanced: Vec::new(),
        relay_parts: false,
    };
    let instrs = program(&model);
    Schedule {
        version: SCHEDULE_VERSION,
        plan: "test".into(),
        passes: Vec::new(),
        machine: spec(Topology::Mesh {
            width: 2,
            height: 2,
            wafers_x: 1,
            wafers_y: 1,
        }),
        model,
        workload,
        placement,
        programs: (0..DIES)
            .map(|d| DieProgram {
                die: DieId(d),
                instrs: instrs.clone(),
            })
            .collect(),
        migrations: Vec::new(),
        broadcasts: Vec::new(),
        micro_batches: 1,
        chunks: Vec::new(),
        transport: Default::default(),
        capacity_factor: None,
    }
}

/// `program` with attention split over a TP group: each layer's attention
/// between an all-gather and a reduce-scatter.
fn tp_program(model: &ModelSpec) -> Vec<Instr> {
    let mut p = Program::default();
    let mut last = p.push(Op::Embed, &[]);
    for layer in 0..model.layers as u32 {
        let gather = p.push(Op::AllGather { layer }, &[last]);
        let attention = p.push(Op::Attention { layer }, &[gather]);
        let reduced = p.push(Op::ReduceScatter { layer }, &[attention]);
        if model.layer_kind(u64::from(layer)) == LayerKind::Moe {
            let gate = p.push(Op::Gate { layer }, &[reduced]);
            let dispatch = p.push(Op::Dispatch { layer }, &[gate]);
            p.push(Op::SharedExperts { layer }, &[reduced]);
            let experts = p.push(Op::Experts { layer, unfused: false }, &[dispatch]);
            last = p.push(Op::Combine { layer }, &[experts]);
        } else {
            last = p.push(Op::DenseFfn { layer }, &[reduced]);
        }
    }
    p.push(Op::LmHead, &[last]);
    p.instrs
}

/// `schedule` with tensor-parallel attention in `groups` (ring order) and
/// every sequence homed on a die of `homes`.
fn tp_schedule(model: ModelSpec, workload: WorkloadSpec, groups: &[&[u32]], homes: &[u32]) -> Schedule {
    let mut s = schedule(model, workload);
    s.placement.attention_groups = groups.iter().map(|g| g.iter().map(|&d| DieId(d)).collect()).collect();
    s.placement.sequences = (0..s.workload.batch)
        .map(|i| DieId(homes[i as usize % homes.len()]))
        .collect();
    let instrs = tp_program(&s.model);
    for p in &mut s.programs {
        p.instrs = instrs.clone();
    }
    s.validate().expect("a valid TP schedule");
    s
}

#[test]
fn tensor_parallel_attention_sums_head_shares_to_the_reference() {
    let cases: [(AttentionSpec, &[&[u32]]); 4] = [
        (mha(), &[&[0, 1, 3, 2]]),
        (gqa(), &[&[0, 1], &[3, 2]]),
        (gqa(), &[&[0, 1, 3, 2]]),
        (mla(), &[&[1, 0], &[2, 3]]),
    ];
    for (attention, groups) in cases {
        for workload in [decode(8, 5), prefill(4, 3)] {
            // Sequences on dies 0 and 3 only: 1 and 2 hold no tokens but
            // run their heads for their group.
            let s = tp_schedule(tiny_model(attention.clone()), workload.clone(), groups, &[0, 3]);
            let mut n = Numerics::new(&s, &full_width()).expect("TP schedule runs");
            let step = n.step(0, None);
            let what = format!("{} {:?} {groups:?}", attention.kind(), workload.phase);
            assert!(step.passed(), "{what}: {step:?}");
            assert!(step.max_rel_error < 1e-5, "{what}: {step:?}");
            assert!(
                step.max_rel_error > 0.0,
                "{what}: partial sums round differently from one matmul"
            );
        }
    }
}

#[test]
fn a_tp_die_that_skips_its_reduce_scatter_is_refused() {
    let mut s = tp_schedule(tiny_model(mha()), decode(8, 5), &[&[0, 1], &[3, 2]], &[0, 3]);
    let instrs = &mut s.programs[1].instrs;
    let at = instrs
        .iter()
        .position(|i| i.op == Op::ReduceScatter { layer: 2 })
        .expect("has it");
    instrs[at].op = Op::Send {
        to: DieId(0),
        bytes: 0,
        tag: 9,
    };
    let err = Numerics::new(&s, &full_width()).expect_err("refused");
    assert!(
        err.contains("die 1 is in an attention group with numeric tokens but never runs reduce_scatter of layer 2"),
        "{err}"
    );
}

/// Experts round-robin over the dies.
fn schedule(model: ModelSpec, workload: WorkloadSpec) -> Schedule {
    schedule_with(model, workload, |_, e| e % DIES)
}

fn full_width() -> NumericConfig {
    NumericConfig {
        width: Some(16),
        ..NumericConfig::default()
    }
}

#[test]
fn the_distributed_executor_equals_the_reference_for_every_attention_and_phase() {
    for attention in [mha(), gqa(), mla()] {
        for workload in [decode(8, 5), prefill(4, 3)] {
            let s = schedule(tiny_model(attention.clone()), workload.clone());
            let mut n = Numerics::new(&s, &full_width()).expect("tiny schedule runs");
            assert!(!n.reduced(), "{:?}", n.shape());
            let step = n.step(0, None);
            let what = format!("{} {:?}", attention.kind(), workload.phase);
            assert!(step.max_rel_error < 1e-5, "{what}: {step:?}");
            assert!(step.passed());
            assert_eq!(step.gate_fallbacks, 0);
            assert_eq!(step.gate_disagreements, 0, "{what}");
            // Routing covers every numeric token of the three MoE layers.
            assert_eq!(step.routing.tokens as u64, workload.tokens_per_step());
            assert_eq!(
                step.routing.layers.iter().map(|l| l.layer).collect::<Vec<_>>(),
                vec![1, 2, 3]
            );
            // One row out and one back for each choice of an expert on
            // another die than the token (sequences and experts both
            // round-robin over the 4 dies), in rows of 16 fp32 values.
            let seq_len = if workload.phase == Phase::Prefill {
                workload.seq_len as usize
            } else {
                1
            };
            let crossing: u64 = step
                .routing
                .layers
                .iter()
                .flat_map(|l| l.experts.chunks(2).enumerate())
                .flat_map(|(t, pair)| {
                    pair.iter()
                        .map(move |&e| u64::from((t / seq_len) as u32 % DIES != e % DIES))
                })
                .sum();
            assert!(crossing > 0);
            assert_eq!(step.rows_copied, 2 * crossing, "{what}");
            assert_eq!(step.bytes_copied, step.rows_copied * 16 * 4);
        }
    }
}

#[test]
fn the_executors_gate_decides_as_the_references_own_gate_would() {
    let s = schedule(tiny_model(gqa()), decode(8, 5));
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    let ids = n.ctx.layout.token_ids(n.ctx.seed, 3, n.ctx.model.vocab);
    let run = n.executor.run(&n.ctx, &ids, None);
    let own = forward(&n.ctx, &n.weights, &ids, None, false);
    assert_eq!(
        run.forward
            .routing
            .layers
            .iter()
            .map(|l| &l.experts)
            .collect::<Vec<_>>(),
        own.routing.layers.iter().map(|l| &l.experts).collect::<Vec<_>>()
    );
    let (_, rel) = errors(&run.forward.hidden, &own.hidden, 16);
    assert!(rel < 1e-5, "{rel}");
    // Group-limited: each token's two experts come from one group of four.
    for l in &own.routing.layers {
        for pair in l.experts.chunks(2) {
            assert_eq!(pair[0] / 4, pair[1] / 4, "{pair:?}");
        }
    }
}

#[test]
fn placement_is_invisible_in_the_numbers() {
    let model = tiny_model(mla());
    let run = |s: &Schedule| {
        let mut n = Numerics::new(s, &full_width()).expect("runs");
        let ids = n.ctx.layout.token_ids(n.ctx.seed, 0, n.ctx.model.vocab);
        let run = n.executor.run(&n.ctx, &ids, None);
        (run.forward.hidden, run.forward.logits, run.rows_copied)
    };
    let round_robin = run(&schedule(model.clone(), decode(8, 5)));
    // Expert 3 of layer 2 moves from die 3 to die 0; then every expert on die 2.
    let moved = run(&schedule_with(model.clone(), decode(8, 5), |l, e| {
        if (l, e) == (2, 3) {
            0
        } else {
            e % DIES
        }
    }));
    let one_die = run(&schedule_with(model, decode(8, 5), |_, _| 2));
    assert_eq!(round_robin.0, moved.0);
    assert_eq!(round_robin.1, moved.1);
    assert_eq!(round_robin.0, one_die.0);
    assert_ne!(round_robin.2, one_die.2, "the traffic does change");
}

#[test]
fn a_dispatch_that_drops_a_row_is_caught() {
    let s = schedule(tiny_model(mha()), decode(8, 5));
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    assert!(n.step(0, None).passed());
    n.executor.fault = Some(Fault::DropDispatchedRow);
    let step = n.step(0, None);
    assert!(!step.passed(), "{step:?}");
    assert!(step.max_rel_error > 1e-2, "{step:?}");
}

#[test]
fn the_check_sees_a_one_element_corruption() {
    let s = schedule(tiny_model(gqa()), prefill(4, 3));
    let n = Numerics::new(&s, &full_width()).expect("runs");
    let ids = n.ctx.layout.token_ids(n.ctx.seed, 0, n.ctx.model.vocab);
    let mut exec = n.clone().executor.run(&n.ctx, &ids, None);
    let used = route::GivenRouting {
        routing: &exec.forward.routing,
        layout: None,
    };
    let reference = forward(&n.ctx, &n.weights, &ids, Some(&used), true);
    let clean = errors(&exec.forward.hidden, &reference.hidden, 16).1;
    assert!(clean < 1e-5);
    // One value of one token off by 1% of its row's scale.
    let row = &mut exec.forward.hidden[5 * 16..6 * 16];
    let scale = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    row[7] += 0.01 * scale;
    let corrupted = errors(&exec.forward.hidden, &reference.hidden, 16).1;
    assert!(corrupted > TOLERANCE && (corrupted - 0.01).abs() < 1e-3, "{corrupted}");
}

#[test]
fn a_given_routing_is_followed_and_bad_entries_fall_back_to_the_gate() {
    let model = tiny_model(mha());
    let s = schedule(model, prefill(4, 3));
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    // Workload tokens: 4 sequences x 3 positions, token s*3+p chooses experts
    // (s + p) % 8 and (s + p + 5) % 8, except layer 3's token 4, which repeats one.
    let given = StepRouting {
        tokens: 12,
        top_k: 2,
        layers: [1u32, 2, 3]
            .iter()
            .map(|&layer| {
                let mut experts: Vec<u32> = (0..12u32)
                    .flat_map(|t| [(t / 3 + t % 3) % 8, (t / 3 + t % 3 + 5) % 8])
                    .collect();
                if layer == 3 {
                    experts[9] = experts[8];
                }
                LayerRouting {
                    layer,
                    experts,
                    weights: Vec::new(),
                }
            })
            .collect(),
    };
    let step = n.step(0, Some(&given));
    assert!(step.passed(), "{step:?}");
    assert_eq!(step.gate_fallbacks, 1);
    let l1 = &step.routing.layers[0];
    assert_eq!(l1.experts, given.layers[0].experts);
    for w in l1.weights.chunks(2) {
        assert!((w[0] + w[1] - 1.0).abs() < 1e-6 && w[0] > 0.0 && w[1] > 0.0);
    }
    let l3 = &step.routing.layers[2];
    assert_ne!(l3.experts[8], l3.experts[9], "the gate chose for the bad token");
    assert_eq!(l3.experts[10..], given.layers[2].experts[10..]);
}

#[test]
fn numeric_tokens_take_the_choices_of_the_workload_tokens_they_stand_for() {
    // Prefill of 4 sequences x 100 tokens, capped to 4 x 8: numeric token
    // (s, p) is workload token s * 100 + p.
    let s = schedule(tiny_model(gqa()), prefill(4, 100));
    let config = NumericConfig {
        max_context: 8,
        ..full_width()
    };
    let mut n = Numerics::new(&s, &config).expect("runs");
    assert_eq!((n.shape().batch, n.shape().seq_len), (4, 8));
    assert!(n.reduced());
    let given = StepRouting {
        tokens: 400,
        top_k: 2,
        layers: [1u32, 2, 3]
            .iter()
            .map(|&layer| LayerRouting {
                layer,
                experts: (0..400u32).flat_map(|t| [(t / 100) % 8, 7 - (t / 100) % 4]).collect(),
                weights: Vec::new(),
            })
            .collect(),
    };
    let step = n.step(0, Some(&given));
    assert_eq!(step.gate_fallbacks, 0);
    for t in 0..32u32 {
        let s = t / 8;
        assert_eq!(
            step.routing.layers[1].experts[t as usize * 2..t as usize * 2 + 2],
            [s % 8, 7 - s % 4]
        );
    }
}

#[test]
fn other_activations_gates_and_a_bf16_model_run_too() {
    let mut model = tiny_model(mla());
    model.dtype = DType::Bf16;
    if let Some(m) = model.moe.as_mut() {
        m.activation = Activation::Gelu;
        m.gate = GateKind::Softmax;
        m.groups = 4;
        m.topk_groups = 2;
        m.shared_experts = 0;
    }
    let s = schedule(model.clone(), decode(5, 3));
    let mut n = Numerics::new(&s, &full_width()).expect("runs");
    assert!(n.step(0, None).max_rel_error < 1e-5);
    // Every weight is a bf16 value.
    assert!(n.weights.embedding.iter().all(|w| w.to_bits() & 0xFFFF == 0));
    if let Some(m) = model.moe.as_mut() {
        m.activation = Activation::Relu;
    }
    let s = schedule(model, decode(5, 3));
    assert!(Numerics::new(&s, &full_width()).expect("runs").step(1, None).passed());
}

#[test]
fn any_die_draws_the_same_weights_as_the_reference_holds() {
    let model = tiny_model(gqa());
    let all = WeightGen::new(7, &model).model_weights();
    let fresh = WeightGen::new(7, &model);
    let weights::LayerFfn::Moe { experts, router, .. } = &all.layers[2].ffn else {
        panic!("layer 2 is MoE")
    };
    assert_eq!(experts[5], fresh.ffn(2, weights::FfnKind::Expert(5)));
    assert_eq!(*router, fresh.router(2));
    assert_eq!(all.layers[3].attention, fresh.attention(3));
    assert_ne!(experts[5], fresh.ffn(2, weights::FfnKind::Expert(6)));
    assert_ne!(experts[5], fresh.ffn(3, weights::FfnKind::Expert(5)));
    assert_ne!(all.embedding, WeightGen::new(8, &model).embedding());
    // Scaled to 1/fan_in: the expert's down projection reads 8 values.
    let var = experts[5].down.iter().map(|w| w * w).sum::<f32>() / experts[5].down.len() as f32;
    assert!((var - 1.0 / 8.0).abs() < 0.05, "{var}");
}

#[test]
fn schedules_that_compute_on_missing_data_are_refused() {
    let base = schedule(tiny_model(mha()), decode(8, 5));
    let check = |s: &Schedule| Numerics::new(s, &full_width()).map(|_| ()).unwrap_err();

    // A holder without its Dispatch of layer 2.
    let mut s = base.clone();
    let at = s.programs[1]
        .instrs
        .iter()
        .position(|i| i.op == Op::Dispatch { layer: 2 })
        .expect("present");
    s.programs[1].instrs[at].op = Op::Send {
        to: DieId(0),
        bytes: 1,
        tag: 9,
    };
    assert!(
        check(&s).contains("die 1 holds numeric tokens but never runs dispatch of layer 2"),
        "{}",
        check(&s)
    );

    // Experts that do not wait for the dispatch (they depend on the Gate
    // only): die 2 reaches them while die 3 has not dispatched yet.
    let mut s = base.clone();
    let program = &mut s.programs[2].instrs;
    let gate = program
        .iter()
        .position(|i| i.op == Op::Gate { layer: 1 })
        .expect("present");
    let experts = program
        .iter()
        .position(|i| {
            i.op == Op::Experts {
                layer: 1,
                unfused: false,
            }
        })
        .expect("present");
    program[experts].deps = vec![InstrId(gate as u32)];
    let err = check(&s);
    assert!(
        err.contains("die 2: experts of layer 1 (instruction") && err.contains("dispatched"),
        "{err}"
    );

    // A receive nobody sends to: deadlock.
    let mut s = base.clone();
    let last = s.programs[3].instrs.len() as u32;
    s.programs[3]
        .instrs
        .push(Instr::new(InstrId(last), Op::Recv { from: DieId(0), tag: 1 }, vec![]));
    assert!(check(&s).contains("deadlocks"), "{}", check(&s));
    // ... and with the matching send, it runs.
    let last0 = s.programs[0].instrs.len() as u32;
    s.programs[0].instrs.push(Instr::new(
        InstrId(last0),
        Op::Send {
            to: DieId(3),
            bytes: 8,
            tag: 1,
        },
        vec![],
    ));
    assert!(Numerics::new(&s, &full_width()).is_ok());

    // An expert on no die.
    let mut s = base;
    s.placement.experts[2][4].clear();
    assert!(check(&s).contains("expert 4 of layer 2 is placed on no die"));
}

use crate::model::tests::deepseek_v3;

#[test]
fn width_selection_respects_both_budgets_and_a_forced_width() {
    let model = deepseek_v3();
    let workload = decode(256, 4096);
    // One copy of everything per die on 64 dies.
    let copies = WeightCopies {
        embedding: 64,
        lm_head: 64,
        attention: 64 * 61,
        router: 64 * 58,
        shared: 64 * 58,
        dense: 64 * 3,
        experts: 256 * 58,
    };
    let config = NumericConfig::default();
    let shape = width::select(&model, &workload, &copies, &config).expect("fits");
    assert!(shape.hidden.is_power_of_two() && shape.reduced);
    assert!(shape.weight_bytes(&model, &copies) <= u128::from(config.memory_budget));
    assert!(shape.step_flops(&model) <= config.flops_budget);
    // The next width up breaks a budget: the choice is the largest.
    let wider = NumericShape::at_width(&model, &workload, shape.hidden * 2, &config);
    assert!(
        wider.step_flops(&model) > config.flops_budget
            || wider.weight_bytes(&model, &copies) > u128::from(config.memory_budget)
    );
    // What is kept and what is capped.
    assert_eq!((shape.batch, shape.seq_len, shape.context), (256, 1, 64));
    let numeric = shape.model(&model);
    assert_eq!((numeric.layers, numeric.dense_layers), (61, 3));
    assert_eq!(
        numeric
            .moe
            .as_ref()
            .map(|m| (m.experts, m.top_k, m.groups, m.topk_groups)),
        Some((256, 8, 8, 4))
    );
    assert!(shape.heads < 128 && shape.heads >= 1 && shape.head_dim >= 4 && shape.expert_ffn >= 4);

    // A tighter memory budget gives a narrower model.
    let tight = NumericConfig {
        memory_budget: 64 << 20,
        ..config.clone()
    };
    let narrow = width::select(&model, &workload, &copies, &tight).expect("fits");
    assert!(narrow.hidden < shape.hidden);
    assert!(narrow.weight_bytes(&model, &copies) <= 64 << 20);

    // Forced: taken as given even over the time budget, refused over memory.
    let forced = NumericConfig {
        width: Some(48),
        flops_budget: 1e6,
        ..config.clone()
    };
    let s = width::select(&model, &workload, &copies, &forced).expect("fits memory");
    assert_eq!(s.hidden, 48);
    assert!(s.step_flops(&model) > forced.flops_budget);
    let huge = NumericConfig {
        width: Some(4096),
        ..config.clone()
    };
    assert!(width::select(&model, &workload, &copies, &huge)
        .unwrap_err()
        .contains("memory budget"));
    for bad in [0, 7169] {
        let c = NumericConfig {
            width: Some(bad),
            ..config.clone()
        };
        assert!(width::select(&model, &workload, &copies, &c).is_err());
    }
    // A model that fits whole is not reduced.
    let tiny = tiny_model(gqa());
    let s = width::select(&tiny, &decode(8, 5), &copies, &config).expect("fits");
    assert_eq!(s.hidden, 16);
    assert!(!s.reduced);
}

/// DeepSeek-V3 decode, batch 256, on an 8x8 wafer, experts round-robin:
/// prints the numeric shape and the time of one step. Run in release:
/// `cargo test --release -p moec-runtime deepseek_v3_numeric_step -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn deepseek_v3_numeric_step_timing() {
    let model = deepseek_v3();
    let workload = decode(256, 4096);
    let dies = 64u32;
    let instrs = program(&model);
    let s = Schedule {
        version: SCHEDULE_VERSION,
        plan: "timing".into(),
        passes: Vec::new(),
        machine: spec(Topology::Mesh {
            width: 8,
            height: 8,
            wafers_x: 1,
            wafers_y: 1,
        }),
        placement: Placement {
            experts: (0..61u64)
                .map(|l| match model.layer_kind(l) {
                    LayerKind::Moe => (0..256).map(|e| vec![DieId(e % dies)]).collect(),
                    LayerKind::Dense => Vec::new(),
                })
                .collect(),
            sequences: (0..256).map(|s| DieId(s % dies)).collect(),
            attention_groups: Vec::new(),
            token_domains: Vec::new(),
            expert_columns: Vec::new(),
            balanced: Vec::new(),
            relay_parts: false,
        },
        programs: (0..dies)
            .map(|d| DieProgram {
                die: DieId(d),
                instrs: instrs.clone(),
            })
            .collect(),
        migrations: Vec::new(),
        broadcasts: Vec::new(),
        micro_batches: 1,
        chunks: Vec::new(),
        transport: Default::default(),
        capacity_factor: None,
        model,
        workload,
    };
    let started = std::time::Instant::now();
    let mut n = Numerics::new(&s, &NumericConfig::default()).expect("runs");
    let built = started.elapsed();
    println!("shape: {:?}", n.shape());
    println!("new: {built:?}");
    for step in 0..3 {
        let started = std::time::Instant::now();
        let r = n.step(step, None);
        println!(
            "step {step}: {:?}; max_rel_error {:.2e}, max_abs_error {:.2e}, rows copied {}, gate disagreements {}",
            started.elapsed(),
            r.max_rel_error,
            r.max_abs_error,
            r.rows_copied,
            r.gate_disagreements
        );
        assert!(r.passed());
    }
}

/// Times the numerics of a schedule file named by `MOEC_SCHEDULE` (from
/// `moec compile --emit schedule`). Run in release with `--ignored --nocapture`.
#[test]
#[ignore = "timing of an external schedule"]
fn schedule_file_numeric_step_timing() {
    let Ok(path) = std::env::var("MOEC_SCHEDULE") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("readable schedule");
    let s = Schedule::from_json(&text).expect("a schedule");
    let started = std::time::Instant::now();
    let mut n = Numerics::new(&s, &NumericConfig::default()).expect("runs");
    println!("{path}: {:?}\nnew: {:?}", n.shape(), started.elapsed());
    for step in 0..2 {
        let started = std::time::Instant::now();
        let r = n.step(step, None);
        println!(
            "step {step}: {:?}, max_rel_error {:.2e}",
            started.elapsed(),
            r.max_rel_error
        );
    }
}

/// Every expert of every MoE layer split into two copies of two uneven
/// column parts, `[d, d + 1]` and `[d + 2, d + 3]` (mod 4) for `d` the
/// expert's round-robin die.
fn split_schedule(model: ModelSpec, workload: WorkloadSpec) -> Schedule {
    let mut s = schedule(model.clone(), workload);
    let ffn = model.moe.as_ref().map_or(0, |m| m.expert_ffn);
    let (first, second) = (ffn * 3 / 8, ffn - ffn * 3 / 8);
    for (l, layer) in s.placement.experts.iter_mut().enumerate() {
        let mut columns = Vec::new();
        for (e, dies) in layer.iter_mut().enumerate() {
            let d = e as u32;
            *dies = (0..4).map(|i| DieId((d + i) % DIES)).collect();
            columns.push(vec![first, second, first, second]);
        }
        s.placement.expert_columns.resize(l + 1, Vec::new());
        if !layer.is_empty() {
            s.placement.expert_columns[l] = columns;
        }
    }
    s.validate().expect("valid split schedule");
    s
}

#[test]
fn split_experts_sum_their_parts_to_the_reference() {
    for workload in [decode(8, 5), prefill(4, 3)] {
        let s = split_schedule(tiny_model(mha()), workload.clone());
        assert!(s.placement.has_split_experts());
        let mut n = Numerics::new(&s, &full_width()).expect("split schedule runs");
        let step = n.step(0, None);
        assert!(step.max_rel_error < 1e-5, "{:?}: {step:?}", workload.phase);
        // Two parts per choice: each a row out and a partial back unless on
        // the token's die; both copies are used (a token homed on a die of
        // the second copy uses it).
        assert!(step.rows_copied > 0);
        let holdings = Holdings::new(&s, s.workload.batch as usize).expect("holdings");
        assert_eq!(holdings.expert_copies[1][0].len(), 2);
        assert_eq!(holdings.expert_dies(1).len(), 4);
        n.executor.fault = Some(Fault::DropDispatchedRow);
        assert!(!n.step(0, None).passed(), "a lost part is caught");
    }
}
