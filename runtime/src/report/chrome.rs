//! The Chrome trace of a step (chrome://tracing, Perfetto): each die a
//! track of its instructions (a die with several streams, one track per
//! stream, so overlapping work shows side by side), each directional link
//! a track of the intervals it carried traffic.

use crate::machine::Machine;
use crate::schedule::Op;
use crate::sim::engine::StepResult;
use serde::Serialize;

#[derive(Serialize)]
struct Event {
    name: String,
    ph: &'static str,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<serde_json::Value>,
}

const DIES: u32 = 1;
const LINKS: u32 = 2;

/// The trace of `steps` (each a result with flows recorded), laid one after
/// the other in time. Times are in microseconds.
pub fn render(machine: &Machine, steps: &[StepResult]) -> String {
    let mut events = Vec::new();
    let meta = |pid: u32, tid: u32, name: String| Event {
        name: "thread_name".into(),
        ph: "M",
        pid,
        tid,
        ts: None,
        dur: None,
        args: Some(serde_json::json!({ "name": name })),
    };
    events.push(Event {
        name: "process_name".into(),
        ph: "M",
        pid: DIES,
        tid: 0,
        ts: None,
        dur: None,
        args: Some(serde_json::json!({"name": "dies"})),
    });
    events.push(Event {
        name: "process_name".into(),
        ph: "M",
        pid: LINKS,
        tid: 0,
        ts: None,
        dur: None,
        args: Some(serde_json::json!({"name": "links"})),
    });
    let streams = steps
        .iter()
        .flat_map(|s| &s.spans)
        .map(|s| u32::from(s.stream) + 1)
        .max()
        .unwrap_or(1);
    let dies = machine.die_count();
    // Stream 0 keeps the die's own track; stream k the die's track after
    // k blocks of every die's.
    let track = |die: u32, stream: u8| die + u32::from(stream) * dies;
    for d in machine.alive_dies() {
        events.push(meta(DIES, d.0, format!("die {}", machine.die_label(d))));
        for k in 1..streams {
            let name = format!("die {} stream {k}", machine.die_label(d));
            events.push(meta(DIES, track(d.0, k as u8), name));
        }
    }
    for l in machine.links().iter().filter(|l| l.alive) {
        events.push(meta(LINKS, l.id.0, link_name(machine, l.id.0)));
    }
    let mut offset = 0.0;
    for step in steps {
        let micro_batched = step.spans.iter().any(|x| x.micro_batch > 0);
        let chunked_layers: std::collections::BTreeSet<Option<u32>> = step
            .spans
            .iter()
            .filter(|x| x.chunk > 0)
            .map(|x| x.op.layer())
            .collect();
        for s in &step.spans {
            if s.end_s <= s.start_s {
                continue;
            }
            let chunked = s.op.is_chunked() && chunked_layers.contains(&s.op.layer());
            events.push(Event {
                name: match (micro_batched, chunked) {
                    (true, _) => format!("{} mb{}", op_name(&s.op), s.micro_batch),
                    (false, true) => format!("{} c{}", op_name(&s.op), s.chunk),
                    (false, false) => op_name(&s.op),
                },
                ph: "X",
                pid: DIES,
                tid: track(s.die.0, s.stream),
                ts: Some((offset + s.start_s) * 1e6),
                dur: Some((s.end_s - s.start_s) * 1e6),
                args: None,
            });
        }
        for (link, intervals) in link_intervals(machine, step).into_iter().enumerate() {
            for (a, b, bytes) in intervals {
                events.push(Event {
                    name: "traffic".into(),
                    ph: "X",
                    pid: LINKS,
                    tid: link as u32,
                    ts: Some((offset + a) * 1e6),
                    dur: Some((b - a) * 1e6),
                    args: Some(serde_json::json!({ "bytes": bytes })),
                });
            }
        }
        offset += step.latency_s;
    }
    serde_json::to_string(&serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ns" })).unwrap_or_default()
        + "\n"
}

fn op_name(op: &Op) -> String {
    match op.layer() {
        Some(l) => format!("{} L{l}", op.name()),
        None => op.name().to_string(),
    }
}

fn link_name(machine: &Machine, id: u32) -> String {
    let l = machine.link(crate::machine::LinkId(id));
    let end = |n: crate::machine::NodeId| {
        if (n.0) < machine.die_count() {
            machine.die_label(crate::machine::DieId(n.0))
        } else {
            format!("switch {}", n.0)
        }
    };
    format!("{} -> {}", end(l.from), end(l.to))
}

/// Per link: the intervals (start, end, bytes) during which some recorded
/// flow crossed it, overlapping intervals merged.
fn link_intervals(machine: &Machine, step: &StepResult) -> Vec<Vec<(f64, f64, u64)>> {
    let mut per_link: Vec<Vec<(f64, f64, u64)>> = vec![Vec::new(); machine.links().len()];
    for f in &step.flows {
        let Ok(route) = machine.route(f.src, f.dst) else {
            continue;
        };
        for l in &route.links {
            per_link[l.0 as usize].push((f.start_s, f.end_s, f.bytes));
        }
    }
    for list in &mut per_link {
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut merged: Vec<(f64, f64, u64)> = Vec::new();
        for &(a, b, bytes) in list.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1 => {
                    last.1 = last.1.max(b);
                    last.2 += bytes;
                }
                _ => merged.push((a, b, bytes)),
            }
        }
        *list = merged;
    }
    per_link
}
