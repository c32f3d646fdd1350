//! A run as a time series: an SVG of two panels over the steps. The upper
//! panel is the latency of each step in ms, the part of it that was
//! migration stall shaded orange over the line, down from the step's
//! latency; the lower is the die imbalance (busiest alive die's compute
//! over the mean) and the expert imbalance (the MoE layers' expert time on
//! the busiest die over the mean's) with a dashed line at 1.0, perfect
//! balance (the scale
//! runs from a tick below 1.0 to 1.1 at least). Thin ticks along the top
//! mark steps where migrations took effect (the count in a tooltip) and a
//! red line labelled "fault" crosses both panels at each injected fault.
//!
//! Long runs are downsampled per pixel column: a column holding several
//! steps keeps the first step with its smallest and the first with its
//! largest value, in step order, so spikes stay visible and 10,000 steps
//! still make a small file. Markers are gathered per column the same way.
//! Values that are not finite break the line and are left out of the
//! scales; the output depends only on the input (fixed precision).

use super::svg::{self, escape};
use super::{RunReport, StepSummary};
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
/// Plot width in pixels; also the number of columns a long run is cut into.
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const COLUMNS: usize = PLOT_W as usize;
const LAT_TOP: f64 = 44.0;
const LAT_H: f64 = 240.0;
const IMB_TOP: f64 = LAT_TOP + LAT_H + 20.0;
const IMB_H: f64 = 140.0;
const BOTTOM: f64 = IMB_TOP + IMB_H;
const HEIGHT: f64 = BOTTOM + 72.0;
/// Length of a migration tick.
const TICK: f64 = 8.0;
/// The imbalance scale reaches at least this high.
const MIN_IMBALANCE_TOP: f64 = 1.1;
/// Die imbalance.
const GREEN: &str = "#3a8f5c";
/// Expert imbalance.
const AMBER: &str = "#b8860b";
/// Migration ticks.
const PURPLE: &str = "#7a5cb5";

/// The time series of `report.per_step`.
pub fn render(report: &RunReport, title: &str) -> String {
    let steps = &report.per_step;
    let xs = XAxis::new(steps);
    let downsampled = steps.len() > COLUMNS;
    let x_px: Vec<f64> = steps.iter().map(|s| xs.pixel(s.step as f64)).collect();
    let cols = columns(&x_px);
    let lat_ms: Vec<f64> = steps.iter().map(|s| s.latency_s * 1e3).collect();
    let imb: Vec<f64> = steps.iter().map(|s| s.imbalance).collect();
    let exp_imb: Vec<f64> = steps.iter().map(|s| s.expert_imbalance).collect();
    // Runs without MoE work (or reports from before it was measured) have none to draw.
    let has_experts = exp_imb.iter().any(|&v| v > 0.0);
    let both: Vec<f64> = if has_experts {
        imb.iter().chain(&exp_imb).copied().collect()
    } else {
        imb.clone()
    };
    let lat_axis = Axis::new(0.0, finite_max(&lat_ms).unwrap_or(0.0), 5.0, (0.0, 1.0));
    let imb_axis = {
        let lo = finite_min(&both).map_or(1.0, |m| m.min(1.0));
        // At least up to 1.1, so noise near perfect balance does not fill the panel.
        let hi = finite_max(&both).map_or(MIN_IMBALANCE_TOP, |m| m.max(MIN_IMBALANCE_TOP));
        let mut axis = Axis::new(lo, hi, 4.0, (1.0, MIN_IMBALANCE_TOP));
        // One tick below perfect balance, so its dashed line is not the frame.
        if axis.lo >= 1.0 {
            axis.lo -= axis.step;
        }
        axis
    };
    let lat_y = |v: f64| lat_axis.pixel(v, LAT_TOP, LAT_H);
    let imb_y = |v: f64| imb_axis.pixel(v, IMB_TOP, IMB_H);

    let mut o = String::new();
    svg::open(&mut o, WIDTH, HEIGHT, 11);
    let _ = writeln!(
        o,
        r##"<text x="{LEFT:.0}" y="20" font-size="14">{}</text>"##,
        escape(title)
    );
    let migrations: u64 = steps.iter().map(|s| u64::from(s.migrations_applied)).sum();
    let faults = steps.iter().filter(|s| s.fault).count();
    let _ = writeln!(
        o,
        r##"<text x="{:.0}" y="20" text-anchor="end" fill="{}">{}{}, {}, {}</text>"##,
        WIDTH - RIGHT,
        svg::SLATE,
        count(steps.len() as u64, "step"),
        if downsampled {
            " (min and max per pixel column)"
        } else {
            ""
        },
        count(migrations, "migration"),
        count(faults as u64, "fault")
    );

    // Grid, frames and axes.
    let _ = writeln!(o, r##"<g class="grid" stroke="{}" stroke-width="1">"##, svg::PALE);
    for t in xs.axis.ticks() {
        let x = xs.pixel(t);
        for (top, h) in [(LAT_TOP, LAT_H), (IMB_TOP, IMB_H)] {
            let _ = writeln!(
                o,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}"/>"##,
                top + h
            );
        }
    }
    for (axis, top, h) in [(&lat_axis, LAT_TOP, LAT_H), (&imb_axis, IMB_TOP, IMB_H)] {
        for t in axis.ticks() {
            let y = axis.pixel(t, top, h);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"##,
                LEFT + PLOT_W
            );
        }
    }
    o.push_str("</g>\n");
    let _ = writeln!(o, r##"<g class="axes" fill="{}">"##, svg::SLATE);
    for (axis, top, h) in [(&lat_axis, LAT_TOP, LAT_H), (&imb_axis, IMB_TOP, IMB_H)] {
        for t in axis.ticks() {
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                axis.pixel(t, top, h) + 4.0,
                axis.label(t)
            );
        }
    }
    for t in xs.axis.ticks() {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            xs.pixel(t),
            BOTTOM + 16.0,
            xs.axis.label(t)
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"##,
        LEFT + PLOT_W / 2.0,
        BOTTOM + 34.0
    );
    for (label, top, h) in [
        ("latency (ms)", LAT_TOP, LAT_H),
        ("imbalance (max/mean)", IMB_TOP, IMB_H),
    ] {
        let (x, y) = (18.0, top + h / 2.0);
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{label}</text>"##
        );
    }
    o.push_str("</g>\n");
    for (top, h) in [(LAT_TOP, LAT_H), (IMB_TOP, IMB_H)] {
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT:.1}" y="{top:.1}" width="{PLOT_W:.1}" height="{h:.1}" fill="none" stroke="{}"/>"##,
            svg::SLATE
        );
    }
    if steps.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{}">no steps</text>"##,
            LEFT + PLOT_W / 2.0,
            LAT_TOP + LAT_H / 2.0,
            svg::SLATE
        );
    }

    // The two lines.
    let _ = writeln!(
        o,
        r##"<g class="latency" fill="none" stroke="{}" stroke-width="1.2">"##,
        svg::BLUE
    );
    let lat_px: Vec<f64> = lat_ms.iter().map(|&v| lat_y(v)).collect();
    polyline(&mut o, &downsample(&cols, &lat_ms), &x_px, &lat_px, svg::BLUE);
    o.push_str("</g>\n");
    // Migration stall: the top of each step's latency, over the line (per
    // column, the step that stalled longest), wide enough to see.
    let bar_w = if downsampled {
        3.0
    } else {
        (PLOT_W / (xs.span + 1.0)).clamp(3.0, 12.0)
    };
    let mut stall = String::new();
    for col in &cols {
        let best = col
            .iter()
            .filter(|&&i| steps[i].migration_stall_s.is_finite() && steps[i].migration_stall_s > 0.0)
            .filter(|&&i| lat_ms[i].is_finite())
            .max_by(|&&a, &&b| {
                steps[a]
                    .migration_stall_s
                    .total_cmp(&steps[b].migration_stall_s)
                    .then(b.cmp(&a))
            });
        let Some(&i) = best else { continue };
        let stall_ms = steps[i].migration_stall_s * 1e3;
        let (top, base) = (lat_y(lat_ms[i]), lat_y((lat_ms[i] - stall_ms).max(0.0)));
        let x = x_px[i];
        let (x0, x1) = ((x - bar_w / 2.0).max(LEFT), (x + bar_w / 2.0).min(LEFT + PLOT_W));
        if base - top > 0.0 && x1 > x0 {
            let _ = write!(stall, "M{x0:.1} {top:.1}H{x1:.1}V{base:.1}H{x0:.1}Z");
        }
    }
    if !stall.is_empty() {
        let _ = writeln!(
            o,
            r##"<path class="stall" fill="{}" d="{stall}"><title>migration stall</title></path>"##,
            svg::heat(0.5)
        );
    }

    let one = imb_y(1.0);
    let _ = writeln!(
        o,
        r##"<line class="balanced" x1="{LEFT:.1}" y1="{one:.1}" x2="{:.1}" y2="{one:.1}" stroke="{}" stroke-dasharray="4,3"/>"##,
        LEFT + PLOT_W,
        svg::GREY
    );
    let _ = writeln!(
        o,
        r##"<g class="imbalance" fill="none" stroke="{GREEN}" stroke-width="1.2">"##
    );
    let imb_px: Vec<f64> = imb.iter().map(|&v| imb_y(v)).collect();
    polyline(&mut o, &downsample(&cols, &imb), &x_px, &imb_px, GREEN);
    o.push_str("</g>\n");
    if has_experts {
        let _ = writeln!(
            o,
            r##"<g class="expert-imbalance" fill="none" stroke="{AMBER}" stroke-width="1.2">"##
        );
        let px: Vec<f64> = exp_imb.iter().map(|&v| imb_y(v)).collect();
        polyline(&mut o, &downsample(&cols, &exp_imb), &x_px, &px, AMBER);
        o.push_str("</g>\n");
    }

    // Markers.
    let _ = writeln!(o, r##"<g class="migrations" stroke="{PURPLE}" stroke-width="1">"##);
    for col in &cols {
        let hits: Vec<usize> = col
            .iter()
            .copied()
            .filter(|&i| steps[i].migrations_applied > 0)
            .collect();
        let Some(&first) = hits.first() else { continue };
        let applied: u64 = hits.iter().map(|&i| u64::from(steps[i].migrations_applied)).sum();
        let x = x_px[first];
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{LAT_TOP:.1}" x2="{x:.1}" y2="{:.1}"><title>{}: {} applied</title></line>"##,
            LAT_TOP + TICK,
            which_steps(&hits, steps),
            count(applied, "migration")
        );
    }
    o.push_str("</g>\n");
    let red = svg::heat(1.0);
    let _ = writeln!(o, r##"<g class="faults" stroke="{red}" stroke-width="1.5">"##);
    let mut labels = Vec::new();
    for col in &cols {
        let hits: Vec<usize> = col.iter().copied().filter(|&i| steps[i].fault).collect();
        let Some(&first) = hits.first() else { continue };
        let x = x_px[first];
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{LAT_TOP:.1}" x2="{x:.1}" y2="{BOTTOM:.1}"><title>fault: {}</title></line>"##,
            which_steps(&hits, steps)
        );
        if labels.last().is_none_or(|&l: &f64| x - l >= 32.0) {
            labels.push(x);
        }
    }
    o.push_str("</g>\n");
    if !labels.is_empty() {
        let _ = writeln!(o, r##"<g class="fault-labels" fill="{red}" text-anchor="middle">"##);
        for x in labels {
            let _ = writeln!(o, r##"<text x="{x:.1}" y="{:.1}">fault</text>"##, LAT_TOP - 4.0);
        }
        o.push_str("</g>\n");
    }

    legend(&mut o, HEIGHT - 16.0);
    o.push_str("</svg>\n");
    o
}

fn legend(o: &mut String, y: f64) {
    let red = svg::heat(1.0);
    let stall = svg::heat(0.5);
    let items: [(String, &str); 7] = [
        (
            format!(
                r##"<line x1="0" y1="-4" x2="18" y2="-4" stroke="{}" stroke-width="2"/>"##,
                svg::BLUE
            ),
            "latency per step",
        ),
        (
            format!(r##"<rect x="0" y="-9" width="18" height="8" fill="{stall}"/>"##),
            "migration stall",
        ),
        (
            format!(r##"<line x1="0" y1="-4" x2="18" y2="-4" stroke="{GREEN}" stroke-width="2"/>"##),
            "die imbalance",
        ),
        (
            format!(r##"<line x1="0" y1="-4" x2="18" y2="-4" stroke="{AMBER}" stroke-width="2"/>"##),
            "expert imbalance",
        ),
        (
            format!(
                r##"<line x1="0" y1="-4" x2="18" y2="-4" stroke="{}" stroke-dasharray="4,3"/>"##,
                svg::GREY
            ),
            "1.0 = balanced",
        ),
        (
            format!(r##"<line x1="9" y1="-10" x2="9" y2="0" stroke="{PURPLE}"/>"##),
            "migrations",
        ),
        (
            format!(r##"<line x1="9" y1="-10" x2="9" y2="0" stroke="{red}" stroke-width="1.5"/>"##),
            "fault",
        ),
    ];
    let _ = writeln!(o, r##"<g class="legend" fill="{}">"##, svg::SLATE);
    let mut x = LEFT;
    for (swatch, label) in items {
        let _ = writeln!(
            o,
            r##"<g transform="translate({x:.1} {y:.1})">{swatch}<text x="24" y="0">{label}</text></g>"##
        );
        x += 24.0 + 6.0 * label.len() as f64 + 18.0;
    }
    o.push_str("</g>\n");
}

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// The steps a marker stands for, in words.
fn which_steps(hits: &[usize], steps: &[StepSummary]) -> String {
    match hits {
        [one] => format!("step {}", steps[*one].step),
        [first, .., last] => format!(
            "steps {}-{} ({} steps)",
            steps[*first].step,
            steps[*last].step,
            hits.len()
        ),
        [] => String::new(),
    }
}

/// The steps' indices (by pixel position `x_px`) per pixel column, in step order; each step its own
/// column when there are no more steps than columns.
fn columns(x_px: &[f64]) -> Vec<Vec<usize>> {
    if x_px.len() <= COLUMNS {
        return (0..x_px.len()).map(|i| vec![i]).collect();
    }
    let mut cols = vec![Vec::new(); COLUMNS];
    for (i, x) in x_px.iter().enumerate() {
        let c = (x - LEFT).floor().clamp(0.0, (COLUMNS - 1) as f64) as usize;
        cols[c].push(i);
    }
    cols.retain(|c| !c.is_empty());
    cols
}

/// The points to draw: per column, the first step with the smallest and the
/// first with the largest value (one point when they coincide), in step
/// order; `None` where a column has no finite value, breaking the line.
fn downsample(cols: &[Vec<usize>], values: &[f64]) -> Vec<Option<usize>> {
    let mut out = Vec::new();
    for col in cols {
        let finite: Vec<usize> = col.iter().copied().filter(|&i| values[i].is_finite()).collect();
        let Some(&first) = finite.first() else {
            out.push(None);
            continue;
        };
        let (mut lo, mut hi) = (first, first);
        for &i in &finite {
            if values[i] < values[lo] {
                lo = i;
            }
            if values[i] > values[hi] {
                hi = i;
            }
        }
        out.push(Some(lo.min(hi)));
        if lo != hi {
            out.push(Some(lo.max(hi)));
        }
    }
    out
}

/// Draws `points` (indices into the pixel positions `x`, `y`) as polylines broken at `None`; a
/// lone point is a dot.
fn polyline(o: &mut String, points: &[Option<usize>], x: &[f64], y: &[f64], colour: &str) {
    for run in points.split(Option::is_none) {
        let pts: Vec<(f64, f64)> = run.iter().flatten().map(|&i| (x[i], y[i])).collect();
        match pts.as_slice() {
            [] => {}
            [(x, y)] => {
                let _ = writeln!(
                    o,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{colour}" stroke="none"/>"##
                );
            }
            _ => {
                o.push_str(r##"<polyline points=""##);
                for (k, (x, y)) in pts.iter().enumerate() {
                    let sep = if k == 0 { "" } else { " " };
                    let _ = write!(o, "{sep}{x:.1},{y:.1}");
                }
                o.push_str("\"/>\n");
            }
        }
    }
}

fn finite_max(v: &[f64]) -> Option<f64> {
    v.iter().copied().filter(|x| x.is_finite()).reduce(f64::max)
}

fn finite_min(v: &[f64]) -> Option<f64> {
    v.iter().copied().filter(|x| x.is_finite()).reduce(f64::min)
}

/// A linear scale from `lo` to `hi`, both multiples of a 1-2-5 tick step.
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Axis {
    /// About `ticks` ticks covering `lo..=hi`; `fallback` when the range is
    /// not finite.
    fn new(lo: f64, hi: f64, ticks: f64, fallback: (f64, f64)) -> Axis {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo <= hi {
            (lo, hi)
        } else {
            fallback
        };
        let width = fallback.1 - fallback.0;
        let (lo, hi) = if hi - lo > 0.0 && (hi - lo).is_finite() {
            (lo, hi)
        } else if hi == lo && (lo + width).is_finite() {
            (lo, lo + width)
        } else {
            fallback
        };
        let step = nice((hi - lo) / ticks);
        let (a, b) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        if a.is_finite() && b.is_finite() && b > a {
            Axis { lo: a, hi: b, step }
        } else if hi > lo {
            Axis { lo, hi, step: hi - lo }
        } else {
            Axis {
                lo: fallback.0,
                hi: fallback.1,
                step: fallback.1 - fallback.0,
            }
        }
    }

    /// The tick values from `lo` to `hi`.
    fn ticks(&self) -> Vec<f64> {
        let (k0, k1) = ((self.lo / self.step).round(), (self.hi / self.step).round());
        if !(k1 - k0 >= 0.0 && k1 - k0 <= 40.0) {
            return vec![self.lo, self.hi];
        }
        (0..=(k1 - k0) as u32)
            .map(|k| (k0 + f64::from(k)) * self.step)
            .collect()
    }

    /// A tick value printed with the decimals its step needs.
    fn label(&self, v: f64) -> String {
        let decimals = (-self.step.log10().floor()).clamp(0.0, 9.0) as usize;
        let v = if v == 0.0 { 0.0 } else { v };
        format!("{v:.decimals$}")
    }

    /// The pixel row of `v` in a panel from `top`, `h` high (values outside
    /// the scale clamped to its edge).
    fn pixel(&self, v: f64, top: f64, h: f64) -> f64 {
        let t = ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        top + h * (1.0 - if t.is_nan() { 0.0 } else { t })
    }
}

/// 1, 2 or 5 times a power of ten, the smallest not below `raw`.
fn nice(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    if !(mag.is_finite() && mag > 0.0) {
        return raw;
    }
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The step axis: exactly the run's first to last step (half a step either
/// side when they coincide), ticks at whole steps.
struct XAxis {
    axis: Axis,
    lo: f64,
    span: f64,
}

impl XAxis {
    fn new(steps: &[StepSummary]) -> XAxis {
        let first = steps.iter().map(|s| s.step).min().unwrap_or(0) as f64;
        let last = steps.iter().map(|s| s.step).max().unwrap_or(0) as f64;
        let (lo, hi) = if last - first >= 1.0 {
            (first, last)
        } else {
            (first - 0.5, first + 0.5)
        };
        let step = nice((hi - lo) / 10.0).max(1.0);
        let ticks = Axis {
            lo: (lo / step).ceil() * step,
            hi: (hi / step).floor() * step,
            step,
        };
        XAxis {
            axis: ticks,
            lo,
            span: (hi - lo).max(1.0),
        }
    }

    fn pixel(&self, step: f64) -> f64 {
        LEFT + PLOT_W * ((step - self.lo) / self.span).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{render, COLUMNS, LEFT, PLOT_W};
    use crate::report::{RunReport, StepSummary};

    fn report(n: u64, f: impl Fn(u64) -> StepSummary) -> RunReport {
        RunReport {
            per_step: (0..n).map(f).collect(),
            ..RunReport::default()
        }
    }

    /// A wavy run: latency 1.0-1.6 ms, imbalance 1.0-1.3.
    fn step(i: u64) -> StepSummary {
        StepSummary {
            step: i,
            latency_s: 1e-3 * (1.0 + (i % 7) as f64 * 0.1),
            imbalance: 1.0 + (i % 4) as f64 * 0.1,
            ..StepSummary::default()
        }
    }

    /// Every tag closed in order, every attribute value quoted, no stray
    /// `<` or `&` in text: enough XML for a browser to draw it.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            for (k, _) in text.match_indices('&') {
                let entity = &text[k..];
                assert!(
                    ["&amp;", "&lt;", "&gt;"].iter().any(|e| entity.starts_with(e)),
                    "stray & in {text:?}"
                );
            }
            let end = rest[start..].find('>').expect("unclosed <") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "< inside a tag: {tag}");
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().expect("a tag name"));
            }
            rest = &rest[end + 1..];
        }
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    }

    /// The content of the `<g class="{class}">` group.
    fn group<'a>(svg: &'a str, class: &str) -> &'a str {
        let open = format!(r#"<g class="{class}""#);
        let start = svg.find(&open).unwrap_or_else(|| panic!("no group {class}"));
        let end = svg[start..].find("</g>").expect("group closed") + start;
        &svg[start..end]
    }

    fn polyline_points(group: &str) -> Vec<&str> {
        group
            .split(r#"<polyline points=""#)
            .skip(1)
            .flat_map(|p| p[..p.find('"').expect("closing quote")].split(' '))
            .collect()
    }

    fn x_of(step: f64, last: f64) -> String {
        format!("{:.1}", LEFT + PLOT_W * step / last)
    }

    #[test]
    fn the_svg_is_well_formed_for_short_long_empty_and_single_step_runs() {
        for n in [0, 1, 2, 50, 3_000] {
            let r = report(n, |i| StepSummary {
                migrations_applied: u32::from(i % 10 == 3),
                migration_stall_s: if i % 10 == 3 { 2e-4 } else { 0.0 },
                fault: i == n / 2,
                ..step(i)
            });
            let svg = render(&r, "plan <a> & b");
            assert_well_formed(&svg);
            assert!(svg.contains("plan &lt;a&gt; &amp; b"));
        }
        let empty = render(&RunReport::default(), "empty");
        assert!(empty.contains(">no steps<") && !empty.contains("<polyline"));
        let one = render(&report(1, step), "one");
        assert!(one.contains("<circle") && !one.contains("<polyline"), "{one}");
    }

    #[test]
    fn a_long_run_is_downsampled_to_min_and_max_per_pixel_column_and_stays_small() {
        let r = report(10_000, |i| StepSummary {
            migrations_applied: 2,
            migration_stall_s: 1e-4,
            migration_bytes: 1 << 30,
            fault: i % 100 == 0,
            ..step(i)
        });
        let svg = render(&r, "long");
        assert_well_formed(&svg);
        // Every column holds 11 or 12 steps, each with a distinct min and max.
        assert_eq!(polyline_points(group(&svg, "latency")).len(), 2 * COLUMNS);
        assert_eq!(polyline_points(group(&svg, "imbalance")).len(), 2 * COLUMNS);
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
        // A spike and the dip after it, in one column, both survive, in step order.
        let mut spiky = r.clone();
        spiky.per_step[4321].latency_s = 0.1;
        spiky.per_step[4322].latency_s = 0.0;
        let svg = render(&spiky, "spike");
        let points = polyline_points(group(&svg, "latency"));
        let at = |y: f64| {
            let end = format!(",{y:.1}");
            let hits: Vec<usize> = (0..points.len()).filter(|&k| points[k].ends_with(&end)).collect();
            assert_eq!(hits.len(), 1, "{end} in {points:?}");
            hits[0]
        };
        assert_eq!(at(super::LAT_TOP) + 1, at(super::LAT_TOP + super::LAT_H));
        let xs: Vec<f64> = points
            .iter()
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]));
        // A short run keeps every step.
        assert_eq!(
            polyline_points(group(&render(&report(500, step), "short"), "latency")).len(),
            500
        );
    }

    #[test]
    fn the_fault_line_is_at_the_fault_steps_x_and_migrations_are_ticked() {
        let r = report(100, |i| StepSummary {
            fault: i == 37,
            migrations_applied: if i == 20 || i == 60 { 3 } else { 0 },
            ..step(i)
        });
        let svg = render(&r, "t");
        let faults = group(&svg, "faults");
        let x = x_of(37.0, 99.0);
        assert_eq!(faults.matches("<line").count(), 1, "{faults}");
        assert!(
            faults.contains(&format!(r#"<line x1="{x}" y1="44.0" x2="{x}""#)),
            "{faults}"
        );
        assert!(faults.contains("<title>fault: step 37</title>"));
        assert!(group(&svg, "fault-labels").contains(&format!(r#"<text x="{x}" y="40.0">fault</text>"#)));
        let ticks = group(&svg, "migrations");
        assert_eq!(ticks.matches("<line").count(), 2, "{ticks}");
        for s in [20.0, 60.0] {
            assert!(ticks.contains(&format!(r#"<line x1="{}""#, x_of(s, 99.0))), "{ticks}");
        }
        assert!(ticks.contains("<title>step 20: 3 migrations applied</title>"));
        // In a long run the markers of one column are one marker at the first step's x.
        let r = report(10_000, |i| StepSummary {
            fault: i == 7_777,
            migrations_applied: u32::from((5_000..5_003).contains(&i)),
            ..step(i)
        });
        let svg = render(&r, "t");
        let x = x_of(7_777.0, 9_999.0);
        assert!(group(&svg, "faults").contains(&format!(r#"<line x1="{x}" y1="44.0" x2="{x}""#)));
        let ticks = group(&svg, "migrations");
        assert_eq!(ticks.matches("<line").count(), 1, "{ticks}");
        assert!(ticks.contains("<title>steps 5000-5002 (3 steps): 3 migrations applied</title>"));
    }

    #[test]
    fn migration_stall_is_shaded_on_top_of_the_latency() {
        let r = report(10, |i| StepSummary {
            migration_stall_s: if i == 4 { 0.5e-3 } else { 0.0 },
            ..step(i)
        });
        let svg = render(&r, "t");
        let stall = &svg[svg.find(r#"<path class="stall""#).expect("a stall path")..];
        let d = &stall[stall.find(" d=\"").unwrap() + 4..];
        let d = &d[..d.find('"').unwrap()];
        assert_eq!(d.matches('M').count(), 1, "{d}");
        // Step 4 takes 1.4 ms of which 0.5 ms stall, on a 0-2 ms scale 240 px high.
        let (top, base) = (44.0 + 240.0 * (1.0 - 1.4 / 2.0), 44.0 + 240.0 * (1.0 - 0.9 / 2.0));
        assert!(
            d.contains(&format!(" {top:.1}H")) && d.contains(&format!("V{base:.1}H")),
            "{d}"
        );
        assert!(!render(&report(10, step), "t").contains("class=\"stall\""));
    }

    #[test]
    fn axes_have_round_ticks() {
        let svg = render(&report(1_000, step), "t");
        let axes = group(&svg, "axes");
        // Latency up to 1.6 ms: 0 to 2 ms by 0.5; imbalance 1.0-1.3 by 0.1; steps by 100.
        for label in [">0.0<", ">0.5<", ">2.0<", ">1.1<", ">1.3<", ">0<", ">500<", ">900<"] {
            assert!(axes.contains(label), "{label} in {axes}");
        }
        assert!(!axes.contains(">2.5<") && !axes.contains(">1000<"));
        assert!(axes.contains(">latency (ms)<") && axes.contains(">imbalance (max/mean)<") && axes.contains(">step<"));
        assert!(svg.contains(r#"class="balanced""#) && svg.contains(r#"stroke-dasharray="4,3""#));
    }

    #[test]
    fn values_that_are_not_finite_break_the_line_without_breaking_the_svg() {
        let weird = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
        ];
        for n in [1, 7, 2_000] {
            let r = report(n, |i| StepSummary {
                latency_s: weird[i as usize % weird.len()],
                imbalance: weird[(i as usize + 1) % weird.len()],
                migration_stall_s: weird[(i as usize + 2) % weird.len()],
                migrations_applied: 1,
                fault: i == 0,
                ..step(i)
            });
            let svg = render(&r, "weird");
            assert_well_formed(&svg);
            let lower = svg.to_lowercase();
            assert!(!lower.contains("nan") && !lower.contains("inf"), "{svg}");
        }
        let mut r = report(20, step);
        r.per_step[10].latency_s = f64::NAN;
        let svg = render(&r, "gap");
        assert_eq!(group(&svg, "latency").matches("<polyline").count(), 2);
        let all_nan = report(5, |i| StepSummary {
            latency_s: f64::NAN,
            imbalance: f64::NAN,
            ..step(i)
        });
        assert_well_formed(&render(&all_nan, "nan"));
    }

    #[test]
    fn the_same_run_gives_the_same_bytes() {
        let r = report(5_000, |i| StepSummary {
            migrations_applied: u32::from(i % 97 == 0),
            migration_stall_s: if i % 97 == 0 { 3e-4 } else { 0.0 },
            fault: i == 4_000,
            ..step(i)
        });
        let a = render(&r, "t");
        assert_eq!(a.as_bytes(), render(&r.clone(), "t").as_bytes());
        assert_ne!(a, render(&r, "u"));
    }
}
