//! `moec check FILE`: parse and check; print a summary of what is defined
//! with the derived figures a user checks first.

use super::output::{emit, load_checked};
use moec_runtime::model::ModelSpec;
use moec_runtime::routing::calibrate::Calibration;
use moec_runtime::routing::skewed::SkewedParams;
use moec_runtime::units::BytesPerSec;
use moec_runtime::workload::RoutingSource;
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
        let price =
            |d: &moec_runtime::machine::DieSpec| d.price.map_or(String::new(), |p| format!(", ${p} a die-hour"));
        let claimed: usize = s.kinds.iter().map(|k| k.dies.len()).sum();
        let each = match s.kinds.is_empty() {
            true => format!("{} and {} each{}", s.die.compute, s.die.memory, price(&s.die)),
            false => std::iter::once(format!(
                "{} of die: {} and {}{}",
                m.die_count() as usize - claimed,
                s.die.compute,
                s.die.memory,
                price(&s.die)
            ))
            .chain(s.kinds.iter().map(|k| {
                format!(
                    "{} of {}: {} and {}{}",
                    k.dies.len(),
                    k.name,
                    k.die.compute,
                    k.die.memory,
                    price(&k.die)
                )
            }))
            .collect::<Vec<_>>()
            .join("; "),
        };
        let _ = writeln!(
            out,
            "machine {}: {} dies ({} alive), {each}; directional links: {}",
            s.name,
            m.die_count(),
            m.alive_dies().len(),
            links.join(", ")
        );
    }
    for w in p.workloads.iter().filter_map(|w| w.item.as_ref()) {
        let slo = w.slo.map_or(String::new(), |t| {
            format!(
                "; slo: {} p99 <= {}",
                t.metric.name(),
                moec_runtime::units::Seconds(t.target_s)
            )
        });
        let _ = writeln!(
            out,
            "workload {}: {} batch {}, {} tokens a step, {} step{}{slo}",
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
        if let (Some(model), Some(w)) = (p.model(plan.model), p.workload(plan.workload)) {
            if let RoutingSource::Counts { counts, .. } = &w.routing {
                let _ = writeln!(
                    out,
                    "  routing: counts from {}; {}",
                    counts.source,
                    describe_map(&counts.layer_map(model))
                );
            }
        }
        if let (Some(model), Some(w)) = (p.model(plan.model), p.workload(plan.workload)) {
            if let RoutingSource::Skewed { hot, boost, .. } = w.routing {
                if let Some(line) = describe_skewed(model, SkewedParams { hot, boost }) {
                    let _ = writeln!(out, "  routing: {line}");
                }
            }
        }
        if let Some(c) = &plan.calibration {
            let _ = writeln!(out, "  routing: {}", describe_calibration(c));
        }
    }
    let _ = writeln!(out, "ok: {}", file.display());
    emit(None, &out)
}

/// "MoE layers 0-3 follow counted layer 0, 4-11 layer 7, ...".
fn describe_map(map: &[(u32, u32)]) -> String {
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for &(m, r) in map {
        match runs.last_mut() {
            Some((_, end, rec)) if *rec == r && *end + 1 == m => *end = m,
            _ => runs.push((m, m, r)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, &(a, b, r))| {
            let layers = if a == b { format!("{a}") } else { format!("{a}-{b}") };
            let what = if i == 0 { "follow counted layer" } else { "layer" };
            format!("{layers} {what} {r}")
        })
        .collect();
    format!("MoE layers {}", parts.join(", "))
}

/// "skewed: experts 0-12 of 128 hot, probability 0.0691 each (the others 8.878e-4); 0.898 of the top-1
/// choices expected on them" (the share only without group limiting, which the inclusion probabilities assume).
fn describe_skewed(model: &ModelSpec, params: SkewedParams) -> Option<String> {
    let moe = model.moe.as_ref().filter(|_| model.moe_layers() > 0)?;
    let (experts, top_k) = (usize::try_from(moe.experts).ok()?, usize::try_from(moe.top_k).ok()?);
    let n = params.hot_experts(experts);
    let p = params.popularity(experts);
    let hot = if n == 1 {
        "expert 0".to_string()
    } else {
        format!("experts 0-{}", n - 1)
    };
    let cold = p.get(n).map_or(String::new(), |c| format!(" (the others {c:.3e})"));
    let mut text = format!("skewed: {hot} of {experts} hot, probability {:.4} each{cold}", p[0]);
    if moe.topk_groups >= moe.groups {
        text.push_str(&format!(
            "; {:.3} of the top-{top_k} choices expected on them",
            params.hot_share(experts, top_k)
        ));
    }
    Some(text)
}

/// Targets against achieved figures, with the solved parameters.
fn describe_calibration(c: &Calibration) -> String {
    let range = |v: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = v.collect();
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
        if (hi - lo).abs() < 5e-4 {
            format!("{lo:.3}")
        } else {
            format!("{lo:.3}-{hi:.3}")
        }
    };
    let layers = c.skew.len();
    let mut text = format!(
        "calibrated: skew {} achieved {} over {layers} MoE layer{} (Zipf s = {})",
        range(&mut c.skew.iter().map(|l| l.target)),
        range(&mut c.skew.iter().map(|l| l.achieved)),
        if layers == 1 { "" } else { "s" },
        range(&mut c.skew.iter().map(|l| l.exponent)),
    );
    match (c.dependency_target, c.dependency) {
        (Some(t), Some(a)) => text.push_str(&format!(
            ", dependency {t} achieved {a:.3} (layer_corr = {:.3})",
            c.solution.layer_corr
        )),
        (None, Some(a)) => text.push_str(&format!(", dependency {a:.3} (independent layers)")),
        _ => {}
    }
    text.push_str(&format!("; measured on {} tokens", c.sample_tokens));
    text
}
