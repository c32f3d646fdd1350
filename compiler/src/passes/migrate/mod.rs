//! `migrate(POLICY)`: expert weights that move while the run goes on, as
//! `Migrate`, `Replicate` and `Evict` nodes in the IR.
//!
//! Routing drifts over a long run, so a placement that was balanced at
//! step 0 is not at step 5,000. This pass plays the run forward, step by
//! step, the way an online balancer would see it: at step `s` the policy
//! knows only the expert loads observed in the steps before `s`
//! ([`LoadHistory`], from the workload's own routing source) and predicts
//! the next from a window of them. What it decides becomes IR nodes with
//! their timing, so lowering turns them into the schedule's migrations and
//! broadcasts and the runtime moves the real weights.
//!
//! The policies, one file each:
//! - `invasive` (the baseline): EPLB recomputed every N steps on the
//!   predicted loads, the differences moved with every die stopped;
//! - `ni_balancer` (MoEntwine): shadow-slot replicas of the hottest expert
//!   of the hottest die, sent in legs over links the phase leaves cold;
//! - `dynamic_placement` (HD-MoE): the k hottest predicted experts of each
//!   layer broadcast to every die during the layer's attention.
//!
//! Migration moves whole experts, so it runs after a placement with the
//! experts whole (EP, replicas allowed).

pub(crate) mod dynamic_placement;
pub(crate) mod invasive;
pub(crate) mod load_history;
pub(crate) mod ni_balancer;

use crate::ir::{Annotation, Eviction, Ir, LayerId, Node, Op, Sharding, Tensor, TensorType, WeightMove};
use crate::passes::Pass;
use crate::passes::PassContext;
use load_history::LoadHistory;
use moec_runtime::machine::DieId;
use moec_runtime::units::Bytes;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;
use std::fmt;

/// Which policy moves experts, with its settings (`migration = ...`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MigrationPolicy {
    /// The placement stays as compiled.
    None,
    /// EPLB recomputed every `every` steps from the loads of the last
    /// `window` steps; the moves stop every die.
    Invasive { every: u64, window: u64 },
    /// MoEntwine's NI-Balancer: every `every` steps, per MoE layer, when the
    /// hottest die's predicted load exceeds `(1 + alpha)` times the mean,
    /// its hottest expert gains a replica in a shadow slot (`slots` per die
    /// and layer) of the nearest die, sent over cold links.
    NiBalancer {
        alpha: f64,
        every: u64,
        window: u64,
        slots: u32,
    },
    /// HD-MoE's DynamicPlacement: every `every` steps, per MoE layer, the k
    /// hottest predicted experts are broadcast to every die for the next
    /// `every` steps, k the largest whose broadcast fits under attention.
    DynamicPlacement { every: u64, window: u64 },
}

impl MigrationPolicy {
    /// The policy `name` with every setting at its default.
    pub fn default_of(name: &str) -> Option<MigrationPolicy> {
        Some(match name {
            "none" => MigrationPolicy::None,
            // MoEntwine's notes: invasive rebalancing interrupts about every 10 iterations.
            "invasive" => MigrationPolicy::Invasive { every: 10, window: 10 },
            "ni_balancer" => MigrationPolicy::NiBalancer {
                alpha: 0.1,
                every: 1,
                window: 8,
                slots: 2,
            },
            "dynamic_placement" => MigrationPolicy::DynamicPlacement { every: 1, window: 4 },
            _ => return None,
        })
    }

    /// The policy's name in the language.
    pub fn name(&self) -> &'static str {
        match self {
            MigrationPolicy::None => "none",
            MigrationPolicy::Invasive { .. } => "invasive",
            MigrationPolicy::NiBalancer { .. } => "ni_balancer",
            MigrationPolicy::DynamicPlacement { .. } => "dynamic_placement",
        }
    }

    /// Parses the pass argument: `ni_balancer` or `ni_balancer, alpha = 0.2, slots = 1`.
    pub fn parse(arg: &str) -> Result<MigrationPolicy, String> {
        let mut parts = arg.split(',').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let mut policy = MigrationPolicy::default_of(name).ok_or_else(|| {
            format!("no migration policy `{name}` (policies: none, invasive, ni_balancer, dynamic_placement)")
        })?;
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("`{part}`: write a setting as key = value"))?;
            let int = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("`{key}` takes a whole number, not `{value}`"))
            };
            match (&mut policy, key) {
                (
                    MigrationPolicy::Invasive { every, .. }
                    | MigrationPolicy::NiBalancer { every, .. }
                    | MigrationPolicy::DynamicPlacement { every, .. },
                    "every",
                ) => *every = int()?.max(1),
                (
                    MigrationPolicy::Invasive { window, .. }
                    | MigrationPolicy::NiBalancer { window, .. }
                    | MigrationPolicy::DynamicPlacement { window, .. },
                    "window",
                ) => *window = int()?.max(1),
                (MigrationPolicy::NiBalancer { alpha, .. }, "alpha") => {
                    *alpha = value
                        .parse::<f64>()
                        .ok()
                        .filter(|a| (0.0..=10.0).contains(a))
                        .ok_or_else(|| format!("`alpha` takes a number from 0 to 10, not `{value}`"))?
                }
                (MigrationPolicy::NiBalancer { slots, .. }, "slots") => *slots = int()?.clamp(1, 64) as u32,
                _ => return Err(format!("`{}` has no setting `{key}`", policy.name())),
            }
        }
        Ok(policy)
    }

    /// The pass that carries it out.
    pub fn pass(&self) -> String {
        format!("migrate({self})")
    }
}

impl fmt::Display for MigrationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MigrationPolicy::None => write!(f, "none"),
            MigrationPolicy::Invasive { every, window } => write!(f, "invasive, every = {every}, window = {window}"),
            MigrationPolicy::NiBalancer {
                alpha,
                every,
                window,
                slots,
            } => write!(
                f,
                "ni_balancer, alpha = {alpha}, every = {every}, window = {window}, slots = {slots}"
            ),
            MigrationPolicy::DynamicPlacement { every, window } => {
                write!(f, "dynamic_placement, every = {every}, window = {window}")
            }
        }
    }
}

/// Where each expert of each MoE layer lives, as the placement left it,
/// with the node of each expert (what a move node takes as input).
#[derive(Clone, Debug)]
pub struct ExpertHolders {
    /// The model layer of each MoE layer, in order.
    pub layers: Vec<u32>,
    /// `dies[i][e]`: the dies holding expert `e` of MoE layer `i`.
    pub dies: Vec<Vec<Vec<DieId>>>,
    nodes: BTreeMap<(u32, u32), NodeIndex>,
}

impl ExpertHolders {
    /// The holders the placement wrote into `ir`. Errors when an expert is
    /// split over dies (migration moves whole experts) or not placed.
    pub fn of(ir: &Ir) -> Result<ExpertHolders, String> {
        let mut by_layer: BTreeMap<u32, BTreeMap<u32, Vec<DieId>>> = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for (i, n) in ir.nodes() {
            let (Op::Expert { expert, .. }, Some(layer)) = (&n.op, n.layer) else {
                continue;
            };
            if n.ann.sharding != Sharding::Whole || !n.ann.columns.is_empty() {
                return Err(format!(
                    "expert e{} of layer {} is split over dies ({:?}); migration moves whole experts: use parallel = ep",
                    expert.0, layer.0, n.ann.sharding
                ));
            }
            if n.ann.dies.is_empty() {
                return Err(format!("expert e{} of layer {} is not placed", expert.0, layer.0));
            }
            // The policies track a die as holding an expert or not; a
            // second slot on one die stays where EPLB put it.
            let mut holders = n.ann.dies.clone();
            holders.dedup();
            by_layer.entry(layer.0).or_default().insert(expert.0, holders);
            nodes.insert((layer.0, expert.0), i);
        }
        Ok(ExpertHolders {
            layers: by_layer.keys().copied().collect(),
            dies: by_layer.into_values().map(|m| m.into_values().collect()).collect(),
            nodes,
        })
    }

    /// Per die, the predicted load of MoE layer `i` under `loads` (per
    /// expert): each expert's load shared evenly by its copies, as the
    /// runtime's copy rule spreads a replicated expert's tokens.
    pub fn die_loads(dies: &[Vec<DieId>], loads: &[f64], die_count: usize) -> Vec<f64> {
        let mut h = vec![0.0; die_count];
        for (e, holders) in dies.iter().enumerate() {
            let share = loads.get(e).copied().unwrap_or(0.0) / holders.len().max(1) as f64;
            for d in holders {
                h[d.index()] += share;
            }
        }
        h
    }
}

/// One node a policy decided on, for MoE layer index `layer` (into
/// [`ExpertHolders::layers`]).
#[derive(Clone, Debug)]
pub enum Decision {
    /// A copy moves (`Migrate`).
    Move { layer: usize, weights: WeightMove },
    /// Copies are added (`Replicate`), on shadow slots or down a tree.
    Replicate { layer: usize, weights: WeightMove },
    /// A copy is dropped.
    Evict { layer: usize, eviction: Eviction },
}

/// What a policy decided over the run.
#[derive(Clone, Debug, Default)]
pub struct MovePlan {
    pub decisions: Vec<Decision>,
    /// Expert slots each die keeps free per MoE layer for replicas.
    pub shadow_slots: u32,
    /// What a reader should know about how it decided, one line each.
    pub notes: Vec<String>,
}

/// The pass.
pub struct Migrate {
    policy: MigrationPolicy,
}

impl Migrate {
    /// `migrate(POLICY)`; the argument as [`MigrationPolicy::parse`] reads it.
    pub fn new(arg: Option<&str>) -> Result<Migrate, String> {
        let arg = arg.ok_or("`migrate` needs a policy: migrate(ni_balancer), migrate(invasive, every = 10)")?;
        Ok(Migrate {
            policy: MigrationPolicy::parse(arg)?,
        })
    }
}

impl Pass for Migrate {
    fn name(&self) -> String {
        self.policy.pass()
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        if self.policy == MigrationPolicy::None {
            return Ok(());
        }
        let holders = ExpertHolders::of(ir)?;
        if holders.layers.is_empty() {
            return Err("the model has no MoE layer: there are no experts to migrate".into());
        }
        let steps = cx.steps.max(1);
        let history = LoadHistory::observe(cx.model, cx.workload, &holders.layers, steps)?;
        let plan = match self.policy {
            MigrationPolicy::None => MovePlan::default(),
            MigrationPolicy::Invasive { every, window } => invasive::plan(&holders, &history, cx, every, window)?,
            MigrationPolicy::NiBalancer {
                alpha,
                every,
                window,
                slots,
            } => ni_balancer::plan(
                ir,
                &holders,
                &history,
                cx,
                ni_balancer::Settings {
                    alpha,
                    every,
                    window,
                    slots,
                },
            )?,
            MigrationPolicy::DynamicPlacement { every, window } => {
                dynamic_placement::plan(ir, &holders, &history, cx, every, window)?
            }
        };
        ir.shadow_slots = plan.shadow_slots;
        let count = plan.decisions.len();
        insert(ir, &holders, plan.decisions)?;
        ir.header.notes.push(format!(
            "migrate({}): {count} move nodes over {steps} steps; loads {}",
            self.policy.name(),
            history.source()
        ));
        ir.header.notes.extend(plan.notes);
        Ok(())
    }
}

/// Adds a node per decision, fed by its expert's node (the edge carries
/// the expert's weights).
pub(crate) fn insert(ir: &mut Ir, holders: &ExpertHolders, decisions: Vec<Decision>) -> Result<(), String> {
    let bytes = ir.model.expert_bytes();
    let dtype = ir.model.dtype;
    let weights = Tensor::new(vec![bytes.0 / dtype.bytes().max(1)], TensorType::Data(dtype));
    for d in decisions {
        // A move runs on the dies it touches: the sender first, then the receivers.
        let touched = |w: &WeightMove| std::iter::once(w.from).chain(w.to.iter().copied()).collect::<Vec<_>>();
        let (layer, expert, dies, op) = match d {
            Decision::Move { layer, weights } => {
                (layer, weights.expert, touched(&weights), Op::Migrate(Box::new(weights)))
            }
            Decision::Replicate { layer, weights } => (
                layer,
                weights.expert,
                touched(&weights),
                Op::Replicate(Box::new(weights)),
            ),
            Decision::Evict { layer, eviction } => (layer, eviction.expert, vec![eviction.die], Op::Evict(eviction)),
        };
        let model_layer = holders.layers[layer];
        let source = *holders
            .nodes
            .get(&(model_layer, expert.0))
            .ok_or_else(|| format!("no node for expert e{} of layer {model_layer}", expert.0))?;
        let node = ir.graph.add_node(Node {
            op,
            layer: Some(LayerId(model_layer)),
            weights: Bytes(0),
            state: Bytes(0),
            out: weights.clone(),
            ann: Annotation::new(dies, Sharding::Whole),
        });
        ir.graph.add_edge(source, node, weights.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_prints_as_the_argument_it_parses_from() {
        for name in ["none", "invasive", "ni_balancer", "dynamic_placement"] {
            let p = MigrationPolicy::default_of(name).unwrap();
            assert_eq!(MigrationPolicy::parse(&p.to_string()).unwrap(), p);
        }
        let p = MigrationPolicy::parse("ni_balancer, alpha = 0.25, slots = 3").unwrap();
        assert_eq!(
            p,
            MigrationPolicy::NiBalancer {
                alpha: 0.25,
                every: 1,
                window: 8,
                slots: 3
            }
        );
        assert_eq!(
            p.pass(),
            "migrate(ni_balancer, alpha = 0.25, every = 1, window = 8, slots = 3)"
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        assert!(MigrationPolicy::parse("magic")
            .unwrap_err()
            .contains("no migration policy"));
        assert!(MigrationPolicy::parse("invasive, slots = 2")
            .unwrap_err()
            .contains("no setting `slots`"));
        assert!(MigrationPolicy::parse("ni_balancer, alpha = -1")
            .unwrap_err()
            .contains("alpha"));
        assert!(MigrationPolicy::parse("invasive, every")
            .unwrap_err()
            .contains("key = value"));
    }

    #[test]
    fn a_replicated_expert_shares_its_load_over_its_copies() {
        let dies = vec![vec![DieId(0)], vec![DieId(0), DieId(1)]];
        assert_eq!(ExpertHolders::die_loads(&dies, &[4.0, 6.0], 3), vec![7.0, 3.0, 0.0]);
    }
}
