//! Calibrated synthetic routing (the `calibrated(...)` routing source): the
//! Zipf exponent of each MoE layer and the `layer_corr` that make the
//! synthetic generator (`synthetic.rs`) show wanted figures, measured the
//! way the OLMoE routing analysis measures real routing.
//!
//! - **Skew** is a layer's load imbalance over every top-k selection,
//!   max / mean expert load, in expectation: the load of the expert hottest
//!   by popularity (rank 1 of the layer's Zipf) divided by the mean
//!   `tokens * top_k / experts`. Taking the expert known to be hottest,
//!   rather than the sample's most loaded, keeps the estimate unbiased: the
//!   most loaded of 256 noisy loads overstates the mean by about 12% on a
//!   uniform 16k-token sample. It is 1 for uniform routing and at most
//!   `experts / top_k` (every token choosing the hottest expert).
//! - **Dependency** is [`dependency`]: the fraction of tokens whose top-1
//!   expert in an MoE layer is among the 4 most frequent successors of
//!   their top-1 expert in the MoE layer before, counted in-sample, as
//!   SOURCE.md computes it from its top-1 matrices; averaged over adjacent
//!   MoE-layer pairs. Independent layers already score above 4 / experts
//!   (skewed popularity, in-sample choice of the 4); `layer_corr = 1`
//!   scores 1 (every first choice follows the successor map).
//!
//! **Solving.** Both are measured on a seeded sample of [`SAMPLE_TOKENS`]
//! tokens drawn by the generator itself (common random numbers: every
//! measurement uses the same seed, so the bisection sees a deterministic
//! function of its parameter and the result is reproducible). Each layer's
//! exponent `s` in 0 ..= [`MAX_EXPONENT`] is bisected against the skew of a
//! one-layer sample, whose first and only layer is exactly Zipf(s) whatever
//! `layer_corr` is; equal targets share one solution. Then `layer_corr` in
//! 0 ..= 1 is bisected against the dependency of two-layer samples, one per
//! distinct pair of adjacent exponents. With `layer_corr > 0` a layer's
//! followers keep the rank they had in the layer before, so with one skew
//! every layer stays at its target; with a per-layer list a layer whose
//! target differs from its predecessor's lands between the two.
//! [`calibrate`] reports the figures achieved on a sample of the whole
//! calibrated generator, so that shows.
//!
//! **Unreachable targets** are refused: a skew below 1 or above what
//! [`MAX_EXPONENT`] gives (about `experts / top_k`), a dependency below what
//! independent layers give or above what `layer_corr = 1` gives.

use super::synthetic::{RoutingShape, Synthetic, ZipfParams};
use super::StepRouting;
use crate::model::ModelSpec;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// Successors counted by [`dependency`]: SOURCE.md's "4 most frequent".
pub const SUCCESSORS: usize = 4;

/// Tokens of each calibration sample.
pub const SAMPLE_TOKENS: usize = 1 << 16;

/// The largest Zipf exponent tried (the most `zipf(s = ...)` accepts).
pub const MAX_EXPONENT: f64 = 10.0;

/// Bisection stops when the bracket is this narrow (in `s` or `layer_corr`).
const BRACKET: f64 = 1e-4;

/// Salt of the calibration samples' seed, so the samples are not the
/// tokens the run will draw.
const SALT_SAMPLE: u64 = 5;

/// The wanted skew: one for every MoE layer, or one per MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SkewTarget {
    Every(f64),
    PerLayer(Vec<f64>),
}

impl SkewTarget {
    /// The target of each of `layers` MoE layers.
    fn per_layer(&self, layers: usize) -> Result<Vec<f64>, CalibrationError> {
        match self {
            SkewTarget::Every(s) => Ok(vec![*s; layers]),
            SkewTarget::PerLayer(v) if v.len() == layers => Ok(v.clone()),
            SkewTarget::PerLayer(v) => Err(CalibrationError::SkewList { given: v.len(), layers }),
        }
    }

    fn values(&self) -> &[f64] {
        match self {
            SkewTarget::Every(s) => std::slice::from_ref(s),
            SkewTarget::PerLayer(v) => v,
        }
    }
}

/// What `calibrated(...)` aims at.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationTarget {
    pub skew: SkewTarget,
    /// None: no cross-layer dependency wanted (`layer_corr = 0`).
    pub dependency: Option<f64>,
}

impl CalibrationTarget {
    /// The checks that need no model: every skew at least 1 (and finite),
    /// the dependency in 0 ..= 1.
    pub fn check(&self) -> Result<(), CalibrationError> {
        if let Some(&s) = self.skew.values().iter().find(|s| !(s.is_finite() && **s >= 1.0)) {
            return Err(CalibrationError::SkewBelowOne { skew: s });
        }
        if let Some(d) = self.dependency.filter(|d| !(0.0..=1.0).contains(d)) {
            return Err(CalibrationError::DependencyOutOfRange { dependency: d });
        }
        Ok(())
    }
}

/// Why a target cannot be reached.
#[derive(Clone, Debug, PartialEq)]
pub enum CalibrationError {
    /// A skew below 1 (max / mean cannot be below 1), or not finite.
    SkewBelowOne { skew: f64 },
    /// A skew beyond what the largest exponent gives.
    SkewTooHigh {
        skew: f64,
        max: f64,
        experts: usize,
        top_k: usize,
    },
    /// A per-layer list of the wrong length.
    SkewList { given: usize, layers: usize },
    /// A dependency outside 0 ..= 1.
    DependencyOutOfRange { dependency: f64 },
    /// A dependency below what independent layers already show.
    DependencyTooLow { dependency: f64, min: f64 },
    /// A dependency above what `layer_corr = 1` gives.
    DependencyTooHigh { dependency: f64, max: f64 },
    /// A dependency below 1 asked of a model with at most [`SUCCESSORS`]
    /// experts, where every successor is among the most frequent.
    FewExperts { dependency: f64, experts: usize },
    /// A dependency asked of a model with one MoE layer.
    OneLayer,
    /// The model cannot be routed at all.
    Model(String),
}

impl fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalibrationError::SkewBelowOne { skew } => write!(
                f,
                "skew = {skew} cannot be reached: max / mean expert load is at least 1 (uniform routing)"
            ),
            CalibrationError::SkewTooHigh {
                skew,
                max,
                experts,
                top_k,
            } => write!(
                f,
                "skew = {skew} cannot be reached: with {experts} experts and top_k = {top_k} the hottest expert \
                 gets at most every token, max / mean <= {:.3}; the steepest popularity tried gives {max:.3}",
                *experts as f64 / *top_k as f64
            ),
            CalibrationError::SkewList { given, layers } => write!(
                f,
                "a per-layer skew needs one value per MoE layer: {given} given, the model has {layers} MoE layers"
            ),
            CalibrationError::DependencyOutOfRange { dependency } => {
                write!(
                    f,
                    "dependency = {dependency} is a fraction of tokens: it lies in 0 ..= 1"
                )
            }
            CalibrationError::DependencyTooLow { dependency, min } => write!(
                f,
                "dependency = {dependency} cannot be reached: independent layers with this skew already give \
                 {min:.3} (the 4 most frequent successors cover that much by popularity alone)"
            ),
            CalibrationError::DependencyTooHigh { dependency, max } => write!(
                f,
                "dependency = {dependency} cannot be reached: layer_corr = 1 gives {max:.3}"
            ),
            CalibrationError::FewExperts { dependency, experts } => write!(
                f,
                "dependency = {dependency} cannot be reached: with {experts} experts every successor is among the \
                 {SUCCESSORS} most frequent, so the dependency is always 1"
            ),
            CalibrationError::OneLayer => write!(
                f,
                "a dependency needs two MoE layers to hold between, and the model has one"
            ),
            CalibrationError::Model(e) => f.write_str(e),
        }
    }
}

/// The solved parameters: what the generator runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    /// Zipf exponent per MoE layer.
    pub exponents: Vec<f64>,
    pub layer_corr: f64,
}

/// One MoE layer's skew: wanted and achieved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSkew {
    /// The model layer.
    pub layer: u32,
    pub exponent: f64,
    pub target: f64,
    pub achieved: f64,
}

/// A calibration with the figures it achieves, measured on a sample of the
/// calibrated generator (all MoE layers, `layer_corr` in effect).
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    pub solution: Solution,
    pub skew: Vec<LayerSkew>,
    /// Wanted dependency (None: none asked, `layer_corr = 0`).
    pub dependency_target: Option<f64>,
    /// Achieved, averaged over adjacent MoE-layer pairs (None with one MoE layer).
    pub dependency: Option<f64>,
    /// Tokens of each sample.
    pub sample_tokens: usize,
}

/// Solves for the exponents and `layer_corr` of `target` on `model`'s MoE
/// layers, with samples of `sample_tokens` tokens seeded from `seed`.
/// Solutions are remembered per process: a `moec run` checks the plan,
/// measures routing statistics for the passes and runs, and each asks for
/// the same calibration, which is a pure function of this key.
pub fn solve(
    model: &ModelSpec,
    target: &CalibrationTarget,
    seed: u64,
    sample_tokens: usize,
) -> Result<Solution, CalibrationError> {
    target.check()?;
    let shape = RoutingShape::of(model).map_err(CalibrationError::Model)?;
    let key = SolveKey {
        shape: (
            shape.experts,
            shape.top_k,
            shape.groups,
            shape.topk_groups,
            shape.layers.clone(),
        ),
        skew: target.skew.values().iter().map(|x| x.to_bits()).collect(),
        per_layer: matches!(target.skew, SkewTarget::PerLayer(_)),
        dependency: target.dependency.map(f64::to_bits),
        seed,
        sample_tokens,
    };
    let solved = SOLVED.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(s) = solved.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(s);
    }
    let s = solve_shape(&shape, target, seed, sample_tokens)?;
    if let Ok(mut m) = solved.lock() {
        m.insert(key, s.clone());
    }
    Ok(s)
}

/// What a solution depends on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SolveKey {
    shape: (usize, usize, usize, usize, Vec<u32>),
    skew: Vec<u64>,
    per_layer: bool,
    dependency: Option<u64>,
    seed: u64,
    sample_tokens: usize,
}

static SOLVED: OnceLock<Mutex<BTreeMap<SolveKey, Solution>>> = OnceLock::new();

fn solve_shape(
    shape: &RoutingShape,
    target: &CalibrationTarget,
    seed: u64,
    sample_tokens: usize,
) -> Result<Solution, CalibrationError> {
    let targets = target.skew.per_layer(shape.layers.len())?;
    let mut sampler = Sampler::new(shape, sample_tokens, seed);
    // The first layer, and every layer while nothing follows: exactly Zipf.
    let mut exponents = Vec::with_capacity(targets.len());
    for &t in &targets {
        exponents.push(sampler.first(t)?);
    }
    let Some(d) = target.dependency else {
        return Ok(Solution {
            exponents,
            layer_corr: 0.0,
        });
    };
    if targets.len() < 2 {
        return Err(CalibrationError::OneLayer);
    }
    if shape.experts <= SUCCESSORS && d < 1.0 {
        return Err(CalibrationError::FewExperts {
            dependency: d,
            experts: shape.experts,
        });
    }
    // Alternate: layer_corr for the current exponents, then the followers'
    // exponents for that layer_corr. The second round moves little.
    let mut layer_corr = 0.0;
    for _ in 0..ROUNDS {
        layer_corr = sampler.solve_layer_corr(d, &targets, &exponents)?;
        for l in 1..targets.len() {
            exponents[l] = sampler.follower(targets[l - 1], targets[l], layer_corr)?;
        }
    }
    Ok(Solution { exponents, layer_corr })
}

/// [`solve`], then the figures the solution achieves on a sample of the
/// whole calibrated generator: each layer's skew and the mean adjacent-pair
/// dependency.
pub fn calibrate(
    model: &ModelSpec,
    target: &CalibrationTarget,
    seed: u64,
    sample_tokens: usize,
) -> Result<Calibration, CalibrationError> {
    let solution = solve(model, target, seed, sample_tokens)?;
    let shape = RoutingShape::of(model).map_err(CalibrationError::Model)?;
    let targets = target.skew.per_layer(shape.layers.len())?;
    let sampler = Sampler::new(&shape, sample_tokens, seed);
    let (step, hottest) = sampler
        .sample(shape.clone(), &solution.exponents, solution.layer_corr)
        .map_err(CalibrationError::Model)?;
    let skew = shape
        .layers
        .iter()
        .enumerate()
        .map(|(l, &layer)| LayerSkew {
            layer,
            exponent: solution.exponents[l],
            target: targets[l],
            achieved: sampler.skew_of(&step, l, hottest[l]),
        })
        .collect();
    let pairs = shape.layers.len().saturating_sub(1);
    let dependency = (pairs > 0).then(|| {
        (0..pairs)
            .map(|l| dependency(&step, l, l + 1, shape.experts))
            .sum::<f64>()
            / pairs as f64
    });
    Ok(Calibration {
        solution,
        skew,
        dependency_target: target.dependency,
        dependency,
        sample_tokens: sampler.tokens,
    })
}

/// Draws calibration samples of shapes like the model's and remembers
/// what it measured (keys are the bits of the parameters).
struct Sampler<'a> {
    shape: &'a RoutingShape,
    tokens: usize,
    seed: u64,
    /// Skew of a first layer, by exponent.
    first_skew: BTreeMap<u64, f64>,
    /// Exponent of a first layer, by target.
    first: BTreeMap<u64, f64>,
    /// Exponent of a follower, by (target before, target, layer_corr).
    followers: BTreeMap<(u64, u64, u64), f64>,
}

/// Alternations of solving `layer_corr` and the followers' exponents.
const ROUNDS: usize = 2;

impl<'a> Sampler<'a> {
    fn new(shape: &'a RoutingShape, tokens: usize, seed: u64) -> Sampler<'a> {
        Sampler {
            shape,
            tokens: tokens.max(1),
            seed: Rng::new(seed).fork(SALT_SAMPLE).next_u64(),
            first_skew: BTreeMap::new(),
            first: BTreeMap::new(),
            followers: BTreeMap::new(),
        }
    }

    /// The model's routing shape cut to `layers` MoE layers.
    fn cut(&self, layers: usize) -> RoutingShape {
        RoutingShape {
            layers: (0..layers as u32).collect(),
            ..self.shape.clone()
        }
    }

    /// One step of the generator on `shape`, and each layer's hottest expert
    /// by popularity.
    fn sample(
        &self,
        shape: RoutingShape,
        exponents: &[f64],
        layer_corr: f64,
    ) -> Result<(StepRouting, Vec<usize>), String> {
        let params = ZipfParams {
            s: 0.0,
            layer_corr,
            drift: 0.0,
        };
        let mut g = Synthetic::from_shape(shape, self.tokens, exponents, params, self.seed)?;
        let hottest = g
            .popularity(0)
            .iter()
            .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0))
            .collect();
        Ok((g.step(0), hottest))
    }

    /// Load of `hot` in MoE layer `l` of `step` over the mean load.
    fn skew_of(&self, step: &StepRouting, l: usize, hot: usize) -> f64 {
        let load = step.layers[l].experts.iter().filter(|&&e| e as usize == hot).count();
        let mean = (step.tokens * step.top_k) as f64 / self.shape.experts as f64;
        load as f64 / mean
    }

    /// The skew of a one-layer sample with exponent `s`.
    fn first_skew(&mut self, s: f64) -> Result<f64, CalibrationError> {
        if let Some(&x) = self.first_skew.get(&s.to_bits()) {
            return Ok(x);
        }
        let (step, hottest) = self.sample(self.cut(1), &[s], 0.0).map_err(CalibrationError::Model)?;
        let x = self.skew_of(&step, 0, hottest[0]);
        self.first_skew.insert(s.to_bits(), x);
        Ok(x)
    }

    /// The exponent whose first layer has skew `target`, refusing a target
    /// beyond what [`MAX_EXPONENT`] gives.
    fn first(&mut self, target: f64) -> Result<f64, CalibrationError> {
        if let Some(&s) = self.first.get(&target.to_bits()) {
            return Ok(s);
        }
        let max = self.first_skew(MAX_EXPONENT)?;
        if target > max {
            return Err(CalibrationError::SkewTooHigh {
                skew: target,
                max,
                experts: self.shape.experts,
                top_k: self.shape.top_k,
            });
        }
        let s = bisect(0.0, MAX_EXPONENT, target, |s| self.first_skew(s))?;
        self.first.insert(target.to_bits(), s);
        Ok(s)
    }

    /// The exponent that gives a layer skew `target` when it follows, with
    /// `layer_corr`, a layer of skew `before` (an exact Zipf first layer):
    /// the second layer of a two-layer sample. A target out of reach (a
    /// follower of a much steeper layer under a high `layer_corr`) gets the
    /// nearest end; [`calibrate`] reports what it achieves.
    fn follower(&mut self, before: f64, target: f64, layer_corr: f64) -> Result<f64, CalibrationError> {
        let key = (before.to_bits(), target.to_bits(), layer_corr.to_bits());
        if let Some(&s) = self.followers.get(&key) {
            return Ok(s);
        }
        let s0 = self.first(before)?;
        let s = bisect(0.0, MAX_EXPONENT, target, |s| {
            let (step, hottest) = self
                .sample(self.cut(2), &[s0, s], layer_corr)
                .map_err(CalibrationError::Model)?;
            Ok(self.skew_of(&step, 1, hottest[1]))
        })?;
        self.followers.insert(key, s);
        Ok(s)
    }

    /// Mean dependency over the adjacent pairs with `layer_corr`, each
    /// distinct pair measured once on a two-layer sample: a first layer of
    /// the earlier target's skew, then the later layer's exponent.
    fn dependency(&mut self, targets: &[f64], exponents: &[f64], layer_corr: f64) -> Result<f64, CalibrationError> {
        let mut pairs: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for l in 1..targets.len() {
            *pairs
                .entry((targets[l - 1].to_bits(), exponents[l].to_bits()))
                .or_insert(0) += 1;
        }
        let mut sum = 0.0;
        for (&(before, s), &n) in &pairs {
            let s0 = self.first(f64::from_bits(before))?;
            let (step, _) = self
                .sample(self.cut(2), &[s0, f64::from_bits(s)], layer_corr)
                .map_err(CalibrationError::Model)?;
            sum += n as f64 * dependency(&step, 0, 1, self.shape.experts);
        }
        Ok(sum / (targets.len() - 1) as f64)
    }

    /// The `layer_corr` whose dependency is `target`, refusing a target
    /// outside what 0 and 1 give.
    fn solve_layer_corr(&mut self, target: f64, targets: &[f64], exponents: &[f64]) -> Result<f64, CalibrationError> {
        let min = self.dependency(targets, exponents, 0.0)?;
        if target < min {
            return Err(CalibrationError::DependencyTooLow {
                dependency: target,
                min,
            });
        }
        let max = self.dependency(targets, exponents, 1.0)?;
        if target > max {
            return Err(CalibrationError::DependencyTooHigh {
                dependency: target,
                max,
            });
        }
        bisect(0.0, 1.0, target, |c| self.dependency(targets, exponents, c))
    }
}

/// The x in `lo ..= hi` where the increasing `f` crosses `target`, by
/// bisection until the bracket is [`BRACKET`] wide; the end of the last
/// bracket whose value is nearer the target. Below `f(lo)` gives `lo`, above
/// `f(hi)` gives `hi`.
fn bisect(
    mut lo: f64,
    mut hi: f64,
    target: f64,
    mut f: impl FnMut(f64) -> Result<f64, CalibrationError>,
) -> Result<f64, CalibrationError> {
    let (mut f_lo, mut f_hi) = (f(lo)?, f(hi)?);
    if target <= f_lo {
        return Ok(lo);
    }
    if target >= f_hi {
        return Ok(hi);
    }
    while hi - lo > BRACKET {
        let mid = (lo + hi) / 2.0;
        let y = f(mid)?;
        if y < target {
            (lo, f_lo) = (mid, y);
        } else {
            (hi, f_hi) = (mid, y);
        }
    }
    Ok(if target - f_lo <= f_hi - target { lo } else { hi })
}

/// Cross-layer dependency as the OLMoE routing analysis's SOURCE.md
/// measures it: the fraction of tokens whose top-1 expert in MoE layer `b`
/// (an index into `step.layers`) is among the [`SUCCESSORS`] most frequent
/// successors of their top-1 expert in layer `a`, in-sample (the successors
/// are counted on the same tokens). 0 when the step has no tokens.
pub fn dependency(step: &StepRouting, a: usize, b: usize, experts: usize) -> f64 {
    let k = step.top_k.max(1);
    let (Some(la), Some(lb)) = (step.layers.get(a), step.layers.get(b)) else {
        return 0.0;
    };
    // The (top-1 in a, top-1 in b) pairs, sorted: as many entries as
    // tokens, where an experts x experts table would take 34 GB at 65,536
    // experts.
    let mut pairs: Vec<(u32, u32)> = la
        .experts
        .chunks(k)
        .zip(lb.experts.chunks(k))
        .map(|(x, y)| (x[0], y[0]))
        .filter(|&(i, j)| (i as usize) < experts && (j as usize) < experts)
        .collect();
    let n = pairs.len() as u64;
    if n == 0 {
        return 0.0;
    }
    pairs.sort_unstable();
    let mut kept = 0u64;
    let mut successors = Vec::new();
    for from in pairs.chunk_by(|p, q| p.0 == q.0) {
        successors.clear();
        successors.extend(from.chunk_by(|p, q| p.1 == q.1).map(|same| same.len() as u64));
        successors.sort_unstable_by(|p, q| q.cmp(p));
        kept += successors.iter().take(SUCCESSORS).sum::<u64>();
    }
    kept as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::tests::model;
    use super::*;

    fn target(skew: SkewTarget, dependency: Option<f64>) -> CalibrationTarget {
        CalibrationTarget { skew, dependency }
    }

    #[test]
    fn hits_skew_and_dependency_targets() {
        // Mixtral-like (8 experts, top-2) and OLMoE-like (64, top-8).
        for (m, skew, dep) in [
            (model(8, 2, 1, 1, 0, 4), 1.3, 0.64),
            (model(8, 2, 1, 1, 0, 4), 1.15, 0.70),
            (model(64, 8, 1, 1, 0, 3), 3.0, 0.5),
        ] {
            let c = calibrate(&m, &target(SkewTarget::Every(skew), Some(dep)), 1, 1 << 14).unwrap();
            for l in &c.skew {
                assert!(
                    (l.achieved / skew - 1.0).abs() < 0.03,
                    "skew {skew}: layer {} achieved {}",
                    l.layer,
                    l.achieved
                );
            }
            let got = c.dependency.unwrap();
            assert!((got - dep).abs() < 0.02, "dependency {dep}: achieved {got}");
            assert!(c.solution.layer_corr > 0.0 && c.solution.layer_corr < 1.0);
        }
    }

    #[test]
    fn per_layer_skews_get_their_own_exponents() {
        let m = model(8, 2, 1, 1, 0, 3);
        let c = calibrate(&m, &target(SkewTarget::PerLayer(vec![1.1, 1.5, 1.1]), None), 2, 1 << 14).unwrap();
        let s = &c.solution.exponents;
        assert!(s[1] > s[0] && s[0] == s[2], "{s:?}");
        for l in &c.skew {
            assert!((l.achieved / l.target - 1.0).abs() < 0.03, "{l:?}");
        }
        assert_eq!(c.solution.layer_corr, 0.0);
        let e = solve(&m, &target(SkewTarget::PerLayer(vec![1.1, 1.2]), None), 2, 1 << 12).unwrap_err();
        assert_eq!(e, CalibrationError::SkewList { given: 2, layers: 3 });
    }

    #[test]
    fn solving_is_deterministic_and_seeded() {
        let m = model(8, 2, 1, 1, 0, 2);
        let t = target(SkewTarget::Every(1.25), Some(0.7));
        let a = solve(&m, &t, 3, 1 << 13).unwrap();
        assert_eq!(a, solve(&m, &t, 3, 1 << 13).unwrap());
        assert_ne!(a, solve(&m, &t, 4, 1 << 13).unwrap());
    }

    #[test]
    fn unreachable_targets_are_refused() {
        let m = model(8, 2, 1, 1, 0, 2);
        let solve = |skew: f64, dep: Option<f64>| solve(&m, &target(SkewTarget::Every(skew), dep), 1, 1 << 12);
        assert_eq!(
            solve(0.9, None).unwrap_err(),
            CalibrationError::SkewBelowOne { skew: 0.9 }
        );
        // 8 experts, top-2: the hottest expert is at most 4x the mean.
        let e = solve(4.5, None).unwrap_err();
        assert!(matches!(e, CalibrationError::SkewTooHigh { .. }), "{e}");
        assert!(e.to_string().contains("max / mean <= 4.000"), "{e}");
        let e = solve(1.2, Some(0.2)).unwrap_err();
        assert!(
            matches!(e, CalibrationError::DependencyTooLow { min, .. } if min > 0.5),
            "{e}"
        );
        let e = solve(1.2, Some(1.5)).unwrap_err();
        assert!(matches!(e, CalibrationError::DependencyOutOfRange { .. }), "{e}");
        // One MoE layer has no pair to depend between.
        let few = model(4, 1, 1, 1, 0, 2);
        let e = super::solve(&few, &target(SkewTarget::Every(1.2), Some(0.7)), 1, 1 << 12).unwrap_err();
        assert_eq!(
            e,
            CalibrationError::FewExperts {
                dependency: 0.7,
                experts: 4
            }
        );
        let one = model(8, 2, 1, 1, 0, 1);
        let e = super::solve(&one, &target(SkewTarget::Every(1.2), Some(0.7)), 1, 1 << 12).unwrap_err();
        assert_eq!(e, CalibrationError::OneLayer);
        // Uniform is reachable: s = 0.
        assert_eq!(solve(1.0, None).unwrap().exponents, [0.0, 0.0]);
    }

    #[test]
    fn the_dependency_measure_counts_top4_successors() {
        // 8 tokens, top-1: layer 0 expert 0 goes to 1, 1, 2, 3, 4, 5 (its 4
        // most frequent successors cover 5 of those 6); expert 1 to 6, 6.
        let step = StepRouting {
            tokens: 8,
            top_k: 1,
            layers: vec![
                super::super::LayerRouting {
                    layer: 0,
                    experts: vec![0, 0, 0, 0, 0, 0, 1, 1],
                    weights: Vec::new(),
                },
                super::super::LayerRouting {
                    layer: 1,
                    experts: vec![1, 1, 2, 3, 4, 5, 6, 6],
                    weights: Vec::new(),
                },
            ],
        };
        assert_eq!(dependency(&step, 0, 1, 8), 7.0 / 8.0);
        // The same tokens among 65,536 experts: the same figure, without the
        // experts x experts table (34 GB) it was once counted in (issue 16).
        assert_eq!(dependency(&step, 0, 1, 65_536), 7.0 / 8.0);
    }
}
