//! Checking a `machine` item and building the runtime's [`Machine`] from it.
//!
//! The runtime owns the machine model; this file only reads the language
//! into a [`MachineSpec`] and turns the model's build errors (defects off the
//! mesh, a mesh cut in two) into diagnostics at the defect's own span.

use super::reader::{self, wrong_type, BlockReader};
use super::units::Dim;
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{Arg, Block, Call, Decl, Value, ValueKind};
use crate::syntax::Span;
use moec_runtime::machine::{
    Coord, DefectEntry, Defects, DieId, DieKind, DieRef, DieSpec, Edge, IoSpec, LinkSpec, Machine, MachineError,
    MachineSpec, MessageCosts, RouterSpec, RoutingPolicy, Topology,
};
use moec_runtime::units::{Bytes, BytesPerSec, FlopsPerSec, Seconds};

/// Launch overhead of one kernel when the machine does not say.
const DEFAULT_LAUNCH_OVERHEAD: Seconds = Seconds(1e-6);

/// Reads a machine and builds it; `None` when it is unusable.
pub fn check(decl: &Decl, diags: &mut Vec<Diagnostic>) -> Option<Machine> {
    let what = format!("machine `{}`", decl.name.text);
    let mut r = BlockReader::new(&what, decl.name.span, &decl.body);
    let topology_value = r.required("topology", "topology = mesh(8, 8)");
    let topology = topology_value.and_then(|v| r.check(topology(v)));
    let die = match r.plain_section("die") {
        Some((_, body, span)) => die(&what, span, body, diags),
        None => {
            r.missing(
                "die",
                "die { compute = 2250 TFLOPS; memory = 180 GB; memory_bw = 8 TB/s }",
            );
            None
        }
    };
    let main_link = match r.plain_section("link") {
        Some((_, body, span)) => link(&format!("the link of {what}"), span, body, diags),
        None => {
            r.missing("link", "link { bandwidth = 900 GB/s; latency = 20 ns }");
            None
        }
    };
    let inter_wafer_section = r.plain_section("inter_wafer");
    let inter_wafer_link =
        inter_wafer_section.and_then(|(_, b, s)| link(&format!("the inter-wafer link of {what}"), s, b, diags));
    let inter_node_section = r.plain_section("inter_node");
    let inter_node_link =
        inter_node_section.and_then(|(_, b, s)| link(&format!("the inter-node link of {what}"), s, b, diags));
    let routing_choice = r.choice("routing", &["xy", "yx"]);
    let routing = match routing_choice {
        Some(("yx", _)) => RoutingPolicy::Yx,
        _ => RoutingPolicy::Xy,
    };
    let router = match r.plain_section("router") {
        Some((_, body, span)) => router(&what, span, body, diags),
        None => Some(RouterSpec::default()),
    };
    let messages = match r.plain_section("messages") {
        Some((_, body, span)) => messages(&what, span, body, diags),
        None => Some(MessageCosts::default()),
    };
    let io_section = r.plain_section("io");
    let io = io_section.and_then(|(_, body, span)| io(&what, span, body, diags));
    let kind_sections = r.sections("kind");
    let (defects, defect_spans) = match r.plain_section("defects") {
        Some((_, body, span)) => defects(&what, span, body, diags),
        None => (Defects::default(), DefectSpans::default()),
    };
    diags.extend(r.finish());

    let kind_spans: Vec<(String, Span)> = kind_sections
        .iter()
        .filter_map(|(label, _, span)| label.map(|l| (l.text.clone(), *span)))
        .collect();
    let kinds: Vec<Option<DieKind>> = kind_sections
        .into_iter()
        .map(|k| kind(&what, k, topology.as_ref(), diags))
        .collect();
    let topology = topology?;
    let kinds: Vec<DieKind> = kinds.into_iter().collect::<Option<_>>()?;
    if let (Some((_, span)), false) = (routing_choice, matches!(topology, Topology::Mesh { .. })) {
        diags.push(
            Diagnostic::warning(Code::W0002, span, "`routing` has no effect on a switch or cluster")
                .with_label("only meshes have a dimension order"),
        );
    }
    let multi_wafer = matches!(topology, Topology::Mesh { wafers_x, wafers_y, .. } if wafers_x * wafers_y > 1);
    if let (Some((_, _, span)), false) = (inter_wafer_section, multi_wafer) {
        diags.push(
            Diagnostic::warning(Code::W0002, span, "`inter_wafer` has no effect on a single wafer")
                .with_label("no link crosses a wafer boundary")
                .with_hint("several wafers: topology = mesh(8, 8, wafers = (2, 2))"),
        );
    }
    if let (Some((_, _, span)), false) = (inter_node_section, matches!(topology, Topology::Cluster { .. })) {
        diags.push(
            Diagnostic::warning(Code::W0002, span, "`inter_node` has no effect outside a cluster")
                .with_label("no link leaves a node")
                .with_hint("a cluster: topology = cluster(nodes = 2, per_node = 8)"),
        );
    }
    let spec = MachineSpec {
        name: decl.name.text.clone(),
        topology,
        die: die?,
        kinds,
        link: main_link?,
        inter_wafer_link,
        inter_node_link,
        routing,
        router: router?,
        io,
        defects,
        messages: messages?,
    };
    match Machine::build(spec) {
        Ok(m) => Some(m),
        Err(e) => {
            let span = match e.defect_entry() {
                Some(DefectEntry::DeadDie(i)) => defect_spans.dies.get(i).copied(),
                Some(DefectEntry::DeadLink(i)) => defect_spans.links.get(i).copied(),
                None => None,
            };
            let io_span = io_section.map(|(_, _, s)| s);
            let (code, span, label) = match (span, &e) {
                (Some(s), _) => (Code::E0015, s, "this defect"),
                (None, MachineError::IoOffMesh { .. } | MachineError::IoWithoutEdges) => {
                    (Code::E0023, io_span.unwrap_or(decl.name.span), "this io block")
                }
                (None, MachineError::IoCutOff { .. }) => (
                    Code::E0016,
                    io_span.unwrap_or(decl.name.span),
                    "host memory behind dead dies",
                ),
                (None, MachineError::BadKindDie { kind, .. } | MachineError::KindDiesUnsorted { kind }) => (
                    Code::E0008,
                    kind_spans
                        .iter()
                        .find(|(n, _)| n == kind)
                        .map_or(decl.name.span, |(_, s)| *s),
                    "this kind",
                ),
                (None, MachineError::AllDiesDead | MachineError::MeshCut { .. }) => (
                    Code::E0016,
                    defect_spans.block.unwrap_or(decl.name.span),
                    "these defects",
                ),
                (None, _) => (
                    Code::E0018,
                    topology_value.map(|v| v.span).unwrap_or(decl.name.span),
                    "this topology",
                ),
            };
            diags.push(Diagnostic::error(code, span, format!("{what}: {e}")).with_label(label));
            None
        }
    }
}

/// `mesh(8, 8)`, `mesh(8, 8, wafers = (2, 2))`, `switch(72)`, `cluster(nodes = 2, per_node = 8)`.
fn topology(v: &Value) -> Result<Topology, Diagnostic> {
    let ValueKind::Call(call) = &v.kind else {
        return Err(wrong_type(
            v,
            "topology",
            "a topology such as mesh(8, 8), switch(72) or cluster(nodes = 2, per_node = 8)",
            v.kind.describe(),
        ));
    };
    let mut args = CallArgs::new(call);
    let t = match call.name.text.as_str() {
        "mesh" => {
            let width = args.positional(0, "x")?;
            let height = args.positional(1, "y")?;
            let (wafers_x, wafers_y) = match args.named("wafers") {
                Some(w) => pair(w, "wafers")?,
                None => (1, 1),
            };
            Topology::Mesh {
                width,
                height,
                wafers_x,
                wafers_y,
            }
        }
        "switch" => Topology::Switch {
            ports: args.positional(0, "ports")?,
        },
        "cluster" => {
            let nodes = args.named_or_positional("nodes")?;
            let per_node = args.named_or_positional("per_node")?;
            Topology::Cluster { nodes, per_node }
        }
        other => {
            return Err(reader::unknown_choice(
                call.name.span,
                "topology",
                other,
                &["mesh", "switch", "cluster"],
            ))
        }
    };
    args.finish()?;
    // Sizes are checked here, not only when the machine is built, so that
    // `mesh(0, 0)` is reported even while `die` or `link` is missing.
    t.die_count()
        .map_err(|e| Diagnostic::error(Code::E0018, v.span, e.to_string()).with_label("this topology"))?;
    Ok(t)
}

/// Arguments of a call, each taken at most once; leftovers are errors.
struct CallArgs<'a> {
    call: &'a Call,
    used: Vec<bool>,
}

impl<'a> CallArgs<'a> {
    fn new(call: &'a Call) -> CallArgs<'a> {
        CallArgs {
            call,
            used: vec![false; call.args.len()],
        }
    }

    fn usage(&self) -> &'static str {
        match self.call.name.text.as_str() {
            "mesh" => "mesh(x, y) or mesh(x, y, wafers = (wx, wy))",
            "switch" => "switch(gpus)",
            "cluster" => "cluster(nodes = N, per_node = G)",
            "die" => "die(x, y) on a mesh, die(i) on a switch or cluster",
            _ => "link((x1, y1), (x2, y2))",
        }
    }

    fn positional(&mut self, i: usize, what: &str) -> Result<u32, Diagnostic> {
        let found = self
            .call
            .args
            .iter()
            .enumerate()
            .filter(|(_, a)| a.name.is_none())
            .nth(i);
        match found {
            Some((j, a)) => {
                self.used[j] = true;
                small(&a.value, what)
            }
            None => Err(self.bad(format!("`{}` is missing its {what}", self.call.name.text))),
        }
    }

    fn named(&mut self, name: &str) -> Option<&'a Value> {
        let (j, a) = self
            .call
            .args
            .iter()
            .enumerate()
            .find(|(_, a)| a.name.as_ref().is_some_and(|n| n.text == name))?;
        self.used[j] = true;
        Some(&a.value)
    }

    /// A parameter given by name, or else by the next unused positional argument.
    fn named_or_positional(&mut self, name: &str) -> Result<u32, Diagnostic> {
        if let Some(v) = self.named(name) {
            return small(v, name);
        }
        let next = self
            .call
            .args
            .iter()
            .enumerate()
            .find(|(j, a)| a.name.is_none() && !self.used[*j])
            .map(|(j, _)| j);
        match next {
            Some(j) => {
                self.used[j] = true;
                small(&self.call.args[j].value, name)
            }
            None => Err(self.bad(format!("`{}` is missing its {name}", self.call.name.text))),
        }
    }

    fn bad(&self, message: String) -> Diagnostic {
        Diagnostic::error(Code::E0018, self.call.span, message)
            .with_label("here")
            .with_hint(format!("write {}", self.usage()))
    }

    fn finish(self) -> Result<(), Diagnostic> {
        match self.used.iter().position(|u| !u) {
            Some(j) => {
                let a: &Arg = &self.call.args[j];
                Err(Diagnostic::error(
                    Code::E0018,
                    a.value.span,
                    format!("`{}` does not take this argument", self.call.name.text),
                )
                .with_label("extra argument")
                .with_hint(format!("write {}", self.usage())))
            }
            None => Ok(()),
        }
    }
}

fn small(v: &Value, what: &str) -> Result<u32, Diagnostic> {
    reader::int(v, what, 0, u64::from(u32::MAX)).map(|n| n as u32)
}

fn pair(v: &Value, what: &str) -> Result<(u32, u32), Diagnostic> {
    match &v.kind {
        ValueKind::Tuple(items) if items.len() == 2 => Ok((small(&items[0], what)?, small(&items[1], what)?)),
        other => Err(wrong_type(v, what, "a pair such as (3, 4)", other.describe())),
    }
}

fn die(machine: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> Option<DieSpec> {
    let mut r = BlockReader::new(format!("the die of {machine}"), span, body);
    let die = die_fields(&mut r, diags);
    diags.extend(r.finish());
    die
}

/// `kind NAME { <die settings>; nodes = [2, 3] }` (or `dies = [0, 5]`, or
/// `region = ((0, 0), (3, 7))`): a kind of die and which dies are of it (a
/// cluster's nodes, die ids, a rectangle of a mesh).
fn kind(
    machine: &str,
    (label, body, span): (Option<&crate::syntax::ast::Ident>, &Block, Span),
    topology: Option<&Topology>,
    diags: &mut Vec<Diagnostic>,
) -> Option<DieKind> {
    let Some(name) = label else {
        diags.push(
            Diagnostic::error(Code::E0006, span, format!("a `kind` of {machine} has no name"))
                .with_label("name it")
                .with_hint("kind l40s { compute = 362 TFLOPS; memory = 48 GB; memory_bw = 864 GB/s; nodes = [2, 3] }"),
        );
        return None;
    };
    let what = format!("kind `{}` of {machine}", name.text);
    let mut r = BlockReader::new(&what, name.span, body);
    let die = die_fields(&mut r, diags);
    let (nodes, dies) = (r.value("nodes"), r.value("dies"));
    // Its own port and NIC, where dies have them (a switch's, a cluster's).
    let mut own_link = |key: &'static str, r: &mut BlockReader| -> Result<Option<LinkSpec>, ()> {
        let Some((_, b, s)) = r.plain_section(key) else {
            return Ok(None);
        };
        if matches!(topology, Some(Topology::Mesh { .. })) {
            diags.push(
                Diagnostic::error(Code::E0018, s, format!("a kind on a mesh takes no `{key}`"))
                    .with_label("mesh links join two dies, not a die and a switch")
                    .with_hint("give the machine's `link`; kinds differ in their dies here"),
            );
            return Err(());
        }
        link(&format!("the {key} of {what}"), s, b, diags).map(Some).ok_or(())
    };
    let port = own_link("link", &mut r);
    let nic = own_link("inter_node", &mut r);
    let region = r.value("region");
    let given: Vec<&Value> = [nodes, dies, region].into_iter().flatten().collect();
    let members: Option<Vec<u32>> = match (given.as_slice(), topology) {
        ([], _) => {
            r.missing(
                "nodes",
                "nodes = [2, 3]`, `dies = [16, 17]` or `region = ((0, 0), (3, 7))",
            );
            None
        }
        ([_, second, ..], _) => {
            r.check::<()>(Err(Diagnostic::error(
                Code::E0005,
                second.span,
                format!("{what} names its dies twice"),
            )
            .with_label("set again here")
            .with_hint(
                "name its dies one way: nodes = [2, 3], dies = [16, 17] or region = ((0, 0), (3, 7))",
            )));
            None
        }
        (_, None) => None,
        ([v], Some(topology)) => {
            let v = *v;
            let found = if nodes.is_some() {
                kind_nodes(v, topology)
            } else if dies.is_some() {
                list_of(v).iter().map(|x| small(x, "dies")).collect()
            } else {
                kind_region(v, topology)
            };
            r.check(found)
        }
    };
    diags.extend(r.finish());
    let mut dies: Vec<DieId> = members?.into_iter().map(DieId).collect();
    dies.sort_unstable();
    dies.dedup();
    Some(DieKind {
        name: name.text.clone(),
        die: die?,
        dies,
        link: port.ok()?,
        inter_node_link: nic.ok()?,
    })
}

/// The items of a list, or the one value.
fn list_of(v: &Value) -> &[Value] {
    match &v.kind {
        ValueKind::List(items) => items.as_slice(),
        _ => std::slice::from_ref(v),
    }
}

/// A cluster's `nodes = [..]`: every GPU of each.
fn kind_nodes(v: &Value, topology: &Topology) -> Result<Vec<u32>, Diagnostic> {
    let Topology::Cluster { nodes, per_node } = *topology else {
        return Err(
            Diagnostic::error(Code::E0018, v.span, "`nodes` names a cluster's nodes")
                .with_label("this machine is not a cluster")
                .with_hint("list the dies by id (dies = [0, 1]) or, on a mesh, a region = ((0, 0), (3, 7))"),
        );
    };
    let mut dies = Vec::new();
    for x in list_of(v) {
        let n = small(x, "nodes")?;
        if n >= nodes {
            return Err(Diagnostic::error(
                Code::E0008,
                x.span,
                format!(
                    "node {n} is past the cluster's {nodes} nodes (0 to {})",
                    nodes.saturating_sub(1)
                ),
            )
            .with_label("no such node"));
        }
        dies.extend((0..per_node).map(|g| n * per_node + g));
    }
    Ok(dies)
}

/// A mesh's `region = ((x0, y0), (x1, y1))`: the dies of that rectangle of
/// the global grid, corners included.
fn kind_region(v: &Value, topology: &Topology) -> Result<Vec<u32>, Diagnostic> {
    let Some(grid) = moec_runtime::machine::Grid::of(topology) else {
        return Err(
            Diagnostic::error(Code::E0018, v.span, "`region` is a rectangle of a mesh")
                .with_label("this machine is not a mesh")
                .with_hint("on a cluster: nodes = [2, 3]; anywhere: dies = [0, 1]"),
        );
    };
    let corners = match &v.kind {
        ValueKind::Tuple(items) if items.len() == 2 => (pair(&items[0], "region")?, pair(&items[1], "region")?),
        other => {
            return Err(wrong_type(
                v,
                "region",
                "two corners such as ((0, 0), (3, 7))",
                other.describe(),
            ))
        }
    };
    let ((x0, y0), (x1, y1)) = corners;
    let (xs, ys) = (x0.min(x1)..=x0.max(x1), y0.min(y1)..=y0.max(y1));
    let mut dies = Vec::new();
    for y in ys {
        for x in xs.clone() {
            match grid.die_at(Coord::new(x, y)) {
                Some(d) => dies.push(d.0),
                None => {
                    return Err(
                        Diagnostic::error(Code::E0008, v.span, format!("({x}, {y}) is off the mesh"))
                            .with_label("this corner is off the grid"),
                    )
                }
            }
        }
    }
    Ok(dies)
}

/// The settings of a die (or a kind of die) read from `r`.
fn die_fields(r: &mut BlockReader, diags: &mut Vec<Diagnostic>) -> Option<DieSpec> {
    let compute = r.req_quantity("compute", Dim::Compute, "compute = 2250 TFLOPS");
    let memory = r.req_quantity("memory", Dim::Size, "memory = 180 GB");
    let memory_bw = r.req_quantity("memory_bw", Dim::Bandwidth, "memory_bw = 8 TB/s");
    let sram = r.quantity("sram", Dim::Size).unwrap_or(0.0);
    let launch = r
        .quantity("launch_overhead", Dim::Time)
        .map(Seconds)
        .unwrap_or(DEFAULT_LAUNCH_OVERHEAD);
    // Dollars per die-hour and watts: plain numbers, as the language has no
    // money or power unit.
    let (price, priced) = positive_number(r, "price", "dollars per die-hour");
    let (power, powered) = positive_number(r, "power", "watts a die draws");
    let suspicious = [
        ("compute", compute.is_some_and(|c| c < 1e9), "under 1 GFLOPS"),
        ("memory_bw", memory_bw.is_some_and(|b| b > 1e15), "above 1 PB/s"),
        ("launch_overhead", plausible_or_refused(launch.0), "above 1 ms"),
    ];
    warn_suspicious(r, &suspicious, diags);
    let in_time = within_the_clock(r, &[("launch_overhead", launch.0)], diags);
    in_time.then_some(())?;
    // A price or power written but refused leaves no machine, as a bad time does.
    (priced && powered).then_some(())?;
    Some(DieSpec {
        compute: FlopsPerSec(compute?),
        memory: Bytes(memory?.round() as u64),
        memory_bw: BytesPerSec(memory_bw?),
        sram: Bytes(sram.round() as u64),
        launch_overhead: launch,
        price,
        power,
    })
}

/// An optional plain number `key` (of `what`), more than 0 and at most
/// 10^6; and whether it was absent or good.
fn positive_number(r: &mut BlockReader, key: &'static str, what: &str) -> (Option<f64>, bool) {
    let Some(v) = r.value(key) else {
        return (None, true);
    };
    let refused = Diagnostic::error(
        Code::E0008,
        v.span,
        format!("`{key}` is out of range: {what}, more than 0 and at most 1000000"),
    )
    .with_label("out of range")
    .with_hint(format!("leave `{key}` out when the dies have no {key}"));
    let got = r.check(match reader::float(v, key, 0.0, 1e6) {
        Ok(p) if p > 0.0 => Ok(p),
        Ok(_) => Err(refused),
        Err(d) if d.code == Code::E0008 => Err(refused),
        Err(d) => Err(d),
    });
    (got, got.is_some())
}

fn link(what: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> Option<LinkSpec> {
    let mut r = BlockReader::new(what, span, body);
    let bandwidth = r.req_quantity("bandwidth", Dim::Bandwidth, "bandwidth = 900 GB/s");
    let latency = r.req_quantity("latency", Dim::Time, "latency = 20 ns");
    warn_suspicious(
        &r,
        &[("latency", latency.is_some_and(plausible_or_refused), "above 1 ms")],
        diags,
    );
    let in_time = within_the_clock(&r, &[("latency", latency.unwrap_or(0.0))], diags);
    diags.extend(r.finish());
    in_time.then_some(())?;
    Some(LinkSpec {
        bandwidth: BytesPerSec(bandwidth?),
        latency: Seconds(latency?),
    })
}

/// The `router { ... }` section: what each die's router adds to the links.
fn router(machine: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> Option<RouterSpec> {
    let mut r = BlockReader::new(format!("the router of {machine}"), span, body);
    let ideal = RouterSpec::default();
    let latency = r.quantity("latency", Dim::Time).map(Seconds).unwrap_or(ideal.latency);
    let efficiency = r.float("efficiency", 0.01, 1.0).unwrap_or(ideal.efficiency);
    let overhead = r.quantity("overhead", Dim::Size).map(|b| Bytes(b.round() as u64));
    let port = r.quantity("port", Dim::Bandwidth).map(BytesPerSec);
    warn_suspicious(
        &r,
        &[
            ("latency", plausible_or_refused(latency.0), "above 1 ms"),
            ("overhead", overhead.is_some_and(|o| o.0 > 1 << 20), "above 1 MiB"),
        ],
        diags,
    );
    let in_time = within_the_clock(&r, &[("latency", latency.0)], diags);
    diags.extend(r.finish());
    in_time.then_some(())?;
    Some(RouterSpec {
        latency,
        efficiency,
        overhead: overhead.unwrap_or(ideal.overhead),
        port,
    })
}

/// The per-message costs of the all-to-all transports: `messages { m2n =
/// 6.5 us; nccl = 35 us }`, each defaulting to MegaScale-Infer's fit.
fn messages(machine: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> Option<MessageCosts> {
    let mut r = BlockReader::new(format!("the message costs of {machine}"), span, body);
    let fitted = MessageCosts::default();
    let m2n = r.quantity("m2n", Dim::Time).map(Seconds).unwrap_or(fitted.m2n);
    let nccl = r.quantity("nccl", Dim::Time).map(Seconds).unwrap_or(fitted.nccl);
    warn_suspicious(
        &r,
        &[
            ("m2n", plausible_or_refused(m2n.0), "above 1 ms"),
            ("nccl", plausible_or_refused(nccl.0), "above 1 ms"),
        ],
        diags,
    );
    let in_time = within_the_clock(&r, &[("m2n", m2n.0), ("nccl", nccl.0)], diags);
    diags.extend(r.finish());
    in_time.then_some(())?;
    Some(MessageCosts { m2n, nccl })
}

/// A time above 1 ms that the machine check will still accept: worth a
/// warning. Past `MAX_MACHINE_TIME_S` it is refused (E0018), not warned of.
fn plausible_or_refused(seconds: f64) -> bool {
    seconds > 1e-3 && seconds <= moec_runtime::machine::MAX_MACHINE_TIME_S
}

/// Refuses (E0018, at the setting) a time past `MAX_MACHINE_TIME_S`: the
/// machine check refuses it too, but could only point at the topology.
/// False when one was refused.
fn within_the_clock(r: &BlockReader, times: &[(&str, f64)], diags: &mut Vec<Diagnostic>) -> bool {
    let limit = moec_runtime::machine::MAX_MACHINE_TIME_S;
    let mut ok = true;
    for &(key, seconds) in times {
        if let (false, Some(span)) = (seconds.is_finite() && seconds <= limit, r.span_of(key)) {
            diags.push(
                Diagnostic::error(
                    Code::E0018,
                    span,
                    format!("`{key}` is {seconds:e} s, but a machine's times must be from 0 to an hour ({limit} s)"),
                )
                .with_label("past an hour")
                .with_hint("the simulated clock counts picoseconds and must hold a step of thousands of these"),
            );
            ok = false;
        }
    }
    ok
}

fn warn_suspicious(r: &BlockReader, checks: &[(&str, bool, &str)], diags: &mut Vec<Diagnostic>) {
    for &(key, bad, why) in checks {
        if let (true, Some(span)) = (bad, r.span_of(key)) {
            diags.push(
                Diagnostic::warning(Code::W0003, span, format!("`{key}` is {why}, far from real hardware"))
                    .with_label("check the unit")
                    .with_hint("moec explain W0003"),
            );
        }
    }
}

fn io(machine: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> Option<IoSpec> {
    let mut r = BlockReader::new(format!("the io of {machine}"), span, body);
    let edges_v = r.required("edges", "edges = [west]");
    let bandwidth = r.req_quantity("bandwidth", Dim::Bandwidth, "bandwidth = 2 TB/s");
    let host_memory = r.req_quantity("host_memory", Dim::Size, "host_memory = 4 TiB");
    let edges = edges_v.and_then(|v| {
        let items = match &v.kind {
            ValueKind::List(items) => items.as_slice(),
            _ => std::slice::from_ref(v),
        };
        let parsed: Result<Vec<Edge>, Diagnostic> = items
            .iter()
            .map(|e| {
                reader::choice(e, "edge", &["north", "south", "east", "west"]).map(|c| match c {
                    "north" => Edge::North,
                    "south" => Edge::South,
                    "east" => Edge::East,
                    _ => Edge::West,
                })
            })
            .collect();
        r.check(parsed)
    });
    diags.extend(r.finish());
    Some(IoSpec {
        edges: edges?,
        bandwidth: BytesPerSec(bandwidth?),
        host_memory: Bytes(host_memory?.round() as u64),
    })
}

/// Where each defect entry was written, to point errors at it.
#[derive(Default)]
struct DefectSpans {
    block: Option<Span>,
    dies: Vec<Span>,
    links: Vec<Span>,
}

fn defects(machine: &str, span: Span, body: &Block, diags: &mut Vec<Diagnostic>) -> (Defects, DefectSpans) {
    let mut r = BlockReader::new(format!("the defects of {machine}"), span, body);
    let mut d = Defects::default();
    let mut spans = DefectSpans {
        block: Some(span),
        ..DefectSpans::default()
    };
    for call in r.calls("die") {
        match die_ref_args(call, &call.args) {
            Ok(die) => {
                d.dead_dies.push(die);
                spans.dies.push(call.span);
            }
            Err(e) => diags.push(e),
        }
    }
    for call in r.calls("link") {
        let ends: Result<Vec<DieRef>, Diagnostic> = call
            .args
            .iter()
            .map(|a| match &a.value.kind {
                ValueKind::Tuple(items) => die_ref(&a.value, items),
                _ => small(&a.value, "die").map(DieRef::Index),
            })
            .collect();
        match ends {
            Ok(e) if e.len() == 2 => {
                d.dead_links.push((e[0], e[1]));
                spans.links.push(call.span);
            }
            Ok(_) => diags.push(CallArgs::new(call).bad("a dead link joins two dies".into())),
            Err(e) => diags.push(e),
        }
    }
    diags.extend(r.finish());
    (d, spans)
}

/// `die(x, y)` (mesh) or `die(i)` (switch, cluster).
fn die_ref_args(call: &Call, args: &[Arg]) -> Result<DieRef, Diagnostic> {
    match args {
        [a] if a.name.is_none() => Ok(DieRef::Index(small(&a.value, "die")?)),
        [a, b] if a.name.is_none() && b.name.is_none() => {
            Ok(DieRef::At(Coord::new(small(&a.value, "x")?, small(&b.value, "y")?)))
        }
        _ => Err(CallArgs::new(call).bad("`die` takes a die's coordinates or index".into())),
    }
}

fn die_ref(v: &Value, items: &[Value]) -> Result<DieRef, Diagnostic> {
    match items {
        [x, y] => Ok(DieRef::At(Coord::new(small(x, "x")?, small(y, "y")?))),
        _ => Err(wrong_type(
            v,
            "link end",
            "a die's coordinates such as (3, 4)",
            v.kind.describe(),
        )),
    }
}
