//! `place(ALGORITHM)`: the placement pass. Each algorithm (one file each:
//! `round_robin`, `contiguous`, `eplb`, `moetuner`, `hd_moe`) decides the dies of every expert;
//! this pass applies it to every layer and places everything else ([`Place::apply`], which `from_file` shares)
//! data-parallel: every alive die holds a copy of the embedding, gates,
//! shared experts, dense FFNs and LM head and serves its share of the
//! batch, and dispatch and combine run on every die, as the all-to-all they
//! are. Attention is data-parallel too, or, under `attention = tp(k)`,
//! split by heads over compact groups of `k` dies (`tp_groups`): the
//! attention nodes list the groups one after another, each in ring order.
//!
//! `er_mapping` and `tp_contiguous` (MoEntwine) also decide where attention
//! runs: entwined or compact groups, with token domains, which the
//! dispatch and combine nodes list (`Sharding::Domains`). Their experts are
//! placed as global EPLB places them (slots and all), so the two differ
//! only in layout.

pub(crate) mod auto;
pub(crate) mod contiguous;
pub(crate) mod eplb;
pub mod eplb_upstream;
pub(crate) mod from_file;
pub(crate) mod hd_moe;
pub(crate) mod link_balance;
pub(crate) mod moetuner;
pub(crate) mod node_balance;
pub(crate) mod round_robin;
pub(crate) mod tp_groups;

use crate::ir::{Annotation, Ir, Op, Sharding};
use crate::passes::Pass;
use crate::passes::PassContext;
use crate::sema::PlacementChoice;
use moec_runtime::machine::DieId;

/// The placement pass with its chosen algorithm.
pub struct Place {
    algorithm: PlacementChoice,
}

impl Place {
    /// `arg` is the algorithm's name as in a plan's `placement = ...`.
    pub fn new(arg: Option<&str>) -> Result<Place, String> {
        let names: Vec<&str> = PlacementChoice::ALL.iter().map(|(n, _)| *n).collect();
        let Some(arg) = arg else {
            return Err(format!("`place` needs an algorithm: place({})", names.join("|")));
        };
        PlacementChoice::ALL
            .iter()
            .find(|(n, _)| *n == arg)
            .map(|(_, algorithm)| Place {
                algorithm: algorithm.clone(),
            })
            .ok_or_else(|| format!("no placement algorithm `{arg}` (algorithms: {})", names.join(", ")))
    }
}

/// The same layout in every MoE layer, from a per-expert rule.
fn uniform(cx: &PassContext, die_of: impl Fn(u32) -> Vec<DieId>) -> Vec<Vec<Vec<DieId>>> {
    let experts = cx.model.moe.as_ref().map_or(0, |m| m.experts) as u32;
    let layer: Vec<Vec<DieId>> = (0..experts).map(die_of).collect();
    (0..cx.model.layers).map(|_| layer.clone()).collect()
}

impl Pass for Place {
    fn name(&self) -> String {
        format!("place({})", self.algorithm.name())
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        // Under disaggregation the experts go on their own pool.
        let dies = match &ir.pools {
            Some(pools) => pools.experts.clone(),
            None => cx.machine.alive_dies(),
        };
        if dies.is_empty() {
            return Err("the machine has no alive die".into());
        }
        let experts = cx.model.moe.as_ref().map_or(0, |m| m.experts);
        // `layouts[layer][expert]`: the dies of each expert, by the algorithm.
        let layouts: Vec<Vec<Vec<DieId>>> = match self.algorithm {
            PlacementChoice::RoundRobin => uniform(cx, |e| vec![round_robin::expert_die(e, &dies)]),
            PlacementChoice::Contiguous => uniform(cx, |e| vec![contiguous::expert_die(e, experts, &dies)]),
            PlacementChoice::Eplb
            | PlacementChoice::EplbHierarchical
            | PlacementChoice::EplbGlobal
            | PlacementChoice::ErMapping
            | PlacementChoice::TpContiguous => {
                let stats = cx.stats()?;
                let redundant = cx.redundant_experts.unwrap_or(dies.len() as u64) as usize;
                let groups = cx.model.moe.as_ref().map_or(1, |m| m.groups) as usize;
                let gpus = eplb::Gpus::new(&dies, |d| cx.machine.node_of(d));
                let policy = match self.algorithm {
                    PlacementChoice::Eplb => eplb::Policy::Upstream,
                    PlacementChoice::EplbHierarchical => eplb::Policy::Hierarchical,
                    _ => eplb::Policy::Global,
                };
                let placed = eplb::place(stats.balance_loads(), groups, &gpus, redundant, policy)?;
                ir.header
                    .notes
                    .push(format!("{}; loads {}", placed.note, stats.balance_source()));
                placed.layouts
            }
            PlacementChoice::Auto => return auto::place(ir, cx),
            PlacementChoice::MoeTuner => {
                let (layouts, notes) = moetuner::place(cx, &dies)?;
                ir.header.notes.extend(notes);
                layouts
            }
            PlacementChoice::HdMoe => {
                let placed = hd_moe::place(ir, cx, &dies, hd_moe::Mode::Replicas)?;
                ir.header.notes.extend(placed.notes);
                placed.layouts
            }
            // `Place::new` only builds the named algorithms; a file is `from_file`'s.
            PlacementChoice::File { .. } => return Err("a placement file is placed by the `from_file` pass".into()),
        };
        let groups = match self.algorithm {
            PlacementChoice::ErMapping => GroupLayout::Entwined,
            PlacementChoice::TpContiguous => GroupLayout::CompactWithDomains,
            _ => GroupLayout::Compact,
        };
        Place::apply(ir, cx, &layouts, groups)
    }
}

/// How tensor-parallel attention groups are laid out (`tp_groups`), and
/// whether dispatch and combine run from token domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupLayout {
    /// Compact blocks; each token dispatched from its home die.
    Compact,
    /// Compact blocks; token domains of the dies at one ring position.
    CompactWithDomains,
    /// MoEntwine's entwined groups around compact token domains.
    Entwined,
}

impl Place {
    /// Places every expert on the dies `layouts[layer][expert]` gives and
    /// everything else data-parallel (attention, under `tp(k)`, over groups
    /// laid out as `layout` says).
    pub(crate) fn apply(
        ir: &mut Ir,
        cx: &PassContext,
        layouts: &[Vec<Vec<DieId>>],
        layout: GroupLayout,
    ) -> Result<(), String> {
        let dies = cx.machine.alive_dies();
        // What holds the tokens: every die, or the attention pool.
        let token_dies = ir.pools.as_ref().map_or_else(|| dies.clone(), |p| p.attention.clone());
        if ir.pools.is_some() && layout != GroupLayout::Compact {
            return Err("disaggregated pools take no token domains".into());
        }
        if layout != GroupLayout::Compact && cx.attention_tp < 2 {
            return Err("token domains need attention = tp(k)".into());
        }
        let (groups, domains) = match layout {
            GroupLayout::Entwined => {
                let (groups, domains) = tp_groups::entwined(cx.machine, cx.attention_tp)?;
                (groups, Some(domains))
            }
            GroupLayout::CompactWithDomains => {
                let groups = tp_groups::compact_groups(cx.machine, cx.attention_tp);
                let domains = tp_groups::positional_domains(&groups);
                (groups, Some(domains))
            }
            // Under pools, the attention pool's own groups (MegaScale-Infer's tp_a).
            GroupLayout::Compact if cx.attention_tp > 1 => (
                tp_groups::compact_groups_within(
                    cx.machine,
                    cx.attention_tp,
                    ir.pools.as_ref().map(|p| &p.attention[..]),
                ),
                None,
            ),
            GroupLayout::Compact => (Vec::new(), None),
        };
        let attention = if cx.attention_tp > 1 {
            if groups.is_empty() {
                return Err(format!(
                    "tp({}) needs a group of {} alive dies; the {} has {}",
                    cx.attention_tp,
                    cx.attention_tp,
                    if ir.pools.is_some() {
                        "attention pool"
                    } else {
                        "machine"
                    },
                    token_dies.len()
                ));
            }
            Annotation::new(groups.concat(), Sharding::Tp(cx.attention_tp))
        } else {
            Annotation::new(token_dies.clone(), Sharding::Whole)
        };
        let indices: Vec<_> = ir.graph.node_indices().collect();
        for i in indices {
            let node = &mut ir.graph[i];
            node.ann = match (&node.op, node.layer) {
                (Op::Expert { expert, .. }, Some(layer)) => Annotation::new(
                    layouts
                        .get(layer.0 as usize)
                        .and_then(|l| l.get(expert.0 as usize))
                        .cloned()
                        .ok_or_else(|| format!("no layout for expert e{} of layer {}", expert.0, layer.0))?,
                    Sharding::Whole,
                ),
                (Op::Attention { .. }, _) => attention.clone(),
                (Op::Dispatch { .. } | Op::Combine { .. }, _) if domains.is_some() => {
                    let domains = domains.as_deref().unwrap_or_default();
                    Annotation::new(
                        domains.concat(),
                        Sharding::Domains(domains.first().map_or(1, Vec::len) as u32),
                    )
                }
                // Dispatch and combine span both pools; the rest is the tokens'.
                (Op::Dispatch { .. } | Op::Combine { .. }, _) => Annotation::new(dies.clone(), Sharding::Whole),
                _ => Annotation::new(token_dies.clone(), Sharding::Whole),
            };
        }
        Ok(())
    }
}
