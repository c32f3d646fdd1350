//! Checking a `plan` item: which model runs on which machine under which
//! workload, and which pass choices compile it.

use super::reader;
use super::reader::BlockReader;
use super::suggest::did_you_mean;
use super::Program;
use crate::diag::{Code, Diagnostic};
use crate::ir::{Form, FormKind, Pools};
use crate::passes::{MigrationPolicy, OverlapChoice, PlainOverlap};
use crate::placement_file::Format;
use crate::syntax::ast::{Block, Call, Decl, Value, ValueKind};
use crate::syntax::Span;
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::model::AttentionSpec;
use moec_runtime::routing::calibrate::{self, Calibration, CalibrationError, CalibrationTarget};
use moec_runtime::schedule::Transport;
use moec_runtime::units::Bytes;
use moec_runtime::workload::RoutingSource;

/// How experts are assigned to dies. Each choice is a placement pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementChoice {
    /// Expert e of every layer on die e mod N (the expert-parallel baseline).
    RoundRobin,
    /// Contiguous blocks of expert ids per die (Megatron-LM's default).
    Contiguous,
    /// DeepSeek's EPLB as upstream's `rebalance_experts` runs it: the
    /// hierarchical policy when the expert groups divide over the nodes,
    /// else the global one (`passes/place/eplb.rs`).
    Eplb,
    /// DeepSeek's EPLB, hierarchical policy: expert groups packed onto
    /// nodes (cluster nodes or wafers), then replicated and packed inside
    /// each node.
    EplbHierarchical,
    /// DeepSeek's EPLB, global policy: replicate the hottest experts into
    /// redundant slots, pack heaviest-first onto the lightest die.
    EplbGlobal,
    /// MoETuner: ILP 1 clusters each layer's experts by load, ILP 2 places
    /// the clusters on dies so tokens moving between consecutive layers
    /// cross cheap links.
    MoeTuner,
    /// MoEntwine's ER-Mapping (HER-Mapping on several wafers): attention
    /// groups entwined so every token domain is a compact block; dispatch
    /// and combine inside domains; experts balanced as EPLB packs them.
    ErMapping,
    /// The baseline ER-Mapping is measured against: compact attention
    /// groups, token domains of the members at one ring position (spread
    /// over the wafer); experts as in `er_mapping`.
    TpContiguous,
    /// HD-MoE: NodeBalance's program splits each layer's experts over the
    /// dies (placed as replicas until expert tensor parallelism exists),
    /// then LinkBalance maps the nodes onto mesh positions by simulated
    /// all-to-all time.
    HdMoe,
    /// Every placement above that applies to the plan, each timed on the
    /// simulator; the fastest is kept (`passes/place/auto.rs`).
    Auto,
    /// `file("path")`: the experts exactly where a placement file says
    /// (`docs/PLACEMENT_FORMATS.md`); `path` as written, relative to the
    /// .moe file; `format` when given, else told from the content; `span`
    /// is the `file(...)` call, where problems with the file are reported.
    File {
        path: String,
        format: Option<Format>,
        span: Span,
    },
}

impl PlacementChoice {
    /// Every choice, with its spelling in the language.
    pub const ALL: &'static [(&'static str, PlacementChoice)] = &[
        ("round_robin", PlacementChoice::RoundRobin),
        ("contiguous", PlacementChoice::Contiguous),
        ("eplb", PlacementChoice::Eplb),
        ("eplb_hierarchical", PlacementChoice::EplbHierarchical),
        ("eplb_global", PlacementChoice::EplbGlobal),
        ("moetuner", PlacementChoice::MoeTuner),
        ("er_mapping", PlacementChoice::ErMapping),
        ("tp_contiguous", PlacementChoice::TpContiguous),
        ("hd_moe", PlacementChoice::HdMoe),
        ("auto", PlacementChoice::Auto),
    ];

    /// Whether the choice lays out attention groups and token domains, and
    /// so needs `attention = tp(k)`.
    pub fn needs_tensor_parallel_attention(&self) -> bool {
        matches!(self, PlacementChoice::ErMapping | PlacementChoice::TpContiguous)
    }

    /// Whether the choice adds `redundant_experts` replicas: the choices
    /// `place(...)` packs with EPLB (its match arm lists the same five).
    pub fn replicates(&self) -> bool {
        matches!(
            self,
            PlacementChoice::Eplb
                | PlacementChoice::EplbHierarchical
                | PlacementChoice::EplbGlobal
                | PlacementChoice::ErMapping
                | PlacementChoice::TpContiguous
        )
    }

    /// Whether the choice can place a plan whose attention layers are split
    /// over `attention_ways` dies (1: data-parallel).
    pub fn applies_with(&self, attention_ways: u32) -> bool {
        !self.needs_tensor_parallel_attention() || attention_ways > 1
    }

    /// The spelling in the language (and the pass argument: `place(round_robin)`).
    pub fn name(&self) -> &'static str {
        if let PlacementChoice::File { .. } = self {
            return "file";
        }
        Self::ALL
            .iter()
            .find(|(_, c)| c == self)
            .map(|(n, _)| *n)
            .unwrap_or("round_robin")
    }
}

/// In what form the experts live (`parallel = ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParallelChoice {
    /// One form for every MoE layer.
    Fixed(Form),
    /// A form per layer chosen by equality saturation over the machine
    /// model's cost (`passes/parallel/select_parallel.rs`).
    Auto,
}

impl ParallelChoice {
    /// The forms `moec compare` shows beside the placements, for a machine
    /// of `alive` dies whose attention groups are `attention_ways` wide:
    /// EP; TP over the attention groups (or 2) and over every die;
    /// MoEShard over every die; HD-MoE's hybrid and its compute-balanced
    /// baseline; auto.
    pub fn compared(alive: u32, attention_ways: u32) -> Vec<ParallelChoice> {
        let group = if attention_ways > 1 { attention_ways } else { 2 };
        let mut kinds = vec![FormKind::Ep];
        if group < alive {
            kinds.push(FormKind::Tp(group));
        }
        kinds.extend([
            FormKind::Tp(alive),
            FormKind::Shard(alive),
            FormKind::Hybrid,
            FormKind::ComputeBalanced,
        ]);
        let mut out: Vec<ParallelChoice> = kinds
            .into_iter()
            .map(|kind| ParallelChoice::Fixed(Form { kind, fused: true }))
            .collect();
        out.push(ParallelChoice::Auto);
        out
    }

    /// The pass argument: `parallel(tp(4))`, `parallel(auto)`.
    pub fn pass(self) -> String {
        match self {
            ParallelChoice::Fixed(form) => format!("parallel({form})"),
            ParallelChoice::Auto => "parallel(auto)".into(),
        }
    }
}

impl std::fmt::Display for ParallelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParallelChoice::Fixed(form) => write!(f, "{form}"),
            ParallelChoice::Auto => write!(f, "auto"),
        }
    }
}

/// How attention layers are spread over dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionParallel {
    /// Every die holds all attention weights and serves its share of the batch.
    DataParallel,
    /// Groups of this many dies split every attention layer by heads (an
    /// all-gather before, a reduce-scatter after, on a ring); each group
    /// serves its share of the batch.
    TensorParallel(u32),
}

impl AttentionParallel {
    /// Dies one attention layer is split over (1: data-parallel).
    pub fn ways(self) -> u32 {
        match self {
            AttentionParallel::DataParallel => 1,
            AttentionParallel::TensorParallel(k) => k,
        }
    }
}

/// A checked plan: indices into the [`Program`]'s items.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub model: usize,
    pub machine: usize,
    pub workload: usize,
    pub placement: PlacementChoice,
    /// Extra expert slots per layer for placements that replicate (EPLB);
    /// `None`: one per alive die.
    pub redundant_experts: Option<u64>,
    pub attention: AttentionParallel,
    /// The experts' form (`parallel = ...`; EP when absent).
    pub parallel: ParallelChoice,
    /// What moves experts while the run goes on (`migration = ...`).
    pub migration: MigrationPolicy,
    /// How a step's work overlaps on each die (`overlap = ...`; none when absent).
    pub overlap: OverlapChoice,
    /// Attention and experts on separate dies (`disaggregate { ... }`).
    pub pools: Option<Pools>,
    /// How the all-to-alls move their messages (`transfers = ...`; direct
    /// when absent).
    pub transport: Transport,
    /// DeepSpeed-MoE's fixed expert capacity (`capacity_factor = F`, the
    /// baseline MoEShard is measured against): every die sends each expert
    /// a padded buffer of `max(ceil(k T F / E), 4)` rows. `None`: none.
    pub capacity_factor: Option<f64>,
    /// With `routing = calibrated(...)`: the solved parameters and the
    /// figures they achieve on this plan's model (`moec check` prints them).
    pub calibration: Option<Calibration>,
    pub span: Span,
}

/// Reads a plan against the items already checked in `program`.
pub fn check(decl: &Decl, program: &Program, diags: &mut Vec<Diagnostic>) -> Option<Plan> {
    let what = format!("plan `{}`", decl.name.text);
    let mut r = BlockReader::new(&what, decl.name.span, &decl.body);
    let model = reference(&mut r, "model", "model = deepseek_v3", &program.model_names(), diags);
    let machine = reference(
        &mut r,
        "machine",
        "machine = wafer_8x8",
        &program.machine_names(),
        diags,
    );
    let workload = reference(
        &mut r,
        "workload",
        "workload = decode",
        &program.workload_names(),
        diags,
    );
    let placement_names: Vec<&str> = PlacementChoice::ALL.iter().map(|(n, _)| *n).collect();
    let placement = match r.value("placement") {
        Some(v) => match &v.kind {
            ValueKind::Call(c) if c.name.text == "file" => r.check(file_placement(c)),
            ValueKind::Call(c) => {
                let calls = [placement_names.as_slice(), &["file"]].concat();
                r.check(Err(reader::unknown_choice(
                    c.name.span,
                    "placement",
                    &c.name.text,
                    &calls,
                )))
            }
            _ => r
                .check(reader::choice(v, "placement", &placement_names))
                .and_then(|name| {
                    PlacementChoice::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, c)| c.clone())
                }),
        },
        None => Some(PlacementChoice::RoundRobin),
    };
    let attention_span = r.span_of("attention").unwrap_or(decl.name.span);
    let placement_span = r.span_of("placement").unwrap_or(decl.name.span);
    let attention = match r.value("attention") {
        Some(v) => r.check(attention_parallel(v)),
        None => Some(AttentionParallel::DataParallel),
    };
    let redundant_experts = r.int("redundant_experts", 0, 1 << 20);
    let alive = program
        .machine(machine.flatten().unwrap_or(usize::MAX))
        .map(|m| m.alive_dies().len() as u32);
    let ffn = program
        .model(model.flatten().unwrap_or(usize::MAX))
        .and_then(|m| m.moe.as_ref().map(|moe| moe.expert_ffn));
    let parallel = match r.value("parallel") {
        Some(v) => r.check(parallel_choice(v, alive, ffn)),
        None => Some(ParallelChoice::Fixed(Form::EP)),
    };
    let parallel_ok = parallel.is_some();
    let migration_span = r.span_of("migration");
    let migration = match r.value("migration") {
        Some(v) => super::migration::migration_policy(v, diags),
        None => Some(MigrationPolicy::None),
    };
    let migration_ok = migration.is_some();
    let overlap = match r.value("overlap") {
        Some(v) => r.check(overlap_choice(v)),
        None => Some(OverlapChoice::Fixed(PlainOverlap::None)),
    };
    let transport = match r.choice("transfers", &["direct", "m2n", "nccl"]) {
        Some((name, _)) => Transport::ALL.into_iter().find(|t| t.name() == name),
        None => Some(Transport::Direct),
    };
    let capacity_span = r.span_of("capacity_factor");
    let capacity_factor = r.float("capacity_factor", 1.0, 1.0e6);
    let pools_section = r.plain_section("disaggregate");
    // `None`: a pools section that could not be read (reported).
    let pools: Option<Option<Pools>> = match pools_section {
        None => Some(None),
        Some((_, body, span)) => program
            .machine(machine.flatten().unwrap_or(usize::MAX))
            .and_then(|m| pools(&what, m, (body, span), diags))
            .map(Some),
    };
    let model_span = r.span_of("model").unwrap_or(decl.name.span);
    diags.extend(r.finish());

    let plan = Plan {
        name: decl.name.text.clone(),
        model: model??,
        machine: machine??,
        workload: workload??,
        placement: placement?,
        redundant_experts,
        attention: attention?,
        parallel: parallel?,
        migration: migration?,
        overlap: overlap?,
        pools: pools?,
        transport: transport?,
        capacity_factor,
        calibration: None,
        span: decl.name.span,
    };
    if !(parallel_ok && migration_ok) {
        return None;
    }
    if let Some(span) = migration_span {
        if !migration_fits(program, &plan, span, diags) {
            return None;
        }
    }
    if let (Some((_, _, span)), Some(_)) = (pools_section, &plan.pools) {
        // Experts whole or split over groups of the expert pool (tp_e), as
        // MegaScale-Infer's; attention may be either (tp_a groups stay in
        // the attention pool).
        let experts_ok =
            matches!(plan.parallel, ParallelChoice::Fixed(f) if matches!(f.kind, FormKind::Ep | FormKind::Tp(_)));
        if !experts_ok {
            diags.push(
                Diagnostic::error(
                    Code::E0018,
                    span,
                    format!("{what} puts attention and experts on separate pools"),
                )
                .with_label("disaggregated here")
                .with_hint(
                    "pools take attention = dp or tp(k) and parallel = ep or tp(k) (each group inside its pool)",
                ),
            );
            return None;
        }
    }
    if let Some(span) = capacity_span.filter(|_| plan.capacity_factor.is_some()) {
        if !capacity_fits(&plan, span, diags) {
            return None;
        }
    }
    let fits = expert_fits(program, &plan, decl, diags);
    let splits = attention_splits(program, &plan, attention_span, diags);
    let domains = token_domains_have_groups(&plan, placement_span, diags);
    let routing = routing_fits(program, &plan, model_span, diags);
    let (true, true, true, Some(calibration)) = (fits, splits, domains, routing) else {
        return None;
    };
    Some(Plan { calibration, ..plan })
}

/// E0023: a fixed capacity is DeepSpeed-MoE's expert parallelism: one
/// whole copy of each expert, attention and experts on the same dies.
fn capacity_fits(plan: &Plan, span: Span, diags: &mut Vec<Diagnostic>) -> bool {
    let ep = matches!(plan.parallel, ParallelChoice::Fixed(f) if f.kind == FormKind::Ep);
    let single = matches!(
        plan.placement,
        PlacementChoice::RoundRobin | PlacementChoice::Contiguous
    );
    let problem = if !ep {
        Some("`parallel` splits the experts")
    } else if !single {
        Some("this `placement` may give an expert several copies")
    } else if plan.pools.is_some() {
        Some("`disaggregate` puts the experts on their own pool")
    } else if plan.migration != MigrationPolicy::None {
        Some("`migration` moves and replicates experts")
    } else {
        None
    };
    let Some(problem) = problem else {
        return true;
    };
    diags.push(
        Diagnostic::error(
            Code::E0023,
            span,
            format!("`capacity_factor` pads each expert's one copy, but {problem}"),
        )
        .with_label("a fixed capacity here")
        .with_hint("a fixed capacity is DeepSpeed-MoE's EP: parallel = ep with placement = contiguous or round_robin"),
    );
    false
}

/// E0041: migration moves whole experts, planned from routing known
/// before the run.
fn migration_fits(program: &Program, plan: &Plan, span: Span, diags: &mut Vec<Diagnostic>) -> bool {
    if plan.migration == MigrationPolicy::None {
        return true;
    }
    let split = !matches!(plan.parallel, ParallelChoice::Fixed(f) if f.kind == FormKind::Ep);
    let gate = program
        .workload(plan.workload)
        .is_some_and(|w| matches!(w.routing, RoutingSource::Gate { .. }));
    let refusal = if split {
        Some((
            "it moves whole experts, and this plan's `parallel` splits them over dies",
            "drop `parallel` (or write `parallel = ep`), or `migration = none`",
        ))
    } else if gate {
        Some((
            "it plans from the routing observed step by step, and `routing = gate` decides only inside the numeric run",
            "give the workload a routing source such as zipf(s = 0.3, drift = 0.02) or a trace",
        ))
    } else {
        None
    };
    match refusal {
        Some((why, hint)) => {
            diags.push(super::migration::refuse(span, why, hint));
            false
        }
        None => true,
    }
}

/// `disaggregate { attention = KIND | [dies]; experts = KIND | [dies] }`:
/// two pools of alive dies, each named by a kind of the machine (`die` for
/// its own part) or by die ids; disjoint (E0018).
fn pools(what: &str, machine: &Machine, (body, span): (&Block, Span), diags: &mut Vec<Diagnostic>) -> Option<Pools> {
    let mut r = BlockReader::new(format!("the pools of {what}"), span, body);
    let spec = machine.spec();
    let mut kind_names: Vec<&str> = vec!["die"];
    kind_names.extend(spec.kinds.iter().map(|k| k.name.as_str()));
    let pool = |key: &'static str, r: &mut BlockReader| -> Option<Vec<DieId>> {
        let v = r.required(key, "attention = die` and `experts = l40s")?;
        let dies: Vec<DieId> = match &v.kind {
            ValueKind::Name(name) if kind_names.contains(&name.as_str()) => (0..machine.die_count())
                .map(DieId)
                .filter(|&d| spec.kind_name_of(d) == name)
                .collect(),
            ValueKind::Name(name) => {
                r.check::<()>(Err(reader::unknown_choice(v.span, "kind", name, &kind_names)));
                return None;
            }
            ValueKind::List(items) => {
                let ids: Result<Vec<u64>, Diagnostic> = items
                    .iter()
                    .map(|x| reader::int(x, key, 0, u64::from(machine.die_count().saturating_sub(1))))
                    .collect();
                r.check(ids)?.into_iter().map(|d| DieId(d as u32)).collect()
            }
            other => {
                r.check::<()>(Err(reader::wrong_type(
                    v,
                    key,
                    "a kind of die such as l40s, or a list of die ids",
                    other.describe(),
                )));
                return None;
            }
        };
        let mut alive: Vec<DieId> = dies.into_iter().filter(|&d| machine.is_alive(d)).collect();
        alive.sort_unstable();
        alive.dedup();
        if alive.is_empty() {
            r.check::<()>(Err(Diagnostic::error(
                Code::E0018,
                v.span,
                format!("the {key} pool has no alive die"),
            )
            .with_label("no alive die here")));
            return None;
        }
        Some(alive)
    };
    let attention = pool("attention", &mut r);
    let experts = pool("experts", &mut r);
    diags.extend(r.finish());
    let pools = Pools {
        attention: attention?,
        experts: experts?,
    };
    if let Some(d) = pools.overlap() {
        diags.push(
            Diagnostic::error(
                Code::E0018,
                span,
                format!("die {} is in both pools of {what}", machine.die_label(d)),
            )
            .with_label("these pools overlap")
            .with_hint("attention and experts go on disjoint dies"),
        );
        return None;
    }
    Some(pools)
}

/// E0024: a placement that lays out token domains needs tensor-parallel
/// attention groups to take them from.
fn token_domains_have_groups(plan: &Plan, span: Span, diags: &mut Vec<Diagnostic>) -> bool {
    if plan.placement.applies_with(plan.attention.ways()) {
        return true;
    }
    diags.push(
        Diagnostic::error(
            Code::E0024,
            span,
            format!(
                "`{}` lays out token domains over tensor-parallel attention groups, but this plan's attention is data-parallel",
                plan.placement.name()
            ),
        )
        .with_label("needs attention = tp(k)")
        .with_hint("add `attention = tp(16)` to the plan: on an 8x8 wafer, 16-die groups give 2x2-die token domains"),
    );
    false
}

/// `file("path")` or `file("path", format = "sglang")`.
fn file_placement(c: &Call) -> Result<PlacementChoice, Diagnostic> {
    const HINT: &str = "write file(\"placements/eplb.json\") or file(\"eplb.yaml\", format = \"trtllm\")";
    let mut path = None;
    let mut format = None;
    for a in &c.args {
        match (a.name.as_ref().map(|n| n.text.as_str()), &a.value.kind) {
            (None, ValueKind::Str(s)) if path.is_none() => path = Some(s.clone()),
            (None, other) if path.is_none() => {
                return Err(reader::wrong_type(
                    &a.value,
                    "file",
                    "a file name in quotes",
                    other.describe(),
                ))
            }
            (Some("format"), ValueKind::Str(s) | ValueKind::Name(s)) if format.is_none() => {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                format =
                    Some(Format::parse(s).ok_or_else(|| reader::unknown_choice(a.value.span, "format", s, &names))?);
            }
            (Some("format"), other) if format.is_none() => {
                return Err(reader::wrong_type(
                    &a.value,
                    "format",
                    "a format name in quotes",
                    other.describe(),
                ))
            }
            _ => {
                return Err(
                    Diagnostic::error(Code::E0018, a.value.span, "`file` does not take this argument")
                        .with_label("unexpected")
                        .with_hint(HINT),
                )
            }
        }
    }
    let path = path.ok_or_else(|| {
        Diagnostic::error(Code::E0018, c.span, "`file` needs the placement file's path")
            .with_label("no path")
            .with_hint(HINT)
    })?;
    Ok(PlacementChoice::File {
        path,
        format,
        span: c.span,
    })
}

/// E0033 / E0034: the workload's routing source on the plan's model.
/// Recorded counts must fit the model; a calibration must reach its
/// targets on it, and then its solution and achieved figures are kept
/// (the outer None is "refused").
fn routing_fits(
    program: &Program,
    plan: &Plan,
    model_span: Span,
    diags: &mut Vec<Diagnostic>,
) -> Option<Option<Calibration>> {
    let (Some(model), Some(workload)) = (program.model(plan.model), program.workload(plan.workload)) else {
        return None;
    };
    let Some(site) = program.routing_sites.get(plan.workload).cloned().flatten() else {
        return Some(None);
    };
    let used_by = format!("plan `{}` runs it on model `{}`", plan.name, model.name);
    match &workload.routing {
        RoutingSource::Counts { counts, .. } => match counts.fit(model) {
            Ok(()) => Some(None),
            Err(e) => {
                diags.push(
                    Diagnostic::error(Code::E0033, site.value, format!("{}: {e}", counts.source))
                        .with_label("these counts")
                        .with_secondary(model_span, used_by)
                        .with_hint("use counts recorded on this model, or a model with the counts' experts and top_k"),
                );
                None
            }
        },
        RoutingSource::Trace { path } => {
            let Some(trace) = &site.trace else { return Some(None) };
            match trace.fits(path, model, workload.tokens_per_step() as usize) {
                Ok(_) => Some(None),
                Err(e) => {
                    diags.push(
                        Diagnostic::error(Code::E0045, site.value, e)
                            .with_label("this trace")
                            .with_secondary(model_span, used_by)
                            .with_hint("record the trace on the plan's model, or run the model it was recorded on"),
                    );
                    None
                }
            }
        }
        RoutingSource::Calibrated {
            skew, dependency, seed, ..
        } => {
            let target = CalibrationTarget {
                skew: skew.clone(),
                dependency: *dependency,
            };
            match calibrate::calibrate(model, &target, *seed, calibrate::SAMPLE_TOKENS) {
                Ok(c) => Some(Some(c)),
                Err(e) => {
                    let at = match e {
                        CalibrationError::DependencyTooLow { .. }
                        | CalibrationError::DependencyTooHigh { .. }
                        | CalibrationError::FewExperts { .. }
                        | CalibrationError::OneLayer => site.arg("dependency"),
                        _ => site.arg("skew"),
                    };
                    diags.push(super::workload::calibration_error(&e, at).with_secondary(model_span, used_by));
                    None
                }
            }
        }
        _ => Some(None),
    }
}

/// `ep`, `tp`, `tp(k)`, `moeshard`, `moeshard(k)`, `hybrid`,
/// `compute_balanced`, each optionally with `fused = false` (`ep(fused =
/// false)`), or `auto`. A size must fit `alive` dies and `ffn` columns
/// (E0040); without one, all alive dies.
/// `overlap = none | two_batch | micro_batches(m) | chunked(d) |
/// chunked(auto) | monta(n) | monta(auto) | auto`.
fn overlap_choice(v: &Value) -> Result<OverlapChoice, Diagnostic> {
    match &v.kind {
        ValueKind::Name(n) if n == "chunked" || n == "monta" => {
            Err(
                Diagnostic::error(Code::E0018, v.span, format!("`{n}` needs a chunk count"))
                    .with_hint(format!("write {n}(4), or {n}(auto) for the paper's choice per layer")),
            )
        }
        ValueKind::Name(n) if OverlapChoice::names().contains(&n.as_str()) => {
            OverlapChoice::parse(n).map_err(|e| Diagnostic::error(Code::E0017, v.span, e))
        }
        ValueKind::Name(n) => Err(reader::unknown_choice(v.span, "overlap", n, OverlapChoice::SPELLINGS)),
        ValueKind::Call(c) if c.name.text == "micro_batches" => {
            let max = u64::from(moec_runtime::schedule::MAX_MICRO_BATCHES);
            match c.args.as_slice() {
                [a] if a.name.is_none() => {
                    reader::int(&a.value, "micro_batches", 1, max).map(|m| OverlapChoice::MicroBatches(m as u32))
                }
                _ => Err(
                    Diagnostic::error(Code::E0018, c.span, "`micro_batches` takes one count")
                        .with_hint("write micro_batches(3): the two-batch program with 3 micro-batches"),
                ),
            }
        }
        ValueKind::Call(c) if c.name.text == "chunked" || c.name.text == "monta" => {
            let name = c.name.text.as_str();
            let arg = match c.args.as_slice() {
                [a] if a.name.is_none() => &a.value,
                _ => {
                    return Err(Diagnostic::error(
                        Code::E0018,
                        c.span,
                        format!("`{name}` takes one chunk count, or auto"),
                    )
                    .with_hint(format!(
                        "write {name}(4), or {name}(auto) for the paper's choice per layer"
                    )))
                }
            };
            let by_model = matches!(&arg.kind, ValueKind::Name(n) if n == "auto");
            let d = match by_model {
                true => 0,
                false => reader::int(arg, name, 1, u64::from(moec_runtime::schedule::MAX_CHUNKS))? as u32,
            };
            Ok(match (name, by_model) {
                ("chunked", true) => OverlapChoice::ChunkedByModel,
                ("chunked", false) => OverlapChoice::Chunked(d),
                (_, true) => OverlapChoice::MontaByModel,
                (_, false) => OverlapChoice::Monta(d),
            })
        }
        ValueKind::Call(c) => Err(reader::unknown_choice(
            c.name.span,
            "overlap",
            &c.name.text,
            OverlapChoice::SPELLINGS,
        )),
        other => Err(reader::wrong_type(
            v,
            "overlap",
            "an overlap form such as two_batch or chunked(4)",
            other.describe(),
        )),
    }
}

fn parallel_choice(v: &Value, alive: Option<u32>, ffn: Option<u64>) -> Result<ParallelChoice, Diagnostic> {
    const FORMS: &[&str] = &["ep", "tp", "moeshard", "hybrid", "compute_balanced", "auto"];
    let all = alive.unwrap_or(1).max(1);
    let (name, args, span) = match &v.kind {
        ValueKind::Name(_) => (reader::choice(v, "parallel", FORMS)?, &[][..], v.span),
        ValueKind::Call(c) if FORMS.contains(&c.name.text.as_str()) && c.name.text != "auto" => (
            FORMS.iter().copied().find(|f| *f == c.name.text).unwrap_or("ep"),
            &c.args[..],
            c.span,
        ),
        ValueKind::Call(c) => return Err(reader::unknown_choice(c.name.span, "parallel", &c.name.text, FORMS)),
        other => {
            return Err(reader::wrong_type(
                v,
                "parallel",
                "a parallel form such as moeshard(4)",
                other.describe(),
            ))
        }
    };
    if name == "auto" {
        return Ok(ParallelChoice::Auto);
    }
    let sized = matches!(name, "tp" | "moeshard");
    let mut ways = None;
    let mut fused = true;
    for a in args {
        match a.name.as_ref().map(|n| n.text.as_str()) {
            None if sized && ways.is_none() => {
                ways = Some((reader::int(&a.value, name, 1, 1 << 16)? as u32, a.value.span))
            }
            Some("fused") => fused = reader::choice(&a.value, "fused", &["true", "false"])? == "true",
            _ => {
                let takes = if sized {
                    "an optional group size and `fused = true|false`"
                } else {
                    "only `fused = true|false`"
                };
                return Err(
                    Diagnostic::error(Code::E0018, a.value.span, format!("`{name}` takes {takes}")).with_hint(
                        if sized {
                            "write moeshard(4) or tp(8, fused = false)"
                        } else {
                            "write ep(fused = false)"
                        },
                    ),
                );
            }
        }
    }
    let k = ways.map_or(all, |(k, _)| k);
    if let (Some((k, span)), Some(alive)) = (ways, alive) {
        if k > alive {
            return Err(Diagnostic::error(
                Code::E0040,
                span,
                format!("`{name}({k})` needs groups of {k} dies, but the machine has {alive} alive"),
            )
            .with_hint(format!(
                "a group size from 1 to {alive}; `{name}` alone takes all of them"
            )));
        }
    }
    if let Some(ffn) = ffn.filter(|&f| sized && u64::from(k) > f) {
        return Err(Diagnostic::error(
            Code::E0040,
            ways.map_or(span, |(_, s)| s),
            format!("`{name}` would split each expert's {ffn} FFN columns over {k} dies"),
        )
        .with_hint(format!("a group of at most {ffn} dies")));
    }
    let kind = match name {
        "tp" => FormKind::Tp(k),
        "moeshard" => FormKind::Shard(k),
        "hybrid" => FormKind::Hybrid,
        "compute_balanced" => FormKind::ComputeBalanced,
        _ => FormKind::Ep,
    };
    Ok(ParallelChoice::Fixed(Form { kind, fused }))
}

/// `dp` or `tp(k)`.
fn attention_parallel(v: &Value) -> Result<AttentionParallel, Diagnostic> {
    const EXPECTED: &str = "dp or tp(k)";
    match &v.kind {
        ValueKind::Name(_) => reader::choice(v, "attention", &["dp", "tp"]).and_then(|c| match c {
            "dp" => Ok(AttentionParallel::DataParallel),
            _ => Err(Diagnostic::error(Code::E0018, v.span, "`tp` needs its group size")
                .with_label("how many dies split each attention layer?")
                .with_hint("write tp(4): groups of 4 dies split every attention layer by heads")),
        }),
        ValueKind::Call(c) if c.name.text == "tp" => match c.args.as_slice() {
            [a] if a.name.is_none() => {
                reader::int(&a.value, "tp", 1, 1 << 16).map(|k| AttentionParallel::TensorParallel(k as u32))
            }
            _ => Err(
                Diagnostic::error(Code::E0018, c.span, "`tp` takes one argument: its group size")
                    .with_label("expected tp(k)")
                    .with_hint("write tp(4)"),
            ),
        },
        ValueKind::Call(c) => Err(reader::unknown_choice(
            c.name.span,
            "attention",
            &c.name.text,
            &["dp", "tp"],
        )),
        other => Err(reader::wrong_type(v, "attention", EXPECTED, other.describe())),
    }
}

/// E0023: `tp(k)` must split the model's heads evenly (and GQA's key/value
/// heads into whole groups) and fit in the machine's alive dies.
fn attention_splits(program: &Program, plan: &Plan, span: Span, diags: &mut Vec<Diagnostic>) -> bool {
    let AttentionParallel::TensorParallel(k) = plan.attention else {
        return true;
    };
    let (Some(model), Some(machine)) = (program.model(plan.model), program.machine(plan.machine)) else {
        return false;
    };
    let k64 = u64::from(k);
    let heads = model.attention.heads();
    let problem = if heads % k64 != 0 {
        Some(format!(
            "tp({k}) cannot split the {heads} attention heads of `{}` evenly",
            model.name
        ))
    } else if let AttentionSpec::Gqa { kv_heads, .. } = model.attention {
        (kv_heads % k64 != 0 && k64 % kv_heads != 0).then(|| {
            format!(
                "tp({k}) would split the {kv_heads} key/value heads of `{}` unevenly (groups of {} query heads each)",
                model.name,
                heads / kv_heads
            )
        })
    } else {
        None
    };
    let problem = problem.or_else(|| {
        let alive = machine.alive_dies().len();
        (k as usize > alive).then(|| {
            format!(
                "tp({k}) needs {k} dies per group but `{}` has {alive} alive",
                machine.spec().name
            )
        })
    });
    let Some(message) = problem else {
        return true;
    };
    let hint = format!(
        "pick a group size that divides {heads}{}",
        match model.attention {
            AttentionSpec::Gqa { kv_heads, .. } => format!(" and divides or is a multiple of {kv_heads}"),
            _ => String::new(),
        }
    );
    diags.push(
        Diagnostic::error(Code::E0023, span, message)
            .with_label("this split does not fit the model or machine")
            .with_hint(hint),
    );
    false
}

/// Resolves `key = name` against the defined names of that kind. The outer
/// `Option` is "written"; the inner is "defined and checked".
fn reference(
    r: &mut BlockReader,
    key: &'static str,
    example: &str,
    defined: &[(&str, bool)],
    diags: &mut Vec<Diagnostic>,
) -> Option<Option<usize>> {
    let v = r.required(key, example)?;
    let ValueKind::Name(name) = &v.kind else {
        diags.push(super::reader::wrong_type(
            v,
            key,
            &format!("the name of a {key}"),
            v.kind.describe(),
        ));
        return Some(None);
    };
    match defined.iter().position(|(n, _)| n == name) {
        // Defined but failed its own checks: those errors are reported already.
        Some(i) if defined[i].1 => Some(Some(i)),
        Some(_) => Some(None),
        None => {
            let hint = did_you_mean(name, defined.iter().map(|(n, _)| *n)).unwrap_or_else(|| {
                if defined.is_empty() {
                    format!("no {key} is defined; add `{key} {name} {{ ... }}` or import a file that has one")
                } else {
                    format!(
                        "defined: {}",
                        defined.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    )
                }
            });
            diags.push(
                Diagnostic::error(Code::E0009, v.span, format!("no {key} named `{name}`"))
                    .with_label("not defined")
                    .with_hint(hint),
            );
            Some(None)
        }
    }
}

/// E0014: an expert larger than a die can never be placed whole.
fn expert_fits(program: &Program, plan: &Plan, decl: &Decl, diags: &mut Vec<Diagnostic>) -> bool {
    let (Some(model), Some(machine)) = (program.model(plan.model), program.machine(plan.machine)) else {
        return false;
    };
    // A split form holds one part of each expert per die.
    let ways = match plan.parallel {
        ParallelChoice::Fixed(Form {
            kind: FormKind::Tp(k) | FormKind::Shard(k),
            ..
        }) => u64::from(k.max(1)),
        _ => 1,
    };
    let need = Bytes(model.expert_bytes().0.div_ceil(ways));
    // The roomiest die: a die that cannot hold an expert gets none, and
    // the verifier checks every die.
    let have = machine
        .alive_dies()
        .iter()
        .map(|&d| machine.die_spec(d).memory)
        .max()
        .unwrap_or(machine.spec().die.memory);
    if need > have {
        diags.push(
            Diagnostic::error(
                Code::E0014,
                decl.name.span,
                format!(
                    "an expert of `{}` needs {need} but a die of `{}` has {have} of memory",
                    model.name,
                    machine.spec().name
                ),
            )
            .with_label(if ways > 1 { "this plan cannot place even one part of an expert on a die" } else { "this plan cannot place a whole expert on a die" })
            .with_hint("use a machine with more memory per die, or split experts over more dies: `parallel = tp(k)` or `moeshard(k)`"),
        );
        return false;
    }
    true
}
