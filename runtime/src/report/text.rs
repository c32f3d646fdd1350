//! The report as a table a person reads.

use super::RunReport;
use crate::units::{Bytes, Seconds};
use std::fmt::Write;

/// Renders `r` as aligned text.
pub fn render(r: &RunReport) -> String {
    let mut o = String::new();
    let s = |x: f64| Seconds(x).to_string();
    let _ = writeln!(
        o,
        "plan {}: {} on {}, workload {} ({} tokens a step, {} steps)",
        r.plan, r.model, r.machine, r.workload, r.tokens_per_step, r.steps
    );
    let _ = writeln!(o);
    let rows: Vec<(&str, String)> = vec![
        ("latency p50", s(r.latency.p50_s)),
        ("latency p99", s(r.latency.p99_s)),
        ("latency mean", s(r.latency.mean_s)),
        ("  attention", s(r.breakdown.attention_s)),
        ("  all-reduce", s(r.breakdown.allreduce_s)),
        ("  dispatch", s(r.breakdown.dispatch_s)),
        ("  expert compute", s(r.breakdown.expert_s)),
        ("  combine", s(r.breakdown.combine_s)),
        ("  migration", s(r.breakdown.migration_s)),
        ("  other compute", s(r.breakdown.other_s)),
        ("bytes a step", Bytes(r.traffic.bytes as u64).to_string()),
        ("byte-hops a step", Bytes(r.traffic.byte_hops as u64).to_string()),
        ("  all-to-all", Bytes(r.traffic.all_to_all_byte_hops as u64).to_string()),
        (
            "  tp collectives",
            Bytes(r.traffic.collective_byte_hops as u64).to_string(),
        ),
        ("link util max", format!("{:.1}%", 100.0 * r.links.max_util)),
        ("link util mean", format!("{:.1}%", 100.0 * r.links.mean_util)),
        ("die busy max", s(r.dies.busy_max_s)),
        ("die busy mean", s(r.dies.busy_mean_s)),
        ("die imbalance", format!("{:.3}", r.dies.imbalance)),
        ("expert imbalance", format!("{:.3}", r.dies.expert_imbalance)),
        ("tokens/s per die", format!("{:.1}", r.tokens_per_s_per_die)),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<18} {v:>14}");
    }
    let _ = writeln!(
        o,
        "  (breakdown: time the critical die spent in each phase, mean over steps; phases may overlap)"
    );
    serving(&mut o, r);
    let m = &r.migration;
    if m.applied > 0 || m.bytes > 0.0 {
        let _ = writeln!(o);
        let _ = writeln!(o, "expert weights moved during the run:");
        let rows: Vec<(&str, String)> = vec![
            ("migrations applied", m.applied.to_string()),
            ("weights sent", Bytes(m.bytes as u64).to_string()),
            ("in flight", s(m.transfer_s)),
            ("  overlapped", s(m.overlapped_s)),
            ("  stalled steps", s(m.stall_s)),
        ];
        for (k, v) in rows {
            let _ = writeln!(o, "  {k:<18} {v:>14}");
        }
        let _ = writeln!(
            o,
            "  (summed over steps; stalled: what migration added to step latency, overlapped: the rest of its flight)"
        );
    }
    for f in &r.faults {
        let _ = writeln!(o);
        let ratio = if f.median_latency_s > 0.0 {
            format!(
                " ({:.2}x the median {})",
                f.step_latency_s / f.median_latency_s,
                s(f.median_latency_s)
            )
        } else {
            String::new()
        };
        let _ = writeln!(o, "fault at step {}: {} failed", f.step, f.what);
        let _ = writeln!(o, "  {:<18} {:>14}{ratio}", "step latency", s(f.step_latency_s));
        let _ = writeln!(o, "  {:<18} {:>14}", "recovery", s(f.recovery_s));
        let _ = writeln!(o, "  {:<18} {:>14}", "sequences re-homed", f.rehomed_sequences);
        let _ = writeln!(o, "  {:<18} {:>14}", "KV rebuild", s(f.kv_rebuild_s));
        let _ = writeln!(o, "  {:<18} {:>14}", "from a replica", f.restored_from_replica);
        let _ = writeln!(o, "  {:<18} {:>14}", "from the host", f.reloaded_from_host);
        for note in &f.notes {
            let _ = writeln!(o, "  {note}");
        }
    }
    match &r.numeric_check {
        Some(n) => {
            let _ = writeln!(o);
            let _ = writeln!(o, "numeric check against the dense single-device reference:");
            let _ = writeln!(o, "  {:<18} {:>14.3e}", "max abs error", n.max_abs_error);
            let _ = writeln!(o, "  {:<18} {:>14.3e}", "max rel error", n.max_rel_error);
            let verdict = if n.passed { "passed" } else { "FAILED" };
            let _ = writeln!(
                o,
                "  {:<18} {:>14}",
                "tolerance",
                format!("{:.0e}: {verdict}", n.tolerance)
            );
            if let (Some(step), Some(d)) = (n.failed_step, &n.difference) {
                let _ = writeln!(o, "  first difference   {}", describe(step, d));
            }
            let width = if n.reduced {
                format!("{} (reduced)", n.width)
            } else {
                format!("{} (full)", n.width)
            };
            let _ = writeln!(o, "  {:<18} {:>14}", "numeric width", width);
            if !n.note.is_empty() {
                let _ = writeln!(o, "  {}", n.note);
            }
        }
        None => {
            let _ = writeln!(o, "\nnumeric check: not run (--no-numerics: timing only)");
        }
    }
    o
}

/// Where a failed numeric check first differs, in words.
pub fn describe(step: u64, d: &crate::numerics::Difference) -> String {
    let at = match d.layer {
        Some(l) => format!("layer {l}'s output"),
        None => "the logits".to_string(),
    };
    let die = d.die.map_or(String::new(), |x| format!(" on die {x}"));
    format!(
        "step {step}, {at}, token {}{die}: element {} is {:.6e}, the reference {:.6e} (row error {:.3e})",
        d.token, d.element, d.got, d.want, d.rel_error
    )
}

/// The serving figures, the latency target, and the physical bound.
fn serving(o: &mut String, r: &RunReport) {
    let s = |x: f64| Seconds(x).to_string();
    let v = &r.serving;
    let _ = writeln!(o);
    let _ = writeln!(o, "serving:");
    let mut rows: Vec<(&str, String)> = vec![("tokens/s", format!("{:.1}", v.tokens_per_s))];
    if let Some(t) = v.tpot {
        rows.push(("TPOT p50", s(t.p50_s)));
        rows.push(("TPOT p99", s(t.p99_s)));
    }
    if let Some(t) = v.ttft {
        rows.push(("TTFT p50", s(t.p50_s)));
        rows.push(("TTFT p99", s(t.p99_s)));
    }
    if let (Some(price), Some(per_dollar)) = (v.price_per_die_hour, v.tokens_per_dollar) {
        rows.push(("price", format!("${price}/die-h")));
        rows.push(("tokens per $", format!("{per_dollar:.0}")));
    }
    if let (Some(power), Some(per_joule)) = (v.power_w, v.tokens_per_joule) {
        rows.push(("power", format!("{power:.0} W")));
        rows.push(("tokens per J", format!("{per_joule:.3}")));
    }
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<18} {v:>14}");
    }
    if let Some(line) = v.slo_line() {
        let _ = writeln!(o, "  SLO: {line}");
    }
    let b = &r.bound;
    let _ = writeln!(o);
    let _ = writeln!(o, "physical lower bound of a step (mean over steps):");
    let rows: Vec<(&str, String)> = vec![
        ("bound", s(b.mean_s)),
        ("  binds", b.binding.clone()),
        ("  die compute", s(b.terms.die_compute_s)),
        ("  die memory", s(b.terms.die_memory_s)),
        ("  die links", s(b.terms.die_links_s)),
        ("  network cut", s(b.terms.cut_s)),
        ("machine bound", s(b.machine_s)),
        ("latency / bound", format!("{:.2}x", b.ratio)),
        ("latency / machine", format!("{:.2}x", b.machine_ratio)),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<18} {v:>14}");
    }
    let _ = writeln!(
        o,
        "  (bound: this placement's work at the machine's peak rates; machine bound: any placement's)"
    );
}
