//! Lowering the `Migrate`, `Replicate` and `Evict` nodes: each becomes
//! schedule migrations whose chunks travel in the windows its travel
//! names, or a broadcast (an eviction moves nothing).
//!
//! A replica kept until a step becomes a `Replicate` and, at that step, an
//! `Evict`. Migrations are ordered by the step they take effect, and at
//! one step copies are added before copies move and before copies are
//! dropped, so a source still holds its copy when it is read.

use crate::ir::{Ir, Op, Travel, WeightMove};
use moec_runtime::model::ModelSpec;
use moec_runtime::schedule::{
    plan_legs, step_windows, Broadcast, Chunk, Migration, MigrationKind, WeightSource, Window,
};

/// The migrations and broadcasts of `ir`'s move nodes.
pub fn lower_moves(ir: &Ir, model: &ModelSpec) -> Result<(Vec<Migration>, Vec<Broadcast>), String> {
    let windows = step_windows(model);
    let mut migrations = Vec::new();
    let mut broadcasts = Vec::new();
    for (i, n) in ir.nodes() {
        let layer = n
            .layer
            .map(|l| l.0)
            .ok_or_else(|| format!("move node %{} has no layer", i.index()));
        let (kind, w) = match &n.op {
            Op::Migrate(w) => (MigrationKind::Move, w),
            Op::Replicate(w) => (MigrationKind::Replicate, w),
            Op::Evict(e) => {
                migrations.push(Migration {
                    kind: MigrationKind::Evict,
                    layer: layer?,
                    expert: e.expert.0,
                    source: WeightSource::Die(e.die),
                    to: e.die,
                    bytes: model.expert_bytes().0,
                    effective_step: e.step,
                    chunks: Vec::new(),
                });
                continue;
            }
            _ => continue,
        };
        let layer = layer?;
        if let Travel::Tree { edges, pieces } = &w.travel {
            broadcasts.push(Broadcast {
                layer,
                expert: w.expert.0,
                from: w.from,
                steps: w.timing.start..w.timing.until.unwrap_or(u64::MAX),
                bytes: w.bytes.0,
                tree: edges.clone(),
                pieces: *pieces,
            });
            continue;
        }
        for &to in &w.to {
            let (chunks, effective) = chunks(w, to, &windows)?;
            if effective != w.timing.effective {
                return Err(format!(
                    "move node %{} says its copy serves from step {}, but its chunks arrive for step {effective}",
                    i.index(),
                    w.timing.effective
                ));
            }
            let m = Migration {
                kind,
                layer,
                expert: w.expert.0,
                source: WeightSource::Die(w.from),
                to,
                bytes: w.bytes.0,
                effective_step: effective,
                chunks,
            };
            if let Some(until) = w.timing.until {
                migrations.push(Migration {
                    kind: MigrationKind::Evict,
                    effective_step: until,
                    chunks: Vec::new(),
                    ..m.clone()
                });
            }
            migrations.push(m);
        }
    }
    let rank = |k: MigrationKind| match k {
        MigrationKind::Replicate => 0,
        MigrationKind::Move => 1,
        MigrationKind::Evict => 2,
    };
    migrations.sort_by_key(|m| (m.effective_step, rank(m.kind)));
    Ok((migrations, broadcasts))
}

/// The chunks that carry `w` to `to`, and the step its copy serves from.
fn chunks(w: &WeightMove, to: moec_runtime::machine::DieId, windows: &[Window]) -> Result<(Vec<Chunk>, u64), String> {
    match &w.travel {
        Travel::StopTheWorld => Ok((
            vec![Chunk {
                step: w.timing.start,
                window: Window::StopTheWorld,
                from: w.from,
                to,
                offset: 0,
                bytes: w.bytes.0,
                after: None,
            }],
            w.timing.start,
        )),
        Travel::Legs { legs, chunk } => {
            let legs: Vec<_> = legs.iter().map(|l| (l.from, l.to, l.phase)).collect();
            plan_legs(&legs, w.bytes.0, chunk.0, w.timing.start, windows)
        }
        Travel::Tree { .. } => Err("a broadcast has no chunks of its own".into()),
    }
}
