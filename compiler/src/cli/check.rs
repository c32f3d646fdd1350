//! `moec check FILE`: parse and check; print a summary of what is defined
//! with the derived figures a user checks first.

use super::output::{emit, load_checked};
use moec_runtime::units::BytesPerSec;
use std::fmt::Write;
use std::path::Path;

/// Runs `moec check`.
pub fn run(file: &Path) -> Result<(), u8> {
    let session = load_checked(file)?;
    let p = &session.program;
    let mut out = String::new();
    for m in p.models.iter().filter_map(|m| m.item.as_ref()) {
        let _ = writeln!(
            out,
            "model {}: {} layers ({} MoE), {:.1}B parameters ({:.1}B active), expert {}, attention {} a layer",
            m.name,
            m.layers,
            m.moe_layers(),
            m.total_params() as f64 / 1e9,
            m.active_params() as f64 / 1e9,
            m.expert_bytes(),
            m.attention_bytes()
        );
    }
    for m in p.machines.iter().filter_map(|m| m.item.as_ref()) {
        let s = m.spec();
        // Alive directional links, grouped by bandwidth (mesh and inter-wafer, NVLink and NIC ...).
        let mut by_bandwidth: Vec<(f64, usize)> = Vec::new();
        for l in m.links().iter().filter(|l| l.alive) {
            match by_bandwidth.iter_mut().find(|(b, _)| *b == l.spec.bandwidth.0) {
                Some((_, n)) => *n += 1,
                None => by_bandwidth.push((l.spec.bandwidth.0, 1)),
            }
        }
        let links: Vec<String> = by_bandwidth
            .iter()
            .map(|(b, n)| format!("{n} of {}", BytesPerSec(*b)))
            .collect();
        let _ = writeln!(
            out,
            "machine {}: {} dies ({} alive), {} and {} each; directional links: {}",
            s.name,
            m.die_count(),
            m.alive_dies().len(),
            s.die.compute,
            s.die.memory,
            links.join(", ")
        );
    }
    for w in p.workloads.iter().filter_map(|w| w.item.as_ref()) {
        let _ = writeln!(
            out,
            "workload {}: {} batch {}, {} tokens a step, {} step{}",
            w.name,
            format!("{:?}", w.phase).to_lowercase(),
            w.batch,
            w.tokens_per_step(),
            w.steps,
            if w.steps == 1 { "" } else { "s" }
        );
    }
    for plan in &p.plans {
        let _ = writeln!(
            out,
            "plan {}: {} on {} under {}, placement {}",
            plan.name,
            p.models[plan.model].name,
            p.machines[plan.machine].name,
            p.workloads[plan.workload].name,
            match &plan.placement {
                moec::sema::PlacementChoice::File { path, .. } => format!("file(\"{path}\")"),
                choice => choice.name().to_string(),
            }
        );
    }
    let _ = writeln!(out, "ok: {}", file.display());
    emit(None, &out)
}
