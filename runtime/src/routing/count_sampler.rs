//! The `counts(...)` routing source: per-token choices for every step, drawn
//! so that each layer's expert loads follow recorded counts
//! ([`RoutingCounts`], read by `counts.rs`).
//!
//! - **Recorded layers.** A token's `top_k` choices are drawn one after
//!   another, each in proportion to a weight among the experts it has not
//!   chosen yet (without replacement, so choice j is its j-th best). For a
//!   `topk` count the weights are solved (`inclusion.rs`) so that each
//!   expert's chance of being among a token's k equals its recorded share
//!   `k * count / total`: the sampled loads match the counts exactly in
//!   expectation, where weights proportional to the counts would flatten
//!   them (a hot expert cannot be taken twice). For a `top1` count the
//!   weights are the counts: the first choice follows them exactly and the
//!   later ones, of which nothing was recorded, draw by the same weights.
//! - **Other layers.** A model MoE layer that was not recorded takes the
//!   recorded layer nearest to it, the earlier one on a tie (the rule of
//!   trace replay), but draws its own tokens from that layer's weights: its
//!   loads follow that layer's counts while its choices stay independent of
//!   every other layer's, since count data say nothing about how adjacent
//!   layers depend (copying the choices, as a trace replay does, would
//!   invent a total dependency).
//! - **Crosslayer.** With crosslayer matrices, a recorded layer b paired
//!   with an earlier recorded layer a ("a->b"; the latest a when several
//!   pairs end at b) draws a token's j-th choice from the row of the
//!   matrix for its j-th choice at a, among the experts it has not chosen
//!   at b yet: the rank-aligned reading of `topk_rank_aligned` (choice j
//!   paired with choice j). With `top1` matrices only the first choice
//!   follows its row; later choices draw from b's own weights. A row with
//!   no mass left for the token falls back to b's own weights.
//!   Drawing each rank from the pooled rows gives b's recorded marginal
//!   only while no two ranks collide; the collisions (redrawn among the
//!   free experts) push choices towards experts each row holds less of.
//!   So the rows' columns are rescaled, `row[i][j] * v_j`, with `v` fitted
//!   by iterative proportional fitting ([`FIT_ROUNDS`] rounds) on a fixed
//!   sample of [`FIT_TOKENS`] tokens of the recorded layers (seeded, so
//!   deterministic), counting each draw's exact distribution rather than
//!   the draw. The sampled marginal of b then matches its counts up to the
//!   fit sample's noise: measured on 400,000 tokens of the routing
//!   analysis's data, Pearson's chi-square per degree of freedom against
//!   the counts is 0.5 to 1.3 on a layer conditioned on an unconditioned
//!   one (1 is pure sampling noise) and up to 7 (OLMoE arxiv, 15 given 7)
//!   on a layer conditioned on a conditioned one, about 1% per expert. The
//!   rows keep their shape otherwise. The fit costs about 50 ms (Mixtral)
//!   to 250 ms (OLMoE) per source in a release build.
//! - **Determinism.** Token i of MoE layer l in step t draws from its own
//!   stream (`seed -> step t -> layer l -> token i`), so a step does not
//!   depend on its size (256 tokens are the prefix of 512) and is
//!   reproducible byte for byte. Every step draws fresh tokens from the
//!   same distributions: counts have no time axis.

use super::alias::{pick_weighted, Alias};
use super::counts::{CountVariant, RoutingCounts};
use super::inclusion::weights_for_inclusion;
use super::synthetic::{RoutingShape, REJECTIONS};
use super::trace::nearest;
use super::StepRouting;
use crate::model::ModelSpec;
use crate::rng::Rng;

/// Tokens of the sample the crosslayer column scales are fitted on.
pub const FIT_TOKENS: usize = 1 << 16;

/// Rounds of proportional fitting (each one a pass over the sample).
pub const FIT_ROUNDS: usize = 6;

/// Salts that split the seed into independent streams.
const SALT_TOKENS: u64 = 3;
const SALT_FIT: u64 = 4;

/// Seeded sampling from recorded expert counts (see the module
/// documentation for what is drawn and how).
#[derive(Clone, Debug)]
pub struct CountSampler {
    counts: RoutingCounts,
    shape: RoutingShape,
    tokens: usize,
    seed: u64,
    /// Per model MoE layer, the recorded layer (index) it draws from, and
    /// whether it is that layer itself (which may follow crosslayer rows).
    plan: Vec<(usize, bool)>,
    recorded: Vec<Recorded>,
}

/// A distribution to draw experts from: weights, their total and table.
#[derive(Clone, Debug)]
struct Dist {
    weights: Vec<f64>,
    total: f64,
    alias: Alias,
}

impl Dist {
    fn new(weights: Vec<f64>) -> Dist {
        Dist {
            total: weights.iter().sum(),
            alias: Alias::new(&weights),
            weights,
        }
    }

    /// The weight of the experts `s` has not marked taken.
    fn free_mass(&self, s: &Stamp) -> f64 {
        self.total - s.chosen.iter().map(|&e| self.weights[e]).sum::<f64>()
    }
}

/// What one recorded layer draws from.
#[derive(Clone, Debug)]
struct Recorded {
    /// The layer's own choices.
    own: Dist,
    /// The crosslayer rows it follows, if any.
    given: Option<Given>,
}

/// Crosslayer rows from an earlier recorded layer.
#[derive(Clone, Debug)]
struct Given {
    /// Index of the earlier recorded layer.
    from: usize,
    /// The recorded matrix, `matrix[i][j]`.
    matrix: Vec<Vec<f64>>,
    /// The fitted column scales.
    scale: Vec<f64>,
    /// Per source expert, the scaled row.
    rows: Vec<Dist>,
    /// Whether every rank follows the rows (`topk_rank_aligned`) or only
    /// the first (`top1`).
    all_ranks: bool,
}

impl Given {
    fn rebuild(&mut self) {
        self.rows = self
            .matrix
            .iter()
            .map(|row| Dist::new(row.iter().zip(&self.scale).map(|(x, s)| x * s).collect()))
            .collect();
    }
}

impl CountSampler {
    /// A sampler of steps of `tokens` tokens over every MoE layer of
    /// `model`, after checking the counts against it (`RoutingCounts::fit`).
    pub fn new(counts: &RoutingCounts, model: &ModelSpec, tokens: usize, seed: u64) -> Result<CountSampler, String> {
        counts.fit(model)?;
        let shape = RoutingShape::of(model)?;
        shape.choices_per_step(tokens as u64)?;
        let k = shape.top_k;
        let recorded_layers = counts.recorded_layers();
        let mut recorded = Vec::with_capacity(counts.layers.len());
        for l in &counts.layers {
            let total: f64 = l.counts.iter().map(|&c| c as f64).sum();
            let weights = match counts.variant {
                CountVariant::Topk => {
                    let target: Vec<f64> = l
                        .counts
                        .iter()
                        .map(|&c| (k as f64 * c as f64 / total).min(1.0))
                        .collect();
                    weights_for_inclusion(&target, k).map_err(|e| format!("counted layer {}: {e}", l.layer))?
                }
                CountVariant::Top1 => l.counts.iter().map(|&c| c as f64).collect(),
            };
            recorded.push(Recorded {
                own: Dist::new(weights),
                given: None,
            });
        }
        // The latest pair ending at each recorded layer.
        for pair in &counts.crosslayer {
            let (Some(from), Some(to)) = (
                recorded_layers.iter().position(|&l| l == pair.from),
                recorded_layers.iter().position(|&l| l == pair.to),
            ) else {
                continue;
            };
            if recorded[to].given.as_ref().is_some_and(|g| g.from > from) {
                continue;
            }
            let mut given = Given {
                from,
                matrix: pair
                    .counts
                    .iter()
                    .map(|r| r.iter().map(|&c| c as f64).collect())
                    .collect(),
                scale: vec![1.0; shape.experts],
                rows: Vec::new(),
                all_ranks: counts.variant == CountVariant::Topk,
            };
            given.rebuild();
            recorded[to].given = Some(given);
        }
        let plan = shape
            .layers
            .iter()
            .map(|&m| {
                let r = nearest(&recorded_layers, m);
                (r, recorded_layers[r] == m)
            })
            .collect();
        let mut sampler = CountSampler {
            counts: counts.clone(),
            shape,
            tokens,
            seed,
            plan,
            recorded,
        };
        sampler.fit_crosslayer();
        Ok(sampler)
    }

    /// The counts sampled from.
    pub fn counts(&self) -> &RoutingCounts {
        &self.counts
    }

    /// Per model MoE layer, (model layer, the recorded layer whose counts
    /// it follows).
    pub fn layer_map(&self) -> Vec<(u32, u32)> {
        self.shape
            .layers
            .iter()
            .zip(&self.plan)
            .map(|(&m, &(r, _))| (m, self.counts.layers[r].layer))
            .collect()
    }

    /// Per model MoE layer, (model layer, the recorded counts it follows):
    /// the loads the file gives, before any sampling.
    pub fn recorded_loads(&self) -> Vec<(u32, Vec<f64>)> {
        self.shape
            .layers
            .iter()
            .zip(&self.plan)
            .map(|(&m, &(r, _))| (m, self.counts.layers[r].counts.iter().map(|&c| c as f64).collect()))
            .collect()
    }

    /// The routing of step `t` (every step draws fresh tokens).
    pub fn step(&self, t: u64) -> StepRouting {
        let k = self.shape.top_k;
        let root = Rng::new(self.seed).fork(SALT_TOKENS).fork(t);
        let mut layers: Vec<Vec<u32>> = Vec::with_capacity(self.plan.len());
        // Where each recorded layer's own choices are, once drawn.
        let mut home: Vec<Option<usize>> = vec![None; self.recorded.len()];
        let mut stamp = Stamp::new(self.shape.experts);
        for (li, &(r, own)) in self.plan.iter().enumerate() {
            let layer_rng = root.fork(li as u64);
            let rec = &self.recorded[r];
            let given = rec
                .given
                .as_ref()
                .filter(|_| own)
                .and_then(|g| home[g.from].map(|h| (g, h)));
            let mut out = vec![0u32; self.tokens * k];
            for (i, choices) in out.chunks_mut(k).enumerate() {
                let mut rng = layer_rng.fork(i as u64);
                let prev = given.map(|(g, h)| (g, &layers[h][i * k..(i + 1) * k]));
                draw_token(&mut rng, rec, prev, choices, &mut stamp, None);
            }
            if own {
                home[r] = Some(li);
            }
            layers.push(out);
        }
        self.shape.step_routing(self.tokens, layers)
    }

    /// Fits each conditioned layer's column scales, earliest first (a later
    /// layer's rows read the fitted choices of the one before), on a fixed
    /// sample of [`FIT_TOKENS`] tokens of the recorded layers alone.
    fn fit_crosslayer(&mut self) {
        if self.recorded.iter().all(|r| r.given.is_none()) {
            return;
        }
        let k = self.shape.top_k;
        let n = FIT_TOKENS;
        let root = Rng::new(self.seed).fork(SALT_FIT);
        let mut stamp = Stamp::new(self.shape.experts);
        let mut sample: Vec<Vec<u32>> = Vec::with_capacity(self.recorded.len());
        for r in 0..self.recorded.len() {
            let layer_rng = root.fork(r as u64);
            let draw_all = |rec: &Recorded, sample: &[Vec<u32>], stamp: &mut Stamp, mut expect: Option<&mut Expect>| {
                let mut out = vec![0u32; n * k];
                for (i, choices) in out.chunks_mut(k).enumerate() {
                    let mut rng = layer_rng.fork(i as u64);
                    let prev = rec.given.as_ref().map(|g| (g, &sample[g.from][i * k..(i + 1) * k]));
                    draw_token(&mut rng, rec, prev, choices, stamp, expect.as_deref_mut());
                }
                out
            };
            let Some(given) = &self.recorded[r].given else {
                sample.push(draw_all(&self.recorded[r], &sample, &mut stamp, None));
                continue;
            };
            // The target: the recorded share of the fitted ranks' choices.
            let ranks = if given.all_ranks { k } else { 1 };
            let counts = &self.counts.layers[r].counts;
            let total: f64 = counts.iter().map(|&c| c as f64).sum();
            let want: Vec<f64> = counts.iter().map(|&c| c as f64 / total).collect();
            let drawn = (n * ranks) as f64;
            for _ in 0..FIT_ROUNDS {
                let mut expect = Expect::new(self.shape.experts, ranks);
                draw_all(&self.recorded[r], &sample, &mut stamp, Some(&mut expect));
                let rec = &mut self.recorded[r];
                let got = expect.sum(rec);
                if let Some(g) = rec.given.as_mut() {
                    for ((s, &w), &x) in g.scale.iter_mut().zip(&want).zip(&got) {
                        if w > 0.0 && x > 0.0 {
                            *s *= w * drawn / x;
                        }
                    }
                    let mean = g.scale.iter().sum::<f64>() / g.scale.len() as f64;
                    g.scale.iter_mut().for_each(|s| *s /= mean);
                    g.rebuild();
                }
            }
            sample.push(draw_all(&self.recorded[r], &sample, &mut stamp, None));
        }
    }
}

/// The expected number of choices of each expert over a sample, summed from
/// each draw's exact distribution given the choices before it (a
/// Rao-Blackwellised count: the last draw's noise left out). A draw from
/// distribution d among the free experts adds `w_d[e] / free` to every free
/// e; that is kept as `1 / free` per distribution plus corrections for the
/// few taken experts, so a draw costs O(top_k), not O(experts).
struct Expect {
    /// Choices counted per token (the first `ranks`).
    ranks: usize,
    /// Per crosslayer row, then the layer's own distribution last.
    coef: Vec<f64>,
    correction: Vec<f64>,
}

impl Expect {
    fn new(experts: usize, ranks: usize) -> Expect {
        Expect {
            ranks,
            coef: vec![0.0; experts + 1],
            correction: vec![0.0; experts],
        }
    }

    /// Records a draw from `d` (`id`: its row, or `experts` for the layer's own).
    fn add(&mut self, id: usize, d: &Dist, free: f64, s: &Stamp) {
        self.coef[id] += 1.0 / free;
        for &e in &s.chosen {
            self.correction[e] -= d.weights[e] / free;
        }
    }

    /// The expected choices per expert.
    fn sum(&self, rec: &Recorded) -> Vec<f64> {
        let mut got = self.correction.clone();
        let own = self.coef.len() - 1;
        let rows = rec.given.as_ref().map_or(&[][..], |g| &g.rows[..]);
        for (id, d) in rows.iter().enumerate().chain(std::iter::once((own, &rec.own))) {
            let c = self.coef[id];
            if c != 0.0 {
                for (g, &w) in got.iter_mut().zip(&d.weights) {
                    *g += c * w;
                }
            }
        }
        got
    }
}

/// "Already chosen" marks stamped per token, so nothing is cleared between
/// tokens, and the token's choices so far.
struct Stamp {
    marks: Vec<u32>,
    now: u32,
    chosen: Vec<usize>,
}

impl Stamp {
    fn new(experts: usize) -> Stamp {
        Stamp {
            marks: vec![0; experts],
            now: 0,
            chosen: Vec::new(),
        }
    }

    fn next(&mut self) {
        self.now = self.now.wrapping_add(1);
        if self.now == 0 {
            self.marks.fill(0);
            self.now = 1;
        }
        self.chosen.clear();
    }

    fn take(&mut self, e: usize) {
        self.marks[e] = self.now;
        self.chosen.push(e);
    }

    fn taken(&self, e: usize) -> bool {
        self.marks[e] == self.now
    }
}

/// One token's choices in a layer drawn from `rec`; `prev` is the crosslayer
/// rows it follows with its choices at their source layer. With `expect`,
/// the first choices also add their exact distribution to it.
fn draw_token(
    rng: &mut Rng,
    rec: &Recorded,
    prev: Option<(&Given, &[u32])>,
    out: &mut [u32],
    s: &mut Stamp,
    mut expect: Option<&mut Expect>,
) {
    s.next();
    let own_id = rec.own.weights.len();
    for j in 0..out.len() {
        // The row of this rank's source expert, while it has free mass.
        let row = prev
            .filter(|(g, _)| g.all_ranks || j == 0)
            .and_then(|(g, p)| Some((p[j] as usize, g.rows.get(p[j] as usize)?)))
            .map(|(id, d)| (id, d, d.free_mass(s)))
            // (Relative to the total: a subtraction can leave rounding.)
            .filter(|&(_, d, free)| free > 1e-12 * d.total);
        let (id, d, free) = row.unwrap_or_else(|| (own_id, &rec.own, rec.own.free_mass(s)));
        if let Some(x) = expect.as_deref_mut().filter(|x| j < x.ranks && free > 0.0) {
            x.add(id, d, free, s);
        }
        // The fit ensures top_k experts with weight, so the last fallback
        // (any free expert) is only a guard against rounding.
        let e = draw_free(rng, d, s)
            .or_else(|| draw_free(rng, &rec.own, s))
            .or_else(|| (0..own_id).find(|&e| !s.taken(e)))
            .unwrap_or(0);
        s.take(e);
        out[j] = e as u32;
    }
}

/// An expert not yet taken, in proportion to `d`'s weights (rejection on
/// its table, then an exact scan); None when no free expert has weight.
fn draw_free(rng: &mut Rng, d: &Dist, s: &Stamp) -> Option<usize> {
    for _ in 0..REJECTIONS {
        let e = d.alias.sample(rng);
        if !s.taken(e) && d.weights[e] > 0.0 {
            return Some(e);
        }
    }
    let free = (0..d.weights.len()).filter(|&e| !s.taken(e) && d.weights[e] > 0.0);
    free.clone().next()?;
    Some(pick_weighted(rng, free, |e| d.weights[e]))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::counts::tests::example;
    use super::super::counts::{parse_counts, parse_crosslayer, select, CountSelection, LayerCounts};
    use super::super::synthetic::tests::model;
    use super::*;

    fn mixtral_counts(domain: Option<&str>, variant: CountVariant, crosslayer: bool) -> RoutingCounts {
        let f = parse_counts(&example("expert_counts.json"), "expert_counts.json").unwrap();
        let c = parse_crosslayer(&example("crosslayer_counts.json"), "crosslayer_counts.json").unwrap();
        let sel = CountSelection {
            model: Some("mistral".into()),
            domain: domain.map(str::to_string),
            variant: Some(variant),
        };
        select(
            &f,
            "expert_counts.json",
            &sel,
            crosslayer.then_some((&c, "crosslayer_counts.json")),
        )
        .unwrap()
    }

    /// Pearson's statistic of `loads` against `expected` (same total).
    pub fn chi_square(loads: &[u64], expected: &[f64]) -> f64 {
        loads
            .iter()
            .zip(expected)
            .filter(|(_, &e)| e > 0.0)
            .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
            .sum()
    }

    #[test]
    fn loads_follow_the_counts_on_every_layer() {
        let counts = mixtral_counts(Some("arxiv"), CountVariant::Topk, false);
        let m = model(8, 2, 1, 1, 0, 32);
        let tokens = 100_000;
        let g = CountSampler::new(&counts, &m, tokens, 1).unwrap();
        let step = g.step(0);
        assert_eq!((step.layers.len(), step.top_k, step.tokens), (32, 2, tokens));
        // Nearest recorded layer, the earlier on a tie: 3 -> 0, 4 -> 7, 11 -> 7, 12 -> 15.
        let map = g.layer_map();
        assert_eq!(
            (map[3], map[4], map[11], map[12], map[31]),
            ((3, 0), (4, 7), (11, 7), (12, 15), (31, 15))
        );
        for (l, (_, rec)) in map.iter().enumerate() {
            let c = &counts.layers.iter().find(|x| x.layer == *rec).unwrap().counts;
            let total: u64 = c.iter().sum();
            let expected: Vec<f64> = c
                .iter()
                .map(|&x| x as f64 * (2 * tokens) as f64 / total as f64)
                .collect();
            let loads = step.expert_loads(l as u32, 8);
            // 7 degrees of freedom: 24.3 is the 0.999 quantile.
            let chi = chi_square(&loads, &expected);
            assert!(chi < 24.3, "layer {l}: chi-square {chi}\n{loads:?}\n{expected:?}");
        }
        // Every token's choices are distinct.
        for l in &step.layers {
            assert!(l.experts.chunks(2).all(|c| c[0] != c[1]));
        }
    }

    #[test]
    fn skewed_top8_loads_need_the_solved_weights() {
        // OLMoE arxiv, layer 15: the hottest expert is chosen by most tokens.
        let f = parse_counts(&example("expert_counts.json"), "f").unwrap();
        let sel = CountSelection {
            model: Some("olmoe".into()),
            domain: Some("arxiv".into()),
            variant: None,
        };
        let counts = select(&f, "f", &sel, None).unwrap();
        let m = model(64, 8, 1, 1, 0, 16);
        let tokens = 40_000;
        let step = CountSampler::new(&counts, &m, tokens, 3).unwrap().step(0);
        for (li, l) in [(0usize, 0u32), (7, 7), (15, 15)] {
            let c = &counts.layers.iter().find(|x| x.layer == l).unwrap().counts;
            let total: u64 = c.iter().sum();
            let expected: Vec<f64> = c
                .iter()
                .map(|&x| x as f64 * (8 * tokens) as f64 / total as f64)
                .collect();
            let loads = step.expert_loads(li as u32, 64);
            // 63 degrees of freedom: 103.4 is the 0.999 quantile (a hot
            // expert near certainty has less variance than Pearson assumes,
            // so this is conservative).
            let chi = chi_square(&loads, &expected);
            assert!(chi < 103.4, "layer {l}: chi-square {chi}");
        }
    }

    /// SOURCE.md's dependency: the fraction of tokens whose top-1 expert at
    /// layer b is among the 4 most frequent successors of their top-1 at a.
    fn top4_successors(step: &StepRouting, a: usize, b: usize, experts: usize) -> f64 {
        super::super::calibrate::dependency(step, a, b, experts)
    }

    #[test]
    fn crosslayer_rows_raise_the_dependency_and_keep_the_marginal() {
        let m = model(8, 2, 1, 1, 0, 16);
        let tokens = 100_000;
        let plain =
            CountSampler::new(&mixtral_counts(Some("arxiv"), CountVariant::Topk, false), &m, tokens, 5).unwrap();
        let cross = CountSampler::new(&mixtral_counts(Some("arxiv"), CountVariant::Topk, true), &m, tokens, 5).unwrap();
        let (p, c) = (plain.step(0), cross.step(0));
        for (a, b) in [(0, 7), (7, 15)] {
            let (dp, dc) = (top4_successors(&p, a, b, 8), top4_successors(&c, a, b, 8));
            assert!(dc > dp + 0.03, "{a}->{b}: {dc} with crosslayer, {dp} without");
        }
        // The marginal of the conditioned layers still follows the counts.
        let counts = cross.counts().clone();
        for (li, l) in [(7usize, 7u32), (15, 15)] {
            let cl: &LayerCounts = counts.layers.iter().find(|x| x.layer == l).unwrap();
            let total: u64 = cl.counts.iter().sum();
            let loads = c.expert_loads(li as u32, 8);
            for (e, (&got, &want)) in loads.iter().zip(&cl.counts).enumerate() {
                let want = want as f64 * (2 * tokens) as f64 / total as f64;
                assert!(
                    (got as f64 / want - 1.0).abs() < 0.02,
                    "layer {l} expert {e}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn top1_counts_give_the_first_choice() {
        let counts = mixtral_counts(Some("book"), CountVariant::Top1, false);
        let m = model(8, 2, 1, 1, 0, 16);
        let tokens = 100_000;
        let step = CountSampler::new(&counts, &m, tokens, 2).unwrap().step(0);
        let c = &counts.layers[0].counts;
        let total: u64 = c.iter().sum();
        let mut first = [0u64; 8];
        for ch in step.layers[0].experts.chunks(2) {
            first[ch[0] as usize] += 1;
        }
        let expected: Vec<f64> = c.iter().map(|&x| x as f64 * tokens as f64 / total as f64).collect();
        assert!(chi_square(&first, &expected) < 24.3, "{first:?} vs {expected:?}");
    }

    #[test]
    fn steps_are_deterministic_prefix_stable_and_differ() {
        let counts = mixtral_counts(None, CountVariant::Topk, true);
        let m = model(8, 2, 1, 1, 0, 32);
        let a = CountSampler::new(&counts, &m, 256, 9).unwrap();
        let b = CountSampler::new(&counts, &m, 256, 9).unwrap();
        assert_eq!(a.step(3), b.step(3));
        assert_ne!(a.step(3), a.step(4));
        assert_ne!(a.step(3), CountSampler::new(&counts, &m, 256, 10).unwrap().step(3));
        let wide = CountSampler::new(&counts, &m, 1000, 9).unwrap().step(3);
        for (w, n) in wide.layers.iter().zip(&a.step(3).layers) {
            assert_eq!(&w.experts[..n.experts.len()], &n.experts[..]);
        }
    }

    #[test]
    fn sglang_counts_route_every_moe_layer() {
        let text = r#"{"logical_count": [[0, 0, 0, 0], [50, 30, 15, 5], [10, 20, 30, 40]]}"#;
        let f = parse_counts(text, "s.json").unwrap();
        let counts = select(&f, "s.json", &CountSelection::default(), None).unwrap();
        // One dense layer, then two MoE layers, 4 experts, top-2.
        let m = model(4, 2, 1, 1, 1, 2);
        let tokens = 50_000;
        let step = CountSampler::new(&counts, &m, tokens, 4).unwrap().step(0);
        assert_eq!(step.layers.iter().map(|l| l.layer).collect::<Vec<_>>(), [1, 2]);
        for (l, c) in [(1u32, [50.0, 30.0, 15.0, 5.0]), (2, [10.0, 20.0, 30.0, 40.0])] {
            let expected: Vec<f64> = c.iter().map(|x| x / 100.0 * (2 * tokens) as f64).collect();
            let chi = chi_square(&step.expert_loads(l, 4), &expected);
            assert!(chi < 16.3, "layer {l}: {chi}"); // 3 degrees of freedom, 0.999
        }
        let e = CountSampler::new(&counts, &model(4, 2, 1, 1, 0, 3), 8, 0).unwrap_err();
        assert!(
            e.contains("for 3 layers") || e.contains("not an MoE layer") || e.contains("no counts"),
            "{e}"
        );
    }

    #[test]
    fn sglang_logical_count_round_trips_through_sampling() {
        // A DeepSeek-like record: a dense layer 0 (its row all zero), then
        // two MoE layers of 6 experts at top-2, as SGLang's recorder dumps it.
        let recorded: Vec<Vec<u64>> = vec![
            vec![0; 6],
            vec![900, 700, 500, 400, 300, 200],
            vec![350, 350, 350, 350, 800, 800],
        ];
        let text = serde_json::json!({ "logical_count": recorded, "rank": 0 }).to_string();
        let counts = select(
            &parse_counts(&text, "r.json").unwrap(),
            "r.json",
            &CountSelection::default(),
            None,
        )
        .unwrap();
        let m = model(6, 2, 1, 1, 1, 2);
        let sampler = CountSampler::new(&counts, &m, 30_000, 8).unwrap();
        // Record the sampled routing the way SGLang does: per model layer,
        // every top-k selection of each logical expert, over 2 steps.
        let mut logical = vec![vec![0u64; 6]; 3];
        for t in 0..2 {
            for l in &sampler.step(t).layers {
                for &e in &l.experts {
                    logical[l.layer as usize][e as usize] += 1;
                }
            }
        }
        let dumped = serde_json::json!({ "logical_count": [logical.clone()] }).to_string();
        let again = select(
            &parse_counts(&dumped, "d.json").unwrap(),
            "d.json",
            &CountSelection::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            (again.experts, again.model_layers, again.recorded_layers()),
            (6, Some(3), vec![1, 2])
        );
        assert_eq!(again.fit(&m), Ok(()));
        for l in 1..3 {
            let total: u64 = recorded[l].iter().sum();
            let expected: Vec<f64> = recorded[l]
                .iter()
                .map(|&c| c as f64 * 120_000.0 / total as f64)
                .collect();
            let chi = chi_square(&logical[l], &expected);
            assert!(chi < 20.5, "layer {l}: {chi}\n{:?}\n{expected:?}", logical[l]);
            // 5 degrees of freedom, 0.999
        }
    }
}
