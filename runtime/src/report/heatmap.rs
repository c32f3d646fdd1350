//! Link utilisation as a picture: an SVG of the mesh, each directional
//! link an arrow coloured from cold (pale) to hot (dark red). The scale runs
//! from zero to the busiest link, so hot spots show even when the mean is
//! low; the legend gives the absolute figure. Switches and clusters, which
//! have no grid, get one bar per port.

use super::svg::{self, escape, heat as colour};
use crate::machine::{Machine, NodeId};
use std::fmt::Write;

const CELL: f64 = 72.0;
const MARGIN: f64 = 48.0;

/// The heat map of `util` (per link, LinkId order) on `machine`.
pub fn render(machine: &Machine, util: &[f64], title: &str) -> String {
    match machine.grid() {
        Some(_) => mesh(machine, util, title),
        None => ports(machine, util, title),
    }
}

fn header(o: &mut String, w: f64, h: f64, title: &str) {
    svg::open(o, w, h, 11);
    let _ = writeln!(
        o,
        r##"<text x="{:.0}" y="20" font-size="14">{}</text>"##,
        MARGIN,
        escape(title)
    );
}

fn legend(o: &mut String, x: f64, y: f64, max: f64) {
    for i in 0..=10 {
        let u = f64::from(i) / 10.0;
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{y:.1}" width="16" height="10" fill="{}"/>"##,
            x + 16.0 * f64::from(i),
            colour(u)
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{x:.1}" y="{:.1}">0%</text><text x="{:.1}" y="{:.1}">{:.2}% of link bandwidth (the busiest link), averaged over the run</text>"##,
        y + 24.0,
        x + 150.0,
        y + 24.0,
        100.0 * max
    );
}

/// Utilisation relative to the busiest link, for colouring.
fn relative(u: f64, max: f64) -> f64 {
    if max > 0.0 {
        u / max
    } else {
        0.0
    }
}

fn mesh(machine: &Machine, util: &[f64], title: &str) -> String {
    let Some(grid) = machine.grid() else {
        return String::new();
    };
    let (gw, gh) = (f64::from(grid.width), f64::from(grid.height));
    let (w, h) = (2.0 * MARGIN + gw * CELL, 2.0 * MARGIN + gh * CELL + 40.0);
    let mut o = String::new();
    header(&mut o, w, h, title);
    let centre = |n: NodeId| {
        let c = machine
            .coord(crate::machine::DieId(n.0))
            .unwrap_or(crate::machine::Coord::new(0, 0));
        (
            MARGIN + (f64::from(c.x) + 0.5) * CELL,
            MARGIN + (f64::from(c.y) + 0.5) * CELL,
        )
    };
    let max = util.iter().copied().fold(0.0, f64::max);
    for (l, u) in machine.links().iter().zip(util) {
        let ((x1, y1), (x2, y2)) = (centre(l.from), centre(l.to));
        // Offset each direction to its own side of the centre line.
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (nx, ny) = (-dy / len * 6.0, dx / len * 6.0);
        let shrink = 16.0 / len;
        let (ax, ay) = (x1 + dx * shrink + nx, y1 + dy * shrink + ny);
        let (bx, by) = (x2 - dx * shrink + nx, y2 - dy * shrink + ny);
        let stroke = if l.alive {
            colour(relative(*u, max))
        } else {
            svg::GREY.into()
        };
        let dash = if l.alive { "" } else { r#" stroke-dasharray="3,3""# };
        let _ = writeln!(
            o,
            r##"<line x1="{ax:.1}" y1="{ay:.1}" x2="{bx:.1}" y2="{by:.1}" stroke="{stroke}" stroke-width="5"{dash}><title>{:.1}%</title></line>"##,
            100.0 * u
        );
    }
    for d in 0..machine.die_count() {
        let die = crate::machine::DieId(d);
        let (x, y) = centre(NodeId(d));
        let fill = if machine.is_alive(die) { svg::PALE } else { "#444444" };
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{:.1}" width="22" height="22" rx="3" fill="{fill}" stroke="#556"><title>die {}</title></rect>"##,
            x - 11.0,
            y - 11.0,
            machine.die_label(die)
        );
    }
    legend(&mut o, MARGIN, h - 40.0, max);
    o.push_str("</svg>\n");
    o
}

fn ports(machine: &Machine, util: &[f64], title: &str) -> String {
    let links: Vec<(String, f64)> = machine
        .links()
        .iter()
        .zip(util)
        .filter(|(l, _)| l.alive)
        .map(|(l, u)| {
            let name = |n: NodeId| {
                if n.0 < machine.die_count() {
                    machine.die_label(crate::machine::DieId(n.0))
                } else {
                    "sw".into()
                }
            };
            (format!("{}>{}", name(l.from), name(l.to)), *u)
        })
        .collect();
    let bar = 10.0;
    let max = util.iter().copied().fold(0.0, f64::max);
    let (w, h) = (2.0 * MARGIN + 400.0, 2.0 * MARGIN + bar * links.len() as f64 + 40.0);
    let mut o = String::new();
    header(&mut o, w, h, title);
    for (i, (name, u)) in links.iter().enumerate() {
        let y = MARGIN + bar * i as f64;
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {:.1}%</title></rect>"##,
            MARGIN + 100.0,
            300.0 * relative(*u, max),
            bar - 2.0,
            colour(relative(*u, max)),
            escape(name),
            100.0 * u
        );
        if links.len() <= 80 {
            let _ = writeln!(
                o,
                r##"<text x="{MARGIN:.1}" y="{:.1}" font-size="8">{}</text>"##,
                y + 7.0,
                escape(name)
            );
        }
    }
    legend(&mut o, MARGIN, h - 40.0, max);
    o.push_str("</svg>\n");
    o
}
