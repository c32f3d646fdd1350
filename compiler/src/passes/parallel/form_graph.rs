//! The parallel form of each MoE layer, chosen by equality saturation.
//!
//! A layer's experts can be split over the alive dies in several *forms*
//! ([`FormKind`]): expert parallelism (EP), expert tensor parallelism in
//! groups of k (TP), MoEShard's column shards with dies/k copies, or
//! HD-MoE's hybrid; each launched as one grouped kernel per die or one
//! launch per shard ([`Form::fused`]). This file owns the search over them:
//! an e-graph (egg) of the forms, the rewrites between them, and the
//! extraction of the cheapest. How a form is laid out in the IR, run, and
//! costed on the machine model lives elsewhere, behind [`FormCost`].
//!
//! **One e-class per layer.** Every form of a layer computes the same
//! result: splitting an expert's up and gate projections by columns and
//! its down projection by rows is an exact decomposition (the row shards'
//! partial products add up to the whole down projection), replicating an
//! expert changes nothing, and fusing launches changes no arithmetic. So
//! each rewrite below is an equality, and saturation leaves every form of
//! layer L in the class of the start term `(ep L 1)`.
//!
//! **The sum over layers is exact.** The layers run one after another and
//! a layer's form changes only its own MoE block (dispatch, experts,
//! combine), so a step's MoE time is the sum of the layers' and the
//! cheapest model is each layer's cheapest form: the root `(model l0 l1
//! ...)` costs the sum of its children, and extraction from it is optimal.
//! Extraction is egg's `Extractor` with a cost function that reads a form
//! node's number children from the e-graph and asks [`FormCost`].
//!
//! **The rewrites** (each named; the `-rev` ones go back): `ep-is-tp1`
//! (`Tp(1)` is EP's layout); `split-tp`/`merge-tp` and
//! `split-shard`/`merge-shard` (k to k*p for a prime p with k*p dividing
//! the dies, and back); `tp-all-is-shard-all` (over all dies, TP and
//! MoEShard are one layout); `fuse-*`/`unfuse-*` per form; `ep-is-hybrid`
//! when HD-MoE's hybrid is available (it generalises EP: NodeBalance picks
//! per expert). Conditions read the number leaves, so no form with k not
//! dividing the dies is ever built. Splitting by primes reaches every
//! divisor of the die count through its chain of prime factors, so the
//! saturated class of a layer holds exactly [`all_forms`].
//!
//! **Ties.** Forms can cost the same (`Tp(1)` and EP are one layout). The
//! extraction's cost is the seconds, then the tie rule [`Form::tie_key`]:
//! the simpler layout first (EP, TP, MoEShard, hybrid; fewer ways first),
//! and a fused launch before separate ones. [`exhaustive`] uses the same
//! order, so the two pick exactly the same forms. A NaN cost counts as
//! infeasible (infinite), and -0 as 0, so the order is total.

use egg::{
    Applier, CostFunction, EGraph, ENodeOrVar, Extractor, Id, Pattern, PatternAst, Rewrite, Runner, SimpleScheduler,
    StopReason, Subst, Symbol, Var,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ir::{Form, FormKind};

/// What a form costs on the machine: seconds for one step of layer `layer` (its MoE block: dispatch, experts,
/// combine). `f64::INFINITY`: infeasible (does not fit memory). NaN is taken as infinite.
pub trait FormCost {
    /// Seconds of one step of `layer`'s MoE block under `form`.
    fn layer_cost(&self, layer: u32, form: Form) -> f64;
}

/// Any `Fn(layer, form) -> seconds` is a cost.
impl<F: Fn(u32, Form) -> f64> FormCost for F {
    fn layer_cost(&self, layer: u32, form: Form) -> f64 {
        self(layer, form)
    }
}

/// The search's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Chosen form per MoE layer, in the order given.
    pub forms: Vec<(u32, Form)>,
    /// Sum of the chosen forms' costs (seconds).
    pub cost: f64,
    /// E-classes of the saturated e-graph.
    pub classes: usize,
    /// E-nodes of the saturated e-graph.
    pub nodes: usize,
    /// Iterations the runner made (the last one finds nothing new when saturated).
    pub iterations: usize,
    /// Why the runner stopped (saturated, or which limit).
    pub stop: String,
    /// Every rewrite that fired and how many times in total, by name, sorted by name. Counted as egg counts: a
    /// firing counts when it puts a form into a layer's class, not when the form was already there.
    pub fired: Vec<(String, usize)>,
}

/// Limits of the runner, far above what saturation needs: a layer has at most 2 * (2 * divisors + 2) forms (under
/// 5,400 for any u32 die count), and a chain of splits is as long as the die count's prime factors (at most 31).
pub const ITERATION_LIMIT: usize = 1_000;
/// See [`ITERATION_LIMIT`].
pub const NODE_LIMIT: usize = 1_000_000;
/// See [`ITERATION_LIMIT`].
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

/// The cheapest form of every layer, by equality saturation and extraction.
/// An error only if egg refuses a rewrite or the extraction meets a node
/// that is no form (neither happens with the rules here; said, not panicked).
pub fn select(moe_layers: &[u32], dies: u32, hybrid: bool, cost: &dyn FormCost) -> Result<Selection, String> {
    FormGraph::saturate(moe_layers, dies, hybrid)?.extract(cost)
}

/// Every form of a layer the rewrites can reach: Ep, Tp(k)/Shard(k) for every divisor k of dies, Hybrid when
/// available, each fused and not; sorted by [`Form`]'s order.
pub fn all_forms(dies: u32, hybrid: bool) -> Vec<Form> {
    let ways = divisors(dies);
    let kinds = std::iter::once(FormKind::Ep)
        .chain(ways.iter().map(|&k| FormKind::Tp(k)))
        .chain(ways.iter().map(|&k| FormKind::Shard(k)))
        .chain(hybrid.then_some(FormKind::Hybrid));
    kinds
        .flat_map(|kind| [false, true].map(|fused| Form { kind, fused }))
        .collect()
}

/// The exhaustive search the e-graph must agree with: per layer the cheapest of [`all_forms`], ties broken by
/// [`Form::tie_key`]; and the sum of their costs, added in the order given.
pub fn exhaustive(moe_layers: &[u32], dies: u32, hybrid: bool, cost: &dyn FormCost) -> (Vec<(u32, Form)>, f64) {
    let candidates = all_forms(dies, hybrid);
    let mut total = 0.0;
    let mut forms = Vec::with_capacity(moe_layers.len());
    for &layer in moe_layers {
        // all_forms always holds Ep, so there is a minimum.
        let best = candidates
            .iter()
            .map(|&form| (Cost::of(cost.layer_cost(layer, form), form), form))
            .min_by(|a, b| a.0.cmp(&b.0));
        if let Some((c, form)) = best {
            total = seconds(total + c.seconds);
            forms.push((layer, form));
        }
    }
    (forms, total)
}

/// A stable text dump of a saturated e-graph: the run, the model root, the number leaves, every layer's class
/// with its forms in [`Form`]'s order (classes are named by the layer they hold, not by egg's ids), then the
/// rewrites fired.
pub fn describe(graph: &FormGraph) -> String {
    let mut numbers = BTreeSet::new();
    // Each layer class's forms, with the layer each belongs to.
    let mut layers: Vec<BTreeSet<(u32, Form)>> = Vec::new();
    let mut model = Vec::new();
    for class in graph.egraph.classes() {
        let mut forms = BTreeSet::new();
        for node in class.iter() {
            match node {
                FormNode::Num(n) => {
                    numbers.insert(*n);
                }
                FormNode::Model(children) => model = children.to_vec(),
                _ => {
                    forms.extend(decode(&graph.egraph, node));
                }
            }
        }
        if !forms.is_empty() {
            layers.push(forms);
        }
    }
    layers.sort();
    let label = |id: Id| -> String {
        let id = graph.egraph.find(id);
        let held: BTreeSet<u32> = graph.egraph[id]
            .iter()
            .filter_map(|n| decode(&graph.egraph, n))
            .map(|(l, _)| l)
            .collect();
        held.iter().map(|l| format!("layer {l}")).collect::<Vec<_>>().join("+")
    };
    let mut out = format!(
        "{} MoE layers on {} dies, hybrid {}\n{} after {} iterations: {} classes, {} nodes\n",
        graph.layers.len(),
        graph.dies,
        if graph.hybrid { "available" } else { "not available" },
        graph.stop,
        graph.iterations,
        graph.classes(),
        graph.nodes()
    );
    let children: Vec<String> = model.iter().map(|&c| label(c)).collect();
    out += &format!("model: {}\n", children.join(", "));
    let numbers: Vec<String> = numbers.iter().map(u32::to_string).collect();
    out += &format!("numbers: {}\n", numbers.join(" "));
    for forms in &layers {
        let held: BTreeSet<u32> = forms.iter().map(|&(l, _)| l).collect();
        let name: Vec<String> = held.iter().map(|l| format!("layer {l}")).collect();
        // A class holding two layers would be an unsound merge: then each form says its layer.
        let text: Vec<String> = forms
            .iter()
            .map(|(l, f)| {
                if held.len() == 1 {
                    f.to_string()
                } else {
                    format!("{l}:{f}")
                }
            })
            .collect();
        out += &format!("{} ({} forms): {}\n", name.join("+"), forms.len(), text.join(" "));
    }
    out += "rewrites fired:\n";
    for (name, times) in &graph.fired {
        out += &format!("  {name}: {times}\n");
    }
    let idle: Vec<&str> = graph
        .rules
        .iter()
        .filter(|r| !graph.fired.iter().any(|(name, _)| name == *r))
        .map(String::as_str)
        .collect();
    out += &format!("rewrites that added nothing new: {}\n", idle.join(" "));
    out
}

egg::define_language! {
    /// The e-graph's nodes: number leaves, one node per form of a layer (children: layer, ways, fused as
    /// numbers), and the model root over the layers' classes.
    enum FormNode {
        "model" = Model(Box<[Id]>),
        "ep" = Ep([Id; 2]),
        "tp" = Tp([Id; 3]),
        "shard" = Shard([Id; 3]),
        "hybrid" = Hybrid([Id; 2]),
        Num(u32),
    }
}

type Graph = EGraph<FormNode, ()>;

/// The saturated e-graph of a model's MoE layers.
pub struct FormGraph {
    egraph: Graph,
    root: Id,
    /// Each MoE layer (in the order given) and its class.
    layers: Vec<(u32, Id)>,
    dies: u32,
    hybrid: bool,
    iterations: usize,
    stop: String,
    fired: Vec<(String, usize)>,
    /// The names of the rewrites run, sorted.
    rules: Vec<String>,
}

impl FormGraph {
    /// Starts from `(model (ep l0 1) (ep l1 1) ...)` and runs every rewrite to saturation (or a limit: see
    /// [`FormGraph::stop`]).
    pub fn saturate(moe_layers: &[u32], dies: u32, hybrid: bool) -> Result<FormGraph, String> {
        FormGraph::saturate_within(moe_layers, dies, hybrid, ITERATION_LIMIT)
    }

    /// [`FormGraph::saturate`] under a given iteration limit (tests stop it early).
    fn saturate_within(
        moe_layers: &[u32],
        dies: u32,
        hybrid: bool,
        iteration_limit: usize,
    ) -> Result<FormGraph, String> {
        let mut egraph = Graph::default();
        let start = Form {
            kind: FormKind::Ep,
            fused: true,
        };
        let layers: Vec<(u32, Id)> = moe_layers
            .iter()
            .map(|&l| (l, add_form(&mut egraph, l, start)))
            .collect();
        let root = egraph.add(FormNode::Model(layers.iter().map(|&(_, id)| id).collect()));
        egraph.rebuild();
        let rules = rewrites(dies, hybrid)?;
        // The e-graph is small (tens of nodes per layer): every rule may match everything each iteration, and
        // the simple scheduler never bans one, so the counts of what fired do not depend on match limits.
        let runner = Runner::<FormNode, ()>::default()
            .with_scheduler(SimpleScheduler)
            .with_iter_limit(iteration_limit)
            .with_node_limit(NODE_LIMIT)
            .with_time_limit(TIME_LIMIT)
            .with_egraph(egraph)
            .run(&rules);
        let mut fired: BTreeMap<String, usize> = BTreeMap::new();
        for iteration in &runner.iterations {
            for (name, &times) in &iteration.applied {
                *fired.entry(name.to_string()).or_default() += times;
            }
        }
        let stop = match &runner.stop_reason {
            Some(StopReason::Saturated) => "saturated".to_string(),
            Some(StopReason::IterationLimit(n)) => format!("stopped at the iteration limit ({n})"),
            Some(StopReason::NodeLimit(n)) => format!("stopped at the node limit ({n})"),
            Some(StopReason::TimeLimit(s)) => format!("stopped at the time limit ({s:.1} s)"),
            Some(StopReason::Other(why)) => format!("stopped: {why}"),
            None => "not run".to_string(),
        };
        let egraph = runner.egraph;
        Ok(FormGraph {
            root: egraph.find(root),
            layers: layers.into_iter().map(|(l, id)| (l, egraph.find(id))).collect(),
            egraph,
            dies,
            hybrid,
            iterations: runner.iterations.len(),
            stop,
            fired: fired.into_iter().collect(),
            rules: rules
                .iter()
                .map(|r| r.name.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
    }

    /// The cheapest form of every layer under `cost`, by egg's extractor from the model root.
    pub fn extract(&self, cost: &dyn FormCost) -> Result<Selection, String> {
        let extractor = Extractor::new(
            &self.egraph,
            LayerCosts {
                egraph: &self.egraph,
                cost,
            },
        );
        let forms = self
            .layers
            .iter()
            .map(|&(layer, id)| {
                // A layer's class holds only the form nodes built here and by the rewrites, over number
                // leaves, and never merges with a number or the root.
                let (_, form) = decode(&self.egraph, extractor.find_best_node(id))
                    .ok_or_else(|| format!("the e-graph's class of layer {layer} holds a node that is no form"))?;
                Ok((layer, form))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Selection {
            forms,
            cost: extractor.find_best_cost(self.root).seconds,
            classes: self.classes(),
            nodes: self.nodes(),
            iterations: self.iterations,
            stop: self.stop.clone(),
            fired: self.fired.clone(),
        })
    }

    /// The forms in `layer`'s class, sorted (empty when it is not one of the MoE layers).
    pub fn forms_of(&self, layer: u32) -> Vec<Form> {
        let Some(&(_, id)) = self.layers.iter().find(|&&(l, _)| l == layer) else {
            return Vec::new();
        };
        let forms: BTreeSet<Form> = self.egraph[id]
            .iter()
            .filter_map(|node| decode(&self.egraph, node))
            .map(|(_, form)| form)
            .collect();
        forms.into_iter().collect()
    }

    /// E-classes in the e-graph.
    pub fn classes(&self) -> usize {
        self.egraph.number_of_classes()
    }

    /// E-nodes in the e-graph.
    pub fn nodes(&self) -> usize {
        self.egraph.total_number_of_nodes()
    }

    /// Why the runner stopped: `saturated`, or the limit that stopped it.
    pub fn stop(&self) -> &str {
        &self.stop
    }
}

/// The number in a leaf's class (number classes are never merged with anything: no rewrite equates numbers).
fn num(egraph: &Graph, id: Id) -> Option<u32> {
    egraph[id].iter().find_map(|n| match n {
        FormNode::Num(v) => Some(*v),
        _ => None,
    })
}

/// The layer and form a form node stands for (`None` for numbers and the root).
fn decode(egraph: &Graph, node: &FormNode) -> Option<(u32, Form)> {
    let n = |id: &Id| num(egraph, *id);
    let fused = |id: &Id| match n(id)? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    };
    let (layer, kind, f) = match node {
        FormNode::Ep([l, f]) => (n(l)?, FormKind::Ep, f),
        FormNode::Tp([l, k, f]) => (n(l)?, FormKind::Tp(n(k)?), f),
        FormNode::Shard([l, k, f]) => (n(l)?, FormKind::Shard(n(k)?), f),
        FormNode::Hybrid([l, f]) => (n(l)?, FormKind::Hybrid, f),
        FormNode::Model(_) | FormNode::Num(_) => return None,
    };
    Some((layer, Form { kind, fused: fused(f)? }))
}

/// Adds the node of `form` for `layer` (and its number leaves); its class.
fn add_form(egraph: &mut Graph, layer: u32, form: Form) -> Id {
    let l = egraph.add(FormNode::Num(layer));
    let f = egraph.add(FormNode::Num(u32::from(form.fused)));
    let node = match form.kind {
        FormKind::Ep => FormNode::Ep([l, f]),
        FormKind::Tp(k) => FormNode::Tp([l, egraph.add(FormNode::Num(k)), f]),
        FormKind::Shard(k) => FormNode::Shard([l, egraph.add(FormNode::Num(k)), f]),
        // `compute_balanced` is a baseline, never a form of the e-graph
        // (`Form::fits` refuses it); it shares hybrid's node only so the
        // match is total.
        FormKind::Hybrid | FormKind::ComputeBalanced => FormNode::Hybrid([l, f]),
    };
    egraph.add(node)
}

/// Which form node a rewrite's pattern matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    Ep,
    Tp,
    Shard,
    Hybrid,
}

impl Head {
    fn of(kind: FormKind) -> Head {
        match kind {
            FormKind::Ep => Head::Ep,
            FormKind::Tp(_) => Head::Tp,
            FormKind::Shard(_) => Head::Shard,
            FormKind::Hybrid | FormKind::ComputeBalanced => Head::Hybrid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Head::Ep => "ep",
            Head::Tp => "tp",
            Head::Shard => "shard",
            Head::Hybrid => "hybrid",
        }
    }

    /// `(head ?layer ?ways ?fused)`, without `?ways` for ep and hybrid.
    fn pattern(self) -> Pattern<FormNode> {
        let mut ast = PatternAst::default();
        let [l, k, f] = [LAYER, WAYS, FUSED].map(|v| ast.add(ENodeOrVar::Var(Var::from_u32(v))));
        let node = match self {
            Head::Ep => FormNode::Ep([l, f]),
            Head::Tp => FormNode::Tp([l, k, f]),
            Head::Shard => FormNode::Shard([l, k, f]),
            Head::Hybrid => FormNode::Hybrid([l, f]),
        };
        ast.add(ENodeOrVar::ENode(node));
        Pattern::new(ast)
    }
}

/// The pattern variables: `?#0` layer, `?#1` ways, `?#2` fused.
const LAYER: u32 = 0;
const WAYS: u32 = 1;
const FUSED: u32 = 2;

/// The rewrites between forms that compute the same result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// (ep L f) => (tp L 1 f), and back.
    EpIsTp1,
    Tp1IsEp,
    /// (tp L k f) => (tp L k*p f) for a prime p with k*p | dies, and back.
    SplitTp,
    MergeTp,
    SplitShard,
    MergeShard,
    /// (tp L dies f) => (shard L dies f), and back.
    TpAllIsShardAll,
    ShardAllIsTpAll,
    /// (X ... 0) => (X ... 1), and back.
    Fuse(Head),
    Unfuse(Head),
    /// (ep L f) => (hybrid L f) when hybrid is available, and back.
    EpIsHybrid,
    HybridIsEp,
}

impl Rule {
    fn name(self) -> String {
        match self {
            Rule::EpIsTp1 => "ep-is-tp1".into(),
            Rule::Tp1IsEp => "ep-is-tp1-rev".into(),
            Rule::SplitTp => "split-tp".into(),
            Rule::MergeTp => "merge-tp".into(),
            Rule::SplitShard => "split-shard".into(),
            Rule::MergeShard => "merge-shard".into(),
            Rule::TpAllIsShardAll => "tp-all-is-shard-all".into(),
            Rule::ShardAllIsTpAll => "tp-all-is-shard-all-rev".into(),
            Rule::Fuse(h) => format!("fuse-{}", h.name()),
            Rule::Unfuse(h) => format!("unfuse-{}", h.name()),
            Rule::EpIsHybrid => "ep-is-hybrid".into(),
            Rule::HybridIsEp => "ep-is-hybrid-rev".into(),
        }
    }

    /// The node the rule's pattern matches.
    fn head(self) -> Head {
        match self {
            Rule::EpIsTp1 | Rule::EpIsHybrid => Head::Ep,
            Rule::Tp1IsEp | Rule::SplitTp | Rule::MergeTp | Rule::TpAllIsShardAll => Head::Tp,
            Rule::SplitShard | Rule::MergeShard | Rule::ShardAllIsTpAll => Head::Shard,
            Rule::HybridIsEp => Head::Hybrid,
            Rule::Fuse(h) | Rule::Unfuse(h) => h,
        }
    }

    /// The forms this rule equates `form` with on `dies` dies (none when its condition does not hold).
    fn targets(self, form: Form, dies: u32, hybrid: bool) -> Vec<Form> {
        let with = |kind| Form { kind, ..form };
        let kinds: Vec<FormKind> = match (self, form.kind) {
            (Rule::EpIsTp1, FormKind::Ep) if dies >= 1 => vec![FormKind::Tp(1)],
            (Rule::Tp1IsEp, FormKind::Tp(1)) => vec![FormKind::Ep],
            (Rule::SplitTp, FormKind::Tp(k)) => splits(k, dies).into_iter().map(FormKind::Tp).collect(),
            (Rule::MergeTp, FormKind::Tp(k)) => merges(k, dies).into_iter().map(FormKind::Tp).collect(),
            (Rule::SplitShard, FormKind::Shard(k)) => splits(k, dies).into_iter().map(FormKind::Shard).collect(),
            (Rule::MergeShard, FormKind::Shard(k)) => merges(k, dies).into_iter().map(FormKind::Shard).collect(),
            (Rule::TpAllIsShardAll, FormKind::Tp(k)) if k == dies => vec![FormKind::Shard(k)],
            (Rule::ShardAllIsTpAll, FormKind::Shard(k)) if k == dies => vec![FormKind::Tp(k)],
            (Rule::Fuse(h), kind) if Head::of(kind) == h && !form.fused => {
                return vec![Form { kind, fused: true }];
            }
            (Rule::Unfuse(h), kind) if Head::of(kind) == h && form.fused => {
                return vec![Form { kind, fused: false }];
            }
            (Rule::EpIsHybrid, FormKind::Ep) if hybrid => vec![FormKind::Hybrid],
            (Rule::HybridIsEp, FormKind::Hybrid) if hybrid => vec![FormKind::Ep],
            _ => Vec::new(),
        };
        kinds.into_iter().map(with).collect()
    }
}

/// k*p for every prime p with k*p dividing `dies` (none when k does not divide it).
fn splits(k: u32, dies: u32) -> Vec<u32> {
    if k == 0 || !dies.is_multiple_of(k) {
        return Vec::new();
    }
    primes_dividing(dies / k).into_iter().map(|p| k * p).collect()
}

/// k/p for every prime p dividing k (none when k does not divide `dies`).
fn merges(k: u32, dies: u32) -> Vec<u32> {
    if k == 0 || !dies.is_multiple_of(k) {
        return Vec::new();
    }
    primes_dividing(k).into_iter().map(|p| k / p).collect()
}

/// The distinct primes dividing `n`, ascending.
fn primes_dividing(mut n: u32) -> Vec<u32> {
    let mut primes = Vec::new();
    let mut p = 2;
    while u64::from(p) * u64::from(p) <= u64::from(n) {
        if n.is_multiple_of(p) {
            primes.push(p);
            while n.is_multiple_of(p) {
                n /= p;
            }
        }
        p += 1;
    }
    if n > 1 {
        primes.push(n);
    }
    primes
}

/// The divisors of `n`, ascending (none for 0).
fn divisors(n: u32) -> Vec<u32> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut d = 1u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            small.push(d);
            if d != n / d {
                large.push(n / d);
            }
        }
        d += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

/// The rules of a search: all of them, less those that build or match a
/// hybrid form when hybrid is not available.
fn rules(hybrid: bool) -> Vec<Rule> {
    let heads = [Head::Ep, Head::Tp, Head::Shard, Head::Hybrid];
    let mut rules = vec![
        Rule::EpIsTp1,
        Rule::Tp1IsEp,
        Rule::SplitTp,
        Rule::MergeTp,
        Rule::SplitShard,
        Rule::MergeShard,
        Rule::TpAllIsShardAll,
        Rule::ShardAllIsTpAll,
        Rule::EpIsHybrid,
        Rule::HybridIsEp,
    ];
    rules.extend(heads.map(Rule::Fuse));
    rules.extend(heads.map(Rule::Unfuse));
    let uses_hybrid = |r: &Rule| {
        matches!(
            r,
            Rule::EpIsHybrid | Rule::HybridIsEp | Rule::Fuse(Head::Hybrid) | Rule::Unfuse(Head::Hybrid)
        )
    };
    rules.retain(|r| hybrid || !uses_hybrid(r));
    rules
}

/// Every rule as an egg rewrite: its pattern matches one form node; [`Step`] reads the numbers and applies it.
/// egg refuses only an applier naming a variable its pattern does not bind, and `Step` names none.
fn rewrites(dies: u32, hybrid: bool) -> Result<Vec<Rewrite<FormNode, ()>>, String> {
    rules(hybrid)
        .into_iter()
        .map(|rule| {
            Rewrite::new(rule.name(), rule.head().pattern(), Step { rule, dies, hybrid })
                .map_err(|e| format!("egg refused the rewrite `{}`: {e}", rule.name()))
        })
        .collect()
}

/// The applier of one rule: reads the matched node's numbers, adds each equal form, and unions it with the
/// match's class.
struct Step {
    rule: Rule,
    dies: u32,
    hybrid: bool,
}

impl Applier<FormNode, ()> for Step {
    fn apply_one(
        &self,
        egraph: &mut Graph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<FormNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let var = |v: u32| subst.get(Var::from_u32(v)).copied();
        let node = match (self.rule.head(), var(LAYER), var(WAYS), var(FUSED)) {
            (Head::Ep, Some(l), _, Some(f)) => FormNode::Ep([l, f]),
            (Head::Tp, Some(l), Some(k), Some(f)) => FormNode::Tp([l, k, f]),
            (Head::Shard, Some(l), Some(k), Some(f)) => FormNode::Shard([l, k, f]),
            (Head::Hybrid, Some(l), _, Some(f)) => FormNode::Hybrid([l, f]),
            _ => return Vec::new(),
        };
        let Some((layer, form)) = decode(egraph, &node) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for target in self.rule.targets(form, self.dies, self.hybrid) {
            let id = add_form(egraph, layer, target);
            // Only a new union counts as the rule firing (as egg's own pattern appliers report).
            if egraph.union(eclass, id) {
                changed.push(id);
            }
        }
        changed
    }
}

/// Seconds made totally ordered: NaN is infeasible (infinite), -0 is 0.
fn seconds(s: f64) -> f64 {
    if s.is_nan() {
        f64::INFINITY
    } else if s == 0.0 {
        0.0
    } else {
        s
    }
}

/// The tie-break part of a cost: a form's [`Form::tie_key`]; the root and the numbers have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tie {
    Form(Form),
    None,
}

impl Tie {
    fn key(self) -> Option<(FormKind, bool)> {
        match self {
            Tie::Form(form) => Some(form.tie_key()),
            Tie::None => None,
        }
    }
}

/// The extraction's cost: seconds, then the tie rule; totally ordered.
#[derive(Clone, Copy, Debug)]
struct Cost {
    seconds: f64,
    tie: Tie,
}

impl Cost {
    fn of(s: f64, form: Form) -> Cost {
        Cost {
            seconds: seconds(s),
            tie: Tie::Form(form),
        }
    }
}

impl Ord for Cost {
    fn cmp(&self, other: &Cost) -> Ordering {
        // A form node's cost against one that is not (never in one class) sorts the form first.
        let tie = match (self.tie.key(), other.tie.key()) {
            (Some(a), Some(b)) => a.cmp(&b),
            (a, b) => b.is_some().cmp(&a.is_some()),
        };
        self.seconds.total_cmp(&other.seconds).then(tie)
    }
}

impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Cost) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Cost {
    fn eq(&self, other: &Cost) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cost {}

/// A form node costs its layer's cost under that form; a number nothing; the root the sum of its layers.
struct LayerCosts<'a> {
    egraph: &'a Graph,
    cost: &'a dyn FormCost,
}

impl CostFunction<FormNode> for LayerCosts<'_> {
    type Cost = Cost;

    fn cost<C>(&mut self, enode: &FormNode, mut costs: C) -> Cost
    where
        C: FnMut(Id) -> Cost,
    {
        match enode {
            FormNode::Num(_) => Cost {
                seconds: 0.0,
                tie: Tie::None,
            },
            // Added in the layers' order from 0, as `exhaustive` does, so the two sums agree bit for bit.
            FormNode::Model(layers) => Cost {
                seconds: layers.iter().fold(0.0, |sum, &l| seconds(sum + costs(l).seconds)),
                tie: Tie::None,
            },
            _ => match decode(self.egraph, enode) {
                Some((layer, form)) => Cost::of(self.cost.layer_cost(layer, form), form),
                None => Cost {
                    seconds: f64::INFINITY,
                    tie: Tie::None,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moec_runtime::rng::Rng;
    use proptest::prelude::*;

    const DIES: [u32; 7] = [1, 2, 4, 6, 8, 12, 16];
    /// Model layer numbers of MoE layers: not contiguous, not from 0.
    const LAYERS: [u32; 4] = [3, 4, 9, 27];

    /// A number per form, to seed its cost.
    fn code(form: Form) -> u64 {
        let kind = match form.kind {
            FormKind::Ep => 0,
            FormKind::Tp(k) => (1 << 32) | u64::from(k),
            FormKind::Shard(k) => (2 << 32) | u64::from(k),
            FormKind::Hybrid => 3 << 32,
            FormKind::ComputeBalanced => 4 << 32,
        };
        2 * kind + u64::from(form.fused)
    }

    /// Seeded costs, a fresh stream per (layer, form) so they do not depend on who asks first: uniform in [0, 1),
    /// or one of `levels` integers (ties), or infinite one time in `infinite_one_in`.
    struct Random {
        seed: u64,
        levels: u64,
        infinite_one_in: u64,
    }

    impl FormCost for Random {
        fn layer_cost(&self, layer: u32, form: Form) -> f64 {
            let mut rng = Rng::new(self.seed).fork(u64::from(layer)).fork(code(form));
            if self.infinite_one_in > 0 && rng.below(self.infinite_one_in) == 0 {
                return f64::INFINITY;
            }
            if self.levels > 0 {
                rng.below(self.levels) as f64
            } else {
                rng.next_f64()
            }
        }
    }

    /// A roofline-like cost. Experts' compute spreads over the dies, its imbalance shrinking with the ways k and
    /// the copies; splitting by columns adds a reduction of (k-1)/k of the output; unfused, every shard on a die
    /// is one launch; copies beyond memory are infeasible. Written so that Tp(1) = Ep and Tp(dies) =
    /// Shard(dies) exactly (ties the rule must break).
    struct Analytic {
        dies: u32,
        experts: f64,
        compute: f64,
        skew: f64,
        dispatch: f64,
        reduce: f64,
        launch: f64,
        max_copies: u32,
    }

    impl Analytic {
        fn split(&self, layer: u32, k: u32, copies: u32, fused: bool) -> f64 {
            if copies > self.max_copies {
                return f64::INFINITY;
            }
            let (d, k, c) = (f64::from(self.dies), f64::from(k), f64::from(copies));
            let work = self.compute * (1.0 + 0.25 * f64::from(layer % 3));
            let compute = work / d * (1.0 + self.skew / (k * c));
            let comm = self.dispatch + self.reduce * (k - 1.0) / k;
            let shards_per_die = self.experts * k * c / d;
            let launches = if fused {
                self.launch
            } else {
                self.launch * shards_per_die
            };
            compute + comm + launches
        }
    }

    impl FormCost for Analytic {
        fn layer_cost(&self, layer: u32, form: Form) -> f64 {
            match form.kind {
                FormKind::Ep => self.split(layer, 1, 1, form.fused),
                FormKind::Tp(k) => self.split(layer, k, 1, form.fused),
                FormKind::Shard(k) => self.split(layer, k, self.dies / k, form.fused),
                FormKind::Hybrid => {
                    let ep = self.split(layer, 1, 1, form.fused);
                    let tp = self.split(layer, self.dies, 1, form.fused);
                    0.9 * ep.min(tp) + 0.1 * ep.max(tp)
                }
                FormKind::ComputeBalanced => f64::INFINITY,
            }
        }
    }

    fn analytic(dies: u32, variant: u64) -> Analytic {
        let v = variant as f64;
        Analytic {
            dies,
            experts: 64.0,
            compute: 1e-3 * (1.0 + v),
            skew: 0.5 + v,
            dispatch: 1e-4,
            reduce: 2e-4 * (3.0 - v),
            launch: 5e-6 * (1.0 + 4.0 * v),
            max_copies: 2 + variant as u32,
        }
    }

    /// Every cost function of the agreement test, for one case.
    fn costs(dies: u32, seed: u64) -> Vec<(String, Box<dyn FormCost>)> {
        let mut all: Vec<(String, Box<dyn FormCost>)> = vec![
            (
                "uniform".into(),
                Box::new(Random {
                    seed,
                    levels: 0,
                    infinite_one_in: 0,
                }),
            ),
            (
                "three levels (ties)".into(),
                Box::new(Random {
                    seed,
                    levels: 3,
                    infinite_one_in: 0,
                }),
            ),
            (
                "some infinite".into(),
                Box::new(Random {
                    seed,
                    levels: 0,
                    infinite_one_in: 3,
                }),
            ),
            (
                "mostly infinite, with ties".into(),
                Box::new(Random {
                    seed,
                    levels: 2,
                    infinite_one_in: 2,
                }),
            ),
            ("all equal".into(), Box::new(|_: u32, _: Form| 1.0)),
            ("all infinite".into(), Box::new(|_: u32, _: Form| f64::INFINITY)),
            (
                "NaN for split forms".into(),
                Box::new(|l: u32, f: Form| match f.kind {
                    FormKind::Tp(k) | FormKind::Shard(k) if k > 1 => f64::NAN,
                    _ => f64::from(l % 2) - 0.0,
                }),
            ),
        ];
        for variant in 0..3 {
            all.push((format!("analytic {variant}"), Box::new(analytic(dies, variant))));
        }
        all
    }

    fn assert_agrees(layers: &[u32], dies: u32, hybrid: bool, name: &str, cost: &dyn FormCost) {
        let selection = select(layers, dies, hybrid, cost).unwrap();
        let (forms, total) = exhaustive(layers, dies, hybrid, cost);
        let case = format!("{name}, layers {layers:?}, {dies} dies, hybrid {hybrid}");
        assert_eq!(selection.stop, "saturated", "{case}");
        assert_eq!(selection.forms, forms, "{case}");
        assert_eq!(
            selection.cost.to_bits(),
            total.to_bits(),
            "{case}: {} vs {total}",
            selection.cost
        );
    }

    #[test]
    fn extraction_matches_the_exhaustive_search() {
        let mut seed = 0;
        for dies in DIES {
            for n in 1..=LAYERS.len() {
                for hybrid in [false, true] {
                    seed += 1;
                    for (name, cost) in costs(dies, seed) {
                        assert_agrees(&LAYERS[..n], dies, hybrid, &name, cost.as_ref());
                    }
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_simpler_layout_and_the_fused_launch() {
        // Tp(1) is Ep's layout and Tp(dies) is Shard(dies)'s: the analytic cost ties them exactly.
        let cost = |_: u32, f: Form| match f.kind {
            FormKind::Ep | FormKind::Tp(1) => 1.0,
            _ => 2.0,
        };
        let s = select(&[5], 8, true, &cost).unwrap();
        assert_eq!(
            s.forms,
            vec![(
                5,
                Form {
                    kind: FormKind::Ep,
                    fused: true
                }
            )]
        );
        let cost = |_: u32, f: Form| match f.kind {
            FormKind::Tp(8) | FormKind::Shard(8) => 1.0,
            _ => 2.0,
        };
        let s = select(&[5], 8, true, &cost).unwrap();
        assert_eq!(
            s.forms,
            vec![(
                5,
                Form {
                    kind: FormKind::Tp(8),
                    fused: true
                }
            )]
        );
        let cost = |_: u32, f: Form| if f.fused { 2.0 } else { 1.0 };
        let s = select(&[5], 8, true, &cost).unwrap();
        assert_eq!(
            s.forms,
            vec![(
                5,
                Form {
                    kind: FormKind::Ep,
                    fused: false
                }
            )]
        );
        let cost = analytic(8, 0);
        assert_eq!(
            cost.layer_cost(
                0,
                Form {
                    kind: FormKind::Ep,
                    fused: true
                }
            ),
            cost.layer_cost(
                0,
                Form {
                    kind: FormKind::Tp(1),
                    fused: true
                }
            )
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn extraction_matches_the_exhaustive_search_on_random_cases(
            dies in 1u32..=36,
            layers in proptest::collection::vec(0u32..100, 0..4),
            hybrid in any::<bool>(),
            seed in any::<u64>(),
            levels in 0u64..4,
            infinite_one_in in 0u64..4,
        ) {
            let cost = Random { seed, levels, infinite_one_in };
            assert_agrees(&layers, dies, hybrid, "proptest", &cost);
        }
    }

    #[test]
    fn saturation_reaches_every_form() {
        for dies in [1, 2, 3, 4, 6, 8, 12, 16, 30, 36, 64, 97] {
            for hybrid in [false, true] {
                let graph = FormGraph::saturate(&LAYERS[..2], dies, hybrid).unwrap();
                assert_eq!(graph.stop(), "saturated");
                for l in &LAYERS[..2] {
                    assert_eq!(
                        graph.forms_of(*l),
                        all_forms(dies, hybrid),
                        "layer {l}, {dies} dies, {hybrid}"
                    );
                }
            }
        }
        assert!(FormGraph::saturate(&[1], 4, false).unwrap().forms_of(2).is_empty());
    }

    #[test]
    fn a_run_stopped_by_a_limit_says_so_and_still_selects() {
        let graph = FormGraph::saturate_within(&[0, 1], 64, true, 3).unwrap();
        assert_eq!(graph.stop(), "stopped at the iteration limit (3)");
        let reached = graph.forms_of(0);
        assert!(reached.len() < all_forms(64, true).len() && reached.iter().all(|f| f.fits(64, true)));
        // The cheapest form is out of reach: the selection is the cheapest of those reached.
        let cost = |_: u32, f: Form| if f.kind == FormKind::Shard(1) { 1.0 } else { 2.0 };
        let s = graph.extract(&cost).unwrap();
        assert_eq!(s.cost, 4.0);
        assert!(s.stop.contains("iteration limit"));
    }

    #[test]
    fn all_forms_lists_each_divisor_twice_over() {
        let forms = all_forms(12, false);
        let ways: Vec<u32> = forms
            .iter()
            .filter_map(|f| match f.kind {
                FormKind::Tp(k) if f.fused => Some(k),
                _ => None,
            })
            .collect();
        assert_eq!(ways, [1, 2, 3, 4, 6, 12]);
        assert_eq!(forms.len(), 2 * (1 + 6 + 6));
        assert_eq!(all_forms(64, true).len(), 2 * (1 + 7 + 7 + 1));
        // No die: only Ep (and hybrid) remain, and the search still answers.
        assert_eq!(all_forms(0, false).len(), 2);
        let s = select(&[0], 0, false, &|_: u32, _: Form| 1.0).unwrap();
        assert_eq!(
            s.forms,
            vec![(
                0,
                Form {
                    kind: FormKind::Ep,
                    fused: true
                }
            )]
        );
        let s = select(&[], 8, true, &|_: u32, _: Form| 1.0).unwrap();
        assert_eq!((s.forms.len(), s.cost), (0, 0.0));
    }

    #[test]
    fn rewrites_build_only_layouts_of_the_dies() {
        // Every rule, the hybrid ones too, from every form.
        let rules = rules(true);
        for dies in 0..=64 {
            for hybrid in [false, true] {
                for form in all_forms(dies, hybrid) {
                    for rule in &rules {
                        for target in rule.targets(form, dies, hybrid) {
                            assert!(
                                target.fits(dies, hybrid),
                                "{} on {form}, {dies} dies: {target}",
                                rule.name()
                            );
                        }
                    }
                }
            }
        }
        // Every node of every saturated e-graph is a number, the root, or a form of one layer that fits.
        for dies in 1..=24 {
            let graph = FormGraph::saturate(&[2, 7], dies, true).unwrap();
            for class in graph.egraph.classes() {
                let layers: BTreeSet<u32> = class
                    .iter()
                    .filter(|n| !matches!(n, FormNode::Num(_) | FormNode::Model(_)))
                    .map(|n| {
                        let (l, form) = decode(&graph.egraph, n).expect("a form node");
                        assert!(form.fits(dies, true), "{form} on {dies} dies");
                        l
                    })
                    .collect();
                assert!(layers.len() <= 1, "one class holds layers {layers:?}");
            }
        }
    }

    #[test]
    fn the_saturated_graph_of_two_layers_on_eight_dies() {
        let graph = FormGraph::saturate(&[1, 3], 8, true).unwrap();
        let text = describe(&graph);
        assert_eq!(
            text,
            describe(&FormGraph::saturate(&[1, 3], 8, true).unwrap()),
            "deterministic"
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn fifty_eight_layers_on_sixty_four_dies_saturate() {
        let layers: Vec<u32> = (3..61).collect();
        let graph = FormGraph::saturate(&layers, 64, true).unwrap();
        assert_eq!(graph.stop(), "saturated");
        // Numbers 0..=60 and 64; the root; one class per layer of 32 forms.
        assert_eq!(graph.classes(), 62 + 1 + 58);
        assert_eq!(graph.nodes(), 62 + 1 + 58 * 32);
    }

    /// Sizes and time for the report: `cargo test --release -p moec --lib form_graph -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_fifty_eight_layers_on_sixty_four_dies() {
        let layers: Vec<u32> = (3..61).collect();
        let cost = analytic(64, 1);
        let start = std::time::Instant::now();
        let graph = FormGraph::saturate(&layers, 64, true).unwrap();
        let saturated = start.elapsed();
        let selection = graph.extract(&cost).unwrap();
        let total = start.elapsed();
        println!(
            "58 layers, 64 dies, hybrid: {} classes, {} nodes, {} iterations, {}; saturation {:.2} ms, \
             with extraction {:.2} ms",
            selection.classes,
            selection.nodes,
            selection.iterations,
            selection.stop,
            saturated.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        println!("{:?}", selection.fired);
    }
}
