//! Drawing from discrete distributions: Walker's alias tables for O(1)
//! draws from a fixed distribution, and the exact weighted scan the routing
//! sources fall back on when rejection keeps hitting experts a token has
//! already chosen.

use crate::rng::Rng;

/// Walker's alias table: O(1) draws from a fixed discrete distribution.
#[derive(Clone, Debug)]
pub(crate) struct Alias {
    /// Keep the drawn slot when the low 32 random bits fall below this
    /// (out of 2^32), else take its alias.
    cut: Vec<u64>,
    alias: Vec<u32>,
}

const ONE: u64 = 1 << 32;

impl Alias {
    /// A table over `weights` (non-negative; all zero, or not finite, gives
    /// uniform, so a fully underflowed popularity still draws something).
    pub(crate) fn new(weights: &[f64]) -> Alias {
        let n = weights.len();
        let clean = |w: f64| if w.is_finite() && w > 0.0 { w } else { 0.0 };
        let total: f64 = weights.iter().map(|&w| clean(w)).sum();
        let mut scaled: Vec<f64> = if total > 0.0 && total.is_finite() {
            weights.iter().map(|&w| clean(w) * n as f64 / total).collect()
        } else {
            vec![1.0; n]
        };
        let mut cut = vec![ONE; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        // Vose's method: pair each under-full slot with an over-full one.
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            cut[s] = ((scaled[s] * ONE as f64) as u64).min(ONE);
            alias[s] = l as u32;
            scaled[l] += scaled[s] - 1.0;
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Slots left on either list are full up to rounding: they keep `ONE`.
        Alias { cut, alias }
    }

    /// One draw: the high 32 bits pick the slot, the low 32 bits the coin.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.cut.len() as u64) >> 32) as usize;
        if (r & (ONE - 1)) < self.cut[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

/// One of `items` in proportion to `weight` by an exact scan; uniform when
/// their weights sum to nothing (underflow). `items` is never empty here:
/// the shape checks leave every token enough free experts and groups.
pub(crate) fn pick_weighted(
    rng: &mut Rng,
    items: impl Iterator<Item = usize> + Clone,
    weight: impl Fn(usize) -> f64,
) -> usize {
    let total: f64 = items.clone().map(&weight).sum();
    if total > 0.0 && total.is_finite() {
        let mut u = rng.next_f64() * total;
        let mut last = 0;
        for i in items {
            let w = weight(i);
            if w > 0.0 {
                last = i;
                if u < w {
                    return i;
                }
                u -= w;
            }
        }
        // Rounding ran past the end: the last item with weight.
        return last;
    }
    let n = items.clone().count();
    let pick = rng.below(n as u64) as usize;
    items.into_iter().nth(pick).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_tables_draw_their_distribution() {
        let w = [0.5, 0.0, 0.25, 0.125, 0.125];
        let a = Alias::new(&w);
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 5];
        let n = 200_000;
        for _ in 0..n {
            counts[a.sample(&mut rng)] += 1;
        }
        for (c, p) in counts.iter().zip(w) {
            assert!((f64::from(*c) / n as f64 - p).abs() < 0.005, "{counts:?}");
        }
        assert_eq!(counts[1], 0);
    }
}
