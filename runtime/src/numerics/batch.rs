//! The numeric batch: which tokens the numerics compute, where each sits in
//! its sequence, which token of the workload's step it stands for, and the
//! token ids it embeds.
//!
//! Numeric tokens are ordered sequence-major: token `t` is position
//! `t % seq_len` (after the cached ones) of numeric sequence `t / seq_len`,
//! which is the workload's sequence of the same index. A step's
//! [`StepRouting`](crate::routing::StepRouting) is read as sequence-major
//! too: decode token `s` is sequence `s`; prefill token `s * seq_len + p` is
//! position `p` of sequence `s` (the workload's full `seq_len`).

use super::width::NumericShape;
use crate::kernels::SequenceRows;
use crate::rng::Rng;
use crate::workload::{Phase, WorkloadSpec};

/// Separates the token-id draws from every other use of the seed.
const TOKEN_SALT: u64 = 0x746F_6B65_6E73; // "tokens"

/// How numeric tokens map to sequences and to the workload's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLayout {
    /// Numeric sequences.
    pub sequences: usize,
    /// New tokens per sequence.
    pub seq_len: usize,
    /// Cached positions before each sequence's first new token.
    pub cached: u64,
    /// Tokens each sequence has in the workload's step routing.
    pub workload_seq_len: u64,
}

impl TokenLayout {
    /// The layout of `shape`'s tokens within `workload`'s steps.
    pub fn new(shape: &NumericShape, workload: &WorkloadSpec) -> TokenLayout {
        TokenLayout {
            sequences: shape.batch as usize,
            seq_len: shape.seq_len as usize,
            cached: shape.context,
            workload_seq_len: match workload.phase {
                Phase::Decode => 1,
                Phase::Prefill => workload.seq_len,
            },
        }
    }

    /// Numeric tokens.
    pub fn tokens(&self) -> usize {
        self.sequences * self.seq_len
    }

    /// The index, among the workload step's tokens, of numeric token `t`.
    pub fn workload_token(&self, t: usize) -> u64 {
        let seq_len = self.seq_len.max(1);
        (t / seq_len) as u64 * self.workload_seq_len + (t % seq_len) as u64
    }

    /// The tokens of `sequences` (ascending numeric ids, sequence after
    /// sequence) and where each sequence's rows start among them.
    pub fn rows(&self, sequences: &[usize]) -> (Vec<usize>, Vec<SequenceRows>) {
        let mut tokens = Vec::with_capacity(sequences.len() * self.seq_len);
        let mut rows = Vec::with_capacity(sequences.len());
        for &s in sequences {
            rows.push(SequenceRows {
                sequence: s as u64,
                start: tokens.len(),
                len: self.seq_len,
                cached: self.cached,
            });
            tokens.extend(s * self.seq_len..(s + 1) * self.seq_len);
        }
        (tokens, rows)
    }

    /// The step's token ids, one per numeric token, in `0..vocab`.
    pub fn token_ids(&self, seed: u64, step: u64, vocab: u64) -> Vec<u32> {
        let mut rng = Rng::new(seed).fork(TOKEN_SALT).fork(step);
        (0..self.tokens()).map(|_| rng.below(vocab) as u32).collect()
    }
}
