//! MegaScale-Infer's plan search (its Algorithm 1) on the simulator,
//! beside the paper's own linear-fit prediction.
//!
//! For each expert tensor-parallel size `tp_e` and attention
//! tensor-parallel size `tp_a` in {1, 2, 4, 8} whose pools the machine
//! has dies for: `n_a` attention replicas from the balance rule (or the
//! replicas asked for), `m` micro-batches from 1 to 4, and the largest
//! batch whose step meets the workload's time-per-token target (a batch
//! search on the simulator, `batch_search.rs`, where a batch that does not
//! fit memory fails). The best candidate has the most tokens per dollar,
//! `(B / T) / (tp_a n_a price_a + tp_e E price_e)` (the paper's throughput
//! per cost), or per die when the machine has no prices.
//!
//! The balance rule and the prediction use MegaScale-Infer's cost model:
//! per micro-batch and layer, `T_a = k1 b_a + k2` (attention and router of
//! `b_a` sequences on one replica) and `T_e = k3 b_e + k4` (one expert's
//! kernel over `b_e` tokens), fitted by least squares on the simulator's
//! own roofline costs at 1 to 512 tokens; `n_a = k1 E / (k3 K)` balances
//! `T_a = T_e`; `T_c` is the larger side's bytes over its NIC (the paper's
//! bandwidth-utilisation curve taken as 1); `T_total = (T_a + T_e + 2 T_c)
//! + T_f (m L - 1)`. The prediction ignores memory, launch overheads
//! outside those fits and the network's contention; where it and the
//! simulator disagree the simulator decides, and both are reported.
//!
//! A plan whose `disaggregate` pools are of two kinds of die searches
//! within the kinds (attention on the attention pool's kind, experts on the
//! expert pool's, each taken from its first die); otherwise attention takes
//! the machine's dies from the front and experts from the back.

use super::{disaggregated, Shape};
use crate::batch_search::{self, largest_passing, Probe, Probed, MAX_BATCH};
use crate::diag::{Code, Diagnostic};
use crate::driver::Session;
use crate::ir::Pools;
use crate::sema::{PlacementChoice, Plan};
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::model::ModelSpec;
use moec_runtime::sim::cost::{CostModel, PartLoad};
use moec_runtime::workload::{Slo, WorkloadSpec};
use serde::Serialize;

/// The tensor-parallel sizes and micro-batch counts Algorithm 1 tries.
pub const TP_SIZES: [u32; 4] = [1, 2, 4, 8];
pub const MICRO_BATCHES: [u32; 4] = [1, 2, 3, 4];

/// Which part of the space to search; empty lists take Algorithm 1's.
#[derive(Clone, Debug, Default)]
pub struct Space {
    pub tp_attention: Vec<u32>,
    pub tp_experts: Vec<u32>,
    /// Attention replicas; empty: the balance rule's one.
    pub replicas: Vec<u32>,
    pub micro_batches: Vec<u32>,
    /// Steps each probe runs.
    pub steps: u64,
}

/// MegaScale-Infer's per-micro-batch, per-layer cost model, fitted.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinearFits {
    /// `T_a = k1 b_a + k2`: seconds per sequence, and fixed.
    pub k1: f64,
    pub k2: f64,
    /// `T_e = k3 b_e + k4`: seconds per token of one expert, and fixed.
    pub k3: f64,
    pub k4: f64,
}

/// One point of the space, and what the simulator and the fits say of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub tp_attention: u32,
    pub tp_experts: u32,
    pub replicas: u32,
    pub micro_batches: u32,
    /// The instance's dies: `tp_a n_a + tp_e E`.
    pub dies: u32,
    /// The largest batch meeting the target on the simulator, and its probe.
    pub found: Option<Probe>,
    /// Tokens per second over the instance's dies.
    pub tokens_per_s_per_die: Option<f64>,
    /// Tokens per dollar: tokens a second over the instance's price a
    /// second (its dies' prices are per die-hour), as the run report's
    /// `serving.tokens_per_dollar` counts them over a whole machine.
    pub tokens_per_dollar: Option<f64>,
    /// The paper's model: its largest batch meeting the target, and the
    /// step time it predicts there.
    pub predicted_batch: Option<u64>,
    pub predicted_step_s: Option<f64>,
    /// Batches probed.
    pub probes: usize,
}

/// What the search found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolSearch {
    pub plan: String,
    pub slo: Slo,
    pub steps: u64,
    /// The fits per (tp_a, tp_e) tried: `(tp_a, tp_e, fits, balance rule's n_a)`.
    pub fits: Vec<(u32, u32, LinearFits, f64)>,
    pub candidates: Vec<Candidate>,
    /// Index of the best candidate (most throughput per price, or per die).
    pub best: Option<usize>,
    /// The best candidate as a plan, to paste into the file.
    pub best_plan: Option<String>,
}

/// The dies each side may take: every alive die of the kind of the plan's
/// attention pool, and of its expert pool; the whole machine for both when
/// the plan has no pools (or its pools are of one kind).
fn sides(plan: &Plan, machine: &Machine) -> (Vec<DieId>, Vec<DieId>) {
    let alive = machine.alive_dies();
    let of_kind = |d: Option<&DieId>| -> Vec<DieId> {
        let spec = machine.spec();
        match d {
            Some(&d) => alive
                .iter()
                .copied()
                .filter(|&x| spec.kind_name_of(x) == spec.kind_name_of(d))
                .collect(),
            None => alive.clone(),
        }
    };
    match &plan.pools {
        Some(p) => (of_kind(p.attention.first()), of_kind(p.experts.first())),
        None => (alive.clone(), alive.clone()),
    }
}

/// Least squares `y = a x + b` over `(x, y)`.
fn line(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|&(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (a, my - a * mx)
}

/// MegaScale-Infer's profiles, from the simulator's roofline: attention
/// and router on an attention die at `tp_a`, one expert's part of
/// `ffn / tp_e` columns on an expert die.
pub fn fit(
    model: &ModelSpec,
    workload: &WorkloadSpec,
    machine: &Machine,
    (attention_die, expert_die): (DieId, DieId),
    (tp_a, tp_e): (u32, u32),
) -> LinearFits {
    let costs = CostModel::new(model, workload);
    let ffn = model.moe.as_ref().map_or(0, |m| m.expert_ffn);
    let sizes = [1u64, 2, 4, 8, 16, 32, 64, 128, 256, 512];
    let a_die = machine.die_spec(attention_die);
    let e_die = machine.die_spec(expert_die);
    let attention: Vec<(f64, f64)> = sizes
        .iter()
        .map(|&b| {
            let t = costs.attention(b, b, u64::from(tp_a)).time(a_die).0 + costs.gate(b).time(a_die).0;
            (b as f64, t)
        })
        .collect();
    let experts: Vec<(f64, f64)> = sizes
        .iter()
        .map(|&b| {
            let part = PartLoad {
                tokens: b,
                columns: ffn / u64::from(tp_e.max(1)),
            };
            (b as f64, costs.experts(&[part]).time(e_die).0)
        })
        .collect();
    let (k1, k2) = line(&attention);
    let (k3, k4) = line(&experts);
    LinearFits { k1, k2, k3, k4 }
}

/// The paper's iteration time of batch `b` (seconds), and its largest
/// batch within `target_s`.
struct Prediction<'a> {
    fits: LinearFits,
    model: &'a ModelSpec,
    /// (tp_a, tp_e, n_a, m)
    shape: (u32, u32, u32, u32),
    /// NIC bandwidth of an attention die and of an expert die, bytes/s.
    nics: (f64, f64),
    /// Sequences the attention pool's memory holds (weights, then the KV
    /// cache of every sequence at the workload's context).
    capacity: u64,
}

impl Prediction<'_> {
    fn step_s(&self, b: u64) -> f64 {
        let moe = self.model.moe.as_ref();
        let (experts, k) = moe.map_or((1.0, 1.0), |m| (m.experts as f64, m.top_k as f64));
        let (tp_a, tp_e, n_a, m) = self.shape;
        let (tp_a, tp_e, n_a, m) = (f64::from(tp_a), f64::from(tp_e), f64::from(n_a), f64::from(m));
        let b = b as f64;
        let b_a = b / (m * n_a);
        let b_e = b * k / (m * experts);
        let LinearFits { k1, k2, k3, k4 } = self.fits;
        let t_a = k1 * b_a + k2;
        let t_e = k3 * b_e + k4;
        let row = (self.model.hidden * self.model.dtype.bytes()) as f64;
        let t_c = (b_a * row * k / tp_a / self.nics.0).max(b_e * row / tp_e / self.nics.1);
        let layers = self.model.moe_layers() as f64;
        (t_a + t_e + 2.0 * t_c) + t_a.max(t_e) * (m * layers - 1.0)
    }

    /// The largest batch (up to the pool's memory) within `target_s`.
    fn largest(&self, target_s: f64) -> Option<u64> {
        if self.capacity == 0 || self.step_s(1) > target_s {
            return None;
        }
        let (mut lo, mut hi) = (1u64, self.capacity.min(MAX_BATCH));
        if self.step_s(hi) <= target_s {
            return Some(hi);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.step_s(mid) <= target_s {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }
}

/// Sequences one attention replica of `tp_a` dies holds: each die's memory
/// less its share of the attention weights of every layer, the router and
/// the embeddings, over one sequence's share of the KV cache at the
/// workload's context (the paper's memory check; the verifier's, which also
/// counts dense layers and activations, decides on the simulator).
fn sequences_held(model: &ModelSpec, workload: &WorkloadSpec, machine: &Machine, dies: &[DieId], tp_a: u32) -> u64 {
    let Some(&die) = dies.first() else { return 0 };
    let tp = u64::from(tp_a.max(1));
    let weights = model.layers * (model.attention_bytes_per_die(tp).0 + model.gate_params() * model.dtype.bytes())
        + model.embedding_params() * model.dtype.bytes();
    let room = machine.die_spec(die).memory.0.saturating_sub(weights);
    let per_sequence = model.layers * model.kv_bytes_per_token_per_die(tp).0 * workload.seq_len.max(1);
    room / per_sequence.max(1)
}

/// Runs the search on plan `plan` of `session`. E0006 when the workload
/// states no target; a compile or run error other than a batch not fitting
/// stops it.
pub fn search(
    session: &Session,
    plan: Option<&str>,
    space: &Space,
    progress: &mut dyn FnMut(&Candidate),
) -> Result<PoolSearch, Diagnostic> {
    let base = session.select_plan(plan)?;
    let (model, machine, workload) = session.parts(base)?;
    let slo = workload.slo.ok_or_else(|| {
        Diagnostic::error(
            Code::E0006,
            base.span,
            format!(
                "the pool search needs a time-per-token target, and workload `{}` states none",
                workload.name
            ),
        )
        .with_label("this plan's workload")
        .with_hint("add `slo { tpot = 150 ms }` to the workload")
    })?;
    let Some(moe) = model.moe.as_ref() else {
        return Err(
            Diagnostic::error(Code::E0018, base.span, "the pool search needs an MoE model")
                .with_hint("a model with a `moe { ... }` section"),
        );
    };
    let experts = moe.experts as u32;
    let or = |v: &[u32], d: &[u32]| if v.is_empty() { d.to_vec() } else { v.to_vec() };
    let steps = space.steps.max(1);
    let (attention_side, expert_side) = sides(base, machine);
    // One kind of die for both: attention from the front, experts from the back.
    let shared = attention_side == expert_side;
    let mut out = PoolSearch {
        plan: base.name.clone(),
        slo,
        steps,
        fits: Vec::new(),
        candidates: Vec::new(),
        best: None,
        best_plan: None,
    };
    let mut plans = Vec::new();
    for tp_e in or(&space.tp_experts, &TP_SIZES) {
        let n_e = (experts * tp_e) as usize;
        if n_e > expert_side.len() {
            continue;
        }
        // Without pools, experts from the back of the machine.
        let expert_dies: Vec<DieId> = if shared {
            expert_side[expert_side.len() - n_e..].to_vec()
        } else {
            expert_side[..n_e].to_vec()
        };
        let free: Vec<DieId> = attention_side
            .iter()
            .copied()
            .filter(|d| !expert_dies.contains(d))
            .collect();
        for tp_a in or(&space.tp_attention, &TP_SIZES) {
            let most = free.len() as u32 / tp_a;
            if most == 0 {
                continue;
            }
            let fits = fit(model, workload, machine, (free[0], expert_dies[0]), (tp_a, tp_e));
            let rule = if fits.k3 > 0.0 {
                fits.k1 * f64::from(experts) / (fits.k3 * moe.top_k as f64)
            } else {
                f64::INFINITY
            };
            out.fits.push((tp_a, tp_e, fits, rule));
            let replicas = if space.replicas.is_empty() {
                vec![(rule.round() as u32).clamp(1, most)]
            } else {
                space
                    .replicas
                    .iter()
                    .copied()
                    .filter(|&n| n >= 1 && n <= most)
                    .collect()
            };
            for n_a in replicas {
                let pools = Pools {
                    attention: free[..(n_a * tp_a) as usize].to_vec(),
                    experts: expert_dies.clone(),
                };
                let price: Option<f64> = pools
                    .attention
                    .iter()
                    .chain(&pools.experts)
                    .map(|&d| machine.die_spec(d).price)
                    .sum();
                let nics = (
                    machine.spec().nic_of(pools.attention[0]).bandwidth.0,
                    machine.spec().nic_of(pools.experts[0]).bandwidth.0,
                );
                let capacity = u64::from(n_a) * sequences_held(model, workload, machine, &pools.attention, tp_a);
                for m in or(&space.micro_batches, &MICRO_BATCHES) {
                    let dies = n_a * tp_a + experts * tp_e;
                    let prediction = Prediction {
                        fits,
                        model,
                        shape: (tp_a, tp_e, n_a, m),
                        nics,
                        capacity,
                    };
                    let predicted_batch = prediction.largest(slo.target_s);
                    let name = format!("{}_na{n_a}_tpa{tp_a}_tpe{tp_e}_m{m}", base.name);
                    let shape = Shape {
                        placement: PlacementChoice::Contiguous,
                        tp_attention: tp_a,
                        tp_experts: tp_e,
                        micro_batches: m,
                    };
                    let plan = disaggregated(base, name, pools.clone(), shape);
                    let Probed { probes, pass, .. } =
                        largest_passing(MAX_BATCH, |b| batch_search::probe(session, &plan, (b, steps), &slo))?;
                    let found = pass.map(|i| probes[i].clone());
                    let rate = found.as_ref().and_then(|p| p.tokens_per_s);
                    let candidate = Candidate {
                        tp_attention: tp_a,
                        tp_experts: tp_e,
                        replicas: n_a,
                        micro_batches: m,
                        dies,
                        tokens_per_s_per_die: rate.map(|r| r / f64::from(dies)),
                        tokens_per_dollar: rate.zip(price).map(|(r, p)| r * 3600.0 / p),
                        found,
                        predicted_step_s: predicted_batch.map(|b| prediction.step_s(b)),
                        predicted_batch,
                        probes: probes.len(),
                    };
                    progress(&candidate);
                    out.candidates.push(candidate);
                    plans.push(plan);
                }
            }
        }
    }
    let score = |c: &Candidate| c.tokens_per_dollar.or(c.tokens_per_s_per_die);
    out.best = (0..out.candidates.len())
        .filter(|&i| score(&out.candidates[i]).is_some())
        .max_by(|&a, &b| {
            let (x, y) = (score(&out.candidates[a]), score(&out.candidates[b]));
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal).then(b.cmp(&a))
        });
    out.best_plan = out.best.map(|i| {
        let c = &out.candidates[i];
        plan_text(&plans[i], c, (session, base))
    });
    Ok(out)
}

/// The `plan` block of a candidate, as the language writes it.
fn plan_text(plan: &Plan, c: &Candidate, (session, base): (&Session, &Plan)) -> String {
    let name = |i: usize, names: Vec<(&str, bool)>| names.get(i).map_or("?", |n| n.0).to_string();
    let model = name(base.model, session.program.model_names());
    let machine = name(base.machine, session.program.machine_names());
    let workload = name(base.workload, session.program.workload_names());
    let ids = |d: &[DieId]| d.iter().map(|d| d.0.to_string()).collect::<Vec<_>>().join(", ");
    let pools = plan.pools.as_ref();
    let mut text = format!(
        "plan {} {{\n  model = {model}\n  machine = {machine}\n  workload = {workload}  // batch = {}\n  placement = contiguous\n",
        plan.name,
        c.found.as_ref().map_or(0, |p| p.batch)
    );
    if c.tp_attention > 1 {
        text += &format!("  attention = tp({})\n", c.tp_attention);
    }
    if c.tp_experts > 1 {
        text += &format!("  parallel = tp({})\n", c.tp_experts);
    }
    if c.micro_batches > 1 {
        text += &format!("  overlap = micro_batches({})\n", c.micro_batches);
    }
    if !plan.transport.is_direct() {
        text += &format!("  transfers = {}\n", plan.transport);
    }
    text += &format!(
        "  disaggregate {{ attention = [{}]; experts = [{}] }}\n}}\n",
        pools.map_or(String::new(), |p| ids(&p.attention)),
        pools.map_or(String::new(), |p| ids(&p.experts))
    );
    text
}
