//! Attention and experts on separate pools of dies (`disaggregate { ... }`):
//! the pools are disjoint and verified, each side stays on its pool, and
//! every token reaches every expert it chose and comes back once a layer.

mod common;

use common::{moec, text};
use moec_runtime::machine::DieId;
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
fn tensor_parallel_groups_stay_inside_their_pools() {
    use moec_runtime::numerics::{NumericConfig, Numerics};
    // MegaScale-Infer's tp_a = 2 and tp_e = 2: node 0 one attention group,
    // node 1 one expert group holding every expert split in two.
    let s = schedule(&plan(
        "disaggregate { attention = die; experts = big }",
        "attention = tp(2)\n  parallel = tp(2)",
    ));
    assert_eq!(s.placement.attention_groups, vec![vec![DieId(0), DieId(1)]]);
    for layer in &s.placement.experts {
        for holders in layer {
            assert_eq!(holders, &[DieId(2), DieId(3)]);
        }
    }
    let mut numerics = Numerics::new(&s, &NumericConfig::default()).expect("numerics");
    let step = numerics.step(0, None);
    assert!(step.passed(), "max rel error {}", step.max_rel_error);
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
            "parallel = moeshard(2)",
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

/// One attention die beside one expert die, every token choosing both
/// experts: MegaScale-Infer's ping-pong in its simplest form, `m`
/// micro-batches shuttling between the two over one link.
fn ping_pong(context: u32, expert_ffn: u32, m: u32) -> String {
    format!(
        r#"
model tall {{
  layers = 4
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention gqa {{ heads = 8; kv_heads = 8; head_dim = 128 }}
  moe {{ experts = 2; top_k = 2; expert_ffn = {expert_ffn} }}
}}
machine two {{
  topology = cluster(nodes = 1, per_node = 2)
  die {{ compute = 100 TFLOPS; memory = 16 GB; memory_bw = 1 TB/s }}
  link {{ bandwidth = 20 GB/s; latency = 2 us }}
}}
workload w {{
  phase = decode
  batch = 12
  context = {context}
  routing = uniform(seed = 1)
}}
plan p {{
  model = tall
  machine = two
  workload = w
  placement = round_robin
  overlap = micro_batches({m})
  disaggregate {{ attention = [0]; experts = [1] }}
}}
"#
    )
}

/// MegaScale-Infer's iteration time, T_total = (T_a + T_e + 2 T_c) +
/// T_f (m L - 1), T_f = max(T_a, T_e), from the simulator's own kernel
/// and transfer times; against the simulated time from the first
/// attention to the last combine. It holds while the slower pool never
/// waits: a micro-batch's round trip (the faster pool's time and two
/// transfers) hides under the other m - 1 micro-batches' work, (m - 1) T_f
/// >= min(T_a, T_e) + 2 T_c, the paper's m T_f >= 2 (T_f + T_c) with the
/// faster pool's time exact. Where it does not hold the pipeline stalls and
/// the simulated time is longer.
#[test]
fn the_ping_pong_takes_megascale_infers_closed_form_time() {
    let mut held = 0;
    // Attention-bound (long context) and expert-bound (wide experts).
    for (context, ffn) in [(32768, 1024), (256, 16384)] {
        for m in [1u32, 2, 3, 4] {
            let s = schedule(&ping_pong(context, ffn, m));
            assert_eq!(s.micro_batches, m);
            let r = common::simulate_first_step(&s, true);
            let on = |die: u32, names: &[&str]| -> Vec<f64> {
                r.spans
                    .iter()
                    .filter(|x| x.die.0 == die && names.contains(&x.op.name()))
                    .map(|x| x.end_s - x.start_s)
                    .collect()
            };
            // Per micro-batch and layer: attention and gate on die 0,
            // experts on die 1, one transfer each way over the link.
            let t_a = on(0, &["attention"])[0] + on(0, &["gate"])[0];
            let t_e = on(1, &["experts"])[0];
            let t_c = r.flows.first().map(|f| f.end_s - f.start_s).expect("a transfer");
            assert!(r.flows.iter().all(|f| (f.end_s - f.start_s - t_c).abs() < 2e-12));
            let layers = 4.0;
            let t_f = t_a.max(t_e);
            let closed = (t_a + t_e + 2.0 * t_c) + t_f * (f64::from(m) * layers - 1.0);
            let first = r
                .spans
                .iter()
                .filter(|x| x.die.0 == 0 && x.op.name() == "attention")
                .map(|x| x.start_s);
            let last = r.spans.iter().filter(|x| x.op.name() == "combine").map(|x| x.end_s);
            let simulated = last.fold(0.0, f64::max) - first.fold(f64::MAX, f64::min);
            // The form's assumptions: each micro-batch's round trip hides
            // under the other micro-batches' work.
            let hidden = f64::from(m - 1) * t_f >= t_a.min(t_e) + 2.0 * t_c;
            held += usize::from(hidden);
            if !hidden {
                assert!(
                    simulated > closed * 1.01,
                    "context {context}, m {m}: the pipeline stalls"
                );
                continue;
            }
            assert!(
                (simulated - closed).abs() < 1e-9 * closed.max(1.0) + 64e-12,
                "context {context}, ffn {ffn}, m {m}: simulated {simulated} s, closed form {closed} s \
                 (T_a {t_a}, T_e {t_e}, T_c {t_c})"
            );
        }
    }
    // Both outcomes were seen: m = 1 always stalls.
    assert!((1..8).contains(&held), "{held} of 8 held");
}

/// A small cluster for the sizing searches: two nodes of four GPUs, four
/// experts, a 50 ms time-per-token target.
fn sizing(context: u32) -> String {
    format!(
        r#"
model small {{
  layers = 4
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention gqa {{ heads = 8; kv_heads = 2; head_dim = 128 }}
  moe {{ experts = 4; top_k = 2; expert_ffn = 4096 }}
}}
machine two_nodes {{
  topology = cluster(nodes = 2, per_node = 4)
  die {{ compute = 100 TFLOPS; memory = 4 GB; memory_bw = 1 TB/s; price = 2 }}
  link {{ bandwidth = 200 GB/s; latency = 500 ns }}
  inter_node {{ bandwidth = 25 GB/s; latency = 2 us }}
}}
workload w {{
  phase = decode
  batch = 64
  context = {context}
  routing = uniform(seed = 1)
  slo {{ tpot = 2 ms }}
}}
plan p {{
  model = small
  machine = two_nodes
  workload = w
  placement = contiguous
}}
"#
    )
}

#[test]
fn megascale_infers_search_finds_each_candidates_largest_batch_and_the_best_per_dollar() {
    use moec::pool_sizing::megascale::{search, Space};
    let (_dir, path) = written(&sizing(1024));
    let session = common::checked(&path);
    let space = Space {
        tp_attention: vec![1, 2],
        tp_experts: vec![1],
        replicas: vec![1, 2],
        micro_batches: vec![1, 2],
        steps: 1,
    };
    let found = search(&session, Some("p"), &space, &mut |_| {}).expect("searches");
    // tp_a 1 and 2, each with 1 and 2 replicas, each with m 1 and 2.
    assert_eq!(found.candidates.len(), 8);
    for c in &found.candidates {
        assert_eq!(c.dies, c.tp_attention * c.replicas + 4);
        let probe = c.found.as_ref().expect("some batch meets 2 ms");
        assert!(probe.p99_s.expect("ran") <= 2e-3);
        // Tokens per dollar: tokens a second over the instance's price a second.
        let rate = probe.tokens_per_s.expect("ran");
        let price = 2.0 * f64::from(c.dies) / 3600.0;
        assert!((c.tokens_per_dollar.expect("priced") - rate / price).abs() < 1e-9 * rate / price);
        assert!(c.predicted_batch.is_some());
    }
    let best = &found.candidates[found.best.expect("a best")];
    assert!(found
        .candidates
        .iter()
        .all(|c| c.tokens_per_dollar <= best.tokens_per_dollar));
    let plan = found.best_plan.expect("the best as a plan");
    assert!(plan.contains("disaggregate { attention = ["), "{plan}");
    // More replicas hold more sequences: never a smaller batch.
    let batch = |tp: u32, n: u32, m: u32| {
        found
            .candidates
            .iter()
            .find(|c| (c.tp_attention, c.replicas, c.micro_batches) == (tp, n, m))
            .and_then(|c| c.found.as_ref())
            .map(|p| p.batch)
    };
    assert!(batch(1, 2, 1) >= batch(1, 1, 1));
}

#[test]
fn disagmoes_split_gives_attention_more_dies_as_the_context_grows() {
    use moec::pool_sizing::disagmoe::size;
    let mut previous: Option<(f64, u32)> = None;
    for context in [512, 2048, 8192] {
        let (_dir, path) = written(&sizing(context));
        let session = common::checked(&path);
        let s = size(&session, Some("p"), 1, None).expect("sizes");
        assert_eq!((s.dies, s.splits.len()), (8, 7));
        let rule = &s.splits[s.rule.expect("a split fits")];
        // The rule minimises the slower stage among the splits that fit.
        let slower = rule.attention_s.max(rule.experts_s);
        assert!(s
            .splits
            .iter()
            .filter(|x| x.fits)
            .all(|x| x.attention_s.max(x.experts_s) >= slower));
        assert!(rule.simulated_s.is_some(), "the rule's split is simulated");
        if let Some((share, n_a)) = previous {
            assert!(
                s.attention_share > share && rule.attention_dies >= n_a,
                "context {context}"
            );
        }
        previous = Some((s.attention_share, rule.attention_dies));
    }
}

#[test]
fn wafer_pool_shapes_take_exactly_their_dies() {
    use moec::pool_sizing::wafer::{attention_pool, SHAPES};
    let text = r#"
machine wafer {
  topology = mesh(8, 8)
  die { compute = 100 TFLOPS; memory = 8 GB; memory_bw = 1 TB/s }
  link { bandwidth = 100 GB/s; latency = 20 ns }
}
"#;
    let (_dir, path) = written(text);
    let session = common::checked(&path);
    let machine = session.program.machine(0).expect("machine");
    for shape in SHAPES {
        assert_eq!(attention_pool(machine, shape, 32).map(|p| p.len()), Some(32), "{shape}");
    }
    let coords = |shape: &str, n: u32| -> Vec<(u32, u32)> {
        attention_pool(machine, shape, n)
            .expect("fits")
            .iter()
            .filter_map(|&d| machine.coord(d))
            .map(|c| (c.x, c.y))
            .collect()
    };
    // The middle 16: the 4 x 4 block around the centre; the edge 28: the
    // outer ring; a band of 16: the top two rows.
    assert!(coords("middle", 16)
        .iter()
        .all(|&(x, y)| (2..6).contains(&x) && (2..6).contains(&y)));
    assert!(coords("edge", 28)
        .iter()
        .all(|&(x, y)| x == 0 || y == 0 || x == 7 || y == 7));
    assert!(coords("band", 16).iter().all(|&(_, y)| y < 2));
    assert!(attention_pool(machine, "checkerboard", 16).is_none());
    assert!(attention_pool(machine, "columns", 12).is_none());
}

#[test]
fn moec_pools_prints_each_sizing_and_the_best_plan() {
    let (_dir, path) = written(&sizing(1024));
    let file = path.to_str().expect("utf-8");
    let o = moec(&[
        "pools",
        file,
        "--tp-attention",
        "1",
        "--tp-experts",
        "1",
        "--replicas",
        "2",
        "--micro-batches",
        "2",
        "--steps",
        "1",
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(out.contains("balance n_a =") && out.contains("<- best"), "{out}");
    // The best as a plan to paste: it checks as written.
    let plan = out.split("the best, as a plan:\n").nth(1).expect("a plan");
    assert!(
        plan.starts_with("plan p_na2_tpa1_tpe1_m2 {") && plan.contains("overlap = micro_batches(2)"),
        "{plan}"
    );
    let o = moec(&["pools", file, "--rule", "disagmoe", "--steps", "1", "--report", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        (json["dies"].as_u64(), json["micro_batches"].as_u64()),
        (Some(8), Some(2))
    );
    assert!(json["rule"].as_u64().is_some(), "{json}");
    // No target, no search.
    let (_dir2, untargeted) = written(
        &sizing(1024)
            .replace("slo {{ tpot = 2 ms }}", "")
            .replace("slo { tpot = 2 ms }", ""),
    );
    let o = moec(&["pools", untargeted.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("E0006"), "{}", text(&o.stderr));
}
