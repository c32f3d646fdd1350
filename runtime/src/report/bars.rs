//! A bar chart as SVG, for comparisons (`moec compare`): one bar per row,
//! labelled with its value.

use super::svg::{self, escape};
use std::fmt::Write;

/// Bars of `(label, value)`, values in `unit` (already scaled).
pub fn render(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let (w, bar_h, gap, left, top) = (640.0, 26.0, 10.0, 150.0, 48.0);
    let h = top + bars.len() as f64 * (bar_h + gap) + 40.0;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let span = w - left - 120.0;
    let mut o = String::new();
    svg::open(&mut o, w, h, 12);
    let _ = writeln!(o, r##"<text x="16" y="26" font-size="14">{}</text>"##, escape(title));
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let len = span * value / max;
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 8.0,
            y + bar_h * 0.65,
            escape(label)
        );
        let _ = writeln!(
            o,
            r##"<rect x="{left:.1}" y="{y:.1}" width="{len:.1}" height="{bar_h:.1}" fill="{}"/>"##,
            svg::BLUE
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}">{value:.4} {}</text>"##,
            left + len + 6.0,
            y + bar_h * 0.65,
            escape(unit)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_bar_is_the_largest_value() {
        let svg = super::render("t", "ms", &[("a".into(), 1.0), ("b".into(), 2.0)]);
        assert!(svg.contains(r#"width="370.0""#), "{svg}");
        assert!(svg.contains(r#"width="185.0""#));
        assert!(svg.contains(">2.0000 ms<"));
    }
}
