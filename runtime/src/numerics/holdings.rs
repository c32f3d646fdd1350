//! What each die holds in the numeric step: the numeric sequences homed on
//! it, the experts it serves, and so which weights it materialises.
//!
//! A die holding tokens materialises the weights of every non-expert
//! instruction it runs (embedding, each layer's attention, router, shared
//! experts or dense FFN, the LM head). Expert weights live only on the dies
//! of the expert's copies (`Placement::expert_copies`): a whole replica on
//! one die, or a split copy's column parts on several; a token uses the
//! copy `Placement::copy_for` picks, as in the simulator: the one with a
//! part on its home die, else copy `token mod copies`. That holds for an
//! expert with several whole replicas (migrated or broadcast copies) and
//! for the broadcast experts of `Placement::balanced`, whose tokens the
//! simulator sends to the least-loaded holder instead: every copy holds the
//! same numbers, so which one computes a token does not change them.
//!
//! Holdings are worked out from one placement; when the placement changes
//! (`Numerics::relocate`), they are worked out again from the new one. A
//! sequence's home decides only where its rows live, never their numbers
//! (its synthetic KV cache is keyed by the sequence, not the die).

use super::width::WeightCopies;
use crate::machine::DieId;
use crate::model::LayerKind;
use crate::schedule::{ExpertCopy, Op, Placement, Schedule, Senders};
use std::collections::BTreeSet;

/// Who holds what, for one schedule and numeric batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Holdings {
    /// Per die, the numeric sequences homed on it, ascending.
    pub sequences: Vec<Vec<usize>>,
    /// Per layer, per expert, its copies (each a whole replica or the column
    /// parts of a split copy); empty for dense layers.
    pub expert_copies: Vec<Vec<Vec<ExpertCopy>>>,
    /// Per layer, the dies holding a copy or a part of one of its experts.
    serving: Vec<BTreeSet<usize>>,
    /// Per die: its attention group in ring order and its position there
    /// (a die on its own: a group of one).
    pub attention_group: Vec<(Vec<usize>, usize)>,
    /// Who sends each token to each expert die.
    pub senders: Senders,
    /// Weight copies held across all dies, for the memory budget.
    pub copies: WeightCopies,
}

impl Holdings {
    /// These holdings with only the sequences `keep` accepts (a
    /// micro-batch's): the experts and groups are the die's whatever
    /// tokens it holds.
    pub fn of_sequences(&self, keep: impl Fn(usize) -> bool) -> Holdings {
        let mut held = self.clone();
        for s in &mut held.sequences {
            s.retain(|&x| keep(x));
        }
        held
    }

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
        let (experts, ffn) = model
            .moe
            .as_ref()
            .map_or((0, 0), |m| (m.experts as usize, m.expert_ffn));
        let mut expert_copies = Vec::new();
        for layer in 0..model.layers {
            if model.layer_kind(layer) == LayerKind::Dense {
                expert_copies.push(Vec::new());
                continue;
            }
            let placed = schedule
                .placement
                .experts
                .get(layer as usize)
                .ok_or_else(|| format!("the placement has no experts for layer {layer}"))?;
            if placed.len() != experts {
                return Err(format!("layer {layer} places {} experts of {experts}", placed.len()));
            }
            let mut of_layer = Vec::with_capacity(experts);
            for e in 0..experts {
                let copies = schedule.placement.expert_copies(layer as usize, e, ffn);
                if copies.is_empty() {
                    return Err(format!("expert {e} of layer {layer} is placed on no die"));
                }
                if let Some(p) = copies.iter().flatten().find(|p| p.die.index() >= dies) {
                    return Err(format!(
                        "expert {e} of layer {layer} is on {}, which the machine lacks",
                        p.die
                    ));
                }
                of_layer.push(copies);
            }
            expert_copies.push(of_layer);
        }
        let copies = count_copies(schedule, &sequences, &expert_copies);
        let attention_group = schedule
            .placement
            .attention_group_of(dies)
            .into_iter()
            .map(|(g, at)| (g.iter().map(|d| d.index()).collect(), at))
            .collect();
        Ok(Holdings {
            sequences,
            serving: expert_copies
                .iter()
                .map(|l| l.iter().flatten().flatten().map(|p| p.die.index()).collect())
                .collect(),
            expert_copies,
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

    /// Dies serving at least one expert (or expert part) of `layer`.
    pub fn expert_dies(&self, layer: u32) -> &BTreeSet<usize> {
        static NONE: BTreeSet<usize> = BTreeSet::new();
        self.serving.get(layer as usize).unwrap_or(&NONE)
    }

    /// The copy of expert `e` of `layer` that token `token` (homed on
    /// `home`) uses.
    pub fn copy_for(&self, layer: u32, e: u32, token: usize, home: usize) -> Option<&ExpertCopy> {
        let copies = self.expert_copies.get(layer as usize)?.get(e as usize)?;
        Placement::copy_for(copies, token, DieId(home as u32), &self.senders)
    }
}

/// The copies each kind of weight has: per token-holding die, one per
/// distinct (instruction kind, layer) it runs; one per expert copy (a split
/// copy's parts add up to one).
fn count_copies(schedule: &Schedule, sequences: &[Vec<usize>], expert_copies: &[Vec<Vec<ExpertCopy>>]) -> WeightCopies {
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
    c.experts = expert_copies.iter().flatten().map(|copies| copies.len() as u64).sum();
    c
}
