//! DisagMoE's pool sizing, carried to inference (`moec pools --rule
//! disagmoe`): split the machine's dies between attention and experts so
//! that the slower stage is as fast as it can be, from each stage's
//! roofline, then measure the splits on the simulator.
//!
//! A decode step of batch `B` at context `c` over `L` MoE layers gives each
//! stage its work: attention `F_A = B L attention_flops(c)` (and the
//! router), bytes `n_A W_A + B L kv c` (each replica reads its own weights,
//! the KV cache is read once), the experts `F_F = 2 B L K (3 h f)`, bytes
//! `L D W_e` (`D` the experts a batch of `B` touches in expectation,
//! `E (1 - (1 - K/E)^B)`), and both the activations `B L K h` each way
//! over the NICs; in `m` micro-batches the weights are read `m` times (and
//! a micro-batch of `B / m` touches fewer experts). A stage of `n` dies takes `T = max(F / (n peak), bytes /
//! (n mem_bw), comm / (n nic))`; the split minimises `max(T_A, T_F)` over
//! `n_A + n_F = N`, each pool holding what it must (weights and KV cache;
//! every expert). DisagMoE's paper sizes training this way; the rule is
//! theirs, the step's terms are this reading (docs/PASSES.md).
//!
//! The simulator then runs the disaggregated plan at the rule's split and
//! at every `N / 8` dies, with the plan's micro-batches (two when it has
//! none), and reports which split it finds fastest.

use super::{disaggregated, Shape, TIMED};
use crate::batch_search;
use crate::diag::{Code, Diagnostic};
use crate::driver::Session;
use crate::ir::Pools;
use crate::passes::OverlapChoice;
use crate::sema::{PlacementChoice, Plan};
use moec_runtime::machine::{DieId, DieSpec};
use moec_runtime::model::ModelSpec;
use serde::Serialize;

/// One split of the dies and its roofline times.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Split {
    pub attention_dies: u32,
    pub expert_dies: u32,
    /// Each stage's roofline time of one step, and its binding term
    /// (`compute`, `memory` or `network`).
    pub attention_s: f64,
    pub attention_bound: &'static str,
    pub experts_s: f64,
    pub experts_bound: &'static str,
    /// Both pools hold what they must.
    pub fits: bool,
    /// The simulated step (p99 over the probe's steps), where simulated.
    pub simulated_s: Option<f64>,
}

/// What the sizing found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sizing {
    pub plan: String,
    pub batch: u64,
    pub context: u64,
    pub micro_batches: u32,
    pub dies: u32,
    /// Attention's share of one die's roofline work (`T_A(1) / (T_A(1) +
    /// T_F(1))`): what moves the split.
    pub attention_share: f64,
    /// Every split, `n_A` from 1 to `N - 1`.
    pub splits: Vec<Split>,
    /// The rule's split (index into `splits`), among those that fit.
    pub rule: Option<usize>,
    /// The simulator's fastest split among those it ran.
    pub simulated_best: Option<usize>,
}

/// A stage's work in one step.
struct Work {
    flops: f64,
    /// Bytes every die of the stage reads whatever its share (replicated weights).
    bytes_each: f64,
    /// Bytes the stage's dies share.
    bytes_shared: f64,
    comm: f64,
}

impl Work {
    fn time(&self, n: u32, die: &DieSpec, nic: f64) -> (f64, &'static str) {
        let n = f64::from(n.max(1));
        let terms = [
            (self.flops / (n * die.compute.0), "compute"),
            ((self.bytes_each + self.bytes_shared / n) / die.memory_bw.0, "memory"),
            (self.comm / (n * nic), "network"),
        ];
        terms
            .into_iter()
            .fold((0.0, "compute"), |a, t| if t.0 > a.0 { t } else { a })
    }
}

/// The two stages' work for `batch` sequences at `context` in `m`
/// micro-batches: each micro-batch reads the weights again (the attention
/// replica's, and the experts its tokens touch).
fn work(model: &ModelSpec, batch: u64, context: u64, m: u32) -> (Work, Work) {
    let m = f64::from(m.max(1));
    let dtype = model.dtype.bytes() as f64;
    let layers = model.moe_layers() as f64;
    let (experts, k, ffn) = model.moe.as_ref().map_or((1.0, 1.0, 0.0), |m| {
        (m.experts as f64, m.top_k as f64, m.expert_ffn as f64)
    });
    let b = batch as f64;
    let h = model.hidden as f64;
    let comm = b * layers * k * h * dtype;
    let attention = Work {
        flops: b * layers * (model.attention_flops(context).0 + 2.0 * model.gate_params() as f64),
        bytes_each: m * layers * (model.attention_bytes().0 as f64 + model.gate_params() as f64 * dtype),
        bytes_shared: b * layers * model.kv_bytes_per_token().0 as f64 * context as f64,
        comm,
    };
    let touched = experts * (1.0 - (1.0 - k / experts).powf(b / m));
    let experts_work = Work {
        flops: 2.0 * b * layers * k * 3.0 * h * ffn,
        bytes_each: 0.0,
        bytes_shared: m * layers * touched * model.expert_bytes().0 as f64,
        comm,
    };
    (attention, experts_work)
}

/// Sizes plan `plan`'s pools on its whole machine (homogeneous: attention
/// from the front, experts from the back), then simulates the splits.
/// `steps`: steps each simulated split runs; `m`: its micro-batches (the
/// plan's, or two, when `None`).
pub fn size(session: &Session, plan: Option<&str>, steps: u64, m: Option<u32>) -> Result<Sizing, Diagnostic> {
    let base = session.select_plan(plan)?;
    let m = m.unwrap_or_else(|| micro_batches(base)).max(1);
    let mut sizing = roofline(session, base, m)?;
    let n = sizing.dies;
    // The simulator at the rule's split and every N / 8 dies.
    let stride = (n / 8).max(1);
    let mut tried: Vec<u32> = (1..n).filter(|n_a| n_a % stride == 0).collect();
    tried.extend(sizing.rule.map(|i| sizing.splits[i].attention_dies));
    tried.sort_unstable();
    tried.dedup();
    for n_a in tried {
        let i = (n_a - 1) as usize;
        if !sizing.splits[i].fits {
            continue;
        }
        let plan = split_plan(session, base, n_a, m)?;
        let probe = batch_search::probe(session, &plan, (sizing.batch, steps.max(1)), &TIMED)?;
        sizing.splits[i].simulated_s = probe.p99_s;
    }
    let splits = &sizing.splits;
    sizing.simulated_best = (0..splits.len())
        .filter(|&i| splits[i].simulated_s.is_some())
        .min_by(|&x, &y| {
            let t = |i: usize| splits[i].simulated_s.unwrap_or(f64::MAX);
            t(x).total_cmp(&t(y))
        });
    Ok(sizing)
}

/// The plan `base` disaggregated at the rule's split (for `moec compare`'s
/// row), or `None` when no split fits.
pub fn rule_plan(session: &Session, base: &Plan) -> Result<Option<Plan>, Diagnostic> {
    let m = micro_batches(base);
    let sizing = roofline(session, base, m)?;
    sizing
        .rule
        .map(|i| split_plan(session, base, sizing.splits[i].attention_dies, m))
        .transpose()
}

/// `base` with its machine's first `n_a` alive dies as the attention pool
/// and the rest as the expert pool: contiguous whole experts, data-parallel
/// attention, `m` micro-batches.
fn split_plan(session: &Session, base: &Plan, n_a: u32, m: u32) -> Result<Plan, Diagnostic> {
    let (_, machine, _) = session.parts(base)?;
    let alive = machine.alive_dies();
    let pools = Pools {
        attention: alive[..n_a as usize].to_vec(),
        experts: alive[n_a as usize..].to_vec(),
    };
    let shape = Shape {
        placement: PlacementChoice::Contiguous,
        tp_attention: 1,
        tp_experts: 1,
        micro_batches: m,
    };
    Ok(disaggregated(base, format!("{}_split{n_a}", base.name), pools, shape))
}

/// Every split's roofline in `m` micro-batches and the rule's choice;
/// nothing simulated.
fn roofline(session: &Session, base: &Plan, m: u32) -> Result<Sizing, Diagnostic> {
    let (model, machine, workload) = session.parts(base)?;
    if model.moe.is_none() {
        return Err(
            Diagnostic::error(Code::E0018, base.span, "the pool sizing needs an MoE model")
                .with_hint("a model with a `moe { ... }` section"),
        );
    }
    let alive = machine.alive_dies();
    let n = alive.len() as u32;
    if n < 2 {
        return Err(Diagnostic::error(
            Code::E0018,
            base.span,
            "two pools need two alive dies",
        ));
    }
    let (batch, context) = (workload.batch, workload.seq_len);
    let (a, f) = work(model, batch, context, m);
    let (front, back) = (alive[0], alive[alive.len() - 1]);
    let nic = |d: DieId| machine.spec().nic_of(d).bandwidth.0;
    let (die_a, die_f) = (machine.die_spec(front), machine.die_spec(back));
    let kv_sequence = (model.layers * model.kv_bytes_per_token().0 * context) as f64;
    // What an attention die holds: its weights once, however often it reads them.
    let attention_weights =
        a.bytes_each / f64::from(m.max(1)) + (model.embedding_params() * model.dtype.bytes()) as f64;
    let splits: Vec<Split> = (1..n)
        .map(|n_a| {
            let n_f = n - n_a;
            let (attention_s, attention_bound) = a.time(n_a, die_a, nic(front));
            let (experts_s, experts_bound) = f.time(n_f, die_f, nic(back));
            let per_die_sequences = (batch as f64 / f64::from(n_a)).ceil();
            let fits = attention_weights + per_die_sequences * kv_sequence <= die_a.memory.0 as f64
                && all_experts(model) / f64::from(n_f) <= die_f.memory.0 as f64;
            Split {
                attention_dies: n_a,
                expert_dies: n_f,
                attention_s,
                attention_bound,
                experts_s,
                experts_bound,
                fits,
                simulated_s: None,
            }
        })
        .collect();
    let slower = |s: &Split| s.attention_s.max(s.experts_s);
    let rule = (0..splits.len())
        .filter(|&i| splits[i].fits)
        .min_by(|&x, &y| slower(&splits[x]).total_cmp(&slower(&splits[y])));
    let share = {
        let (t_a, _) = a.time(1, die_a, nic(front));
        let (t_f, _) = f.time(1, die_f, nic(back));
        t_a / (t_a + t_f)
    };
    Ok(Sizing {
        plan: base.name.clone(),
        batch,
        context,
        micro_batches: m,
        dies: n,
        attention_share: share,
        splits,
        rule,
        simulated_best: None,
    })
}

/// The micro-batches a split runs: the plan's, or two.
fn micro_batches(base: &Plan) -> u32 {
    match base.overlap {
        OverlapChoice::MicroBatches(m) if m > 1 => m,
        _ => 2,
    }
}

/// Bytes of every routed expert of every layer: what the expert pool holds.
fn all_experts(model: &ModelSpec) -> f64 {
    let experts = model.moe.as_ref().map_or(0, |m| m.experts);
    (model.moe_layers() * experts * model.expert_bytes().0) as f64
}
