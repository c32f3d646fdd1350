//! moec's own routing-trace format (`moec-routing-trace`, version 1; the
//! reference is `docs/TRACES.md`): reading it with every field validated,
//! replaying it against a model and a step size, and writing it.
//!
//! Layout, in short: a header (`format`, `version`, `experts`, `top_k`, the
//! model `layers` covered) and `steps`, each with its `tokens` count and,
//! per covered layer, one flat array of `tokens * top_k` expert ids
//! (`ids[t * top_k + j]` is token t's j-th choice): the layout of
//! [`LayerRouting::experts`], so reading is a move, not a reshuffle.
//!
//! Replay ([`TraceReplay`]): a model MoE layer the trace does not cover
//! takes the nearest recorded layer (the earlier one on a tie); a step
//! needing more tokens than recorded tiles the recorded tokens cyclically
//! (fewer takes the first ones); run step t replays recorded step
//! `t mod steps`.

use super::synthetic::RoutingShape;
use super::{LayerRouting, StepRouting};
use crate::model::ModelSpec;
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::Path;

/// The `format` tag every trace carries.
pub const TRACE_FORMAT: &str = "moec-routing-trace";

/// The trace version this reader and writer speak.
pub const TRACE_VERSION: u64 = 1;

/// Most experts a trace may declare (as many as a model may have).
pub const MAX_TRACE_EXPERTS: u64 = 1 << 24;

/// A validated trace: every id in range, every token's choices distinct,
/// every array the right length. Its steps use the recorded model layer
/// numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Free-text provenance (which model, data and tool produced it), if given.
    pub source: Option<String>,
    /// Routed experts per layer the ids index.
    pub experts: u32,
    /// Choices per token per layer.
    pub top_k: usize,
    /// The model layers recorded, strictly ascending.
    pub layers: Vec<u32>,
    /// The recorded steps, each with every recorded layer in `layers` order.
    pub steps: Vec<StepRouting>,
}

/// Just the fields that say what a file is, read first so a file of some
/// other kind gets "not a moec routing trace" rather than a missing field.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrace {
    #[allow(dead_code)] // checked through `Header`
    format: String,
    #[allow(dead_code)] // checked through `Header`
    version: u64,
    #[serde(default)]
    source: Option<String>,
    experts: u64,
    top_k: u64,
    layers: Vec<u32>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    tokens: u64,
    experts: Vec<Vec<u32>>,
    #[serde(default)]
    weights: Option<Vec<Vec<f32>>>,
}

/// Reads and validates the trace at `path`; errors name the file.
pub fn read_trace(path: &Path) -> Result<Trace, String> {
    let origin = path.display().to_string();
    let text = crate::input::read_text(path, crate::input::MAX_DATA_FILE_BYTES)
        .map_err(|e| format!("{origin}: cannot read routing trace: {e}"))?;
    parse_trace(&text, &origin)
}

/// Parses and validates a trace; `origin` (a file name) starts every error.
pub fn parse_trace(text: &str, origin: &str) -> Result<Trace, String> {
    let header: Header = serde_json::from_str(text).map_err(|e| format!("{origin}: not a moec routing trace: {e}"))?;
    match header.format {
        Some(serde_json::Value::String(f)) if f == TRACE_FORMAT => {}
        Some(other) => {
            return Err(format!(
                "{origin}: not a moec routing trace: \"format\" is {other}, expected \"{TRACE_FORMAT}\""
            ))
        }
        None => {
            return Err(format!(
                "{origin}: not a moec routing trace: no \"format\" field (expected \"{TRACE_FORMAT}\")"
            ))
        }
    }
    match header.version {
        Some(v) if v.as_u64() == Some(TRACE_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "{origin}: routing trace version {v} is not supported (this moec reads version {TRACE_VERSION})"
            ))
        }
        None => return Err(format!("{origin}: routing trace has no \"version\" field")),
    }
    let raw: RawTrace = serde_json::from_str(text).map_err(|e| format!("{origin}: malformed routing trace: {e}"))?;
    validate(raw, origin)
}

/// Checks everything a reader relies on and moves the arrays into steps.
fn validate(raw: RawTrace, origin: &str) -> Result<Trace, String> {
    if raw.experts == 0 || raw.experts > MAX_TRACE_EXPERTS {
        return Err(format!("{origin}: \"experts\" = {} is outside 1 ..= 2^24", raw.experts));
    }
    if raw.top_k == 0 || raw.top_k > raw.experts {
        return Err(format!(
            "{origin}: \"top_k\" = {} is outside 1 ..= experts ({})",
            raw.top_k, raw.experts
        ));
    }
    // Both bounded by 2^24 just above.
    let (experts, k) = (raw.experts as u32, raw.top_k as usize);
    if raw.layers.is_empty() {
        return Err(format!("{origin}: \"layers\" is empty: the trace covers no layer"));
    }
    if let Some(w) = raw.layers.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!(
            "{origin}: \"layers\" must be strictly ascending, but {} comes after {}",
            w[1], w[0]
        ));
    }
    if raw.steps.is_empty() {
        return Err(format!("{origin}: \"steps\" is empty: the trace records no step"));
    }
    let mut stamp = vec![0u32; experts as usize];
    let mut now = 0u32;
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (si, step) in raw.steps.into_iter().enumerate() {
        if step.tokens == 0 {
            return Err(format!("{origin}: step {si}: \"tokens\" is 0"));
        }
        if step.experts.len() != raw.layers.len() {
            return Err(format!(
                "{origin}: step {si}: \"experts\" has {} layer arrays but \"layers\" lists {}",
                step.experts.len(),
                raw.layers.len()
            ));
        }
        let want = usize::try_from(step.tokens)
            .ok()
            .and_then(|t| t.checked_mul(k))
            .ok_or_else(|| format!("{origin}: step {si}: {} tokens is too many", step.tokens))?;
        let tokens = want / k;
        for (&layer, ids) in raw.layers.iter().zip(&step.experts) {
            if ids.len() != want {
                return Err(format!(
                    "{origin}: step {si}, layer {layer}: {} expert ids, but tokens x top_k = {tokens} x {k} = {want}",
                    ids.len()
                ));
            }
            for (t, choices) in ids.chunks(k).enumerate() {
                now = now.wrapping_add(1);
                if now == 0 {
                    stamp.fill(0);
                    now = 1;
                }
                for (j, &e) in choices.iter().enumerate() {
                    if e >= experts {
                        return Err(format!(
                            "{origin}: step {si}, layer {layer}, token {t}: expert {e} (choice {j}) is out of range: \
                             the trace has {experts} experts"
                        ));
                    }
                    if stamp[e as usize] == now {
                        let first = choices.iter().position(|&x| x == e).unwrap_or(0);
                        return Err(format!(
                            "{origin}: step {si}, layer {layer}, token {t}: expert {e} is chosen twice \
                             (choices {first} and {j}); a token's {k} choices must be distinct"
                        ));
                    }
                    stamp[e as usize] = now;
                }
            }
        }
        let weights = match step.weights {
            None => vec![Vec::new(); raw.layers.len()],
            Some(w) => {
                if w.len() != raw.layers.len() {
                    return Err(format!(
                        "{origin}: step {si}: \"weights\" has {} layer arrays but \"layers\" lists {}",
                        w.len(),
                        raw.layers.len()
                    ));
                }
                for (&layer, ws) in raw.layers.iter().zip(&w) {
                    if ws.len() != want {
                        return Err(format!(
                            "{origin}: step {si}, layer {layer}: {} weights, but tokens x top_k = {want}",
                            ws.len()
                        ));
                    }
                    if let Some(i) = ws.iter().position(|x| !x.is_finite()) {
                        return Err(format!(
                            "{origin}: step {si}, layer {layer}, token {}: weight {} (choice {}) is not finite",
                            i / k,
                            ws[i],
                            i % k
                        ));
                    }
                }
                w
            }
        };
        steps.push(StepRouting {
            tokens,
            top_k: k,
            layers: raw
                .layers
                .iter()
                .zip(step.experts)
                .zip(weights)
                .map(|((&layer, experts), weights)| LayerRouting {
                    layer,
                    experts,
                    weights,
                })
                .collect(),
        });
    }
    Ok(Trace {
        source: raw.source,
        experts,
        top_k: k,
        layers: raw.layers,
        steps,
    })
}

/// A trace bound to a model and a step size: gives the routing of any run
/// step (see the module documentation for the mapping, tiling and cycling).
#[derive(Clone, Debug)]
pub struct TraceReplay {
    trace: Trace,
    tokens: usize,
    /// Per model MoE layer: (model layer, index into the trace's layers).
    map: Vec<(u32, usize)>,
}

impl Trace {
    /// Checks the trace against `model` (same experts and top_k; every
    /// recorded layer an MoE layer of the model) for steps of `tokens`
    /// tokens, and gives the model's routing shape. `origin` names the
    /// trace in errors. `moec check` asks this of every plan that replays a
    /// trace; `TraceReplay::new` again before a run.
    pub fn fits(&self, origin: &str, model: &ModelSpec, tokens: usize) -> Result<RoutingShape, String> {
        let shape = RoutingShape::of(model).map_err(|e| format!("{origin}: {e}"))?;
        shape
            .choices_per_step(tokens as u64)
            .map_err(|e| format!("{origin}: {e}"))?;
        let name = &model.name;
        if shape.layers.is_empty() {
            return Err(format!(
                "{origin}: model `{name}` has no MoE layer to replay the trace on"
            ));
        }
        if self.experts as usize != shape.experts {
            return Err(format!(
                "{origin}: the trace routes over {} experts but model `{name}` has {}",
                self.experts, shape.experts
            ));
        }
        if self.top_k != shape.top_k {
            return Err(format!(
                "{origin}: the trace has top_k = {} but model `{name}` has top_k = {}",
                self.top_k, shape.top_k
            ));
        }
        if let Some(&l) = self.layers.iter().find(|l| shape.layers.binary_search(l).is_err()) {
            return Err(format!(
                "{origin}: trace layer {l} is not an MoE layer of model `{name}` (its MoE layers: {})",
                list_layers(&shape.layers)
            ));
        }
        Ok(shape)
    }
}

impl TraceReplay {
    /// Checks `trace` against `model` (`Trace::fits`) and prepares steps of
    /// `tokens` tokens. `origin` names the trace in errors.
    pub fn new(trace: Trace, origin: &str, model: &ModelSpec, tokens: usize) -> Result<TraceReplay, String> {
        let shape = trace.fits(origin, model, tokens)?;
        let map = shape.layers.iter().map(|&m| (m, nearest(&trace.layers, m))).collect();
        Ok(TraceReplay { trace, tokens, map })
    }

    /// The trace being replayed.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Per model MoE layer, (model layer, the recorded layer it replays);
    /// the two differ where the trace covers fewer layers than the model.
    pub fn layer_map(&self) -> Vec<(u32, u32)> {
        self.map.iter().map(|&(m, i)| (m, self.trace.layers[i])).collect()
    }

    /// The routing of run step `t`: recorded step `t mod steps`, its tokens
    /// tiled (or cut) to the step size, each model MoE layer from its
    /// recorded layer.
    /// Per model MoE layer, (model layer, its recorded choices of each of
    /// `experts` experts summed over every step of the trace): the loads
    /// the trace gives, before any tiling to the workload's batch.
    pub fn recorded_loads(&self, experts: usize) -> Vec<(u32, Vec<f64>)> {
        self.map
            .iter()
            .map(|&(layer, i)| {
                let mut loads = vec![0.0; experts];
                for step in &self.trace.steps {
                    for &e in &step.layers[i].experts {
                        if let Some(x) = loads.get_mut(e as usize) {
                            *x += 1.0;
                        }
                    }
                }
                (layer, loads)
            })
            .collect()
    }

    pub fn step(&self, t: u64) -> StepRouting {
        // `validate` refuses traces without steps, so the modulus is not 0.
        let recorded = &self.trace.steps[(t % self.trace.steps.len() as u64) as usize];
        let k = self.trace.top_k;
        StepRouting {
            tokens: self.tokens,
            top_k: k,
            layers: self
                .map
                .iter()
                .map(|&(layer, i)| {
                    let src = &recorded.layers[i];
                    LayerRouting {
                        layer,
                        experts: tile(&src.experts, self.tokens * k),
                        weights: if src.weights.is_empty() {
                            Vec::new()
                        } else {
                            tile(&src.weights, self.tokens * k)
                        },
                    }
                })
                .collect(),
        }
    }
}

/// `src` repeated (whole tokens, since `len` and `src.len()` are both
/// multiples of top_k) and cut to `len`.
fn tile<T: Copy>(src: &[T], len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let take = src.len().min(len - out.len());
        out.extend_from_slice(&src[..take]);
    }
    out
}

/// Index in `recorded` (ascending, non-empty) of the layer nearest to
/// `layer`, the earlier one on a tie.
pub(crate) fn nearest(recorded: &[u32], layer: u32) -> usize {
    let mut best = 0;
    for (i, &r) in recorded.iter().enumerate() {
        if r.abs_diff(layer) < recorded[best].abs_diff(layer) {
            best = i;
        }
    }
    best
}

/// A readable list of layer numbers: runs of consecutive ones as `a-b`.
pub(crate) fn list_layers(layers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        if j > i {
            let _ = write!(out, "{}-{}", layers[i], layers[j]);
        } else {
            let _ = write!(out, "{}", layers[i]);
        }
        i = j + 1;
    }
    out
}

/// Writes `steps` (all from one source: the same layers and `top_k`) as a
/// version-1 trace over `experts` experts; `source` is free-text
/// provenance. One line per layer array keeps the file diffable and about
/// as small as JSON allows. A step's gate weights are written when every
/// layer of it has them; a non-finite weight is written as `null`, which
/// the reader refuses.
pub fn write_trace(steps: &[StepRouting], experts: u64, source: Option<&str>) -> String {
    let top_k = steps.first().map_or(0, |s| s.top_k);
    let layers: Vec<u32> = steps
        .first()
        .map_or_else(Vec::new, |s| s.layers.iter().map(|l| l.layer).collect());
    // About 4.7 bytes per id (up to three digits and ", ").
    let ids: usize = steps.iter().flat_map(|s| &s.layers).map(|l| l.experts.len()).sum();
    let mut out = String::with_capacity(ids * 5 + 1024);
    let _ = writeln!(out, "{{");
    let _ = writeln!(out, "  \"format\": \"{TRACE_FORMAT}\",");
    let _ = writeln!(out, "  \"version\": {TRACE_VERSION},");
    if let Some(src) = source {
        // serde_json escapes quotes, backslashes and control characters.
        let quoted = serde_json::to_string(src).unwrap_or_else(|_| "\"\"".into());
        let _ = writeln!(out, "  \"source\": {quoted},");
    }
    let _ = writeln!(out, "  \"experts\": {experts},");
    let _ = writeln!(out, "  \"top_k\": {top_k},");
    out.push_str("  \"layers\": ");
    push_array(&mut out, &layers, |o, l| {
        let _ = write!(o, "{l}");
    });
    out.push_str(",\n  \"steps\": [\n");
    for (si, step) in steps.iter().enumerate() {
        let _ = writeln!(out, "    {{");
        let _ = writeln!(out, "      \"tokens\": {},", step.tokens);
        let with_weights = !step.layers.is_empty() && step.layers.iter().all(|l| l.weights.len() == l.experts.len());
        let _ = writeln!(out, "      \"experts\": [");
        for (li, l) in step.layers.iter().enumerate() {
            out.push_str("        ");
            push_array(&mut out, &l.experts, |o, &e| push_id(o, e));
            out.push_str(if li + 1 < step.layers.len() { ",\n" } else { "\n" });
        }
        let _ = writeln!(out, "      ]{}", if with_weights { "," } else { "" });
        if with_weights {
            let _ = writeln!(out, "      \"weights\": [");
            for (li, l) in step.layers.iter().enumerate() {
                out.push_str("        ");
                // `{:?}` on f32 prints the shortest decimal that reads back
                // to the same f32 (with an exponent when that is shorter,
                // which JSON allows).
                push_array(&mut out, &l.weights, |o, w| {
                    if w.is_finite() {
                        let _ = write!(o, "{w:?}");
                    } else {
                        o.push_str("null");
                    }
                });
                out.push_str(if li + 1 < step.layers.len() { ",\n" } else { "\n" });
            }
            let _ = writeln!(out, "      ]");
        }
        let _ = writeln!(out, "    }}{}", if si + 1 < steps.len() { "," } else { "" });
    }
    let _ = writeln!(out, "  ]");
    let _ = writeln!(out, "}}");
    out
}

/// An expert id in decimal, without the formatting machinery (the
/// writer's hot loop).
fn push_id(out: &mut String, mut id: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (id % 10) as u8;
        id /= 10;
        if id == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// `[a, b, c]` written straight into `out`: a prefill step holds tens of
/// millions of ids, so no string per item.
fn push_array<T>(out: &mut String, items: &[T], item: impl Fn(&mut String, &T)) {
    out.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(out, x);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::tests::{deepseek_v3, model};
    use super::super::synthetic::{Synthetic, ZipfParams};
    use super::*;

    fn zipf() -> ZipfParams {
        ZipfParams {
            s: 1.2,
            layer_corr: 0.6,
            drift: 0.05,
        }
    }

    /// A small valid trace with `body` replacing the steps.
    fn small(header: &str, steps: &str) -> String {
        format!("{{{header}, \"layers\": [0, 1], \"steps\": [{steps}]}}")
    }

    const GOOD_HEADER: &str = r#""format": "moec-routing-trace", "version": 1, "experts": 4, "top_k": 2"#;
    const GOOD_STEP: &str = r#"{"tokens": 2, "experts": [[0, 1, 2, 3], [3, 2, 1, 0]]}"#;

    #[test]
    fn write_then_read_round_trips() {
        let m = deepseek_v3();
        let mut g = Synthetic::zipf(&m, 64, zipf(), 7).unwrap();
        let steps: Vec<StepRouting> = (0..3).map(|t| g.step(t)).collect();
        let text = write_trace(&steps, 256, Some("zipf(s = 1.2) on \"deepseek_v3\""));
        let trace = parse_trace(&text, "rt.json").unwrap();
        assert_eq!(trace.steps, steps);
        assert_eq!(trace.source.as_deref(), Some("zipf(s = 1.2) on \"deepseek_v3\""));
        // Replayed at the same size it is the synthetic routing itself.
        let replay = TraceReplay::new(trace, "rt.json", &m, 64).unwrap();
        for (t, s) in steps.iter().enumerate() {
            assert_eq!(&replay.step(t as u64), s);
        }
        // Writing what was read gives the same bytes.
        assert_eq!(
            write_trace(&replay.trace().steps, 256, Some("zipf(s = 1.2) on \"deepseek_v3\"")),
            text
        );
    }

    #[test]
    fn weights_round_trip_bit_for_bit() {
        let m = model(8, 2, 1, 1, 0, 2);
        let mut step = Synthetic::uniform(&m, 5, 1).unwrap().step(0);
        let mut x = 0.1f32;
        for l in &mut step.layers {
            l.weights = l
                .experts
                .iter()
                .map(|_| {
                    x = x * 1.7 + 1e-7;
                    x
                })
                .collect();
        }
        let trace = parse_trace(&write_trace(&[step.clone()], 8, None), "w.json").unwrap();
        assert_eq!(trace.steps[0], step);
    }

    #[test]
    fn replay_tiles_tokens_cycles_steps_and_maps_layers() {
        let m = model(4, 2, 1, 1, 1, 4); // MoE layers 1, 2, 3, 4
        let text = format!(
            "{{{GOOD_HEADER}, \"layers\": [1, 4], \"steps\": [{}, {}]}}",
            r#"{"tokens": 2, "experts": [[0, 1, 2, 3], [3, 2, 1, 0]]}"#,
            r#"{"tokens": 1, "experts": [[1, 0], [0, 3]]}"#
        );
        let trace = parse_trace(&text, "t.json").unwrap();
        let replay = TraceReplay::new(trace, "t.json", &m, 3).unwrap();
        // Layers 2 and 3 take the nearest recorded layer (2 -> 1, 3 -> 4).
        assert_eq!(replay.layer_map(), vec![(1, 1), (2, 1), (3, 4), (4, 4)]);
        let s0 = replay.step(0);
        assert_eq!(s0.tokens, 3);
        assert_eq!(s0.layers[0].experts, vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(s0.layers[1].experts, vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(s0.layers[3].experts, vec![3, 2, 1, 0, 3, 2]);
        assert_eq!(s0.layers.iter().map(|l| l.layer).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let s1 = replay.step(1);
        assert_eq!(s1.layers[0].experts, vec![1, 0, 1, 0, 1, 0]);
        assert_eq!(replay.step(2), s0, "steps cycle");
        // Fewer tokens than recorded: the first ones.
        let short = TraceReplay::new(parse_trace(&text, "t.json").unwrap(), "t.json", &m, 1).unwrap();
        assert_eq!(short.step(0).layers[3].experts, vec![3, 2]);
    }

    fn err(text: &str) -> String {
        parse_trace(text, "bad.json").unwrap_err()
    }

    #[test]
    fn malformed_traces_get_specific_errors() {
        assert!(parse_trace(&small(GOOD_HEADER, GOOD_STEP), "ok.json").is_ok());

        let e = err(&small(
            &GOOD_HEADER.replace("moec-routing-trace", "other-trace"),
            GOOD_STEP,
        ));
        assert!(
            e.starts_with("bad.json: not a moec routing trace: \"format\" is \"other-trace\""),
            "{e}"
        );
        let e = err(r#"{"version": 1}"#);
        assert!(e.contains("no \"format\" field"), "{e}");
        let e = err("[1, 2");
        assert!(e.starts_with("bad.json: not a moec routing trace"), "{e}");

        let e = err(&small(
            &GOOD_HEADER.replace("\"version\": 1", "\"version\": 2"),
            GOOD_STEP,
        ));
        assert!(e.contains("version 2 is not supported"), "{e}");

        let e = err(&small(
            GOOD_HEADER,
            r#"{"tokens": 2, "experts": [[0, 1, 2, 3], [3, 2, 1, 4]]}"#,
        ));
        assert_eq!(
            e,
            "bad.json: step 0, layer 1, token 1: expert 4 (choice 1) is out of range: the trace has 4 experts"
        );

        let e = err(&small(
            GOOD_HEADER,
            &format!(
                "{GOOD_STEP}, {}",
                r#"{"tokens": 2, "experts": [[0, 1, 2, 2], [3, 2, 1, 0]]}"#
            ),
        ));
        assert_eq!(
            e,
            "bad.json: step 1, layer 0, token 1: expert 2 is chosen twice (choices 0 and 1); \
             a token's 2 choices must be distinct"
        );

        // A token with the wrong number of choices shows as a wrong length.
        let e = err(&small(
            GOOD_HEADER,
            r#"{"tokens": 2, "experts": [[0, 1, 2], [3, 2, 1, 0]]}"#,
        ));
        assert_eq!(
            e,
            "bad.json: step 0, layer 0: 3 expert ids, but tokens x top_k = 2 x 2 = 4"
        );

        let e = err(&small(&GOOD_HEADER.replace("\"top_k\": 2", "\"top_k\": 5"), GOOD_STEP));
        assert!(e.contains("\"top_k\" = 5 is outside 1 ..= experts (4)"), "{e}");

        let e = err(&small(GOOD_HEADER, r#"{"tokens": 2, "experts": [[0, 1, 2, 3]]}"#));
        assert!(
            e.contains("step 0: \"experts\" has 1 layer arrays but \"layers\" lists 2"),
            "{e}"
        );
        let e = err(&small(
            GOOD_HEADER,
            r#"{"tokens": 2, "experts": [[0, 1, -2, 3], [3, 2, 1, 0]]}"#,
        ));
        assert!(
            e.starts_with("bad.json: malformed routing trace: invalid value: integer `-2`"),
            "{e}"
        );
        let e = err(&small(
            GOOD_HEADER,
            r#"{"tokens": 2, "expert": [[0, 1, 2, 3], [3, 2, 1, 0]]}"#,
        ));
        assert!(e.contains("unknown field `expert`"), "{e}");
        let e = err(&format!(
            "{{{GOOD_HEADER}, \"layers\": [1, 1], \"steps\": [{GOOD_STEP}]}}"
        ));
        assert!(e.contains("strictly ascending"), "{e}");
        let e = err(&small(GOOD_HEADER, ""));
        assert!(e.contains("\"steps\" is empty"), "{e}");
        let e = err(&small(
            GOOD_HEADER,
            r#"{"tokens": 2, "experts": [[0, 1, 2, 3], [3, 2, 1, 0]], "weights": [[1, 1, 1, 1], [1, 1]]}"#,
        ));
        assert!(e.contains("step 0, layer 1: 2 weights"), "{e}");
    }

    #[test]
    fn traces_that_do_not_fit_the_model_are_refused() {
        let trace = || parse_trace(&small(GOOD_HEADER, GOOD_STEP), "t.json").unwrap();
        let e = TraceReplay::new(trace(), "t.json", &model(4, 1, 1, 1, 0, 2), 8).unwrap_err();
        assert_eq!(e, "t.json: the trace has top_k = 2 but model `test_moe` has top_k = 1");
        let e = TraceReplay::new(trace(), "t.json", &model(8, 2, 1, 1, 0, 2), 8).unwrap_err();
        assert_eq!(e, "t.json: the trace routes over 4 experts but model `test_moe` has 8");
        let e = TraceReplay::new(trace(), "t.json", &model(4, 2, 1, 1, 1, 3), 8).unwrap_err();
        assert_eq!(
            e,
            "t.json: trace layer 0 is not an MoE layer of model `test_moe` (its MoE layers: 1-3)"
        );
    }

    #[test]
    fn the_documented_example_is_a_valid_trace() {
        let doc = include_str!("../../../docs/TRACES.md");
        let start = doc.find("```json\n").map(|i| i + 8).unwrap();
        let end = start + doc[start..].find("```").unwrap();
        let trace = parse_trace(&doc[start..end], "docs/TRACES.md").unwrap();
        assert_eq!((trace.experts, trace.top_k, trace.layers.clone()), (8, 2, vec![1, 2]));
        assert_eq!(&trace.steps[0].layers[0].experts[2..4], &[0, 7]);
        assert_eq!(&trace.steps[0].layers[1].experts[2..4], &[6, 4]);
        let replay = TraceReplay::new(trace, "docs/TRACES.md", &model(8, 2, 1, 1, 1, 2), 3).unwrap();
        assert_eq!(replay.step(1).layers[1].experts, vec![1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn read_trace_names_the_file() {
        let e = read_trace(Path::new("/nonexistent/trace.json")).unwrap_err();
        assert!(
            e.starts_with("/nonexistent/trace.json: cannot read routing trace"),
            "{e}"
        );
    }
}
