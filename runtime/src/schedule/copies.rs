//! An expert's copies: whole replicas, or copies split by FFN columns over
//! several dies (expert tensor parallelism, MoEShard, HD-MoE's hybrid),
//! and the one rule that picks the copy a token uses.
//!
//! A split is exact: the up (and SwiGLU gate) projection is split by
//! columns and the down projection by rows, so each part computes
//! `act(x W_up[:, c]) W_down[c, :]` on the token's whole row and the parts'
//! outputs sum to the expert's output with no exchange between the two
//! matrix products (MoEShard's decomposition). A token chosen for a split
//! expert is sent to every part of one copy, and every part's partial
//! output comes back to be summed.
//!
//! The simulator's traffic and the numeric executor both ask
//! [`Placement::copy_for`], so both send a token to the same dies.

use super::{Placement, Senders};
use crate::machine::DieId;
use std::ops::Range;

/// One die's part of an expert copy: the FFN columns it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertPart {
    pub die: DieId,
    /// Columns of the expert's FFN (of `expert_ffn`): all of them for a
    /// whole replica.
    pub columns: Range<u64>,
}

/// One full copy of an expert: its parts, in column order.
pub type ExpertCopy = Vec<ExpertPart>;

impl Placement {
    /// Whether any expert of any layer is split over several dies.
    pub fn has_split_experts(&self) -> bool {
        self.expert_columns.iter().flatten().any(|c| !c.is_empty())
    }

    /// The copies of expert `expert` of `layer`, for an expert FFN of `ffn`
    /// columns: consecutive dies of `experts[layer][expert]` whose columns
    /// add up to `ffn` form one copy; without columns, each die is a whole
    /// replica. Empty when the expert is not placed. Assumes a validated
    /// placement (see [`Placement::check_expert_columns`]).
    pub fn expert_copies(&self, layer: usize, expert: usize, ffn: u64) -> Vec<ExpertCopy> {
        let Some(dies) = self.experts.get(layer).and_then(|l| l.get(expert)) else {
            return Vec::new();
        };
        let columns = self
            .expert_columns
            .get(layer)
            .and_then(|l| l.get(expert))
            .filter(|c| !c.is_empty());
        let Some(columns) = columns else {
            return dies
                .iter()
                .map(|&die| vec![ExpertPart { die, columns: 0..ffn }])
                .collect();
        };
        let mut copies = Vec::new();
        let mut copy = Vec::new();
        let mut at = 0;
        for (&die, &c) in dies.iter().zip(columns) {
            copy.push(ExpertPart {
                die,
                columns: at..at + c,
            });
            at += c;
            if at >= ffn {
                copies.push(std::mem::take(&mut copy));
                at = 0;
            }
        }
        copies
    }

    /// The copy of an expert a token uses: the copy with a part on the
    /// token's `home` die (under token domains: on a die that is its own
    /// sender, so nothing crosses for that part), else copy `token mod
    /// copies`, as serving engines spread a replicated hot expert's load.
    pub fn copy_for<'c>(
        copies: &'c [ExpertCopy],
        token: usize,
        home: DieId,
        senders: &Senders,
    ) -> Option<&'c ExpertCopy> {
        let local = |c: &&ExpertCopy| {
            c.iter().any(|p| {
                if senders.from_domains() {
                    senders.sender(home, p.die) == p.die
                } else {
                    p.die == home
                }
            })
        };
        copies
            .iter()
            .find(local)
            .or_else(|| copies.get(token % copies.len().max(1)))
    }

    /// `expert_columns` is empty or shaped like `experts`, and each split
    /// expert's columns are non-zero and fill whole copies of `ffn` columns.
    pub(super) fn check_expert_columns(&self, ffn: u64) -> Result<(), String> {
        if self.expert_columns.is_empty() {
            return Ok(());
        }
        if self.expert_columns.len() != self.experts.len() {
            return Err(format!(
                "expert columns are given for {} layers, experts for {}",
                self.expert_columns.len(),
                self.experts.len()
            ));
        }
        for (l, (columns, dies)) in self.expert_columns.iter().zip(&self.experts).enumerate() {
            if columns.is_empty() {
                continue;
            }
            if columns.len() != dies.len() {
                return Err(format!(
                    "layer {l}: expert columns for {} experts of {}",
                    columns.len(),
                    dies.len()
                ));
            }
            for (e, (c, d)) in columns.iter().zip(dies).enumerate() {
                if c.is_empty() {
                    continue;
                }
                if c.len() != d.len() || c.contains(&0) {
                    return Err(format!(
                        "expert {e} of layer {l}: {} column counts (zeros not allowed) for {} dies",
                        c.len(),
                        d.len()
                    ));
                }
                let mut at = 0u64;
                for &n in c {
                    at = at.saturating_add(n);
                    if at > ffn {
                        return Err(format!(
                            "expert {e} of layer {l}: a copy's parts exceed its {ffn} columns"
                        ));
                    }
                    if at == ffn {
                        at = 0;
                    }
                }
                if at != 0 {
                    return Err(format!(
                        "expert {e} of layer {l}: the last copy's parts cover {at} of {ffn} columns"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(dies: Vec<u32>, columns: Vec<u64>) -> Placement {
        Placement {
            experts: vec![vec![dies.into_iter().map(DieId).collect()]],
            expert_columns: vec![vec![columns]],
            ..Placement::default()
        }
    }

    #[test]
    fn consecutive_parts_form_copies_and_whole_replicas_stay_whole() {
        let p = placement(vec![0, 1, 2, 3, 4], vec![6, 2, 4, 4, 8]);
        p.check_expert_columns(8).unwrap();
        let copies = p.expert_copies(0, 0, 8);
        let shape: Vec<Vec<(u32, Range<u64>)>> = copies
            .iter()
            .map(|c| c.iter().map(|x| (x.die.0, x.columns.clone())).collect())
            .collect();
        assert_eq!(
            shape,
            vec![vec![(0, 0..6), (1, 6..8)], vec![(2, 0..4), (3, 4..8)], vec![(4, 0..8)]]
        );
        let whole = placement(vec![5, 6], Vec::new());
        assert_eq!(whole.expert_copies(0, 0, 8).len(), 2);
        assert!(!whole.has_split_experts() && p.has_split_experts());
    }

    #[test]
    fn columns_that_do_not_fill_copies_are_refused() {
        assert!(placement(vec![0, 1], vec![4, 3]).check_expert_columns(8).is_err());
        assert!(placement(vec![0, 1], vec![8, 0]).check_expert_columns(8).is_err());
        assert!(placement(vec![0, 1], vec![6, 6]).check_expert_columns(8).is_err());
        assert!(placement(vec![0], vec![8, 8]).check_expert_columns(8).is_err());
    }

    #[test]
    fn a_token_uses_the_copy_on_its_home_die_else_spreads_by_token() {
        let p = placement(vec![0, 1, 2, 3], vec![4, 4, 4, 4]);
        let copies = p.expert_copies(0, 0, 8);
        let senders = p.senders(4);
        let on = |c: &ExpertCopy| c[0].die.0;
        assert_eq!(on(Placement::copy_for(&copies, 0, DieId(3), &senders).unwrap()), 2);
        assert_eq!(on(Placement::copy_for(&copies, 0, DieId(1), &senders).unwrap()), 0);
        assert_eq!(on(Placement::copy_for(&copies, 5, DieId(7), &senders).unwrap()), 2);
        assert_eq!(on(Placement::copy_for(&copies, 4, DieId(7), &senders).unwrap()), 0);
    }
}
