//! Attention of a step's new tokens: multi-head (MHA), grouped-query (GQA)
//! and DeepSeek's multi-head latent attention (MLA) in its absorbed form.
//!
//! Each sequence's new tokens sit at positions `cached..cached + len`: in
//! decode one token with `context` cached positions behind it, in prefill the
//! whole (numeric) prompt with nothing cached. A token attends over every
//! cached position and, causally, over the new tokens up to itself. Cached
//! entries come from the [`SyntheticKvCache`]; the new tokens' keys and
//! values are projected from their rows. Positions carry no rotary
//! embedding: rotation changes no shape, cost or data movement, and leaving
//! it out keeps the kernels short (MLA's rotary key is kept as a separate,
//! unrotated part of the key).
//!
//! MLA, as read here (DeepSeek-V2/V3): `c_q = rmsnorm(x W_dq)` and
//! `q = c_q W_uq` (or `q = x W_q` without a q LoRA), split per head into
//! `q_nope` (`head_dim`) and `q_rope` (`rope_dim`); `[c_kv, k_rope] = x W_dkv`
//! with `c_kv` rms-normalised: the cache holds exactly `[c_kv, k_rope]`
//! (`kv_lora_rank + rope_dim` values a position). Absorbed: per head,
//! `q_lat = q_nope W_uk_h` (`W_uk_h` is `head_dim x kv_lora_rank`), scores
//! `(q_lat . c_kv_j + q_rope . k_rope_j) / sqrt(head_dim + rope_dim)`, the
//! softmax-weighted sum of latents `o_lat`, then `v_h = o_lat W_uv_h`
//! (`kv_lora_rank x v_head_dim`), and the heads' `v` concatenated times
//! `W_o`. This equals expanding keys `c_kv W_uk_h^T` and values
//! `c_kv W_uv_h` per head (the test checks it) without ever materialising
//! them, which is why MLA caches only the latent.

use super::gemm::matmul;
use super::kv_cache::SyntheticKvCache;
use super::norm::rms_norm_in_place;

/// MHA (`kv_heads == heads`) or GQA weights, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadsAttention {
    pub hidden: usize,
    pub heads: usize,
    /// Divides `heads`; query head `h` reads key/value head `h / (heads / kv_heads)`.
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `hidden x heads*head_dim`.
    pub wq: Vec<f32>,
    /// `hidden x kv_heads*head_dim`.
    pub wk: Vec<f32>,
    /// `hidden x kv_heads*head_dim`.
    pub wv: Vec<f32>,
    /// `heads*head_dim x hidden`.
    pub wo: Vec<f32>,
}

/// MLA weights, row-major, with the up-projections of keys and values in
/// the per-head layout the absorbed form multiplies by.
#[derive(Clone, Debug, PartialEq)]
pub struct LatentAttention {
    pub hidden: usize,
    pub heads: usize,
    /// 0: queries straight from the hidden state.
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub v_head_dim: usize,
    /// `hidden x q_lora_rank` (empty without a q LoRA).
    pub wdq: Vec<f32>,
    /// `(q_lora_rank or hidden) x heads*(head_dim + rope_dim)`, per head
    /// `[q_nope, q_rope]`.
    pub wq: Vec<f32>,
    /// `hidden x (kv_lora_rank + rope_dim)`: `[c_kv, k_rope]`.
    pub wdkv: Vec<f32>,
    /// `heads x head_dim x kv_lora_rank`: `W_uk_h` for each head.
    pub wuk: Vec<f32>,
    /// `heads x kv_lora_rank x v_head_dim`: `W_uv_h` for each head.
    pub wuv: Vec<f32>,
    /// `heads*v_head_dim x hidden`.
    pub wo: Vec<f32>,
}

/// One layer's attention weights.
#[derive(Clone, Debug, PartialEq)]
pub enum AttentionWeights {
    Heads(HeadsAttention),
    Latent(LatentAttention),
}

impl AttentionWeights {
    /// Values one position occupies in the KV cache.
    pub fn cache_width(&self) -> usize {
        match self {
            AttentionWeights::Heads(a) => 2 * a.kv_heads * a.head_dim,
            AttentionWeights::Latent(a) => a.kv_lora_rank + a.rope_dim,
        }
    }

    /// Number of weights held.
    pub fn params(&self) -> usize {
        match self {
            AttentionWeights::Heads(a) => a.wq.len() + a.wk.len() + a.wv.len() + a.wo.len(),
            AttentionWeights::Latent(a) => {
                a.wdq.len() + a.wq.len() + a.wdkv.len() + a.wuk.len() + a.wuv.len() + a.wo.len()
            }
        }
    }

    /// The weights of query heads `part * heads / parts ..` up to the next
    /// part's first: one die's share under `parts`-way tensor parallelism.
    /// [`attention`] with them gives that die's partial output (its heads
    /// through its rows of `W_o`); the parts' outputs sum to the whole.
    /// Also returns the columns of a cache position the share reads (its
    /// key/value heads; all of MLA's latent). `parts` divides the heads, and
    /// for GQA divides or is a multiple of the key/value heads.
    pub fn head_share(&self, part: usize, parts: usize) -> (AttentionWeights, Vec<std::ops::Range<usize>>) {
        match self {
            AttentionWeights::Heads(a) => {
                let (d, hd) = (a.heads / parts, a.head_dim);
                let group = a.heads / a.kv_heads.max(1);
                let (h0, h1) = (part * d, (part + 1) * d);
                let (g0, g1) = (h0 / group, (h1 - 1) / group + 1);
                let kvw = a.kv_heads * hd;
                let share = HeadsAttention {
                    hidden: a.hidden,
                    heads: d,
                    kv_heads: g1 - g0,
                    head_dim: hd,
                    wq: columns(&a.wq, a.hidden, a.heads * hd, h0 * hd, d * hd),
                    wk: columns(&a.wk, a.hidden, kvw, g0 * hd, (g1 - g0) * hd),
                    wv: columns(&a.wv, a.hidden, kvw, g0 * hd, (g1 - g0) * hd),
                    wo: a.wo[h0 * hd * a.hidden..h1 * hd * a.hidden].to_vec(),
                };
                let cache = vec![g0 * hd..g1 * hd, kvw + g0 * hd..kvw + g1 * hd];
                (AttentionWeights::Heads(share), cache)
            }
            AttentionWeights::Latent(a) => {
                let d = a.heads / parts;
                let (h0, h1) = (part * d, (part + 1) * d);
                let qh_w = a.head_dim + a.rope_dim;
                let q_in = if a.q_lora_rank > 0 { a.q_lora_rank } else { a.hidden };
                let (kl, vd) = (a.kv_lora_rank, a.v_head_dim);
                let share = LatentAttention {
                    heads: d,
                    wq: columns(&a.wq, q_in, a.heads * qh_w, h0 * qh_w, d * qh_w),
                    wuk: a.wuk[h0 * a.head_dim * kl..h1 * a.head_dim * kl].to_vec(),
                    wuv: a.wuv[h0 * kl * vd..h1 * kl * vd].to_vec(),
                    wo: a.wo[h0 * vd * a.hidden..h1 * vd * a.hidden].to_vec(),
                    ..a.clone()
                };
                (AttentionWeights::Latent(share), Vec::new())
            }
        }
    }

    fn hidden(&self) -> usize {
        match self {
            AttentionWeights::Heads(a) => a.hidden,
            AttentionWeights::Latent(a) => a.hidden,
        }
    }
}

/// Where one sequence's new tokens are in the rows handed to [`attention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceRows {
    /// The workload's sequence index (keys the synthetic cache).
    pub sequence: u64,
    /// First row of this sequence's tokens.
    pub start: usize,
    /// Its new tokens, consecutive rows in position order.
    pub len: usize,
    /// Cached positions before the first new token.
    pub cached: u64,
}

/// Attention output (`rows x hidden`, before the residual) of the
/// normalised rows `x` (`rows x hidden`); rows not in any of `seqs` get 0.
///
/// # Panics
///
/// If `cache` holds entries of another width than `w` reads, or `seqs`
/// names rows beyond `x` (a caller's bug, never input).
pub fn attention(w: &AttentionWeights, x: &[f32], seqs: &[SequenceRows], cache: &SyntheticKvCache) -> Vec<f32> {
    assert_eq!(
        cache.width(),
        w.cache_width(),
        "attention: the cache is for another attention shape"
    );
    let hidden = w.hidden();
    let rows = x.len().checked_div(hidden).unwrap_or(0);
    match w {
        AttentionWeights::Heads(a) => heads_attention(a, x, rows, seqs, cache),
        AttentionWeights::Latent(a) => latent_attention(a, x, rows, seqs, cache),
    }
}

/// Softmax of `scores` in place (max subtracted for range).
fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// Dot product with eight independent partial sums, so it vectorises; the
/// summation order is fixed, so every caller gets the same rounding.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One query's attention over `keys` (`visible` rows of `stride` values,
/// the key at `key_at` within each), accumulating the softmax-weighted
/// values (`width` values at `value_at` within each row of `values`) into
/// `out`. `scores` is scratch space.
#[allow(clippy::too_many_arguments)]
fn attend(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    (key_at, value_at, width): (usize, usize, usize),
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let visible = keys.len().checked_div(stride).unwrap_or(0);
    scores.clear();
    scores.extend(
        (0..visible).map(|j| dot(query, &keys[j * stride + key_at..j * stride + key_at + query.len()]) * scale),
    );
    softmax(scores);
    for (j, p) in scores.iter().enumerate() {
        let v = &values[j * stride + value_at..j * stride + value_at + width];
        for (o, x) in out.iter_mut().zip(v) {
            *o += p * x;
        }
    }
}

fn heads_attention(
    a: &HeadsAttention,
    x: &[f32],
    rows: usize,
    seqs: &[SequenceRows],
    cache: &SyntheticKvCache,
) -> Vec<f32> {
    let (d, kvw) = (a.head_dim, a.kv_heads * a.head_dim);
    let qw = a.heads * d;
    let group = (a.heads / a.kv_heads.max(1)).max(1);
    let q = matmul(x, &a.wq, rows, a.hidden, qw);
    let k = matmul(x, &a.wk, rows, a.hidden, kvw);
    let v = matmul(x, &a.wv, rows, a.hidden, kvw);
    let scale = 1.0 / (d as f32).sqrt();
    let mut heads_out = vec![0.0f32; rows * qw];
    let mut scores = Vec::new();
    for s in seqs {
        // Every position's [k | v], cached then new, as the cache lays them out.
        let mut kv = cache.entries(s.sequence, s.cached);
        for r in s.start..s.start + s.len {
            kv.extend_from_slice(&k[r * kvw..(r + 1) * kvw]);
            kv.extend_from_slice(&v[r * kvw..(r + 1) * kvw]);
        }
        for i in 0..s.len {
            let r = s.start + i;
            // Causal: this token sees the cache and the new tokens up to itself.
            let visible = &kv[..(s.cached as usize + i + 1) * 2 * kvw];
            for h in 0..a.heads {
                let g = h / group;
                let qh = &q[r * qw + h * d..r * qw + (h + 1) * d];
                let out = &mut heads_out[r * qw + h * d..r * qw + (h + 1) * d];
                attend(
                    qh,
                    visible,
                    visible,
                    2 * kvw,
                    (g * d, kvw + g * d, d),
                    scale,
                    &mut scores,
                    out,
                );
            }
        }
    }
    matmul(&heads_out, &a.wo, rows, qw, a.hidden)
}

/// Columns `[from, from + width)` of each row of a `rows x stride` matrix,
/// as a contiguous `rows x width` matrix.
fn columns(m: &[f32], rows: usize, stride: usize, from: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * width);
    for r in 0..rows {
        out.extend_from_slice(&m[r * stride + from..r * stride + from + width]);
    }
    out
}

fn latent_attention(
    a: &LatentAttention,
    x: &[f32],
    rows: usize,
    seqs: &[SequenceRows],
    cache: &SyntheticKvCache,
) -> Vec<f32> {
    let (d, r_dim, kl, vd, heads) = (a.head_dim, a.rope_dim, a.kv_lora_rank, a.v_head_dim, a.heads);
    let qh_w = d + r_dim;
    let q = if a.q_lora_rank > 0 {
        let mut cq = matmul(x, &a.wdq, rows, a.hidden, a.q_lora_rank);
        rms_norm_in_place(&mut cq, a.q_lora_rank);
        matmul(&cq, &a.wq, rows, a.q_lora_rank, heads * qh_w)
    } else {
        matmul(x, &a.wq, rows, a.hidden, heads * qh_w)
    };
    let kv = matmul(x, &a.wdkv, rows, a.hidden, kl + r_dim);
    let mut latent = columns(&kv, rows, kl + r_dim, 0, kl);
    rms_norm_in_place(&mut latent, kl);
    let rope = columns(&kv, rows, kl + r_dim, kl, r_dim);

    // Absorb W_uk into the queries, one head at a time: q_lat[h] is rows x kl.
    let q_lat: Vec<Vec<f32>> = (0..heads)
        .map(|h| {
            let q_nope = columns(&q, rows, heads * qh_w, h * qh_w, d);
            matmul(&q_nope, &a.wuk[h * d * kl..(h + 1) * d * kl], rows, d, kl)
        })
        .collect();
    let scale = 1.0 / (qh_w as f32).sqrt();
    let width = kl + r_dim;
    // o_lat[h] is rows x kl: each token's attention-weighted latent per head.
    let mut o_lat: Vec<Vec<f32>> = vec![vec![0.0f32; rows * kl]; heads];
    let (mut scores, mut query) = (Vec::new(), vec![0.0f32; width]);
    for s in seqs {
        // Every position's [c_kv | k_rope], cached then new: the key the
        // absorbed query [q_lat | q_rope] meets, with the latent as value.
        let mut keys = cache.entries(s.sequence, s.cached);
        for row in s.start..s.start + s.len {
            keys.extend_from_slice(&latent[row * kl..(row + 1) * kl]);
            keys.extend_from_slice(&rope[row * r_dim..(row + 1) * r_dim]);
        }
        for i in 0..s.len {
            let row = s.start + i;
            let visible = &keys[..(s.cached as usize + i + 1) * width];
            for h in 0..heads {
                let base = row * heads * qh_w + h * qh_w + d;
                query[..kl].copy_from_slice(&q_lat[h][row * kl..(row + 1) * kl]);
                query[kl..].copy_from_slice(&q[base..base + r_dim]);
                let out = &mut o_lat[h][row * kl..(row + 1) * kl];
                attend(&query, visible, visible, width, (0, 0, kl), scale, &mut scores, out);
            }
        }
    }
    // Up-project each head's latent to its values and lay the heads side by side.
    let mut values = vec![0.0f32; rows * heads * vd];
    for (h, ol) in o_lat.iter().enumerate() {
        let vh = matmul(ol, &a.wuv[h * kl * vd..(h + 1) * kl * vd], rows, kl, vd);
        for row in 0..rows {
            values[row * heads * vd + h * vd..row * heads * vd + (h + 1) * vd]
                .copy_from_slice(&vh[row * vd..(row + 1) * vd]);
        }
    }
    matmul(&values, &a.wo, rows, heads * vd, a.hidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DType;
    use crate::rng::Rng;

    fn draw(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32 * scale).collect()
    }

    fn heads(rng: &mut Rng, hidden: usize, heads: usize, kv_heads: usize, d: usize) -> HeadsAttention {
        let s = 1.0 / (hidden as f32).sqrt();
        HeadsAttention {
            hidden,
            heads,
            kv_heads,
            head_dim: d,
            wq: draw(rng, hidden * heads * d, s),
            wk: draw(rng, hidden * kv_heads * d, s),
            wv: draw(rng, hidden * kv_heads * d, s),
            wo: draw(rng, heads * d * hidden, 1.0 / ((heads * d) as f32).sqrt()),
        }
    }

    /// GQA is MHA whose key/value heads repeat for each query head of a group.
    fn expand_to_mha(a: &HeadsAttention) -> HeadsAttention {
        let group = a.heads / a.kv_heads;
        let expand = |m: &[f32]| -> Vec<f32> {
            let (kvw, d) = (a.kv_heads * a.head_dim, a.head_dim);
            let mut out = Vec::new();
            for r in 0..a.hidden {
                for h in 0..a.heads {
                    let g = h / group;
                    out.extend_from_slice(&m[r * kvw + g * d..r * kvw + (g + 1) * d]);
                }
            }
            out
        };
        HeadsAttention {
            kv_heads: a.heads,
            wk: expand(&a.wk),
            wv: expand(&a.wv),
            ..a.clone()
        }
    }

    #[test]
    fn gqa_equals_mha_with_repeated_kv_heads_given_the_same_new_keys() {
        let mut rng = Rng::new(21);
        let gqa = heads(&mut rng, 16, 4, 2, 4);
        let mha = expand_to_mha(&gqa);
        let x = draw(&mut rng, 5 * 16, 1.0);
        // Prefill only: the cache is drawn per kv head, so decode caches differ.
        let seqs = [
            SequenceRows {
                sequence: 0,
                start: 0,
                len: 3,
                cached: 0,
            },
            SequenceRows {
                sequence: 1,
                start: 3,
                len: 2,
                cached: 0,
            },
        ];
        let cache_g = SyntheticKvCache::new(1, 0, 16, DType::Fp32);
        let cache_m = SyntheticKvCache::new(1, 0, 32, DType::Fp32);
        let a = attention(&AttentionWeights::Heads(gqa), &x, &seqs, &cache_g);
        let b = attention(&AttentionWeights::Heads(mha), &x, &seqs, &cache_m);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
    }

    #[test]
    fn prefill_is_causal_and_sequences_are_independent() {
        let mut rng = Rng::new(22);
        let w = AttentionWeights::Heads(heads(&mut rng, 8, 2, 2, 4));
        let cache = SyntheticKvCache::new(1, 0, w.cache_width(), DType::Fp32);
        let x = draw(&mut rng, 4 * 8, 1.0);
        let seqs = [
            SequenceRows {
                sequence: 0,
                start: 0,
                len: 3,
                cached: 0,
            },
            SequenceRows {
                sequence: 1,
                start: 3,
                len: 1,
                cached: 0,
            },
        ];
        let base = attention(&w, &x, &seqs, &cache);
        let mut later = x.clone();
        later[2 * 8] += 1.0; // token 2 of sequence 0
        let changed = attention(&w, &later, &seqs, &cache);
        assert_eq!(
            &base[..2 * 8],
            &changed[..2 * 8],
            "earlier tokens cannot see a later one"
        );
        assert_ne!(&base[2 * 8..3 * 8], &changed[2 * 8..3 * 8]);
        assert_eq!(&base[3 * 8..], &changed[3 * 8..], "other sequences cannot see it");
        // A lone first token attends only to itself: its output is its value through W_o.
        let AttentionWeights::Heads(a) = &w else { unreachable!() };
        let v = matmul(&x[3 * 8..4 * 8], &a.wv, 1, 8, 8);
        let want = matmul(&v, &a.wo, 1, 8, 8);
        for (p, q) in base[3 * 8..].iter().zip(&want) {
            assert!((p - q).abs() < 1e-5);
        }
    }

    #[test]
    fn decode_reads_the_cache() {
        let mut rng = Rng::new(23);
        let w = AttentionWeights::Heads(heads(&mut rng, 8, 2, 1, 4));
        let x = draw(&mut rng, 8, 1.0);
        let seqs = [SequenceRows {
            sequence: 7,
            start: 0,
            len: 1,
            cached: 5,
        }];
        let a = attention(
            &w,
            &x,
            &seqs,
            &SyntheticKvCache::new(1, 0, w.cache_width(), DType::Fp32),
        );
        let b = attention(
            &w,
            &x,
            &seqs,
            &SyntheticKvCache::new(2, 0, w.cache_width(), DType::Fp32),
        );
        assert_ne!(a, b);
        assert!(a.iter().all(|v| v.is_finite()));
    }

    fn latent(rng: &mut Rng, q_lora: usize) -> LatentAttention {
        let (hidden, heads, kl, d, r, vd) = (16, 3, 6, 4, 2, 5);
        let s = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let q_in = if q_lora > 0 { q_lora } else { hidden };
        LatentAttention {
            hidden,
            heads,
            q_lora_rank: q_lora,
            kv_lora_rank: kl,
            head_dim: d,
            rope_dim: r,
            v_head_dim: vd,
            wdq: draw(rng, hidden * q_lora, s(hidden)),
            wq: draw(rng, q_in * heads * (d + r), s(q_in)),
            wdkv: draw(rng, hidden * (kl + r), s(hidden)),
            wuk: draw(rng, heads * d * kl, s(kl)),
            wuv: draw(rng, heads * kl * vd, s(kl)),
            wo: draw(rng, heads * vd * hidden, s(heads * vd)),
        }
    }

    /// MLA the long way: expand each cached latent into per-head keys and
    /// values, then ordinary attention.
    fn expanded(a: &LatentAttention, x: &[f32], seqs: &[SequenceRows], cache: &SyntheticKvCache) -> Vec<f32> {
        let (d, r, kl, vd, h_n) = (a.head_dim, a.rope_dim, a.kv_lora_rank, a.v_head_dim, a.heads);
        let rows = x.len() / a.hidden;
        let mut out_heads = vec![0.0f32; rows * h_n * vd];
        for s in seqs {
            let cached = cache.entries(s.sequence, s.cached);
            for i in 0..s.len {
                let row = s.start + i;
                let xr = &x[row * a.hidden..(row + 1) * a.hidden];
                let q = if a.q_lora_rank > 0 {
                    let mut cq = matmul(xr, &a.wdq, 1, a.hidden, a.q_lora_rank);
                    rms_norm_in_place(&mut cq, a.q_lora_rank);
                    matmul(&cq, &a.wq, 1, a.q_lora_rank, h_n * (d + r))
                } else {
                    matmul(xr, &a.wq, 1, a.hidden, h_n * (d + r))
                };
                // Every visible position's [c_kv, k_rope].
                let mut positions: Vec<Vec<f32>> = (0..s.cached as usize)
                    .map(|j| cached[j * (kl + r)..(j + 1) * (kl + r)].to_vec())
                    .collect();
                for jj in 0..=i {
                    let xj = &x[(s.start + jj) * a.hidden..(s.start + jj + 1) * a.hidden];
                    let mut kv = matmul(xj, &a.wdkv, 1, a.hidden, kl + r);
                    rms_norm_in_place(&mut kv[..kl], kl);
                    positions.push(kv);
                }
                for h in 0..h_n {
                    let wuk = &a.wuk[h * d * kl..(h + 1) * d * kl]; // d x kl
                    let wuv = &a.wuv[h * kl * vd..(h + 1) * kl * vd]; // kl x vd
                    let qn = &q[h * (d + r)..h * (d + r) + d];
                    let qr = &q[h * (d + r) + d..(h + 1) * (d + r)];
                    let mut p: Vec<f32> = positions
                        .iter()
                        .map(|pos| {
                            // k_nope = W_uk_h c_kv (d values).
                            let k_nope: Vec<f32> = (0..d)
                                .map(|e| (0..kl).map(|c| wuk[e * kl + c] * pos[c]).sum())
                                .collect();
                            (dot(qn, &k_nope) + dot(qr, &pos[kl..])) / ((d + r) as f32).sqrt()
                        })
                        .collect();
                    softmax(&mut p);
                    for (pj, pos) in p.iter().zip(&positions) {
                        for e in 0..vd {
                            let v: f32 = (0..kl).map(|c| pos[c] * wuv[c * vd + e]).sum();
                            out_heads[row * h_n * vd + h * vd + e] += pj * v;
                        }
                    }
                }
            }
        }
        matmul(&out_heads, &a.wo, rows, h_n * vd, a.hidden)
    }

    /// Tensor parallelism by heads: the shares' partial outputs sum to the
    /// whole, for MHA, GQA with fewer and with more key/value heads than
    /// parts, and MLA; in decode (reading the cache) and prefill.
    #[test]
    fn head_shares_sum_to_the_whole_attention() {
        let mut rng = Rng::new(31);
        let forms = [
            (AttentionWeights::Heads(heads(&mut rng, 16, 4, 4, 4)), 2),
            (AttentionWeights::Heads(heads(&mut rng, 16, 8, 2, 2)), 4),
            (AttentionWeights::Heads(heads(&mut rng, 16, 8, 4, 2)), 2),
            (AttentionWeights::Latent(latent(&mut rng, 8)), 3),
        ];
        let x = draw(&mut rng, 3 * 16, 1.0);
        let seqs = [
            SequenceRows {
                sequence: 2,
                start: 0,
                len: 1,
                cached: 5,
            },
            SequenceRows {
                sequence: 3,
                start: 1,
                len: 2,
                cached: 0,
            },
        ];
        for (w, parts) in forms {
            let cache = SyntheticKvCache::new(4, 1, w.cache_width(), DType::Fp32);
            let whole = attention(&w, &x, &seqs, &cache);
            let mut sum = vec![0.0f32; whole.len()];
            for part in 0..parts {
                let (share, cols) = w.head_share(part, parts);
                let part_cache = cache.clone().columns(cols);
                let out = attention(&share, &x, &seqs, &part_cache);
                sum.iter_mut().zip(&out).for_each(|(s, o)| *s += o);
            }
            for (p, q) in sum.iter().zip(&whole) {
                assert!((p - q).abs() < 1e-4, "{parts} parts: {p} vs {q}");
            }
        }
    }

    #[test]
    fn absorbed_mla_equals_expanded_mla() {
        for q_lora in [0, 8] {
            let mut rng = Rng::new(24 + q_lora as u64);
            let a = latent(&mut rng, q_lora);
            let x = draw(&mut rng, 4 * 16, 1.0);
            let seqs = [
                SequenceRows {
                    sequence: 3,
                    start: 0,
                    len: 1,
                    cached: 6,
                },
                SequenceRows {
                    sequence: 4,
                    start: 1,
                    len: 3,
                    cached: 2,
                },
            ];
            let cache = SyntheticKvCache::new(9, 1, a.kv_lora_rank + a.rope_dim, DType::Fp32);
            let want = expanded(&a, &x, &seqs, &cache);
            let got = attention(&AttentionWeights::Latent(a), &x, &seqs, &cache);
            for (p, q) in got.iter().zip(&want) {
                assert!((p - q).abs() < 1e-4, "q_lora {q_lora}: {p} vs {q}");
            }
        }
    }
}
