//! Disaggregation on a wafer-scale mesh (`moec pools --rule wafer`): which
//! region shapes should the attention and expert pools take? No paper has
//! asked; this is a search over layouts measured on the simulator.
//!
//! For attention pools of an eighth, a quarter, three eighths, half and five eighths
//! of the mesh, each in five shapes (a band of rows at the top, a block in
//! the middle with experts around it, a ring at the edge with experts in
//! the middle, every other column, a checkerboard), the plan's model and
//! workload run disaggregated (experts by EPLB over their pool, attention
//! data-parallel) with one batch and with two micro-batches ping-ponging;
//! the fastest layout is set against the plan itself, run as written
//! (colocated) on the same wafer.

use super::{disaggregated, Shape, TIMED};
use crate::batch_search;
use crate::diag::{Code, Diagnostic};
use crate::driver::Session;
use crate::ir::Pools;
use crate::sema::{PlacementChoice, Plan};
use moec_runtime::machine::{Coord, DieId, Machine};
use serde::Serialize;

/// The shapes an attention pool takes on the mesh.
pub const SHAPES: [&str; 5] = ["band", "middle", "edge", "columns", "checkerboard"];

/// One layout tried.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Layout {
    pub shape: &'static str,
    pub attention_dies: u32,
    pub expert_dies: u32,
    pub micro_batches: u32,
    /// The attention pool's dies, ascending.
    pub attention: Vec<u32>,
    /// The simulated step (p99 over the probe's steps), or why it did not run.
    pub step_s: Option<f64>,
    pub refused: Option<String>,
}

/// What the search found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaferSearch {
    pub plan: String,
    pub batch: u64,
    /// The plan as written (colocated): its simulated step.
    pub colocated_s: Option<f64>,
    pub layouts: Vec<Layout>,
    /// The fastest layout.
    pub best: Option<usize>,
}

/// The attention pool of `shape` with `n` dies on the mesh, ascending;
/// `None` when the shape cannot hold `n` dies exactly.
pub fn attention_pool(machine: &Machine, shape: &str, n: u32) -> Option<Vec<DieId>> {
    let grid = machine.grid()?;
    let (w, h) = (grid.width, grid.height);
    let all: Vec<(DieId, Coord)> = machine
        .alive_dies()
        .into_iter()
        .filter_map(|d| machine.coord(d).map(|c| (d, c)))
        .collect();
    // Twice the distance from the mesh's centre, so it stays integral.
    let centre = |c: &Coord| {
        let dx = (2 * c.x as i64 - (w as i64 - 1)).abs();
        let dy = (2 * c.y as i64 - (h as i64 - 1)).abs();
        (dx.max(dy), dx + dy)
    };
    let mut picked: Vec<DieId> = match shape {
        "band" => {
            let mut v = all.clone();
            v.sort_by_key(|(d, c)| (c.y, c.x, d.0));
            v.into_iter().take(n as usize).map(|(d, _)| d).collect()
        }
        "middle" => {
            let mut v = all.clone();
            v.sort_by_key(|(d, c)| (centre(c), d.0));
            v.into_iter().take(n as usize).map(|(d, _)| d).collect()
        }
        "edge" => {
            let mut v = all.clone();
            v.sort_by_key(|(d, c)| (std::cmp::Reverse(centre(c)), d.0));
            v.into_iter().take(n as usize).map(|(d, _)| d).collect()
        }
        "columns" => {
            // Every `stride`-th column, as many whole columns as `n` needs.
            let per_column = h;
            if n % per_column != 0 || n / per_column > w {
                return None;
            }
            let columns = n / per_column;
            let stride = (w / columns).max(1);
            all.iter()
                .filter(|(_, c)| c.x % stride == 0 && c.x / stride < columns)
                .map(|(d, _)| *d)
                .collect()
        }
        "checkerboard" => {
            if 2 * n != all.len() as u32 {
                return None;
            }
            all.iter()
                .filter(|(_, c)| (c.x + c.y) % 2 == 0)
                .map(|(d, _)| *d)
                .collect()
        }
        _ => return None,
    };
    picked.sort_unstable();
    (picked.len() == n as usize).then_some(picked)
}

/// Runs the search on plan `plan` (on a mesh). `steps`: steps each layout runs.
pub fn search(session: &Session, plan: Option<&str>, steps: u64) -> Result<WaferSearch, Diagnostic> {
    let base = session.select_plan(plan)?;
    let (_, machine, workload) = session.parts(base)?;
    if machine.grid().is_none() {
        return Err(
            Diagnostic::error(Code::E0018, base.span, "the wafer layout search needs a mesh machine")
                .with_hint("on a cluster, `moec pools` (MegaScale-Infer) or `--rule disagmoe`"),
        );
    }
    let alive = machine.alive_dies();
    let n = alive.len() as u32;
    let steps = steps.max(1);
    let colocated = batch_search::probe(session, base, (workload.batch, steps), &TIMED)?;
    let mut out = WaferSearch {
        plan: base.name.clone(),
        batch: workload.batch,
        colocated_s: colocated.p99_s,
        layouts: Vec::new(),
        best: None,
    };
    for eighths in [1u32, 2, 3, 4, 5] {
        let n_a = n * eighths / 8;
        for shape in SHAPES {
            let Some(attention) = attention_pool(machine, shape, n_a) else {
                continue;
            };
            let experts: Vec<DieId> = alive
                .iter()
                .copied()
                .filter(|d| attention.binary_search(d).is_err())
                .collect();
            for m in [1u32, 2] {
                let pools = Pools {
                    attention: attention.clone(),
                    experts: experts.clone(),
                };
                let layout = Shape {
                    placement: PlacementChoice::Eplb,
                    tp_attention: 1,
                    tp_experts: 1,
                    micro_batches: m,
                };
                let plan = Plan {
                    // EPLB's replicas as the plan asks.
                    redundant_experts: base.redundant_experts,
                    ..disaggregated(base, format!("{}_{shape}_{n_a}_m{m}", base.name), pools, layout)
                };
                let probe = batch_search::probe(session, &plan, (workload.batch, steps), &TIMED)?;
                out.layouts.push(Layout {
                    shape,
                    attention_dies: n_a,
                    expert_dies: n - n_a,
                    micro_batches: m,
                    attention: attention.iter().map(|d| d.0).collect(),
                    step_s: probe.p99_s,
                    refused: probe.refused,
                });
            }
        }
    }
    out.best = (0..out.layouts.len())
        .filter(|&i| out.layouts[i].step_s.is_some())
        .min_by(|&x, &y| {
            let t = |i: usize| out.layouts[i].step_s.unwrap_or(f64::MAX);
            t(x).total_cmp(&t(y))
        });
    Ok(out)
}
