//! The synthetic KV cache: what sits in a sequence's cache before the
//! step's new tokens.
//!
//! A decode step's tokens attend over `context` earlier positions whose keys
//! and values were computed in earlier steps. The numerics do not replay
//! those steps; each cache entry is drawn from the runtime's [`Rng`] keyed by
//! (seed, layer, sequence, position), so the die holding a sequence and the
//! dense reference draw exactly the same cache without ever sharing it.
//! Entries are uniform on [-sqrt 3, sqrt 3) (unit variance, like a projection
//! of a normalised row), two values per 64-bit draw because the cache is the
//! largest thing drawn per step; then rounded to the model's storage type.

use super::precision::round_all;
use crate::model::DType;
use crate::rng::Rng;

/// Separates the cache's draws from every other use of the seed.
const CACHE_SALT: u64 = 0x006B_7663_6163_6865; // "kvcache"

/// One layer's cache generator.
#[derive(Clone, Debug)]
pub struct SyntheticKvCache {
    layer: Rng,
    /// Values per position (keys and values, or latent and rotary key).
    width: usize,
    dtype: DType,
    /// Only these columns of each drawn row (a die's share of the
    /// key/value heads under tensor parallelism); empty: all.
    columns: Vec<std::ops::Range<usize>>,
}

impl SyntheticKvCache {
    /// The cache of `layer` of a model with `width` cached values per
    /// position, stored as `dtype`.
    pub fn new(seed: u64, layer: u32, width: usize, dtype: DType) -> SyntheticKvCache {
        SyntheticKvCache {
            layer: Rng::new(seed).fork(CACHE_SALT).fork(u64::from(layer)),
            width,
            dtype,
            columns: Vec::new(),
        }
    }

    /// The same cache seen through `columns` of each position (in order):
    /// what a die holding some of the key/value heads keeps of it. The
    /// draws are the full rows', so the values are the same numbers.
    pub fn columns(mut self, columns: Vec<std::ops::Range<usize>>) -> SyntheticKvCache {
        self.columns = columns;
        self
    }

    /// Values per position.
    pub fn width(&self) -> usize {
        if self.columns.is_empty() {
            self.width
        } else {
            self.columns.iter().map(|c| c.len()).sum()
        }
    }

    /// Positions `0..positions` of `sequence`, `positions x width` row-major.
    pub fn entries(&self, sequence: u64, positions: u64) -> Vec<f32> {
        const HALF_RANGE: f32 = 1.732_050_8; // sqrt(3): unit variance
        let seq = self.layer.fork(sequence);
        let mut out = Vec::with_capacity(positions as usize * self.width);
        for p in 0..positions {
            let mut rng = seq.fork(p);
            let mut pending: Option<u32> = None;
            for _ in 0..self.width {
                let bits = match pending.take() {
                    Some(low) => low,
                    None => {
                        let draw = rng.next_u64();
                        pending = Some(draw as u32);
                        (draw >> 32) as u32
                    }
                };
                let unit = bits as f32 * (1.0 / 4_294_967_296.0); // [0, 1)
                out.push((2.0 * unit - 1.0) * HALF_RANGE);
            }
        }
        round_all(self.dtype, &mut out);
        if self.columns.is_empty() {
            return out;
        }
        let mut kept = Vec::with_capacity(positions as usize * self.width());
        for row in out.chunks_exact(self.width.max(1)) {
            for c in &self.columns {
                kept.extend_from_slice(&row[c.clone()]);
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_depend_on_every_key_and_nothing_else() {
        let c = SyntheticKvCache::new(5, 2, 7, DType::Fp32);
        let a = c.entries(3, 4);
        assert_eq!(a.len(), 28);
        assert_eq!(a, SyntheticKvCache::new(5, 2, 7, DType::Fp32).entries(3, 4));
        // A prefix of positions is the same prefix.
        assert_eq!(&c.entries(3, 2)[..], &a[..14]);
        assert_ne!(c.entries(4, 4), a);
        assert_ne!(SyntheticKvCache::new(5, 3, 7, DType::Fp32).entries(3, 4), a);
        assert_ne!(SyntheticKvCache::new(6, 2, 7, DType::Fp32).entries(3, 4), a);
        let many = c.entries(0, 2000);
        let var = many.iter().map(|x| x * x).sum::<f32>() / many.len() as f32;
        assert!((var - 1.0).abs() < 0.05, "{var}");
        assert!(many.iter().all(|x| x.abs() < 1.733));
    }
}
