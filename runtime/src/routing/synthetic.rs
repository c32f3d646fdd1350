//! Synthetic routing: the `uniform` and `zipf(...)` routing sources, and
//! the generator `skewed(...)` runs with a fixed popularity (`skewed.rs`,
//! [`Synthetic::with_popularity`]).
//!
//! This file owns the routing shape every source shares ([`RoutingShape`]:
//! experts, `top_k`, group limiting, which model layers are MoE) and the
//! seeded generator [`Synthetic`], which draws every token's expert choices
//! for a step:
//!
//! - **Popularity.** Each MoE layer has log-popularity logits over its
//!   experts, starting from Zipf: `logit_e = -s * ln(rank_e)`, the ranks a
//!   per-layer random permutation (so the hot experts differ by layer).
//!   With `drift > 0` every logit takes a Gaussian random-walk step of
//!   standard deviation `drift` per step; popularity is the softmax of the
//!   logits, so `s = 0` and `drift = 0` is uniform.
//! - **Choices.** A token makes its `top_k` choices in order, each drawn in
//!   proportion to popularity among the experts it has not yet chosen
//!   (sampling without replacement, so choice j is its j-th best). With
//!   group limiting (`topk_groups < groups`, DeepSeek's node-limited
//!   routing) it first draws `topk_groups` distinct groups in proportion to
//!   their summed popularity and then its experts inside them only.
//! - **Cross-layer dependency.** A fixed successor map `σ_l` per pair of
//!   consecutive MoE layers. With probability `layer_corr` a token's j-th
//!   choice in layer l+1 is `σ_l` of its j-th choice in layer l, when that
//!   expert is still free and its group still allowed; otherwise the choice
//!   is drawn from popularity. `σ_l` maps the expert of start rank r in
//!   layer l to the expert of start rank r in layer l+1: since each layer's
//!   ranking is an independent uniform permutation, `σ_l` is a uniformly
//!   random permutation of expert ids, and following it keeps each layer's
//!   Zipf marginal, so `s` keeps meaning the per-layer skew whatever
//!   `layer_corr` is.
//!
//! Cost: per step O(layers x experts) to rebuild alias tables, then per
//! token and layer O(top_k) expected draws (O(1) each), plus
//! O(topk_groups) with group limiting. A draw that keeps hitting taken
//! experts (most of the mass already chosen) falls back after
//! [`REJECTIONS`] tries to an exact O(experts) scan, so the cost stays
//! bounded on extreme skews while the distribution stays exact.
//!
//! Determinism: token i of MoE layer l in step t draws from its own stream
//! (`seed -> step t -> layer l -> token i`), so a step does not depend on
//! how many tokens it has (a 256-token step is the prefix of a 512-token
//! one) nor on how its tokens are split over threads (large steps use every
//! core). Popularity at step t depends on every earlier step's walk; the
//! generator keeps the logits of the last step it produced and walks
//! forward from there, and a request for an earlier step replays the walk
//! from step 0 (recomputed from the seed, no cache of routings), so
//! `step(t)` is the same whatever was asked before.

use super::alias::{pick_weighted, Alias};
use super::{LayerRouting, StepRouting};
use crate::model::{LayerKind, ModelSpec};
use crate::rng::Rng;

/// Most expert choices one step may hold (tokens x MoE layers x `top_k`),
/// about 8 GiB of expert ids: a bigger step is refused rather than
/// half-allocated.
pub const MAX_CHOICES_PER_STEP: u64 = 1 << 31;

/// Fewest tokens worth a thread of their own when generating a step (below
/// this, spawning costs more than it saves).
const MIN_TOKENS_PER_THREAD: usize = 4096;

/// Tries of a rejection draw before the exact fallback scan.
pub const REJECTIONS: usize = 16;

/// Salts that split the seed into independent streams.
const SALT_RANKS: u64 = 1;
const SALT_WALK: u64 = 2;
const SALT_TOKENS: u64 = 3;

/// How a model's MoE layers route: the figures every routing source needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingShape {
    /// Routed experts per MoE layer.
    pub experts: usize,
    /// Experts each token chooses per MoE layer.
    pub top_k: usize,
    /// Expert groups (1 without group limiting); group g holds experts
    /// `g * group_size .. (g + 1) * group_size`.
    pub groups: usize,
    /// Groups a token may use per layer (`groups` when unlimited).
    pub topk_groups: usize,
    /// The model layers (0-based, dense ones counted) that are MoE, ascending.
    pub layers: Vec<u32>,
}

impl RoutingShape {
    /// A step's routing from each MoE layer's choices (`tokens x top_k`
    /// expert ids, in the order of `layers`), without gate weights.
    pub fn step_routing(&self, tokens: usize, layers: Vec<Vec<u32>>) -> StepRouting {
        StepRouting {
            tokens,
            top_k: self.top_k,
            layers: self
                .layers
                .iter()
                .zip(layers)
                .map(|(&layer, experts)| LayerRouting {
                    layer,
                    experts,
                    weights: Vec::new(),
                })
                .collect(),
        }
    }

    /// The shape of `model`'s MoE layers, checked: the compiler checks the
    /// same rules, but a schedule file can carry any model.
    pub fn of(model: &ModelSpec) -> Result<RoutingShape, String> {
        let name = &model.name;
        let moe = model
            .moe
            .as_ref()
            .ok_or_else(|| format!("model `{name}` has no MoE block"))?;
        if moe.experts == 0 || moe.experts > 1 << 24 {
            return Err(format!(
                "model `{name}`: experts = {} is outside 1 ..= 2^24",
                moe.experts
            ));
        }
        if moe.top_k == 0 || moe.top_k > moe.experts {
            return Err(format!(
                "model `{name}`: top_k = {} is outside 1 ..= experts ({})",
                moe.top_k, moe.experts
            ));
        }
        if moe.groups == 0 || moe.experts % moe.groups != 0 {
            return Err(format!(
                "model `{name}`: {} groups do not divide {} experts evenly",
                moe.groups, moe.experts
            ));
        }
        if moe.topk_groups == 0 || moe.topk_groups > moe.groups {
            return Err(format!(
                "model `{name}`: topk_groups = {} is outside 1 ..= groups ({})",
                moe.topk_groups, moe.groups
            ));
        }
        let group_size = moe.experts / moe.groups;
        if moe.topk_groups * group_size < moe.top_k {
            return Err(format!(
                "model `{name}`: the {} kept groups hold {} experts, fewer than top_k = {}",
                moe.topk_groups,
                moe.topk_groups * group_size,
                moe.top_k
            ));
        }
        let mut layers = Vec::new();
        for i in 0..model.layers {
            if model.layer_kind(i) == LayerKind::Moe {
                let layer = u32::try_from(i).map_err(|_| format!("model `{name}`: layer {i} does not fit 32 bits"))?;
                layers.push(layer);
            }
        }
        // Every figure was bounded by `experts <= 2^24` above, so these fit.
        Ok(RoutingShape {
            experts: moe.experts as usize,
            top_k: moe.top_k as usize,
            groups: moe.groups as usize,
            topk_groups: moe.topk_groups as usize,
            layers,
        })
    }

    /// Experts per group.
    pub fn group_size(&self) -> usize {
        self.experts / self.groups
    }

    /// The group expert `e` belongs to.
    pub fn group_of(&self, e: u32) -> usize {
        e as usize / self.group_size()
    }

    /// Whether tokens are confined to fewer groups than exist.
    pub fn is_group_limited(&self) -> bool {
        self.topk_groups < self.groups
    }

    /// Expert choices in a step of `tokens` tokens, or an error when that
    /// exceeds [`MAX_CHOICES_PER_STEP`].
    pub fn choices_per_step(&self, tokens: u64) -> Result<usize, String> {
        let n = tokens
            .checked_mul(self.layers.len() as u64)
            .and_then(|x| x.checked_mul(self.top_k as u64))
            .filter(|&n| n <= MAX_CHOICES_PER_STEP)
            .ok_or_else(|| {
                format!(
                    "a step of {tokens} tokens over {} MoE layers with top_k = {} holds more than 2^31 expert choices; \
                     use fewer tokens per step",
                    self.layers.len(),
                    self.top_k
                )
            })?;
        Ok(n as usize)
    }
}

/// The knobs of the `zipf(...)` routing source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZipfParams {
    /// Zipf exponent of the start popularity (0 = uniform).
    pub s: f64,
    /// Probability that a token's j-th choice in layer l+1 follows its j-th
    /// choice in layer l through the successor map.
    pub layer_corr: f64,
    /// Standard deviation of each logit's random-walk step per step.
    pub drift: f64,
}

impl ZipfParams {
    /// Uniform routing: no skew, no dependency, no drift.
    pub const UNIFORM: ZipfParams = ZipfParams {
        s: 0.0,
        layer_corr: 0.0,
        drift: 0.0,
    };

    fn check(&self) -> Result<(), String> {
        if !(self.s.is_finite() && self.s >= 0.0) {
            return Err(format!("zipf: s = {} must be a finite number >= 0", self.s));
        }
        if !(0.0..=1.0).contains(&self.layer_corr) {
            return Err(format!("zipf: layer_corr = {} must lie in 0 ..= 1", self.layer_corr));
        }
        if !(self.drift.is_finite() && self.drift >= 0.0) {
            return Err(format!("zipf: drift = {} must be a finite number >= 0", self.drift));
        }
        Ok(())
    }
}

/// What one MoE layer draws from at the current step.
#[derive(Clone, Debug)]
struct LayerTables {
    /// Popularity over experts (sums to 1).
    p: Vec<f64>,
    /// Over all experts: the draws when every group is allowed.
    experts: Alias,
    /// Summed popularity per group (group-limited only).
    group_mass: Vec<f64>,
    /// Over groups by summed popularity (group-limited only).
    groups: Option<Alias>,
    /// Per group, over its experts (group-limited only).
    within: Vec<Alias>,
}

impl LayerTables {
    fn new(logits: &[f64], shape: &RoutingShape) -> LayerTables {
        // Softmax with the maximum subtracted, so large logits cannot overflow.
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut p: Vec<f64> = logits.iter().map(|&x| (x - max).exp()).collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        let experts = Alias::new(&p);
        if !shape.is_group_limited() {
            return LayerTables {
                p,
                experts,
                group_mass: Vec::new(),
                groups: None,
                within: Vec::new(),
            };
        }
        let gs = shape.group_size();
        let group_mass: Vec<f64> = p.chunks(gs).map(|c| c.iter().sum()).collect();
        let within = p.chunks(gs).map(Alias::new).collect();
        LayerTables {
            groups: Some(Alias::new(&group_mass)),
            p,
            experts,
            group_mass,
            within,
        }
    }
}

/// Per-generation scratch: "already chosen" marks stamped per token and
/// layer, so no array is cleared between tokens.
struct Scratch {
    expert_stamp: Vec<u32>,
    group_stamp: Vec<u32>,
    stamp: u32,
    allowed: Vec<usize>,
    /// Cumulative masses of `allowed`, once complete (empty before).
    cum: Vec<f64>,
}

impl Scratch {
    fn new(shape: &RoutingShape) -> Scratch {
        Scratch {
            expert_stamp: vec![0; shape.experts],
            group_stamp: vec![0; shape.groups],
            stamp: 0,
            allowed: Vec::with_capacity(shape.topk_groups),
            cum: Vec::with_capacity(shape.topk_groups),
        }
    }

    /// A fresh "nothing chosen" state for the next token and layer.
    fn next(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Wrapped: old stamps could collide, so clear them once.
            self.expert_stamp.fill(0);
            self.group_stamp.fill(0);
            self.stamp = 1;
        }
        self.allowed.clear();
        self.cum.clear();
    }
}

/// The seeded synthetic routing generator (uniform or Zipf; see the module
/// documentation for the model it draws from).
#[derive(Clone, Debug)]
pub struct Synthetic {
    shape: RoutingShape,
    tokens: usize,
    params: ZipfParams,
    seed: u64,
    /// Logits of every MoE layer at step 0.
    start: Vec<Vec<f64>>,
    /// `successor[l][e]`: σ_l(e), expert e of MoE layer l to MoE layer l+1.
    successor: Vec<Vec<u32>>,
    /// The step `logits` and `tables` describe.
    cursor: u64,
    logits: Vec<Vec<f64>>,
    tables: Vec<LayerTables>,
}

impl Synthetic {
    /// Uniform routing (`uniform(seed = N)`): each token's experts uniformly
    /// at random; with group limiting, `topk_groups` groups uniformly first.
    pub fn uniform(model: &ModelSpec, tokens: usize, seed: u64) -> Result<Synthetic, String> {
        Synthetic::new(model, tokens, ZipfParams::UNIFORM, seed)
    }

    /// Zipf-skewed routing (`zipf(s, layer_corr, drift, seed)`) for steps of
    /// `tokens` tokens over every MoE layer of `model`.
    pub fn zipf(model: &ModelSpec, tokens: usize, params: ZipfParams, seed: u64) -> Result<Synthetic, String> {
        Synthetic::new(model, tokens, params, seed)
    }

    /// Zipf-skewed routing with its own exponent per MoE layer
    /// (`exponents[l]` for the l-th MoE layer; `params.s` is not used): what
    /// `calibrated(...)` runs once it has solved for the exponents.
    pub fn with_exponents(
        model: &ModelSpec,
        tokens: usize,
        exponents: &[f64],
        params: ZipfParams,
        seed: u64,
    ) -> Result<Synthetic, String> {
        Synthetic::from_shape(RoutingShape::of(model)?, tokens, exponents, params, seed)
    }

    fn new(model: &ModelSpec, tokens: usize, params: ZipfParams, seed: u64) -> Result<Synthetic, String> {
        params.check()?;
        let shape = RoutingShape::of(model)?;
        let exponents = vec![params.s; shape.layers.len()];
        Synthetic::from_shape(shape, tokens, &exponents, params, seed)
    }

    /// The generator for `shape` directly (calibration samples a shape with
    /// fewer layers than the model), one Zipf exponent per MoE layer.
    pub(crate) fn from_shape(
        shape: RoutingShape,
        tokens: usize,
        exponents: &[f64],
        params: ZipfParams,
        seed: u64,
    ) -> Result<Synthetic, String> {
        ZipfParams { s: 0.0, ..params }.check()?;
        if exponents.len() != shape.layers.len() {
            return Err(format!(
                "zipf: {} exponents for {} MoE layers",
                exponents.len(),
                shape.layers.len()
            ));
        }
        if let Some(s) = exponents.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(format!("zipf: s = {s} must be a finite number >= 0"));
        }
        shape.choices_per_step(tokens as u64)?;
        let root = Rng::new(seed);
        let ranks = root.fork(SALT_RANKS);
        let e = shape.experts;
        // order[l][r]: the expert of rank r + 1 in MoE layer l at step 0.
        let order: Vec<Vec<u32>> = (0..shape.layers.len())
            .map(|l| {
                let mut rng = ranks.fork(l as u64);
                let mut perm: Vec<u32> = (0..e as u32).collect();
                for i in (1..e).rev() {
                    perm.swap(i, rng.below(i as u64 + 1) as usize);
                }
                perm
            })
            .collect();
        let start: Vec<Vec<f64>> = order
            .iter()
            .zip(exponents)
            .map(|(perm, &s)| {
                let mut logits = vec![0.0; e];
                for (r, &x) in perm.iter().enumerate() {
                    logits[x as usize] = -s * ((r + 1) as f64).ln();
                }
                logits
            })
            .collect();
        Ok(Synthetic::from_start(shape, tokens, params, seed, &order, start))
    }

    /// A generator whose every MoE layer draws from the same fixed
    /// `popularity` over experts (finite, positive; normalised here), with
    /// no cross-layer dependency and no drift: what `skewed(...)` runs
    /// (`skewed.rs`). Experts keep their ids, so the popularity says which
    /// experts are hot in every layer; the successor map is the identity
    /// (the same ranking in every layer), unused without `layer_corr`.
    pub fn with_popularity(
        model: &ModelSpec,
        tokens: usize,
        popularity: &[f64],
        seed: u64,
    ) -> Result<Synthetic, String> {
        let shape = RoutingShape::of(model)?;
        if popularity.len() != shape.experts {
            return Err(format!(
                "a popularity over {} experts for a model with {}",
                popularity.len(),
                shape.experts
            ));
        }
        if let Some(p) = popularity.iter().find(|p| !(p.is_finite() && **p > 0.0)) {
            return Err(format!("popularity {p} must be a finite number > 0"));
        }
        shape.choices_per_step(tokens as u64)?;
        // Ranks by popularity, the lower id first on a tie.
        let mut rank: Vec<u32> = (0..shape.experts as u32).collect();
        rank.sort_by(|&a, &b| popularity[b as usize].total_cmp(&popularity[a as usize]));
        let logits: Vec<f64> = popularity.iter().map(|p| p.ln()).collect();
        let layers = shape.layers.len();
        let (order, start) = (vec![rank; layers], vec![logits; layers]);
        Ok(Synthetic::from_start(
            shape,
            tokens,
            ZipfParams::UNIFORM,
            seed,
            &order,
            start,
        ))
    }

    /// The generator from its step-0 logits and each layer's ranking
    /// (`order[l][r]`: the expert of rank r + 1 in MoE layer l), which the
    /// successor maps join rank to rank.
    fn from_start(
        shape: RoutingShape,
        tokens: usize,
        params: ZipfParams,
        seed: u64,
        order: &[Vec<u32>],
        start: Vec<Vec<f64>>,
    ) -> Synthetic {
        let e = shape.experts;
        let successor = order
            .windows(2)
            .map(|w| {
                let mut sigma = vec![0u32; e];
                for (r, &x) in w[0].iter().enumerate() {
                    sigma[x as usize] = w[1][r];
                }
                sigma
            })
            .collect();
        let tables = start.iter().map(|l| LayerTables::new(l, &shape)).collect();
        Synthetic {
            logits: start.clone(),
            shape,
            tokens,
            params,
            seed,
            start,
            successor,
            cursor: 0,
            tables,
        }
    }

    /// The routing shape this generator draws for.
    pub fn shape(&self) -> &RoutingShape {
        &self.shape
    }

    /// Tokens per step.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// σ_l(`expert`): the successor in MoE layer `moe_index + 1` of `expert`
    /// in MoE layer `moe_index` (indices count MoE layers only); None past
    /// the last MoE layer or for an expert out of range.
    pub fn successor(&self, moe_index: usize, expert: u32) -> Option<u32> {
        self.successor.get(moe_index)?.get(expert as usize).copied()
    }

    /// Popularity over experts of every MoE layer at step `t` (each sums to 1).
    pub fn popularity(&mut self, t: u64) -> Vec<Vec<f64>> {
        self.seek(t);
        self.tables.iter().map(|l| l.p.clone()).collect()
    }

    /// The routing of step `t`: every token's `top_k` choices in every MoE
    /// layer (weights left empty). Steps may be asked in any order.
    pub fn step(&mut self, t: u64) -> StepRouting {
        self.seek(t);
        let k = self.shape.top_k;
        let mut layers: Vec<Vec<u32>> = vec![vec![0; self.tokens * k]; self.shape.layers.len()];
        let step_rng = Rng::new(self.seed).fork(SALT_TOKENS).fork(t);
        // Split the tokens over the cores; per-token streams make the
        // result independent of the split (and of the core count).
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.tokens / MIN_TOKENS_PER_THREAD)
            .max(1);
        let per = self.tokens.div_ceil(threads);
        let mut parts: Vec<Vec<&mut [u32]>> = (0..threads).map(|_| Vec::with_capacity(layers.len())).collect();
        for layer in layers.iter_mut() {
            let mut rest = &mut layer[..];
            for part in parts.iter_mut() {
                let n = (per * k).min(rest.len());
                let (mine, others) = std::mem::take(&mut rest).split_at_mut(n);
                part.push(mine);
                rest = others;
            }
        }
        if threads == 1 {
            for mut part in parts {
                self.fill(&step_rng, 0, &mut part);
            }
        } else {
            let (me, rng) = (&*self, &step_rng);
            std::thread::scope(|scope| {
                for (i, mut part) in parts.into_iter().enumerate() {
                    scope.spawn(move || me.fill(rng, i * per, &mut part));
                }
            });
        }
        self.shape.step_routing(self.tokens, layers)
    }

    /// Routes the tokens from `first` on into `outs` (per MoE layer, the
    /// slice of those tokens' choices), layer after layer so each layer reads
    /// the one before it sequentially. Token i of layer l draws from its own
    /// stream `step -> l -> i`, so any split of the tokens gives the same
    /// routing.
    fn fill(&self, step_rng: &Rng, first: usize, outs: &mut [&mut [u32]]) {
        let k = self.shape.top_k;
        let mut scratch = Scratch::new(&self.shape);
        for li in 0..outs.len() {
            let (before, rest) = outs.split_at_mut(li);
            let prev = before.last().map(|p| &**p);
            let layer_rng = step_rng.fork(li as u64);
            for (i, out) in rest[0].chunks_mut(k).enumerate() {
                let mut rng = layer_rng.fork((first + i) as u64);
                let follow = prev.map(|p| &p[i * k..(i + 1) * k]);
                self.route_token(&mut rng, li, follow, out, &mut scratch);
            }
        }
    }

    /// Brings `logits` and `tables` to step `t`: forward from the current
    /// step, or replayed from step 0 when `t` is earlier.
    fn seek(&mut self, t: u64) {
        if self.params.drift == 0.0 {
            // Nothing moves: every step shares step 0's tables.
            self.cursor = t;
            return;
        }
        if t == self.cursor {
            return;
        }
        if t < self.cursor {
            self.logits.clone_from(&self.start);
            self.cursor = 0;
        }
        let walk = Rng::new(self.seed).fork(SALT_WALK);
        while self.cursor < t {
            // The step from `cursor` to `cursor + 1` has its own stream, so
            // a replay draws exactly the same steps.
            let mut rng = walk.fork(self.cursor);
            for logits in &mut self.logits {
                for x in logits.iter_mut() {
                    *x += self.params.drift * rng.normal();
                }
            }
            self.cursor += 1;
        }
        self.tables = self.logits.iter().map(|l| LayerTables::new(l, &self.shape)).collect();
    }

    /// One token's `top_k` choices in MoE layer `li` into `out`; `prev` is
    /// its choices in the MoE layer before, if any.
    ///
    /// Choices are made in order, each depending only on the ones before
    /// it, so choice j keeps its meaning (the j-th best expert) and
    /// following does not distort the later draws' distribution: without
    /// group limiting and drift, the first choice of every layer is exactly
    /// Zipf whatever `layer_corr` is. With group limiting the allowed groups are those of
    /// the followed choices so far until the first drawn choice, which
    /// completes them by summed popularity.
    fn route_token(&self, rng: &mut Rng, li: usize, prev: Option<&[u32]>, out: &mut [u32], s: &mut Scratch) {
        let shape = &self.shape;
        let tables = &self.tables[li];
        let limited = shape.is_group_limited();
        let gs = shape.group_size();
        let corr = self.params.layer_corr;
        let sigma = match prev {
            Some(prev) if corr > 0.0 => Some((prev, &self.successor[li - 1])),
            _ => None,
        };
        s.next();
        let stamp = s.stamp;
        for (j, slot) in out.iter_mut().enumerate() {
            if let Some((prev, sigma)) = sigma {
                if rng.next_f64() < corr {
                    let c = sigma[prev[j] as usize];
                    let g = c as usize / gs;
                    let free = s.expert_stamp[c as usize] != stamp;
                    let group_ok = !limited || s.group_stamp[g] == stamp || s.allowed.len() < shape.topk_groups;
                    if free && group_ok {
                        if limited && s.group_stamp[g] != stamp {
                            s.group_stamp[g] = stamp;
                            s.allowed.push(g);
                        }
                        s.expert_stamp[c as usize] = stamp;
                        *slot = c;
                        continue;
                    }
                }
            }
            let e = if limited {
                if s.cum.is_empty() {
                    complete_groups(rng, tables, shape.topk_groups, s);
                }
                draw_expert_in_groups(rng, tables, gs, s)
            } else {
                draw_expert(rng, tables, s)
            };
            s.expert_stamp[e as usize] = stamp;
            *slot = e;
        }
    }
}

/// Completes the token's allowed groups to `topk_groups` by summed
/// popularity, without replacement, and their cumulative masses.
fn complete_groups(rng: &mut Rng, tables: &LayerTables, topk_groups: usize, s: &mut Scratch) {
    while s.allowed.len() < topk_groups {
        let g = draw_group(rng, tables, s);
        s.group_stamp[g] = s.stamp;
        s.allowed.push(g);
    }
    let mut acc = 0.0;
    for &g in &s.allowed {
        acc += tables.group_mass[g];
        s.cum.push(acc);
    }
    if !(acc > 0.0 && acc.is_finite()) {
        // Every allowed group underflowed: weigh them equally.
        s.cum.clear();
        s.cum.extend((1..=s.allowed.len()).map(|i| i as f64));
    }
}

/// A group not yet allowed, in proportion to summed popularity.
fn draw_group(rng: &mut Rng, tables: &LayerTables, s: &Scratch) -> usize {
    if let Some(groups) = &tables.groups {
        for _ in 0..REJECTIONS {
            let g = groups.sample(rng);
            if s.group_stamp[g] != s.stamp {
                return g;
            }
        }
    }
    let free = (0..tables.group_mass.len()).filter(|&g| s.group_stamp[g] != s.stamp);
    pick_weighted(rng, free, |g| tables.group_mass[g])
}

/// An expert not yet chosen, in proportion to popularity (no group limit).
fn draw_expert(rng: &mut Rng, tables: &LayerTables, s: &Scratch) -> u32 {
    for _ in 0..REJECTIONS {
        let e = tables.experts.sample(rng);
        if s.expert_stamp[e] != s.stamp {
            return e as u32;
        }
    }
    let free = (0..tables.p.len()).filter(|&e| s.expert_stamp[e] != s.stamp);
    pick_weighted(rng, free, |e| tables.p[e]) as u32
}

/// An expert not yet chosen inside the allowed groups (`s.allowed`, with
/// cumulative masses `s.cum`), in proportion to popularity.
fn draw_expert_in_groups(rng: &mut Rng, tables: &LayerTables, gs: usize, s: &Scratch) -> u32 {
    let total = s.cum.last().copied().unwrap_or(0.0);
    for _ in 0..REJECTIONS {
        let u = rng.next_f64() * total;
        // A few allowed groups (DeepSeek keeps 4): count without branches,
        // which a random `u` would mispredict; many: binary search.
        let below = if s.cum.len() <= 16 {
            s.cum.iter().map(|&c| usize::from(c <= u)).sum()
        } else {
            s.cum.partition_point(|&c| c <= u)
        };
        let i = below.min(s.allowed.len() - 1);
        let g = s.allowed[i];
        let e = g * gs + tables.within[g].sample(rng);
        if s.expert_stamp[e] != s.stamp {
            return e as u32;
        }
    }
    let free = s
        .allowed
        .iter()
        .flat_map(|&g| g * gs..(g + 1) * gs)
        .filter(|&e| s.expert_stamp[e] != s.stamp);
    pick_weighted(rng, free, |e| tables.p[e]) as u32
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Activation, AttentionSpec, DType, GateKind, MoeSpec};

    /// A model with `layers` MoE layers (after `dense` dense ones).
    pub fn model(experts: u64, top_k: u64, groups: u64, topk_groups: u64, dense: u64, layers: u64) -> ModelSpec {
        ModelSpec {
            name: "test_moe".into(),
            layers: dense + layers,
            dense_layers: dense,
            moe_every: 1,
            hidden: 64,
            vocab: 100,
            dtype: DType::Bf16,
            attention: AttentionSpec::Mha { heads: 4, head_dim: 16 },
            dense_ffn: 128,
            moe: Some(MoeSpec {
                experts,
                shared_experts: 0,
                shared_ffn: 0,
                top_k,
                expert_ffn: 32,
                activation: Activation::Swiglu,
                gate: GateKind::Softmax,
                groups,
                topk_groups,
            }),
        }
    }

    /// DeepSeek-V3's routing: 3 dense then 58 MoE layers, 256 experts, top-8
    /// inside the best 4 of 8 groups.
    pub fn deepseek_v3() -> ModelSpec {
        model(256, 8, 8, 4, 3, 58)
    }

    fn zipf(s: f64, layer_corr: f64, drift: f64) -> ZipfParams {
        ZipfParams { s, layer_corr, drift }
    }

    /// Asserts every token's choices are in range, distinct and inside at most
    /// `topk_groups` groups.
    fn assert_valid(step: &StepRouting, shape: &RoutingShape) {
        assert_eq!(step.layers.len(), shape.layers.len());
        for l in &step.layers {
            assert_eq!(l.experts.len(), step.tokens * shape.top_k);
            for (t, c) in l.experts.chunks(shape.top_k).enumerate() {
                let mut seen = c.to_vec();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(
                    seen.len(),
                    c.len(),
                    "layer {} token {t}: repeated choice in {c:?}",
                    l.layer
                );
                assert!(c.iter().all(|&e| (e as usize) < shape.experts), "{c:?}");
                let mut groups: Vec<usize> = c.iter().map(|&e| shape.group_of(e)).collect();
                groups.sort_unstable();
                groups.dedup();
                assert!(
                    groups.len() <= shape.topk_groups,
                    "layer {} token {t}: groups {groups:?}",
                    l.layer
                );
            }
        }
    }

    #[test]
    fn choices_are_distinct_in_range_and_group_limited() {
        let m = deepseek_v3();
        for params in [ZipfParams::UNIFORM, zipf(1.2, 0.6, 0.02), zipf(3.0, 1.0, 0.5)] {
            let mut g = Synthetic::zipf(&m, 512, params, 7).unwrap();
            for t in 0..3 {
                assert_valid(&g.step(t), g.shape());
            }
        }
        // Without group limiting the same holds, and top_k = experts works.
        let mut g = Synthetic::zipf(&model(8, 8, 1, 1, 0, 3), 300, zipf(10.0, 0.5, 0.0), 1).unwrap();
        assert_valid(&g.step(0), g.shape());
    }

    #[test]
    fn group_limiting_actually_restricts() {
        // With 8 groups and 8 choices a token would almost always touch more
        // than 4 groups if nothing limited it.
        let mut g = Synthetic::uniform(&deepseek_v3(), 2000, 3).unwrap();
        let step = g.step(0);
        let shape = g.shape().clone();
        let mut used4 = 0;
        for c in step.layers[0].experts.chunks(8) {
            let mut groups: Vec<usize> = c.iter().map(|&e| shape.group_of(e)).collect();
            groups.sort_unstable();
            groups.dedup();
            assert!(groups.len() <= 4);
            used4 += usize::from(groups.len() == 4);
        }
        // Uniform inside 4 groups of 32, 8 choices cover all 4 with
        // probability 0.648 (inclusion-exclusion over the hypergeometric):
        // the groups are drawn first, then experts uniformly inside them.
        assert!((used4 as f64 / 2000.0 - 0.648).abs() < 0.04, "{used4}");
        // Unlimited, the same model spreads over more groups.
        let mut free = Synthetic::uniform(&model(256, 8, 8, 8, 3, 2), 2000, 3).unwrap();
        let step = free.step(0);
        let spread = step.layers[0]
            .experts
            .chunks(8)
            .filter(|c| {
                let mut g: Vec<u32> = c.iter().map(|&e| e / 32).collect();
                g.sort_unstable();
                g.dedup();
                g.len() > 4
            })
            .count();
        assert!(spread > 1000, "{spread}");
    }

    fn max_over_mean(loads: &[u64]) -> f64 {
        let mean = loads.iter().sum::<u64>() as f64 / loads.len() as f64;
        *loads.iter().max().unwrap() as f64 / mean
    }

    #[test]
    fn zipf_skew_matches_the_analytic_expectation() {
        let tokens = 100_000;
        // s = 0: uniform, every expert near 1/64.
        let m = model(64, 1, 1, 1, 0, 1);
        let step = Synthetic::zipf(&m, tokens, zipf(0.0, 0.0, 0.0), 5).unwrap().step(0);
        let loads = step.expert_loads(0, 64);
        let mean = tokens as f64 / 64.0;
        assert!(loads.iter().all(|&x| (x as f64 - mean).abs() < 0.1 * mean), "{loads:?}");
        assert!(max_over_mean(&loads) < 1.1);
        // s = 1.2 with top-1: max/mean = E * p_1 = E / H(E, s).
        for s in [1.2, 0.8] {
            let step = Synthetic::zipf(&m, tokens, zipf(s, 0.0, 0.0), 5).unwrap().step(0);
            let h: f64 = (1..=64).map(|r| (r as f64).powf(-s)).sum();
            let expected = 64.0 / h;
            let got = max_over_mean(&step.expert_loads(0, 64));
            assert!(
                (got / expected - 1.0).abs() < 0.03,
                "s = {s}: max/mean {got}, analytic {expected}"
            );
            // And the whole rank-load curve follows r^-s: the 8th hottest too.
            let mut sorted = step.expert_loads(0, 64);
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let expected8 = tokens as f64 * 8f64.powf(-s) / h;
            assert!(
                (sorted[7] as f64 / expected8 - 1.0).abs() < 0.06,
                "s = {s}: {} vs {expected8}",
                sorted[7]
            );
        }
    }

    #[test]
    fn hot_experts_differ_by_layer() {
        let mut g = Synthetic::zipf(&model(64, 2, 1, 1, 0, 4), 10, zipf(1.2, 0.0, 0.0), 9).unwrap();
        let p = g.popularity(0);
        let hottest: Vec<usize> = p
            .iter()
            .map(|l| (0..64).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap())
            .collect();
        let mut distinct = hottest.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1, "{hottest:?}");
    }

    /// The fraction of tokens whose top-1 expert in layer b is among the 4
    /// most frequent successors of their top-1 expert in layer a (as
    /// traces/olmoe-routing-analysis/SOURCE.md measures it), and the same
    /// with the 4 globally most popular experts of layer b.
    fn top4_successor_fraction(step: &StepRouting, a: usize, b: usize, experts: usize) -> (f64, f64) {
        let k = step.top_k;
        let mut m = vec![vec![0u64; experts]; experts];
        let mut dest = vec![0u64; experts];
        let (la, lb) = (&step.layers[a].experts, &step.layers[b].experts);
        for t in 0..step.tokens {
            m[la[t * k] as usize][lb[t * k] as usize] += 1;
            dest[lb[t * k] as usize] += 1;
        }
        let top4 = |row: &[u64]| {
            let mut r = row.to_vec();
            r.sort_unstable_by(|x, y| y.cmp(x));
            r[..4].iter().sum::<u64>()
        };
        let conditional = m.iter().map(|row| top4(row)).sum::<u64>() as f64 / step.tokens as f64;
        let marginal = top4(&dest) as f64 / step.tokens as f64;
        (conditional, marginal)
    }

    #[test]
    fn layer_corr_raises_the_conditional_successor_fraction() {
        let m = model(64, 4, 1, 1, 0, 2);
        let mut last = 0.0;
        for (i, corr) in [0.0, 0.25, 0.5, 0.75, 1.0].into_iter().enumerate() {
            let step = Synthetic::zipf(&m, 100_000, zipf(1.0, corr, 0.0), 11).unwrap().step(0);
            let (conditional, marginal) = top4_successor_fraction(&step, 0, 1, 64);
            if i == 0 {
                // No dependency: knowing the layer-0 expert tells nothing
                // (up to the in-sample bias of picking each row's top 4).
                assert!((conditional - marginal).abs() < 0.02, "{conditional} vs {marginal}");
            } else {
                assert!(conditional > last + 0.05, "corr {corr}: {conditional} after {last}");
            }
            if corr == 1.0 {
                assert_eq!(conditional, 1.0);
            }
            last = conditional;
        }
    }

    #[test]
    fn full_layer_corr_follows_the_successor_map_when_allowed() {
        for m in [model(64, 4, 1, 1, 0, 3), deepseek_v3()] {
            let mut g = Synthetic::zipf(&m, 2000, zipf(1.2, 1.0, 0.0), 4).unwrap();
            let step = g.step(0);
            let shape = g.shape().clone();
            let k = shape.top_k;
            let (mut followed, mut total) = (0, 0);
            for li in 1..step.layers.len() {
                let (prev, cur) = (&step.layers[li - 1].experts, &step.layers[li].experts);
                for t in 0..step.tokens {
                    // Replay the rule: choice j is the successor of the
                    // j-th choice before when that expert is not among the
                    // choices so far and its group is one of theirs or a
                    // group slot is left (with layer_corr = 1 nothing is
                    // drawn before a refusal, so those are the allowed groups).
                    let mine = &cur[t * k..(t + 1) * k];
                    for j in 0..k {
                        let c = g.successor(li - 1, prev[t * k + j]).unwrap();
                        let mut groups: Vec<usize> = mine[..j].iter().map(|&e| shape.group_of(e)).collect();
                        groups.sort_unstable();
                        groups.dedup();
                        let group_ok = groups.contains(&shape.group_of(c)) || groups.len() < shape.topk_groups;
                        total += 1;
                        if !mine[..j].contains(&c) && group_ok {
                            assert_eq!(mine[j], c, "layer {li} token {t} choice {j}");
                            followed += 1;
                        }
                    }
                }
            }
            if shape.is_group_limited() {
                // Group limits refuse some successors, but most are taken.
                assert!(followed > total / 2, "{followed} of {total}");
            } else {
                assert_eq!(followed, total);
            }
        }
    }

    #[test]
    fn layer_corr_keeps_each_layers_zipf_skew() {
        // Following σ maps rank r to rank r and choices are made in order,
        // so every layer's first choice follows Zipf(s) exactly, even when
        // most choices follow; the last layer is as skewed as the first.
        let m = model(64, 4, 1, 1, 0, 6);
        let tokens = 100_000;
        let step = Synthetic::zipf(&m, tokens, zipf(1.2, 0.8, 0.0), 2).unwrap().step(0);
        let h: f64 = (1..=64).map(|r| (r as f64).powf(-1.2)).sum();
        for l in [0, 1, 5] {
            let mut first = vec![0u64; 64];
            for c in step.layers[l].experts.chunks(4) {
                first[c[0] as usize] += 1;
            }
            let got = max_over_mean(&first);
            assert!((got / (64.0 / h) - 1.0).abs() < 0.03, "layer {l}: {got}");
        }
    }

    fn hottest(p: &[f64]) -> usize {
        (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
    }

    #[test]
    fn drift_moves_popularity_and_zero_drift_keeps_it() {
        let m = model(64, 2, 1, 1, 0, 3);
        let mut still = Synthetic::zipf(&m, 16, zipf(1.2, 0.0, 0.0), 3).unwrap();
        let p0 = still.popularity(0);
        for t in [1, 10, 999] {
            assert_eq!(still.popularity(t), p0);
        }
        let mut moving = Synthetic::zipf(&m, 16, zipf(1.2, 0.0, 0.05), 3).unwrap();
        let q0 = moving.popularity(0);
        assert_eq!(q0, p0, "step 0 is the Zipf start");
        let q1 = moving.popularity(1);
        assert_ne!(q1, q0);
        let q1000 = moving.popularity(1000);
        let moved = (0..3).filter(|&l| hottest(&q1000[l]) != hottest(&q0[l])).count();
        assert!(moved >= 1, "no layer's hottest expert moved in 1000 steps");
        // The loads measured from routing follow: the hottest expert by load
        // at step 1000 is the hottest by popularity.
        let mut big = Synthetic::zipf(&m, 20_000, zipf(1.2, 0.0, 0.05), 3).unwrap();
        let step = big.step(1000);
        let loads = step.expert_loads(0, 64);
        let by_load = (0..64).max_by_key(|&e| loads[e]).unwrap();
        assert_eq!(by_load, hottest(&q1000[0]));
    }

    #[test]
    fn steps_replay_in_any_order_and_seeds_decide() {
        let m = model(32, 4, 4, 2, 1, 3);
        let params = zipf(1.1, 0.5, 0.1);
        let mut a = Synthetic::zipf(&m, 64, params, 21).unwrap();
        let forward: Vec<StepRouting> = (0..6).map(|t| a.step(t)).collect();
        assert_eq!(a.step(2), forward[2], "an earlier step asked again");
        assert_eq!(a.step(5), forward[5]);
        let mut b = Synthetic::zipf(&m, 64, params, 21).unwrap();
        assert_eq!(b.step(4), forward[4], "a step asked first");
        assert_ne!(forward[0], forward[1]);
        let mut c = Synthetic::zipf(&m, 64, params, 22).unwrap();
        assert_ne!(c.step(0), forward[0], "another seed");
        // A step's tokens do not depend on how many tokens the step has,
        // nor on how the tokens were split over threads (9,000 tokens use
        // two threads where the machine has two cores, 64 use one).
        let mut wide = Synthetic::zipf(&m, 9000, params, 21).unwrap();
        let w = wide.step(3);
        for (l, f) in w.layers.iter().zip(&forward[3].layers) {
            assert_eq!(&l.experts[..f.experts.len()], &f.experts[..]);
        }
        let mut mid = Synthetic::zipf(&m, 6000, params, 21).unwrap();
        for (l, f) in w.layers.iter().zip(&mid.step(3).layers) {
            assert_eq!(&l.experts[..f.experts.len()], &f.experts[..]);
        }
    }

    #[test]
    fn bad_models_and_params_are_refused() {
        let e = Synthetic::zipf(&model(64, 2, 1, 1, 0, 2), 8, zipf(-1.0, 0.0, 0.0), 0).unwrap_err();
        assert!(e.contains("s = -1"), "{e}");
        let e = Synthetic::zipf(&model(64, 2, 1, 1, 0, 2), 8, zipf(1.0, 1.5, 0.0), 0).unwrap_err();
        assert!(e.contains("layer_corr"), "{e}");
        let e = Synthetic::uniform(&model(64, 2, 3, 1, 0, 2), 8, 0).unwrap_err();
        assert!(e.contains("do not divide"), "{e}");
        let e = Synthetic::uniform(&model(64, 9, 8, 1, 0, 2), 8, 0).unwrap_err();
        assert!(e.contains("fewer than top_k"), "{e}");
        let e = Synthetic::uniform(&model(64, 2, 1, 1, 0, 2), 1 << 31, 0).unwrap_err();
        assert!(e.contains("2^31"), "{e}");
    }

    /// DeepSeek-V3 prefill (65,536 tokens x 58 layers x top-8): run with
    /// `cargo test --release -p moec-runtime routing::synthetic -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release"]
    fn time_deepseek_v3_prefill_step() {
        let m = deepseek_v3();
        for (name, params) in [
            ("uniform", ZipfParams::UNIFORM),
            ("zipf(s = 0.4, layer_corr = 0.6, drift = 0.02)", zipf(0.4, 0.6, 0.02)),
            ("zipf(s = 1.2, layer_corr = 0.6, drift = 0.02)", zipf(1.2, 0.6, 0.02)),
        ] {
            let mut g = Synthetic::zipf(&m, 65_536, params, 7).unwrap();
            g.step(0);
            let start = std::time::Instant::now();
            let step = g.step(1);
            let took = start.elapsed();
            println!(
                "DeepSeek-V3 prefill step, {name}: {} tokens x {} layers x top-{} in {:.3} s",
                step.tokens,
                step.layers.len(),
                step.top_k,
                took.as_secs_f64()
            );
        }
    }
}
