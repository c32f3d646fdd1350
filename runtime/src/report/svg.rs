//! What the hand-written SVG figures (`heatmap`, `bars`, `series`) share:
//! the document's opening, text escaping, and the colours.

use std::fmt::Write;

/// Bars (`bars`) and the latency line (`series`).
pub(crate) const BLUE: &str = "#4a78b5";
/// Outlines: dies, plot frames, axis text.
pub(crate) const SLATE: &str = "#556";
/// Dead links, reference lines.
pub(crate) const GREY: &str = "#999999";
/// Pale fill: dies, grid lines.
pub(crate) const PALE: &str = "#e8eef7";

/// Opens the document (`w` x `h` pixels) on a white background; the caller
/// closes it with `</svg>`.
pub(crate) fn open(o: &mut String, w: f64, h: f64, font_size: u32) {
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="{font_size}">"##
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
}

/// White -> orange -> dark red, linear in `u` (clamped to 0..1).
pub(crate) fn heat(u: f64) -> String {
    let u = u.clamp(0.0, 1.0);
    let (r, g, b) = if u < 0.5 {
        let t = u / 0.5;
        (255.0, 255.0 - 90.0 * t, 255.0 - 200.0 * t)
    } else {
        let t = (u - 0.5) / 0.5;
        (255.0 - 115.0 * t, 165.0 - 165.0 * t, 55.0 - 55.0 * t)
    };
    format!("#{:02x}{:02x}{:02x}", r as u8, g as u8, b as u8)
}

/// Text content made safe for XML.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
