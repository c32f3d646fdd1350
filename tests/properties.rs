//! Properties that hold for every input: the front end never panics (on
//! random bytes or on random soups of the language's own tokens), `fmt` is
//! idempotent on whatever parses, compiling is deterministic, edited
//! schedules never panic the runtime, and random small models on random
//! machines compute what the dense reference computes.

mod common;

use moec::driver;
use moec::source::MemoryReader;
use moec::syntax::{format::format, parse, FileId};
use proptest::prelude::*;
use std::path::Path;

/// Runs the whole front end (load, parse, check, compile every plan) on bytes.
fn front_end(bytes: &[u8]) {
    let mut reader = MemoryReader::default();
    reader.0.insert("input.moe".into(), bytes.to_vec());
    let session = driver::check(&reader, Path::new("input.moe")).expect("in memory");
    let _ = moec::diag::render(&session.loaded.sources, &session.diagnostics.sorted());
    if !session.has_errors() {
        for plan in &session.program.plans {
            let opts = driver::CompileOptions {
                plan: Some(plan.name.clone()),
                ..Default::default()
            };
            let _ = session.compile(&opts, &mut |_, _| {});
        }
    }
}

const TOKENS: &[&str] = &[
    "model",
    "machine",
    "workload",
    "plan",
    "import",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    ";",
    ",",
    "\n",
    " ",
    "\"x.moe\"",
    "layers",
    "hidden",
    "vocab",
    "moe",
    "experts",
    "top_k",
    "expert_ffn",
    "attention",
    "mha",
    "gqa",
    "mla",
    "heads",
    "head_dim",
    "topology",
    "mesh",
    "switch",
    "cluster",
    "die",
    "link",
    "defects",
    "compute",
    "memory",
    "memory_bw",
    "bandwidth",
    "latency",
    "phase",
    "decode",
    "prefill",
    "batch",
    "context",
    "routing",
    "zipf",
    "s",
    "0",
    "1",
    "2",
    "8",
    "4096",
    "1.5",
    "-3",
    "99999999999999999999",
    "GB",
    "TB/s",
    "TFLOPS",
    "ns",
    "GBps",
    "m",
    "w",
    "p",
    "//c\n",
    "/*",
    "*/",
    "#",
    "é",
    "\u{0}",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        front_end(&bytes);
    }

    #[test]
    fn token_soups_never_panic(text in soup()) {
        front_end(text.as_bytes());
    }

    #[test]
    fn fmt_is_idempotent_on_whatever_parses(text in soup()) {
        let (ast, diags) = parse(FileId(0), &text);
        if diags.is_empty() {
            let once = format(&ast, &text);
            let (again, d2) = parse(FileId(0), &once);
            prop_assert!(d2.is_empty(), "formatted text does not parse: {once:?}");
            prop_assert_eq!(format(&again, &once), once);
        }
    }
}

#[test]
fn empty_and_enormous_inputs_are_handled() {
    front_end(b"");
    front_end(&vec![b'{'; 1 << 20]);
    front_end(&vec![b'a'; (16 << 20) + 1]);
    let nested = format!("model m {{ x = {}{} }}", "(1, ".repeat(10_000), ")".repeat(10_000));
    front_end(nested.as_bytes());
}

#[test]
fn compiling_twice_gives_identical_output() {
    let path = common::root().join("examples/deepseek-v3-wafer.moe");
    let a = common::compile_printing(&common::checked(&path), "default", None);
    let b = common::compile_printing(&common::checked(&path), "default", None);
    assert_eq!(a, b);
}

/// A compiled schedule, as JSON, to mutate.
fn schedule_json() -> String {
    let path = common::root().join("examples/deepseekmoe-16b-nmp.moe");
    let session = common::checked(&path);
    session
        .schedule(&driver::CompileOptions::default(), &mut |_, _| {})
        .unwrap()
        .to_json()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A hand-edited schedule is untrusted input: whatever number is changed
    /// to whatever value, reading and running it must not panic.
    #[test]
    fn edited_schedules_never_panic_the_runtime(pick in 0usize..4000, value in prop::sample::select(vec!["0", "1", "-1", "3", "4294967296", "1e300", "0.5"])) {
        let json = schedule_json();
        let mut spots = Vec::new();
        let bytes = json.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'.') {
                let end = (i..bytes.len()).find(|&j| !(bytes[j].is_ascii_digit() || bytes[j] == b'.' || bytes[j] == b'e' || bytes[j] == b'-')).unwrap_or(bytes.len());
                spots.push((i, end));
                i = end;
            } else {
                i += 1;
            }
        }
        let (a, b) = spots[pick % spots.len()];
        let edited = format!("{}{}{}", &json[..a], value, &json[b..]);
        if let Ok(s) = moec_runtime::schedule::Schedule::from_json(&edited) {
            let options = moec_runtime::run::RunOptions {
                steps: Some(1),
                numerics: Some(moec_runtime::numerics::NumericConfig { width: Some(8), ..Default::default() }),
                trace_steps: 1,
                network_quantum: 0.02,
                faults: Vec::new(),
            };
            let _ = moec_runtime::run::run(&s, &options, &mut |_, _| {});
        }
    }
}

/// A random small model, machine, workload and plan, as source text.
#[derive(Clone, Debug)]
struct SmallCase {
    attention: &'static str,
    heads: u32,
    kv_heads: u32,
    layers: u32,
    dense_layers: u32,
    experts: u32,
    top_k: u32,
    groups: u32,
    shared: u32,
    activation: &'static str,
    gate: &'static str,
    mesh: (u32, u32),
    defect: bool,
    prefill: bool,
    batch: u32,
    context: u32,
    routing: &'static str,
    placement: &'static str,
    tp: u32,
    overlap: &'static str,
    transfers: &'static str,
}

impl SmallCase {
    fn source(&self) -> String {
        let attention = match self.attention {
            "mha" => format!("attention mha {{ heads = {}; head_dim = 4 }}", self.heads),
            "gqa" => format!(
                "attention gqa {{ heads = {}; kv_heads = {}; head_dim = 4 }}",
                self.heads, self.kv_heads
            ),
            _ => format!(
                "attention mla {{ heads = {}; q_lora_rank = 8; kv_lora_rank = 8; head_dim = 4; rope_dim = 2; v_head_dim = 4 }}",
                self.heads
            ),
        };
        let dense = if self.dense_layers > 0 {
            format!("dense_layers = {}\n  dense_ffn = 24\n  ", self.dense_layers)
        } else {
            String::new()
        };
        // The fewest groups that still hold top_k experts (group limiting bites).
        let per_group = self.experts / self.groups;
        let topk_groups = (1..=self.groups)
            .find(|t| t * per_group >= self.top_k)
            .unwrap_or(self.groups);
        let shape = if self.prefill {
            format!("phase = prefill; batch = {}; seq_len = {}", self.batch, self.context)
        } else {
            format!("phase = decode; batch = {}; context = {}", self.batch, self.context)
        };
        let defects = if self.defect {
            format!("  defects {{ die({}, {}) }}\n", self.mesh.0 - 1, self.mesh.1 - 1)
        } else {
            String::new()
        };
        let attention_plan = if self.tp > 1 {
            format!("tp({})", self.tp)
        } else {
            "dp".into()
        };
        format!(
            "model m {{\n  layers = {}\n  {dense}hidden = 16\n  vocab = 40\n  dtype = fp32\n  {attention}\n  moe {{ experts = {}; top_k = {}; expert_ffn = 12; shared_experts = {}; shared_ffn = 8; activation = {}; gate = {}; groups = {}; topk_groups = {topk_groups} }}\n}}\n\
             machine x {{\n  topology = mesh({}, {})\n  die {{ compute = 10 TFLOPS; memory = 4 GiB; memory_bw = 1 TB/s }}\n  link {{ bandwidth = 100 GB/s; latency = 10 ns }}\n{defects}}}\n\
             workload w {{ {shape}; steps = 1; routing = {} }}\n\
             plan p {{ model = m; machine = x; workload = w; placement = {}; attention = {attention_plan}; overlap = {}; transfers = {} }}\n",
            self.layers,
            self.experts,
            self.top_k,
            self.shared,
            self.activation,
            self.gate,
            self.groups,
            self.mesh.0,
            self.mesh.1,
            self.routing,
            self.placement,
            self.overlap,
            self.transfers,
        )
    }
}

fn small_case() -> impl Strategy<Value = SmallCase> {
    let attention = prop_oneof![
        (Just("mha"), prop::sample::select(vec![1u32, 2, 4]), Just(0u32)),
        (Just("gqa"), Just(4u32), prop::sample::select(vec![1u32, 2, 4])),
        (Just("mla"), prop::sample::select(vec![1u32, 2, 4]), Just(0u32)),
    ];
    let moe = (prop::sample::select(vec![2u32, 4, 8]), 1u32..=3, 0u32..=1, 0u32..=1).prop_map(
        |(experts, top_k, grouped, shared)| {
            let groups = if grouped == 1 && experts >= 4 { 2 } else { 1 };
            (experts, top_k.min(experts), groups, shared)
        },
    );
    let machine = ((1u32..=3, 1u32..=3), any::<bool>());
    let workload = (any::<bool>(), 1u32..=6, 1u32..=5);
    let plan = (
        prop::sample::select(vec![
            "uniform(seed = 3)",
            "zipf(s = 1.1, layer_corr = 0.5, seed = 5)",
            "gate",
        ]),
        prop::sample::select(vec!["round_robin", "contiguous", "eplb", "tp_contiguous", "er_mapping"]),
        prop::sample::select(vec![1u32, 2, 4]),
        prop::sample::select(vec![
            "none",
            "two_batch",
            "chunked(2)",
            "chunked(3)",
            "monta(1)",
            "monta(2)",
            "micro_batches(3)",
        ]),
        prop::sample::select(vec!["direct", "m2n", "nccl"]),
    );
    (
        attention,
        moe,
        (1u32..=3, 0u32..=1),
        prop::sample::select(vec!["swiglu", "gelu"]),
        prop::sample::select(vec!["softmax", "sigmoid"]),
        machine,
        workload,
        plan,
    )
        .prop_map(
            |(
                (attention, heads, kv_heads),
                (experts, top_k, groups, shared),
                (layers, dense),
                activation,
                gate,
                (mesh, defect),
                (prefill, batch, context),
                (routing, placement, tp, overlap, transfers),
            )| {
                // A dead die only where two others stay alive.
                let defect = defect && mesh.0 * mesh.1 > 2;
                let dies = mesh.0 * mesh.1 - u32::from(defect);
                // tp(k) as the language allows it: k divides the heads, fits the dies.
                let tp = if heads % tp == 0 && tp <= dies { tp } else { 1 };
                // Token domains need groups; the entwined layout also a
                // defect-free mesh its domains (blocks of dies / tp) tile.
                let tiles = |domain: u32| {
                    (1..=mesh.0).any(|a| mesh.0 % a == 0 && domain.is_multiple_of(a) && mesh.1 % (domain / a) == 0)
                };
                let placement = match placement {
                    "er_mapping" if tp > 1 && !defect && dies % tp == 0 && tiles(dies / tp) => placement,
                    "er_mapping" | "tp_contiguous" if tp > 1 => "tp_contiguous",
                    "er_mapping" | "tp_contiguous" => "eplb",
                    other => other,
                };
                SmallCase {
                    attention,
                    heads,
                    kv_heads,
                    layers: layers + dense,
                    dense_layers: dense,
                    experts,
                    top_k,
                    groups,
                    shared,
                    activation,
                    gate,
                    mesh,
                    defect,
                    prefill,
                    batch,
                    context,
                    routing,
                    placement,
                    tp,
                    overlap,
                    transfers,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Issue 3's property: for random small models, machines, routings,
    /// placements, attention splits, overlap forms (issue 17) and transports (issue 18), the distributed execution at full
    /// width equals the dense single-device reference.
    #[test]
    fn the_distributed_result_equals_the_dense_reference(case in small_case()) {
        let source = case.source();
        let mut reader = MemoryReader::default();
        reader.0.insert("small.moe".into(), source.clone().into_bytes());
        let session = driver::check(&reader, Path::new("small.moe")).expect("in memory");
        let diags = moec::diag::render(&session.loaded.sources, &session.diagnostics.sorted());
        prop_assert!(!session.has_errors(), "{source}\n{diags}");
        let schedule = session
            .schedule(&driver::CompileOptions::default(), &mut |_, _| {})
            .map_err(|d| TestCaseError::fail(format!("{source}\n{}", d.message)))?;
        let options = moec_runtime::run::RunOptions {
            steps: Some(1),
            numerics: Some(moec_runtime::numerics::NumericConfig { width: Some(16), ..Default::default() }),
            trace_steps: 0,
            network_quantum: 0.02,
            faults: Vec::new(),
        };
        let out = moec_runtime::run::run(&schedule, &options, &mut |_, _| {})
            .map_err(|e| TestCaseError::fail(format!("{source}\n{e}")))?;
        let check = out.report.numeric_check.expect("numerics ran");
        prop_assert!(!check.reduced, "{source}\n{}", check.note);
        prop_assert!(check.max_rel_error < 1e-4, "{source}\nerror {}", check.max_rel_error);
    }
}
