//! Netbench's results for people: an aligned text table, pretty JSON, an
//! SVG plot of latency against offered load, and the table of a comparison
//! with BookSim2's figures.

use super::{Comparison, LoadPoint, NetbenchResult, KNEE};
use crate::units::{BytesPerSec, Seconds};
use std::fmt::Write as _;

/// The result as pretty JSON.
pub fn to_json(result: &NetbenchResult) -> String {
    // Plain structs of numbers and strings always serialise; NaN would
    // become null rather than fail.
    serde_json::to_string_pretty(result).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The result as an aligned text table, one row per load.
pub fn to_table(result: &NetbenchResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netbench: {} traffic, {} B messages, {} sources; zero-load latency {}; analytical bound {}",
        result.pattern,
        result.message_bytes,
        result.sources,
        Seconds(result.zero_load_latency_s),
        result.theta.map_or("none".into(), |t| format!("{t:.4}")),
    );
    let headers = [
        "offered",
        "accepted",
        "accepted/die",
        "mean latency",
        "p99 latency",
        "messages",
        "backlog growth",
        "stable",
    ];
    let rows: Vec<[String; 8]> = result
        .points
        .iter()
        .map(|p| {
            [
                format!("{:.3}", p.offered),
                format!("{:.3}", p.accepted),
                BytesPerSec(p.accepted_bytes_per_s).to_string(),
                Seconds(p.mean_latency_s).to_string(),
                Seconds(p.p99_latency_s).to_string(),
                p.messages.to_string(),
                format!("{:+.3}", p.backlog_growth),
                if p.stable { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    aligned(&mut out, &headers, &rows);
    let load = |l: Option<f64>, what: &str| l.map_or(format!("not {what}"), |l| format!("{l:.3}"));
    let _ = writeln!(
        out,
        "first unstable load: {}",
        load(result.first_unstable, "in the sweep")
    );
    let _ = writeln!(
        out,
        "latency knee ({KNEE}x zero load): {}",
        load(result.knee, "in the sweep")
    );
    if let Some(s) = result.saturation {
        let of_theta = result
            .theta
            .map_or(String::new(), |t| format!(" ({:.3} of the bound)", s / t));
        let _ = writeln!(out, "saturation (highest stable load): {s:.4}{of_theta}");
    }
    out
}

/// A round step near `span / 5` (1, 2 or 5 times a power of ten) and the
/// first multiple of it at or above `span`, for axis ticks.
fn ticks(span: f64) -> (f64, f64) {
    let span = if span.is_finite() && span > 0.0 { span } else { 1.0 };
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let top = (span / step - 1e-9).ceil().max(1.0) * step;
    (step, top)
}

/// Decimals that show a tick step exactly.
fn decimals(step: f64) -> usize {
    (-step.log10().floor()).max(0.0) as usize
}

/// Escapes text for an SVG text node or attribute.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The result as an SVG plot of latency against offered load: mean and p99
/// latency, the zero-load latency, and the saturation point. Latencies past
/// 10x the zero-load latency are drawn at the top edge so the knee stays
/// visible. The text depends only on the result.
pub fn to_svg(result: &NetbenchResult) -> String {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 440.0;
    const LEFT: f64 = 76.0;
    const RIGHT: f64 = 24.0;
    const TOP: f64 = 64.0;
    const BOTTOM: f64 = 60.0;
    const CLIP: f64 = 10.0;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let points = &result.points;

    let max_offered = points.iter().map(|p| p.offered).fold(0.0, f64::max);
    let (x_step, x_top) = ticks(max_offered);
    let zero = if result.zero_load_latency_s > 0.0 {
        result.zero_load_latency_s
    } else {
        f64::INFINITY
    };
    let mut highest = points
        .iter()
        .flat_map(|p| [p.mean_latency_s, p.p99_latency_s])
        .filter(|l| l.is_finite())
        .fold(0.0, f64::max);
    let mut clipped = false;
    if zero.is_finite() {
        clipped = highest > CLIP * zero;
        highest = highest.min(CLIP * zero).max(zero);
    }
    let (scale, unit) = match highest {
        h if h < 1e-6 => (1e9, "ns"),
        h if h < 1e-3 => (1e6, "us"),
        h if h < 1.0 => (1e3, "ms"),
        _ => (1.0, "s"),
    };
    let (y_step, y_top) = ticks(highest * scale);
    let x = |load: f64| LEFT + plot_w * (load / x_top).clamp(0.0, 1.0);
    let y = |seconds: f64| TOP + plot_h * (1.0 - (seconds * scale / y_top).clamp(0.0, 1.0));

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="26" text-anchor="middle" font-size="15">{} traffic, {} B messages: latency vs offered load</text>"#,
        WIDTH / 2.0,
        xml(&result.pattern),
        result.message_bytes
    );

    // Grid lines and tick labels.
    let _ = writeln!(svg, r##"<g stroke="#dddddd" stroke-width="1">"##);
    let x_ticks = (x_top / x_step).round() as usize;
    let y_ticks = (y_top / y_step).round() as usize;
    for i in 0..=x_ticks {
        let px = LEFT + plot_w * i as f64 / x_ticks.max(1) as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{px:.1}" y1="{TOP:.1}" x2="{px:.1}" y2="{:.1}"/>"#,
            TOP + plot_h
        );
    }
    for i in 0..=y_ticks {
        let py = TOP + plot_h * (1.0 - i as f64 / y_ticks.max(1) as f64);
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/>"#,
            LEFT + plot_w
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g text-anchor="middle">"#);
    for i in 0..=x_ticks {
        let px = LEFT + plot_w * i as f64 / x_ticks.max(1) as f64;
        let value = x_step * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}">{value:.prec$}</text>"#,
            TOP + plot_h + 18.0,
            prec = decimals(x_step)
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g text-anchor="end">"#);
    for i in 0..=y_ticks {
        let py = TOP + plot_h * (1.0 - i as f64 / y_ticks.max(1) as f64);
        let value = y_step * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{value:.prec$}</text>"#,
            LEFT - 8.0,
            py + 4.0,
            prec = decimals(y_step)
        );
    }
    let _ = writeln!(svg, "</g>");

    // Axes and their labels.
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT:.1},{TOP:.1} V{:.1} H{:.1}" fill="none" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (fraction of link bandwidth per die)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency ({unit}){}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        if clipped {
            format!(", clipped at {CLIP}x zero load")
        } else {
            String::new()
        }
    );

    // The zero-load reference.
    if zero.is_finite() {
        let zy = y(zero);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT:.1}" y1="{zy:.1}" x2="{:.1}" y2="{zy:.1}" stroke="#888888" stroke-dasharray="2 3"/>"##,
            LEFT + plot_w
        );
    }

    // The curves: p99 dashed behind the mean.
    let polyline = |latency: &dyn Fn(&LoadPoint) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.offered), y(latency(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
        polyline(&|p| p.p99_latency_s)
    );
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        polyline(&|p| p.mean_latency_s)
    );
    // Every point a dot; unstable ones ringed: the network did not keep up.
    let mut dots = |style: &str, radius: u32, stable_too: bool| {
        let _ = writeln!(svg, "<g {style}>");
        for p in points.iter().filter(|p| stable_too || !p.stable) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{radius}"/>"#,
                x(p.offered),
                y(p.mean_latency_s)
            );
        }
        let _ = writeln!(svg, "</g>");
    };
    dots(r##"fill="#1f77b4""##, 3, true);
    dots(r##"fill="white" stroke="#d62728" stroke-width="1.5""##, 4, false);

    // The searched saturation load, else the first unstable load of the
    // sweep; and the analytical bound when it is on the axis.
    let marks = [
        (result.saturation.map(|s| (s, "saturation")), "#d62728"),
        (
            result
                .first_unstable
                .filter(|_| result.saturation.is_none())
                .map(|s| (s, "unstable from")),
            "#d62728",
        ),
        (result.theta.filter(|t| *t <= x_top).map(|t| (t, "bound")), "#888888"),
    ];
    for (i, (mark, colour)) in marks.iter().enumerate() {
        let Some((at, label)) = mark else { continue };
        let sx = x(*at);
        let _ = writeln!(
            svg,
            r##"<line x1="{sx:.1}" y1="{TOP:.1}" x2="{sx:.1}" y2="{:.1}" stroke="{colour}" stroke-dasharray="4 3"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="{colour}">{label} {at:.3}</text>"##,
            sx + 6.0,
            TOP + plot_h - 8.0 - 16.0 * i as f64
        );
    }

    // Legend: one row between the title and the plot, clear of the curves.
    let ly = TOP - 14.0;
    let entries = [
        ("mean", "#1f77b4", r#" stroke-width="2""#),
        ("p99", "#ff7f0e", r#" stroke-width="1.5" stroke-dasharray="5 3""#),
        ("zero load", "#888888", r#" stroke-dasharray="2 3""#),
    ];
    let mut lx = LEFT;
    for (label, colour, style) in entries {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}"{style}/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
        lx += 30.0 + 8.0 * label.len() as f64 + 20.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// A comparison with BookSim2 as an aligned table, one row per pattern and
/// packet size, with each figure's error.
pub fn comparison_table(rows: &[Comparison], flit_bytes: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netbench against BookSim2: {flit_bytes} B flits, loads in flits per node per cycle, latencies in cycles"
    );
    let headers = [
        "pattern",
        "flits",
        "bound",
        "booksim sat",
        "moec sat",
        "error",
        "booksim zero-load",
        "moec zero-load",
        "error",
    ];
    let percent = |e: f64| format!("{:+.1}%", 100.0 * e);
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|c| {
            let r = &c.reference;
            [
                r.pattern.to_string(),
                r.packet_flits.to_string(),
                format!("{:.4}", r.theta),
                format!("{:.4}", r.saturation),
                c.saturation.map_or("-".into(), |s| format!("{s:.4}")),
                c.saturation_error().map_or("-".into(), percent),
                format!("{:.1}", r.zero_load_cycles),
                format!("{:.1}", c.zero_load_cycles),
                percent(c.zero_load_error()),
            ]
        })
        .collect();
    aligned(&mut out, &headers, &table);
    let worst = |e: &dyn Fn(&Comparison) -> Option<f64>| rows.iter().filter_map(e).map(f64::abs).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "largest error: saturation {}, zero-load latency {}",
        percent(worst(&|c| c.saturation_error())),
        percent(worst(&|c| Some(c.zero_load_error())))
    );
    out
}

/// Rows of cells under their headers, each column right-aligned to its
/// widest cell.
fn aligned<const N: usize>(out: &mut String, headers: &[&str; N], rows: &[[String; N]]) {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:>w$}");
        }
        text
    };
    let _ = writeln!(out, "{}", line(&mut headers.iter().copied()));
    for row in rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
}
