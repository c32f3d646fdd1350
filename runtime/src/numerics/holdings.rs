//! What each die holds in the numeric step: the numeric sequences homed on
//! it, the experts it serves, and so which weights it materialises.
//!
//! A die holding tokens materialises the weights of every non-expert
//! instruction it runs (embedding, each layer's attention, router, shared
//! experts or dense FFN, the LM head). Expert weights live only on the dies
//! in `placement.experts[layer][e]`; a token is sent to the first replica in
//! that list (the schedule does not say how tokens spread over replicas), so
//! only first replicas are materialised: the others would never be read.

use super::width::WeightCopies;
use crate::machine::DieId;
use crate::model::LayerKind;
use crate::schedule::{Op, Schedule, Senders};
use std::collections::BTreeSet;

/// Who holds what, for one schedule and numeric batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Holdings {
    /// Per die, the numeric sequences homed on it, ascending.
    pub sequences: Vec<Vec<usize>>,
    /// Per layer, per expert, the die serving it (its first replica); empty
    /// for dense layers.
    pub expert_home: Vec<Vec<usize>>,
    /// Per die: its attention group in ring order and its position there
    /// (a die on its own: a group of one).
    pub attention_group: Vec<(Vec<usize>, usize)>,
    /// Who sends each token to each expert die.
    pub senders: Senders,
    /// Weight copies held across all dies, for the memory budget.
    pub copies: WeightCopies,
}

impl Holdings {
    /// Holdings of the first `numeric_sequences` sequences of `schedule`'s
    /// workload. Refuses placements that leave an expert of an MoE layer on
    /// no die or home a sequence on a die the machine lacks.
    pub fn new(schedule: &Schedule, numeric_sequences: usize) -> Result<Holdings, String> {
        let model = &schedule.model;
        let dies = schedule.programs.len();
        let mut sequences = vec![Vec::new(); dies];
        for s in 0..numeric_sequences {
            let die = schedule
                .placement
                .sequences
                .get(s)
                .ok_or_else(|| format!("sequence {s} has no home die"))?;
            sequences
                .get_mut(die.index())
                .ok_or_else(|| format!("sequence {s} is homed on {die}, which the machine lacks"))?
                .push(s);
        }
        let experts = model.moe.as_ref().map_or(0, |m| m.experts) as usize;
        let mut expert_home = Vec::new();
        for layer in 0..model.layers {
            if model.layer_kind(layer) == LayerKind::Dense {
                expert_home.push(Vec::new());
                continue;
            }
            let replicas = schedule
                .placement
                .experts
                .get(layer as usize)
                .ok_or_else(|| format!("the placement has no experts for layer {layer}"))?;
            if replicas.len() != experts {
                return Err(format!("layer {layer} places {} experts of {experts}", replicas.len()));
            }
            let homes = replicas
                .iter()
                .enumerate()
                .map(|(e, dies_of)| match dies_of.first() {
                    Some(d) if d.index() < dies => Ok(d.index()),
                    Some(d) => Err(format!(
                        "expert {e} of layer {layer} is on {d}, which the machine lacks"
                    )),
                    None => Err(format!("expert {e} of layer {layer} is placed on no die")),
                })
                .collect::<Result<Vec<usize>, String>>()?;
            expert_home.push(homes);
        }
        let copies = count_copies(schedule, &sequences, &expert_home);
        let attention_group = schedule
            .placement
            .attention_group_of(dies)
            .into_iter()
            .map(|(g, at)| (g.iter().map(|d| d.index()).collect(), at))
            .collect();
        Ok(Holdings {
            sequences,
            expert_home,
            attention_group,
            senders: schedule.placement.senders(dies),
            copies,
        })
    }

    /// Whether `die` holds numeric tokens.
    pub fn holds_tokens(&self, die: usize) -> bool {
        self.sequences.get(die).is_some_and(|s| !s.is_empty())
    }

    /// Whether `die` is in a tensor-parallel attention group (of two or more).
    pub fn in_tp_group(&self, die: usize) -> bool {
        self.attention_group.get(die).is_some_and(|(g, _)| g.len() > 1)
    }

    /// Whether `die` runs attention: it holds tokens, or a member of its
    /// attention group does.
    pub fn runs_attention(&self, die: usize) -> bool {
        self.attention_group
            .get(die)
            .is_some_and(|(g, _)| g.iter().any(|&m| self.holds_tokens(m)))
    }

    /// Whether tokens are dispatched from token domains.
    pub fn has_token_domains(&self) -> bool {
        self.senders.from_domains()
    }

    /// Whether `die` dispatches tokens: its own (home-die dispatch), or,
    /// under token domains, any of its attention group's.
    pub fn dispatches(&self, die: usize) -> bool {
        if self.has_token_domains() {
            self.in_tp_group(die) && self.runs_attention(die)
        } else {
            self.holds_tokens(die)
        }
    }

    /// The die that sends a token homed on `home` to expert die `to`:
    /// under token domains the member of `home`'s group in `to`'s domain,
    /// otherwise (or when `to` is in no domain) `home` itself.
    pub fn sender(&self, home: usize, to: usize) -> usize {
        self.senders.sender(DieId(home as u32), DieId(to as u32)).index()
    }

    /// Dies serving at least one expert of `layer`.
    pub fn expert_dies(&self, layer: u32) -> BTreeSet<usize> {
        self.expert_home
            .get(layer as usize)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The copies each kind of weight has: per token-holding die, one per
/// distinct (instruction kind, layer) it runs; one per expert.
fn count_copies(schedule: &Schedule, sequences: &[Vec<usize>], expert_home: &[Vec<usize>]) -> WeightCopies {
    let mut c = WeightCopies::default();
    for (die, program) in schedule.programs.iter().enumerate() {
        if sequences.get(die).is_none_or(|s| s.is_empty()) {
            continue;
        }
        let held: BTreeSet<(u8, Option<u32>)> = program
            .instrs
            .iter()
            .filter_map(|i| match i.op {
                Op::Embed => Some((0, None)),
                Op::LmHead => Some((1, None)),
                Op::Attention { layer } => Some((2, Some(layer))),
                Op::Gate { layer } => Some((3, Some(layer))),
                Op::SharedExperts { layer } => Some((4, Some(layer))),
                Op::DenseFfn { layer } => Some((5, Some(layer))),
                _ => None,
            })
            .collect();
        for (kind, _) in held {
            match kind {
                0 => c.embedding += 1,
                1 => c.lm_head += 1,
                2 => c.attention += 1,
                3 => c.router += 1,
                4 => c.shared += 1,
                _ => c.dense += 1,
            }
        }
    }
    c.experts = expert_home.iter().map(|h| h.len() as u64).sum();
    c
}
