//! The `moec` binary as a user runs it: exit codes, outputs, flags.

mod common;

use common::{moec, text};
use std::process::Command;

const MAIN: &str = "examples/deepseek-v3-wafer.moe";

#[test]
fn check_succeeds_on_the_main_example_and_prints_derived_figures() {
    let o = moec(&["check", MAIN]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("model deepseek_v3: 61 layers (58 MoE), 671.0B parameters"),
        "{out}"
    );
    assert!(out.contains("machine wafer_8x8: 64 dies (64 alive)"), "{out}");
}

#[test]
fn bad_input_exits_1_with_a_rendered_diagnostic() {
    let o = moec(&["check", "tests/diagnostics/E0004-unknown-setting.moe"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("error[E0004]") && err.contains("did you mean `hidden`?"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(moec(&["compile"]).status.code(), Some(2));
    assert_eq!(moec(&["check", MAIN, "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(moec(&["explain", "E9999"]).status.code(), Some(2));
    assert_eq!(moec(&["compile", MAIN, "--layers", "5..2"]).status.code(), Some(2));
}

#[test]
fn run_injects_faults_and_refuses_bad_ones() {
    let file = "tests/faults/mesh.moe";
    let args = ["run", file, "--plan", "eplb", "--steps", "4", "--no-numerics"];
    let o = moec(
        &[
            &args[..],
            &[
                "--fail",
                "die(1,0)@step=2",
                "--fail",
                "link((3,0),(3,1))@step=1",
                "--report",
                "json",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let faults = json["faults"].as_array().expect("faults[]");
    let what: Vec<&str> = faults.iter().map(|f| f["what"].as_str().unwrap()).collect();
    assert_eq!(what, ["link (3, 0)-(3, 1)", "die (1, 0)"]);
    assert!(faults[1]["rehomed_sequences"].as_u64() > Some(0));
    assert_eq!(json["per_step"][2]["fault"], serde_json::Value::Bool(true));
    let o = moec(&[&args[..], &["--fail", "die(1,0)@step=2"]].concat());
    assert!(
        text(&o.stdout).contains("fault at step 2: die (1, 0) failed"),
        "{}",
        text(&o.stdout)
    );

    // A spec that does not parse, or that the machine refuses, is E0044
    // with a span in the spec (shown as a one-line file `--fail`).
    let o = moec(&[&args[..], &["--fail", "die(1,0)@step"]].concat());
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("error[E0044]") && err.contains("expected `=` after `step`") && err.contains("--fail:1:14"),
        "{err}"
    );
    let o = moec(&[&args[..], &["--fail", "die(9,9)@step=1"]].concat());
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("error[E0044]")
            && err.contains("outside the 4x2 mesh")
            && err.contains("^^^^^^^^^^^^^^^ this fault"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let o = moec(&["check", "examples/no-such-file.moe"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("error[E0042]: cannot read"));
}

/// Issue 16, class 9: every error a user can cause has a code and, where
/// there is text to point into, a span. (The codes only the command line
/// raises are tested here; tests/diagnostics.rs holds the rest.)
#[test]
fn command_line_errors_have_codes_and_spans() {
    let dir = scratch("codes");
    let expect = |args: &[&str], wanted: &[&str]| {
        let o = moec(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        for w in wanted {
            assert!(err.contains(w), "{args:?}: `{w}` not in\n{err}");
        }
    };
    // E0042: what the command line names cannot be read, whatever the command.
    let folder = dir.to_str().unwrap();
    expect(&["check", folder], &["error[E0042]", "it is a folder"]);
    expect(&["fmt", "no-such.moe"], &["error[E0042]", "cannot read `no-such.moe`"]);
    expect(&["run", "no-such.json"], &["error[E0042]"]);

    // E0043: a schedule's JSON errors point at their line and column.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"version\": 1,\n \"plan\": 3}").unwrap();
    expect(
        &["run", bad.to_str().unwrap()],
        &["error[E0043]", "expected a string", "bad.json:2:10", " \"plan\": 3}"],
    );
    std::fs::write(&bad, "{\"version\": 99}").unwrap();
    expect(
        &["run", bad.to_str().unwrap()],
        &["error[E0043]", "schedule version 99"],
    );

    // E0019: fmt of a file that is not UTF-8 points at the first bad byte.
    let latin1 = dir.join("latin1.moe");
    std::fs::write(&latin1, b"model caf\xe9 {}\n").unwrap();
    expect(
        &["fmt", latin1.to_str().unwrap()],
        &["error[E0019]", "latin1.moe:1:10", "invalid byte at offset 9"],
    );

    // E0039: a refused export points at the plan.
    expect(
        &[
            "compile",
            "tests/placement_files/tiny.moe",
            "--plan",
            "round_robin_defect",
            "--emit",
            "placement",
            "--format",
            "sglang",
        ],
        &["error[E0039]", "tiny.moe:52:6", "plan round_robin_defect {"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_prints_the_long_explanation() {
    let o = moec(&["explain", "e0003"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("`memory` expects a size such as 180 GB, found a bandwidth"));
    let all = text(&moec(&["explain"]).stdout);
    assert!(all.lines().count() >= 26 && all.contains("W0003"), "{all}");
}

#[test]
fn compile_writes_identical_bytes_atomically() {
    let dir = std::env::temp_dir().join(format!("moec-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("ir.json");
    let path = out.to_str().unwrap();
    for _ in 0..2 {
        let o = moec(&["compile", MAIN, "--emit", "json", "-o", path]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    let first = std::fs::read(&out).unwrap();
    let o = moec(&["compile", MAIN, "--emit", "json"]);
    assert_eq!(o.stdout, first, "file and stdout differ");
    let doc: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(doc["header"]["passes"][0], "place(round_robin)");
    assert_eq!(
        doc["nodes"].as_array().unwrap().len(),
        1 + 61 + 3 + 58 * (1 + 1 + 256 + 1 + 1) + 1
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dot_output_is_a_graph() {
    let o = moec(&["compile", "examples/mixtral-8x7b-h100.moe", "--emit", "dot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let dot = text(&o.stdout);
    assert!(dot.starts_with("digraph") && dot.contains("subgraph cluster_layer31") && dot.trim_end().ends_with('}'));
}

#[test]
fn print_after_shows_the_ir_after_the_named_pass() {
    let o = moec(&[
        "compile",
        MAIN,
        "--passes",
        "baseline",
        "--print-after",
        "place",
        "--layers",
        "3",
        "-o",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("; *** IR after place(round_robin) ***"), "{err}");
    assert!(
        err.contains("%10 = expert e0 ffn=2048 swiglu (%9) -> [8, 7168] bf16 weights=88.08 MB @(0, 0)"),
        "{err}"
    );
}

#[test]
fn unknown_passes_and_plans_are_diagnostics() {
    let o = moec(&["compile", MAIN, "--passes", "place(magic)"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("error[E0021]"), "{}", text(&o.stderr));
    let o = moec(&["compile", MAIN, "--plan", "defualt"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("did you mean `default`?"),
        "{}",
        text(&o.stderr)
    );
    let o = moec(&["compile", MAIN, "--print-after", "shard"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn fmt_check_accepts_the_examples() {
    for f in common::all_example_files() {
        let o = moec(&["fmt", "--check", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}: {}", f.display(), text(&o.stderr));
    }
}

#[test]
fn run_writes_a_report_a_trace_and_a_heat_map() {
    let dir = std::env::temp_dir().join(format!("moec-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (trace, heat, report) = (dir.join("t.json"), dir.join("h.svg"), dir.join("r.json"));
    let o = moec(&[
        "run",
        "examples/mixtral-8x7b-h100.moe",
        "--steps",
        "2",
        "--no-numerics",
        "--report",
        "json",
        "-o",
        report.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--heatmap",
        heat.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for key in ["p50_s", "p99_s", "mean_s"] {
        assert!(r["latency"][key].as_f64().unwrap() > 0.0, "latency.{key}");
    }
    for key in [
        "attention_s",
        "allreduce_s",
        "dispatch_s",
        "expert_s",
        "combine_s",
        "migration_s",
    ] {
        assert!(r["breakdown"][key].is_number(), "breakdown.{key}");
    }
    assert!(r["traffic"]["bytes"].as_f64().unwrap() > 0.0 && r["dies"]["imbalance"].as_f64().unwrap() >= 1.0);
    assert!(r["numeric_check"].is_null());
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    // Eight GPU tracks and the sixteen switch-port tracks are named; both carry events.
    let named = |pid: u64| {
        events
            .iter()
            .filter(|e| e["ph"] == "M" && e["pid"] == pid && e["name"] == "thread_name")
            .count()
    };
    assert_eq!((named(1), named(2)), (8, 16));
    assert!(events.iter().any(|e| e["ph"] == "X" && e["pid"] == 2));
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["pid"] == 1 && e["name"] == "experts L31"));
    let svg = std::fs::read_to_string(&heat).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_writes_a_time_series() {
    let dir = std::env::temp_dir().join(format!("moec-series-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.svg");
    let o = moec(&[
        "run",
        MAIN,
        "--steps",
        "3",
        "--no-numerics",
        "--series",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains(">3 steps, ") && svg.contains(">latency (ms)<"), "{svg}");
    // Three steps, one point each, on one line.
    let latency = &svg[svg.find(r#"<g class="latency""#).unwrap()..];
    let points = &latency[latency.find(r#"points=""#).unwrap() + 8..];
    assert_eq!(points[..points.find('"').unwrap()].split(' ').count(), 3, "{svg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_compiled_schedule_runs_without_its_source() {
    let dir = std::env::temp_dir().join(format!("moec-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    let o = moec(&[
        "compile",
        "examples/mixtral-8x7b-h100.moe",
        "--emit",
        "schedule",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let a = moec(&[
        "run",
        plan.to_str().unwrap(),
        "--steps",
        "2",
        "--no-numerics",
        "--report",
        "json",
    ]);
    let b = moec(&[
        "run",
        "examples/mixtral-8x7b-h100.moe",
        "--steps",
        "2",
        "--no-numerics",
        "--report",
        "json",
    ]);
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    std::fs::write(&plan, "{\"version\": 7}").unwrap();
    let c = moec(&["run", plan.to_str().unwrap()]);
    assert_eq!(c.status.code(), Some(1));
    assert!(
        text(&c.stderr).contains("version 7 is not supported"),
        "{}",
        text(&c.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recorded_and_calibrated_routing_check_and_run_from_a_schedule() {
    const REAL: &str = "examples/mixtral-8x7b-real-routing.moe";
    let o = moec(&["check", REAL]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("routing: counts from traces/olmoe-routing-analysis/expert_counts.json: model mistral, pooled over 5 domains"),
        "{out}"
    );
    assert!(
        out.contains("MoE layers 0-3 follow counted layer 0, 4-11 layer 7, 12-31 layer 15"),
        "{out}"
    );
    assert!(out.contains("routing: calibrated: skew 1.170 achieved 1."), "{out}");
    // The counts travel inside the schedule: it runs from another folder,
    // with no count file beside it, exactly as the source does.
    let dir = std::env::temp_dir().join(format!("moec-counts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    let o = moec(&["compile", REAL, "--emit", "schedule", "-o", plan.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let run = |what: &str| moec(&["run", what, "--steps", "2", "--no-numerics", "--report", "json"]);
    let (a, b) = (run(plan.to_str().unwrap()), run(REAL));
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn netbench_sweeps_load_on_a_mesh() {
    let o = moec(&[
        "netbench",
        "examples/machines/nmp-4x4.moe",
        "--loads",
        "0.1,0.9",
        "--messages",
        "40",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let points = r["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(points[1]["mean_latency_s"].as_f64() > points[0]["mean_latency_s"].as_f64());
    for pattern in ["tornado", "hotspot(16)"] {
        assert_eq!(
            moec(&["netbench", "examples/machines/nmp-4x4.moe", "--pattern", pattern])
                .status
                .code(),
            Some(2),
            "{pattern}"
        );
    }
}

/// The rows `moec compare` gives a plan with data-parallel attention, in order.
const DATA_PARALLEL_PLACEMENTS: [&str; 8] = [
    "round_robin",
    "contiguous",
    "eplb",
    "eplb_hierarchical",
    "eplb_global",
    "moetuner",
    "hd_moe",
    "auto",
];

/// The row names of a compare document: the placements, and the parallel
/// forms run after the plan's own placement (the part after `parallel = `).
/// A compare document's rows: the placements, and the parallel forms and
/// overlap forms run after the plan's placement.
fn placement_and_form_rows(doc: &serde_json::Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let names = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string());
    let after = |rows: &[String], sep: &str| -> Vec<String> {
        rows.iter()
            .filter_map(|n| n.split_once(sep).map(|(_, f)| f.to_string()))
            .collect()
    };
    let all: Vec<String> = names.collect();
    let forms = after(&all, " + parallel = ");
    let overlaps = after(&all, " + overlap = ");
    let placements = all.into_iter().filter(|n| !n.contains(" + ")).collect();
    (placements, forms, overlaps)
}

/// `moec compare ARGS --steps 1 --no-numerics --report json`, which must succeed.
fn compare_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["compare"];
    all.extend_from_slice(args);
    all.extend(["--steps", "1", "--no-numerics", "--report", "json"]);
    let o = moec(&all);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn compare_runs_every_placement_on_the_same_workload() {
    let doc = compare_json(&["examples/mixtral-8x7b-h200.moe"]);
    let rows = doc["rows"].as_array().unwrap();
    let (placements, forms, overlaps) = placement_and_form_rows(&doc);
    assert_eq!(placements, DATA_PARALLEL_PLACEMENTS);
    // Every parallel form after the plan's placement, on its 16 GPUs.
    assert_eq!(
        forms,
        ["tp(2)", "tp(16)", "moeshard(16)", "hybrid", "compute_balanced", "auto"]
    );
    // And the placement under every overlap form but none (its own row).
    assert_eq!(overlaps, ["two_batch", "chunked(auto)"]);
    // The plan's attention is data-parallel: the token-domain layouts say why they did not run.
    let skipped: Vec<&str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["er_mapping", "tp_contiguous"]);
    // And the machine split between attention and experts by DisagMoE's rule.
    assert!(
        rows.iter()
            .any(|r| r["name"].as_str().unwrap().starts_with("disaggregated ")),
        "no disaggregated row"
    );
    for r in rows {
        assert!(r["compile_s"].as_f64().unwrap() > 0.0 && r["latency"]["p50_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["steps"], 1);
    }
    // 8 experts on 16 GPUs: round robin uses GPUs 0-7, contiguous spreads over every other GPU.
    assert_ne!(rows[0]["traffic"]["byte_hops"], rows[1]["traffic"]["byte_hops"]);
}

const TINY: &str = "tests/placement_files/tiny.moe";

#[test]
fn compare_adds_every_migration_policy_for_a_plan_that_moves_experts() {
    const DRIFT: &str = "tests/migration/drift.moe";
    let policies = |doc: &serde_json::Value| -> Vec<String> {
        let rows = doc["rows"].as_array().unwrap();
        rows.iter()
            .filter_map(|r| r["name"].as_str().unwrap().split(" + migration = ").nth(1))
            .map(str::to_string)
            .collect()
    };
    let mut args = vec!["compare", DRIFT, "--plan", "ni_balancer"];
    args.extend(["--steps", "6", "--no-numerics", "--report", "json"]);
    let o = moec(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(policies(&doc), ["none", "invasive", "ni_balancer", "dynamic_placement"]);
    // And the static plan at NI-Balancer's memory: its 2 shadow slots on
    // each of the 16 dies as 32 more EPLB replicas a layer.
    assert!(
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "er_mapping + redundant_experts = 32 (static, ni_balancer's memory)"),
        "{doc}"
    );
    // Each row says the memory it holds: the shadow slots count, and the
    // equal-memory row holds what NI-Balancer reserves on its fullest die.
    let memory = |name: &str| {
        let r = doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}"));
        (
            r["memory_max_die_bytes"].as_u64().unwrap(),
            r["expert_bytes_total"].as_u64().unwrap(),
        )
    };
    let (none, shadowed) = (
        memory("er_mapping + migration = none"),
        memory("er_mapping + migration = ni_balancer"),
    );
    let equal = memory("er_mapping + redundant_experts = 32 (static, ni_balancer's memory)");
    assert!(shadowed.0 > none.0 && shadowed.1 > none.1, "{none:?} {shadowed:?}");
    assert_eq!(equal.0, shadowed.0);
    let row = |policy: &str| {
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["name"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("+ migration = {policy}"))
            })
            .unwrap()
            .clone()
    };
    // The policies planned over the 6 steps the rows ran, and moved weights.
    assert_eq!(row("none")["migration"]["bytes"].as_f64(), Some(0.0));
    assert!(row("ni_balancer")["migration"]["applied"].as_u64() > Some(0));
    assert!(row("dynamic_placement")["migration"]["bytes"].as_f64() > Some(0.0));
    for policy in ["none", "ni_balancer"] {
        assert_eq!(row(policy)["steps"], 6);
    }
    // A plan that moves nothing compares placements and forms only.
    let doc = compare_json(&[DRIFT, "--plan", "static"]);
    assert!(policies(&doc).is_empty());
}

#[test]
fn placement_export_is_deterministic_and_atomic_and_refuses_unequal_dies() {
    let dir = std::env::temp_dir().join(format!("moec-cli-placement-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for format in ["sglang", "vllm-ascend", "trtllm", "moec"] {
        let out = dir.join(format!("eplb.{format}"));
        let path = out.to_str().unwrap();
        let args = [
            "compile",
            TINY,
            "--plan",
            "eplb",
            "--emit",
            "placement",
            "--format",
            format,
            "--pad-slots",
        ];
        for _ in 0..2 {
            let o = moec(&[&args[..], &["-o", path]].concat());
            assert_eq!(o.status.code(), Some(0), "{format}: {}", text(&o.stderr));
        }
        let o = moec(&args);
        assert_eq!(
            o.stdout,
            std::fs::read(&out).unwrap(),
            "{format}: file and stdout differ"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
    // Without padding, a die holding fewer experts is refused, by name.
    let o = moec(&[
        "compile",
        TINY,
        "--plan",
        "round_robin_defect",
        "--emit",
        "placement",
        "--format",
        "trtllm",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("error[E0039]") && err.contains("2 on 1 die ((0, 1))"),
        "{err}"
    );
    // moec's own format is the default and records any placement.
    let o = moec(&["compile", TINY, "--plan", "eplb", "--emit", "placement"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("\"format\": \"moec-placement\""));
    // --format belongs to --emit placement, and names a format.
    assert_eq!(moec(&["compile", TINY, "--format", "sglang"]).status.code(), Some(2));
    assert_eq!(moec(&["compile", TINY, "--pad-slots"]).status.code(), Some(2));
    let o = moec(&["compile", TINY, "--emit", "placement", "--format", "vllm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("vllm-ascend"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_adds_the_plans_own_placement_file_and_it_matches_its_source() {
    let doc = compare_json(&[TINY, "--plan", "from_sglang"]);
    let rows = doc["rows"].as_array().unwrap();
    let (placements, forms, _) = placement_and_form_rows(&doc);
    let mut expected = DATA_PARALLEL_PLACEMENTS.to_vec();
    expected.push("file(\"contiguous.sglang.json\")");
    assert_eq!(placements, expected);
    assert!(
        rows[9]["name"].as_str().unwrap().starts_with("file + parallel = "),
        "{}",
        rows[9]["name"]
    );
    // The file holds the contiguous placement: the same traffic.
    assert_eq!(rows[8]["traffic"], rows[1]["traffic"]);
    // A plan of a built-in placement compares the built-in ones only (and the forms).
    let doc = compare_json(&[TINY, "--plan", "contiguous"]);
    let (placements, again, _) = placement_and_form_rows(&doc);
    assert_eq!((placements.len(), again), (8, forms));
}

#[test]
fn skewed_routing_checks_and_runs_from_a_schedule() {
    const SWITCH: &str = "examples/switch-base-128-a100.moe";
    let o = moec(&["check", SWITCH]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains(
            "routing: skewed: experts 0-12 of 128 hot, probability 0.0691 each (the others 8.878e-4); \
             0.898 of the top-1 choices expected on them"
        ),
        "{out}"
    );
    // The source travels inside the schedule and gives the same run.
    let dir = std::env::temp_dir().join(format!("moec-skewed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    let o = moec(&[
        "compile",
        SWITCH,
        "--plan",
        "batch_10",
        "--emit",
        "schedule",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(std::fs::read_to_string(&plan).unwrap().contains("\"kind\": \"skewed\""));
    let (a, b) = (
        moec(&["run", plan.to_str().unwrap(), "--no-numerics", "--report", "json"]),
        moec(&["run", SWITCH, "--plan", "batch_10", "--no-numerics", "--report", "json"]),
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A scratch folder of this test's own under the system's temporary one.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("moec-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

#[test]
fn an_output_through_a_symlink_keeps_the_link_and_fills_its_target() {
    use std::os::unix::fs::symlink;
    let dir = scratch("symlink");
    let target = dir.join("target.txt");
    std::fs::write(&target, "old").unwrap();
    let link = dir.join("link.txt");
    symlink(&target, &link).unwrap();
    let o = moec(&["compile", MAIN, "-o", link.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "the link was replaced"
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(written.contains("expert"), "{written}");
    // Nothing left beside them: no temporary files.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["link.txt", "target.txt"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_output_into_a_fifo_is_written_through_and_the_fifo_stays() {
    use std::os::unix::fs::FileTypeExt;
    let dir = scratch("fifo");
    let fifo = dir.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    // The reader opens the FIFO while moec writes it.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read the fifo"))
    };
    let o = moec(&["compile", MAIN, "-o", fifo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Checked before joining: a replaced FIFO would leave the reader waiting.
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the fifo was replaced"
    );
    let read = reader.join().unwrap();
    assert!(read.contains("expert"), "{read}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_output_onto_a_full_device_fails_and_leaves_the_device() {
    use std::os::unix::fs::FileTypeExt;
    let full = std::path::Path::new("/dev/full");
    if !std::fs::metadata(full).is_ok_and(|m| m.file_type().is_char_device()) {
        return; // no such device here: nothing to check
    }
    let o = moec(&["compile", MAIN, "-o", "/dev/full"]);
    assert_eq!(o.status.code(), Some(1), "writing a full device succeeded");
    assert!(text(&o.stderr).contains("cannot write"), "{}", text(&o.stderr));
    assert!(
        std::fs::metadata(full).unwrap().file_type().is_char_device(),
        "/dev/full was replaced"
    );
}

#[test]
fn a_schedule_naming_a_layer_the_model_lacks_is_refused_whatever_runs() {
    // It once panicked in the simulator with --no-numerics, while the
    // numeric executor refused it: validation runs before either.
    let dir = scratch("layer");
    let plan = dir.join("plan.json");
    let o = moec(&[
        "compile",
        "examples/mixtral-8x7b-h100.moe",
        "--emit",
        "schedule",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json = std::fs::read_to_string(&plan).unwrap();
    let mut schedule: serde_json::Value = serde_json::from_str(&json).unwrap();
    let instrs = schedule["programs"][0]["instrs"].as_array_mut().unwrap();
    let dispatch = instrs
        .iter_mut()
        .find(|i| i["op"]["op"] == "dispatch")
        .expect("a dispatch");
    dispatch["op"]["layer"] = serde_json::json!(9999);
    std::fs::write(&plan, serde_json::to_string(&schedule).unwrap()).unwrap();
    for numerics in [true, false] {
        let mut args = vec!["run", plan.to_str().unwrap(), "--steps", "1"];
        if !numerics {
            args.push("--no-numerics");
        }
        let o = moec(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "numerics {numerics}: {err}");
        assert!(err.contains("names layer 9999"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn steps_past_the_languages_limit_are_refused_up_front() {
    // The language caps `steps` at 2^24; the flag once took any u64 and ran.
    for command in ["run", "compare"] {
        let o = moec(&[command, MAIN, "--steps", "18446744073709551615", "--no-numerics"]);
        assert_eq!(o.status.code(), Some(2), "{command}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("--steps"), "{}", text(&o.stderr));
    }
}

#[test]
fn imports_of_devices_and_fifos_are_refused_at_once() {
    // `import "/dev/zero"` once read 4 GB before failing, and a FIFO
    // blocked forever.
    let dir = scratch("imports");
    let fifo = dir.join("pipe.moe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs")
        .success());
    for target in ["/dev/zero", "pipe.moe"] {
        let file = dir.join("root.moe");
        std::fs::write(&file, format!("import \"{target}\"\n")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_moec"))
            .args(["check", file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("moec runs");
        let begin = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if begin.elapsed() > std::time::Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("moec check waited on `{target}`");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let err = text(&child.wait_with_output().unwrap().stderr);
        assert_eq!(status.code(), Some(1), "{target}: {err}");
        assert!(
            err.contains("E0011") && err.contains("not a regular file"),
            "{target}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

const SERVING: &str = "tests/serving/tiny.moe";

#[test]
fn run_and_compare_say_whether_the_plan_meets_its_slo() {
    let o = moec(&["check", SERVING]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("each, $2.5 a die-hour;"), "{out}");
    assert!(
        out.contains("workload decode: decode batch 4, 4 tokens a step, 2 steps; slo: tpot p99 <= 50 us\n"),
        "{out}"
    );
    let o = moec(&["run", SERVING, "--steps", "2", "--no-numerics"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // Four sequences take a few microseconds a step (kernel launches, mostly).
    let line = out
        .lines()
        .find(|l| l.contains("SLO:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("  SLO: tpot p99 ") && line.ends_with(" <= 50 us: met"),
        "{line}"
    );
    for row in ["tokens/s", "TPOT p99", "tokens per $", "latency / bound", "binds"] {
        assert!(out.contains(row), "{row}: {out}");
    }
    let o = moec(&[
        "run",
        SERVING,
        "--plan",
        "prefill",
        "--steps",
        "1",
        "--no-numerics",
        "--report",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let slo = &json["serving"]["slo"];
    assert_eq!(
        (slo["metric"].as_str(), slo["target_s"].as_f64()),
        (Some("ttft"), Some(1e-3))
    );
    assert_eq!(slo["met"].as_bool(), Some(slo["p99_s"].as_f64().unwrap() <= 1e-3));
    assert!(json["serving"]["tpot"].is_null() && json["serving"]["ttft"]["p99_s"].as_f64().is_some());

    let o = moec(&["compare", SERVING, "--steps", "1", "--no-numerics"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    let head = table
        .lines()
        .find(|l| l.starts_with("placement"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        head.contains("tokens/s") && head.contains("/bound") && head.contains("tpot"),
        "{head}"
    );
    assert!(table.contains("tpot: p99 <= 50 us (the workload's slo)"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("round_robin "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" met "), "{row}");
}

#[test]
fn max_batch_finds_a_batch_that_meets_the_slo_next_to_one_that_does_not() {
    // The prefill plan's 1 ms TTFT holds for some prompts of 64 tokens, not for many.
    let args = ["run", SERVING, "--plan", "prefill", "--max-batch", "--steps", "2"];
    let o = moec(&[&args[..], &["--report", "json"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON search");
    let found = json["found"]["batch"].as_u64().expect("a batch meets 1 ms");
    assert_eq!(json["found"]["met"].as_bool(), Some(true));
    assert!(json["found"]["p99_s"].as_f64().unwrap() <= json["slo"]["target_s"].as_f64().unwrap());
    assert_eq!(json["first_failing"]["batch"].as_u64(), Some(found + 1));
    assert_eq!(json["first_failing"]["met"].as_bool(), Some(false));
    // Every probe: met below the answer, missed above it.
    for p in json["probes"].as_array().unwrap() {
        assert_eq!(p["met"].as_bool(), Some(p["batch"].as_u64().unwrap() <= found), "{p}");
    }
    // The table says the same, and the search is deterministic.
    let o = moec(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with(&format!("largest batch with ttft p99 <= 1 ms: {found}\n")),
        "{out}"
    );
    assert_eq!(moec(&args).stdout, o.stdout);
    // A workload without a target, a schedule, and other outputs are refused.
    let o = moec(&["run", "tests/faults/mesh.moe", "--plan", "eplb", "--max-batch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("error[E0006]"), "{}", text(&o.stderr));
    assert_eq!(moec(&["run", "plan.json", "--max-batch"]).status.code(), Some(2));
    assert_eq!(
        moec(&["run", SERVING, "--max-batch", "--trace", "t.json"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn a_failing_numeric_check_fails_the_run_and_says_where() {
    const TINY_RUN: &str = "tests/serving/tiny.moe";
    let o = moec(&["run", TINY_RUN, "--steps", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(": passed"), "{}", text(&o.stdout));
    // The check's self-test: the executor loses the first row a dispatch copies.
    let o = moec(&["run", TINY_RUN, "--steps", "1", "--inject-numeric-fault"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(out.contains("FAILED") && out.contains("first difference"), "{out}");
    assert!(err.contains("E0047") && err.contains("numeric check failed"), "{err}");
    // It names the step, the first layer that differs, the token, its die and both values.
    assert!(
        err.contains("step 0, layer ") && err.contains(" on die ") && err.contains("the reference"),
        "{err}"
    );
    // Timing only says so.
    let o = moec(&["run", TINY_RUN, "--steps", "1", "--no-numerics"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).contains("numeric check: not run (--no-numerics"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn the_examples_in_compiles_help_run() {
    // Every `moec compile ...` line of the help, as a user would paste it,
    // with its output file moved to a scratch folder.
    let help = text(&moec(&["compile", "--help"]).stdout);
    let dir = tempfile::tempdir().unwrap();
    // A long example wraps onto the next line of the help.
    let mut examples: Vec<Vec<String>> = Vec::new();
    let mut in_example = false;
    for line in help.lines().map(str::trim) {
        if line.starts_with("moec compile examples/") {
            examples.push(line.split_whitespace().skip(1).map(str::to_string).collect());
            in_example = true;
        } else if in_example && !line.is_empty() && !line.starts_with("moec ") && !line.contains(':') {
            if let Some(last) = examples.last_mut() {
                last.extend(line.split_whitespace().map(str::to_string));
            }
        } else {
            in_example = false;
        }
    }
    assert!(examples.len() >= 4, "{help}");
    for mut args in examples {
        if let Some(at) = args.iter().position(|a| a == "-o") {
            let name = args[at + 1].clone();
            args[at + 1] = dir.path().join(&name).to_string_lossy().into_owned();
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = moec(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    }
    // The EPLB export the help shows is SGLang's map, slot for slot.
    let map = std::fs::read_to_string(dir.path().join("eplb.json")).unwrap();
    assert!(map.contains("physical_to_logical_map"), "{map}");
}

#[test]
fn milp_seconds_hands_the_papers_programs_to_the_solver() {
    // By default ILP 2 on 8 GPUs (127k product terms) keeps its greedy
    // start; --milp-seconds lifts the caps, and the solver's status (here
    // its time limit) comes back in the note.
    let note = |extra: &[&str]| {
        let args = [
            &["compile", "examples/mixtral-8x7b-h100.moe", "--plan", "moetuner"][..],
            extra,
        ]
        .concat();
        let o = moec(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        text(&o.stdout)
            .lines()
            .find(|l| l.contains("moetuner ILP 2"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(note(&[]).contains("greedy (126976 product terms"), "{}", note(&[]));
    let solved = note(&["--milp-seconds", "1"]);
    assert!(solved.contains("HiGHS") && !solved.contains("greedy"), "{solved}");
    for bad in ["0", "-1", "soon"] {
        let o = moec(&["compile", "examples/mixtral-8x7b-h100.moe", "--milp-seconds", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
    }
}
