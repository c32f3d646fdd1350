//! The stable diagnostic codes and their long explanations (`moec explain`).
//!
//! A code never changes meaning once released; a retired code stays listed.
//! Each explanation says what went wrong, why moec refuses it, and shows an
//! input that produces it with the fix.

/// A stable diagnostic code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    E0001,
    E0002,
    E0003,
    E0004,
    E0005,
    E0006,
    E0007,
    E0008,
    E0009,
    E0010,
    E0011,
    E0012,
    E0013,
    E0014,
    E0015,
    E0016,
    E0017,
    E0018,
    E0019,
    E0020,
    E0021,
    E0022,
    E0023,
    E0024,
    E0030,
    E0031,
    E0032,
    E0033,
    E0034,
    E0035,
    E0036,
    E0037,
    E0038,
    E0039,
    E0040,
    E0041,
    E0042,
    E0043,
    E0044,
    E0045,
    E0046,
    E0047,
    E0048,
    W0001,
    W0002,
    W0003,
}

struct Entry {
    code: Code,
    name: &'static str,
    title: &'static str,
    explanation: &'static str,
}

const TABLE: &[Entry] = &[
    Entry {
        code: Code::E0001,
        name: "E0001",
        title: "syntax error",
        explanation: "The file does not follow the moec grammar (grammar/moe.pest). The message says what the
parser expected at the marked position. After an error moec skips to the next top-level
item (`model`, `machine`, `workload`, `plan`, `import`) and goes on, so one run reports
the syntax errors of every item.

Example:

    model m {
      hidden = = 4096      // error: expected a value
    }

Fix: `hidden = 4096`.",
    },
    Entry {
        code: Code::E0002,
        name: "E0002",
        title: "unknown unit",
        explanation: "A number carries a unit moec does not know. Units are case-sensitive: `GB` is
gigabytes, `Gb/s` gigabits per second. Known units:

    compute    FLOPS KFLOPS MFLOPS GFLOPS TFLOPS PFLOPS
    size       B KB MB GB TB PB KiB MiB GiB TiB PiB
    bandwidth  B/s KB/s MB/s GB/s TB/s PB/s KiB/s MiB/s GiB/s TiB/s Gb/s Tb/s
    time       ns us ms s

Example:

    link { bandwidth = 900 GBps }     // error: unknown unit `GBps`

Fix: `bandwidth = 900 GB/s`.",
    },
    Entry {
        code: Code::E0003,
        name: "E0003",
        title: "quantity of the wrong dimension",
        explanation: "A setting expects one kind of quantity (a size, a bandwidth, a compute rate or a
time) and got another, or got a bare number where a unit is needed. moec checks
dimensions so that a bandwidth can never be read as a size.

Example:

    die { memory = 8 TB/s }            // error: `memory` expects a size such as 180 GB, found a bandwidth

Fix: `memory = 180 GB` (and `memory_bw = 8 TB/s`).",
    },
    Entry {
        code: Code::E0004,
        name: "E0004",
        title: "unknown setting",
        explanation: "A block holds a key that this kind of block does not have. The hint names the closest
known key, and the known keys are listed in docs/LANGUAGE.md.

Example:

    model m { hiden = 4096 }           // error: unknown setting `hiden` in model; did you mean `hidden`?",
    },
    Entry {
        code: Code::E0005,
        name: "E0005",
        title: "setting given twice",
        explanation: "A key appears twice in one block. moec does not guess which one you meant.

Example:

    moe { top_k = 2; top_k = 8 }       // error: `top_k` is set twice",
    },
    Entry {
        code: Code::E0006,
        name: "E0006",
        title: "missing setting",
        explanation: "A required key is missing from a block. The hint shows a line to add.

Example:

    model m { layers = 32 }            // error: model `m` has no `hidden`",
    },
    Entry {
        code: Code::E0007,
        name: "E0007",
        title: "value of the wrong type",
        explanation: "A key got a value of the wrong form: a name where an integer is needed, a list where a
name is needed, and so on.

Example:

    model m { layers = \"32\" }          // error: expected an integer, found a string

Fix: `layers = 32`.",
    },
    Entry {
        code: Code::E0008,
        name: "E0008",
        title: "value out of range",
        explanation: "A number is outside the range its setting allows: a count of zero, a negative size, a
fraction where a whole number is needed, or an integer too large to represent.

Example:

    moe { experts = 0 }                // error: `experts` must be at least 1",
    },
    Entry {
        code: Code::E0009,
        name: "E0009",
        title: "unknown name",
        explanation: "A plan refers to a model, machine or workload that no file defines (imports included).
The hint names the closest defined one.

Example:

    plan p { model = deepseek_v4; ... }   // error: no model named `deepseek_v4`; did you mean `deepseek_v3`?",
    },
    Entry {
        code: Code::E0010,
        name: "E0010",
        title: "name defined twice",
        explanation: "Two items of the same kind have the same name (possibly in different files brought in
by `import`). Each name must be unique within its kind.

Example:

    machine wafer { ... }
    machine wafer { ... }              // error: machine `wafer` is defined twice",
    },
    Entry {
        code: Code::E0011,
        name: "E0011",
        title: "import failed",
        explanation: "An `import` names a file that cannot be read. Paths are relative to the file that holds
the import. A file imported twice, or in a cycle, is read once.

Example:

    import \"machines/wafer.moe\"        // error: cannot read `machines/wafer.moe`: not found",
    },
    Entry {
        code: Code::E0012,
        name: "E0012",
        title: "top_k larger than the number of experts",
        explanation: "Each token is routed to `top_k` distinct experts, so `top_k` cannot exceed `experts`.

Example:

    moe { experts = 8; top_k = 16 }    // error: top_k = 16 but the layer has only 8 experts",
    },
    Entry {
        code: Code::E0013,
        name: "E0013",
        title: "inconsistent expert groups",
        explanation: "Group-limited routing (DeepSeek's node-limited routing) splits the experts into `groups`
equal groups and keeps the best `topk_groups` of them. So `groups` must divide `experts`,
`topk_groups` must be at most `groups`, and the kept groups must hold at least `top_k`
experts.

Example:

    moe { experts = 256; groups = 7; topk_groups = 4; top_k = 8 }   // error: 7 does not divide 256",
    },
    Entry {
        code: Code::E0014,
        name: "E0014",
        title: "an expert does not fit a die",
        explanation: "One expert's weights are larger than one die's memory, so no expert-parallel placement
can hold it. The message names both sizes. Shard the expert (a later `parallel` form) or
use a machine with more memory per die.

Example:

    machine tiny { die { memory = 16 MiB; ... } }
    plan p { model = deepseek_v3; machine = tiny; ... }  // error: an expert of deepseek_v3 needs 84 MiB, a die of tiny has 16 MiB",
    },
    Entry {
        code: Code::E0015,
        name: "E0015",
        title: "invalid defect",
        explanation: "A `defects` entry names a die outside the machine, a link between dies that are not
neighbours, a die listed twice, or uses mesh coordinates on a switch or cluster.

Example:

    machine w { topology = mesh(8, 8); defects { die(9, 2) } }   // error: die (9, 2) is outside the 8x8 mesh",
    },
    Entry {
        code: Code::E0016,
        name: "E0016",
        title: "machine unusable after defects",
        explanation: "The defects leave no working die, or cut the mesh so that some working dies cannot
reach others. The message names one pair that cannot talk.

Example:

    defects { link((3, 0), (4, 0)); link((3, 1), (4, 1)); ... }   // every link across x = 3.5: the wafer is cut in two",
    },
    Entry {
        code: Code::E0017,
        name: "E0017",
        title: "unknown choice",
        explanation: "A setting that takes one of a fixed set of names (dtype, activation, gate, phase,
routing, placement, ...) got a name outside that set. The hint lists the choices.

Example:

    model m { dtype = bf17 }           // error: unknown dtype `bf17`; did you mean `bf16`?",
    },
    Entry {
        code: Code::E0018,
        name: "E0018",
        title: "bad call arguments",
        explanation: "A call such as `mesh(8, 8)`, `cluster(nodes = 2, per_node = 8)`, `zipf(s = 1.2)` or
`die(7, 7)` got the wrong number or kind of arguments, or an argument name it does not take.

Example:

    topology = mesh(8)                 // error: mesh takes two sizes: mesh(x, y)",
    },
    Entry {
        code: Code::E0019,
        name: "E0019",
        title: "input cannot be read",
        explanation: "The file is not UTF-8 text, is larger than moec reads (16 MiB), or nests brackets more
deeply than 64 levels. moec refuses such input before parsing it.",
    },
    Entry {
        code: Code::E0020,
        name: "E0020",
        title: "placement does not fit",
        explanation: "After a pass placed the model, some die holds more than its memory: weights of the
experts and replicated layers placed on it plus its share of the KV cache. The message names
the die and the sizes. Use more dies, a placement that spreads experts further, or a
smaller batch or context. `--emit placement --pad-slots` gives this code too when the repeated
expert slots it adds would not fit a die's free memory.",
    },
    Entry {
        code: Code::E0021,
        name: "E0021",
        title: "no such plan or pass",
        explanation: "`--plan NAME` names a plan the file does not define, the file defines no plan, or
`--passes` / `--print-after` names a pass that does not exist. The hint lists what exists.",
    },
    Entry {
        code: Code::E0022,
        name: "E0022",
        title: "routing trace not found",
        explanation: "A workload's `routing = trace(\"...\")` names a file that does not exist. Paths are relative
to the .moe file.",
    },
    Entry {
        code: Code::E0023,
        name: "E0023",
        title: "inconsistent setting",
        explanation: "Two settings contradict each other: a model with `dense_layers` but no `dense_ffn`,
more dense layers than layers, a workload in the prefill phase with a `context` instead of a
`seq_len`, a machine whose io edges are given on a switch, a plan whose `attention = tp(k)`
cannot split the model's heads (or GQA's key/value heads) evenly or needs more dies than the
machine has alive. The message names both.",
    },
    Entry {
        code: Code::E0024,
        name: "E0024",
        title: "token domains need attention groups",
        explanation: "`placement = er_mapping` and `placement = tp_contiguous` lay out MoEntwine's token domains:
each takes one die from every tensor-parallel attention group, so the group's all-gather puts every
token in every domain and dispatch and combine can stay inside one. A plan with data-parallel
attention has no groups to take them from. Add `attention = tp(k)`; on an 8x8 wafer `tp(16)` gives
2x2-die domains.",
    },
    Entry {
        code: Code::E0030,
        name: "E0030",
        title: "routing data cannot be read",
        explanation: "A workload's `routing = counts(\"...\")` (or its `crosslayer = \"...\"`) names a file that does
not exist, cannot be read, is not UTF-8 text or is larger than moec reads (16 MiB). Paths are
relative to the .moe file.

Example:

    routing = counts(\"traces/expert_counts.jsn\")   // error: no such file

Fix: `counts(\"traces/expert_counts.json\")`. An SGLang record of many steps can be summed
over its steps first to make it smaller.",
    },
    Entry {
        code: Code::E0031,
        name: "E0031",
        title: "malformed routing data",
        explanation: "A count file is none of the kinds moec reads, or breaks its own rules: JSON that does not
parse, counts that are not whole numbers >= 0, layers of one model with different numbers of
experts, a CSV without the header `model,domain,variant,layer,expert,count` or with a bad row,
a crosslayer matrix that is not square or pairs layers the counts do not record, a layer with
no counts at all. The message names the file and, where it can, the line or the entry.
docs/TRACES.md describes the formats: the OLMoE routing analysis's JSON and CSV, its crosslayer
file, and SGLang's `logical_count`.",
    },
    Entry {
        code: Code::E0032,
        name: "E0032",
        title: "no such entry in routing data",
        explanation: "`counts(...)` asks a file for a model, domain or variant it does not hold (or leaves out the
model of a file that holds several), or the crosslayer file lacks what the counts were chosen
by. The message lists what the file has.

Example:

    routing = counts(\"expert_counts.json\", model = \"mixtral\")
    // error: expert_counts.json has no model `mixtral` (it has: mistral, olmoe, ...)

Fix: `model = \"mistral\"`. Leaving `domain` out pools every domain.",
    },
    Entry {
        code: Code::E0033,
        name: "E0033",
        title: "routing counts do not fit the model",
        explanation: "A plan runs a model under counts recorded for another: a different number of experts or
top_k, a counted layer that is not an MoE layer of the model, an SGLang record with another
number of layers (or an MoE layer without counts), fewer experts with counts than top_k, or an
expert with more than 1/top_k of a layer's selections (no token chooses an expert twice, so the
counts were recorded with a smaller top_k).

Example:

    model m { ... moe { experts = 16; top_k = 2 } }
    workload w { ... routing = counts(\"expert_counts.json\", model = \"mistral\") }   // 8 experts
    plan p { model = m; workload = w; ... }   // error: the counts cover 8 experts but m has 16",
    },
    Entry {
        code: Code::E0034,
        name: "E0034",
        title: "calibration target cannot be reached",
        explanation: "`calibrated(skew = ..., dependency = ...)` asks for figures no Zipf popularity and layer
correlation give on the plan's model: a skew (max / mean expert load) below 1, or above
experts / top_k (the hottest expert chosen by every token); a dependency below what
independent layers already show (popularity alone puts tokens among the 4 most frequent
successors) or above what `layer_corr = 1` gives; a dependency on a model with one MoE layer;
a per-layer skew list whose length is not the number of MoE layers. The message gives the
reachable bound.

Example:

    routing = calibrated(skew = 5)   // on 8 experts, top-2: max / mean is at most 4",
    },
    Entry {
        code: Code::E0035,
        name: "E0035",
        title: "placement file cannot be read",
        explanation: "A plan's `placement = file(\"...\")` names a file that cannot be read: it does not exist,
is not readable, or is larger than 16 MiB. Paths are relative to the .moe file that holds the
plan, like `import` and `trace(\"...\")`.

Example:

    plan p { model = m; machine = w; workload = d; placement = file(\"eplb.json\") }
                                                           // error: no eplb.json beside the file

Fix: write the placement first (`moec compile FILE --plan eplb --emit placement --format sglang
-o eplb.json`) or correct the path.",
    },
    Entry {
        code: Code::E0036,
        name: "E0036",
        title: "malformed placement file",
        explanation: "A placement file is not one of the formats moec reads (docs/PLACEMENT_FORMATS.md): SGLang's
`{\"physical_to_logical_map\": [...]}`, vllm-ascend's expert map (`moe_layer_count`,
`layer_list`), TensorRT-LLM's `moe_load_balancer.yaml` (`num_slots`,
`initial_global_assignments`, `layer_updates_per_iter`) or moec's own versioned JSON. The
message says what is wrong and where: invalid JSON or YAML, a missing or unknown key, a value
of the wrong type, an unsupported version, or content of another format than `format = ...`
names. YAML anchors and aliases are refused (a placement never needs them, and they can make a
small file expand without bound).

Example:

    {\"physical_to_logical_map\": [[0, 1], [2, \"3\"]]}     // error: \"3\" is a string

Fix: expert ids are integers.",
    },
    Entry {
        code: Code::E0037,
        name: "E0037",
        title: "placement file does not match the model",
        explanation: "A placement file describes another model than the plan's: a different number of layers or
MoE layers, a layer that is not an MoE layer of this model, an expert id outside
`0..experts`, or an MoE layer in which some expert has no replica at all (its tokens would have
nowhere to go). The same code is given when a placement is asked of a model without MoE
layers.

Example: a file written for DeepSeek-V3 (61 layers, 256 experts) read into a plan for
Mixtral-8x7B (32 layers, 8 experts).

Fix: export the placement from a plan of the same model, or point the plan at the model the
file was written for.",
    },
    Entry {
        code: Code::E0038,
        name: "E0038",
        title: "placement file does not match the machine",
        explanation: "A placement file's devices are not the machine's alive dies. The engine formats number
devices 0, 1, ... and moec maps device d to the d-th alive die in id order, so the file must
have exactly as many devices as the machine has alive dies. moec's own format names dies by
id and name: every die it names must exist on this machine, be alive, and have that name.

Example: a vllm-ascend map with `device_count: 8` read into a plan on a 64-die wafer.

Fix: export the placement for this machine, or use the machine it was written for.",
    },
    Entry {
        code: Code::E0039,
        name: "E0039",
        title: "unequal slots per device",
        explanation: "Serving engines give every device the same number of expert slots in every MoE layer
(SGLang: physical experts divided by devices; vllm-ascend: one tensor of layers by devices by
slots; TensorRT-LLM: `num_slots` divided by devices). Reading, the file's slots do not divide
evenly over the devices or differ between devices or layers. Writing, the compiled placement
holds more experts on some dies than on others, which the engine formats cannot express. The
message names the dies and their counts.

Example: `round_robin` of 256 experts over 63 alive dies puts 5 experts on some dies and 4 on
others. EPLB gives every die the same number of slots, but when its packing puts two slots of
one expert on one die, moec holds that expert there once, and the die is one expert short.

Fix: `--pad-slots` fills each short die's spare slots with its own experts again (read back,
they are the same replica; each is a copy of the weights the engine holds, so it must fit the
die's free memory, else E0020); or `--format moec`, which records any placement; or a
placement with equal experts per die.",
    },
    Entry {
        code: Code::E0040,
        name: "E0040",
        title: "parallel form does not fit the machine",
        explanation: "A plan's `parallel = tp(k)` or `moeshard(k)` splits every expert over groups of `k`
dies, but the machine has fewer than `k` alive dies, or the expert's FFN has fewer than `k`
columns to split. The message names both sizes.

Example:

    parallel = moeshard(128)           // error: a 64-die wafer has no group of 128

Fix: a group size between 1 and the alive dies; `tp` or `moeshard` without a size takes all of
them.",
    },
    Entry {
        code: Code::E0041,
        name: "E0041",
        title: "migration cannot run on this plan",
        explanation: "A plan's `migration = ...` moves whole experts between dies while the run goes on,
planned from the expert loads observed step by step. It cannot run when the plan's `parallel`
splits experts over dies (`tp(k)`, `moeshard`, `hybrid`, ...: a split expert has no one die to
move from), nor when the workload's `routing = gate` decides the routing only inside the numeric
run (there is nothing to observe when the plan is compiled).

Example:

    parallel = moeshard
    migration = ni_balancer            // error: MoEShard splits every expert

Fix: `parallel = ep` (the default) with migration, or `migration = none`; a workload routing
source such as `zipf(s = 0.3, drift = 0.02)`, a trace or recorded counts.",
    },
    Entry {
        code: Code::E0042,
        name: "E0042",
        title: "input file cannot be read",
        explanation: "A file named on the command line (the .moe file of `check`, `compile`, `run`, `compare`
and `fmt`, or a schedule given to `run`) does not exist, cannot be read, is not a regular file
(a directory, a device, a FIFO: moec never blocks on or drains one), or is larger than moec
reads: 16 MiB for a .moe file, 1 GiB for a schedule.

Example:

    moec check exmaples/deepseek-v3-wafer.moe      // error: no such file

Fix: correct the path.",
    },
    Entry {
        code: Code::E0043,
        name: "E0043",
        title: "malformed schedule file",
        explanation: "A schedule given to `moec run plan.json` is not one `moec compile --emit schedule` writes:
JSON that does not parse, a missing or mistyped field, another schedule version, or content
that does not hold together (a die, layer, expert or link index out of range, a size past the
language's bounds, a die program whose dependencies cannot all be met). The message says what
and, for JSON errors, the line and column. Schedules are moec's own interchange format; edit
the .moe file and compile again rather than the JSON.",
    },
    Entry {
        code: Code::E0044,
        name: "E0044",
        title: "bad fault",
        explanation: "A `--fail` of `moec run` does not name a fault the run can inject: it does not parse as
`die(x, y)@step=N`, `die(i)@step=N` or `link((x1, y1), (x2, y2))@step=N`, names a die or link the
machine does not have (or one a defect already took), fails a die on a machine that would be
left without a live die or cut in two, or gives a step past the run's last. The span marks the
part of the spec that is wrong.

Example:

    moec run tiny.moe --fail 'die(9, 9)@step=3'     // error: outside the 2x2 mesh

Fix: `--fail 'die(1, 1)@step=3'`.",
    },
    Entry {
        code: Code::E0045,
        name: "E0045",
        title: "routing trace cannot be used",
        explanation: "A workload's `routing = trace(\"...\")` names a file that cannot be read (not a regular file, or
larger than 1 GiB), that is not a moec routing trace
(docs/TRACES.md: JSON with `format = \"moec-routing-trace\"`, version 1, `experts`, `top_k`,
`layers` and `steps`), breaks its rules (an expert id past `experts`, a token with a repeated
expert, a step whose choices are not `tokens x top_k`), or does not fit a plan's model: another
number of experts or top_k, a recorded layer that is not one of the model's MoE layers, or an
MoE layer with no recorded choices. It is checked with the plan, before anything is compiled.
A run of a compiled schedule reads the trace again and reports the same code, as it does for
`routing = gate` with `--no-numerics` (the gate decides only in the numeric run).

Example:

    model m { ... moe { experts = 64; top_k = 6 } }
    workload w { ... routing = trace(\"deepseek-v3.trace.json\") }   // 256 experts, top 8

Fix: record the trace on the model the plan runs, or run the model it was recorded on.",
    },
    Entry {
        code: Code::E0046,
        name: "E0046",
        title: "plan too large to compile and simulate",
        explanation: "Each size the language bounds is safe alone; their products are not. Before any work, moec
estimates what a plan will cost from four products and refuses one past its limit, saying
which, its factors and the limit (docs/ARCHITECTURE.md, \"Where limits are enforced\"):
alive dies x layers (2^18: a program per die with instructions for every layer), MoE layers x
experts (2^23 nodes of IR), tokens x top_k x MoE layers in one step (2^28 routing choices),
and for a migration policy, steps x MoE layers it plans over (2^20) and, for NI-Balancer,
4,096 dies (its cold-route table grows as dies^2).

Example:

    model m { layers = 61 ... }
    machine g { topology = mesh(256, 256) ... }   // 65,536 dies x 61 layers = 3,997,696

Fix: a smaller machine, fewer layers (a step's cost repeats per layer, so a few layers give
the per-layer figures), a smaller batch, or fewer steps.",
    },
    Entry {
        code: Code::E0047,
        name: "E0047",
        title: "the numeric check failed",
        explanation: "`moec run` computes every step's numeric tokens twice: on the dies, as the schedule moves
them (the distributed executor), and on one device (the dense reference), with the same
weights and routing. Their final hidden states and logits must agree within a tolerance:
1e-3 of each row's largest value at a reduced width, 1e-4 at the model's full width (the
tests measure below 1e-5). A run past it writes its report, then exits 1 naming the step,
the first layer whose output differs, the token, its home die and the two values.

Example:

    moec run plan.json        // a schedule edited by hand that drops a dispatch

Fix: a schedule moec wrote that fails is a bug in moec: report it with the file. A schedule
edited by hand must keep every token's rows reaching its experts and coming back.",
    },
    Entry {
        code: Code::E0048,
        name: "E0048",
        title: "placement a file cannot express",
        explanation: "A placement file (SGLang's, vllm-ascend's, TensorRT-LLM's or moec's own) says which whole
experts each device holds, once. Two kinds of plan hold more than that, and writing them would
change the placement without a word: experts split over dies (`parallel = tp(k)`, MoEShard,
HD-MoE's hybrid: the file would claim a whole replica on every part's die), and experts moved
during the run (`migration = ...`: the file would hold only the first step's layout).

Example:

    plan p { ... placement = eplb; parallel = tp(2) }
    moec compile f.moe --plan p --emit placement --format sglang

Fix: export the placement before the split or the policy, `--passes 'place(eplb)'`, and set
the engine's own tensor parallelism or rebalancing; or keep the schedule (`--emit schedule`),
which records both.",
    },
    Entry {
        code: Code::W0001,
        name: "W0001",
        title: "every expert is active",
        explanation: "top_k equals the number of experts: every token visits every expert, so the layer is a
dense layer with extra steps, and placement choices cannot change the traffic.",
    },
    Entry {
        code: Code::W0002,
        name: "W0002",
        title: "setting has no effect here",
        explanation: "A setting is legal but does nothing in this context, such as `routing = yx` on a switch
topology (a switch has no dimension order), or `topk_groups = groups` (group limiting keeps
every group).",
    },
    Entry {
        code: Code::W0003,
        name: "W0003",
        title: "suspicious magnitude",
        explanation: "A quantity is legal but far outside what real hardware has (a link latency above 1 ms, a
die under 1 GFLOPS, memory bandwidth above 1 PB/s). Often a unit slip such as `us` for `ns`.",
    },
];

impl Code {
    fn entry(self) -> &'static Entry {
        // The table lists every variant; the fallback keeps this total.
        TABLE.iter().find(|e| e.code == self).unwrap_or(&TABLE[0])
    }

    /// `"E0001"` and so on.
    pub fn as_str(self) -> &'static str {
        self.entry().name
    }

    /// A few words on what the code means.
    pub fn title(self) -> &'static str {
        self.entry().title
    }

    /// The long explanation with an example.
    pub fn explanation(self) -> &'static str {
        self.entry().explanation
    }

    /// Looks a code up by name, case-insensitively (`e0003` works).
    pub fn parse(name: &str) -> Option<Code> {
        TABLE
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(name.trim()))
            .map(|e| e.code)
    }

    /// Every code, in order.
    pub fn all() -> impl Iterator<Item = Code> {
        TABLE.iter().map(|e| e.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_entry_named_after_it() {
        for (i, e) in TABLE.iter().enumerate() {
            assert_eq!(format!("{:?}", e.code), e.name);
            assert_eq!(Code::parse(e.name), Some(e.code));
            assert!(TABLE[..i].iter().all(|o| o.code != e.code), "{} listed twice", e.name);
        }
    }
}
