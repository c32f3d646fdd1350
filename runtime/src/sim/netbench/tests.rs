use super::pattern::Targets;
use super::*;
use crate::machine::tests::{mesh, spec, LINK};
use crate::machine::{Coord, DieId, MachineSpec, RouterSpec, Topology};
use crate::units::BytesPerSec;

fn build(s: MachineSpec) -> Machine {
    Machine::build(s).expect("valid machine")
}

/// An 8x8 mesh whose dies have ports as fast as a link, as BookSim's.
fn with_ports(mut s: MachineSpec) -> MachineSpec {
    s.router = RouterSpec {
        port: Some(s.link.bandwidth),
        ..RouterSpec::default()
    };
    s
}

fn config(pattern: Pattern, loads: &[f64], messages_per_die: u32) -> NetbenchConfig {
    NetbenchConfig {
        pattern,
        message_bytes: 4096,
        loads: loads.to_vec(),
        messages_per_die,
        seed: 7,
        saturation: false,
    }
}

fn hotspot(die: Option<u32>) -> Pattern {
    Pattern::Hotspot {
        fraction: 1.0,
        die: die.map(DieId),
    }
}

#[test]
fn pattern_names_round_trip_and_bad_ones_are_refused() {
    for p in [
        Pattern::UniformRandom,
        Pattern::Transpose,
        Pattern::BitComplement,
        hotspot(None),
        hotspot(Some(27)),
        Pattern::Hotspot {
            fraction: 0.25,
            die: Some(DieId(3)),
        },
        Pattern::AllToAll,
    ] {
        assert_eq!(p.to_string().parse::<Pattern>(), Ok(p));
    }
    assert_eq!("hotspot(27)".parse(), Ok(hotspot(Some(27))));
    assert_eq!(
        "hotspot:0.5".parse(),
        Ok(Pattern::Hotspot {
            fraction: 0.5,
            die: None
        })
    );
    for bad in [
        "",
        "Uniform",
        "hotspot:",
        "hotspot:1.5",
        "hotspot:nan",
        "hotspot(",
        "hotspot(x)",
        "hotspot(3",
        "bitcomp ",
    ] {
        assert!(bad.parse::<Pattern>().is_err(), "{bad:?}");
    }
}

#[test]
fn patterns_pick_booksims_destinations() {
    let m = build(mesh(8, 8));
    let at = |x, y| m.die_at(Coord::new(x, y)).expect("on the grid");
    let mut rng = Rng::new(1);
    let t = Targets::new(&m, Pattern::Transpose);
    assert_eq!(t.pick(at(2, 5).index(), 0, &mut rng), Some(at(5, 2)));
    // The diagonal sends to itself.
    assert_eq!(t.pick(at(3, 3).index(), 0, &mut rng), Some(at(3, 3)));
    assert_eq!(t.sources.len(), 64);
    let b = Targets::new(&m, Pattern::BitComplement);
    assert_eq!(b.pick(at(1, 6).index(), 0, &mut rng), Some(at(6, 1)));
    assert_eq!(b.sources.len(), 64);
    // Uniform includes the sender.
    let u = Targets::new(&m, Pattern::UniformRandom);
    let to = u.destinations(10);
    assert_eq!(to.len(), 64);
    assert!(to.iter().all(|&(_, p)| p == 1.0 / 64.0));
    assert!((0..10_000).any(|k| u.pick(10, k, &mut rng) == Some(DieId(10))));
    // 16 dies on a switch: transpose swaps the two 2-bit halves.
    let rack = build(spec(Topology::Switch { ports: 16 }));
    assert_eq!(
        Targets::new(&rack, Pattern::Transpose).pick(0b0111, 0, &mut rng),
        Some(DieId(0b1101))
    );
    // All-to-all visits every other die once per cycle.
    let a = Targets::new(&m, Pattern::AllToAll);
    let mut seen: Vec<DieId> = (0..63).filter_map(|k| a.pick(10, k, &mut rng)).collect();
    seen.sort();
    assert_eq!(
        seen,
        m.alive_dies().into_iter().filter(|d| d.0 != 10).collect::<Vec<_>>()
    );
    // Pure hotspot: every message, the hot die's own included, to die 27 =
    // (3, 3), the centre die BookSim's 8x8 reference uses.
    let h = Targets::new(&m, hotspot(None));
    assert_eq!(h.hotspot, Some(at(3, 3)));
    assert_eq!(h.sources.len(), 64);
    assert!((0..100).all(|k| h.pick((k % 64) as usize, k, &mut rng) == Some(at(3, 3))));
    assert_eq!(Targets::new(&m, hotspot(Some(5))).hotspot, Some(DieId(5)));
    // A fraction: that share to the hot die, the rest uniform.
    let mixed = Targets::new(
        &m,
        Pattern::Hotspot {
            fraction: 0.3,
            die: None,
        },
    );
    let hits = (0..10_000)
        .filter(|&k| mixed.pick(0, k, &mut rng) == Some(at(3, 3)))
        .count();
    let expected = 0.3 + 0.7 / 64.0;
    assert!((hits as f64 / 1e4 - expected).abs() < 0.02, "{hits}");
    let p: f64 = mixed.destinations(0).iter().map(|d| d.1).sum();
    assert!((p - 1.0).abs() < 1e-12);
}

#[test]
fn the_bounds_are_booksims_channel_loads() {
    // BookSim's saturation-8x8.csv: the busiest channel carries 2 (uniform,
    // a middle link), 7 (transpose), 4 (bitcomp) and 64 (hotspot, its
    // ejection port) times a die's injection.
    let m = build(with_ports(mesh(8, 8)));
    let theta = |p: Pattern| bounds(&m, p, 4096).theta.expect("a bound");
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-9;
    assert!(close(theta(Pattern::UniformRandom), 0.5));
    assert!(close(theta(Pattern::Transpose), 1.0 / 7.0));
    assert!(close(theta(Pattern::BitComplement), 0.25));
    assert!(close(theta(hotspot(None)), 1.0 / 64.0));
    // Without ports only the links bound the hotspot: 32 messages in 64
    // cross its busiest incoming link.
    let bare = build(mesh(8, 8));
    assert!(close(bounds(&bare, hotspot(None), 4096).theta.unwrap(), 1.0 / 32.0));
    // Zero load, ideal router: hops x L + bytes / W, uniform pairs (the
    // sender included) averaging 2 (k^2 - 1) / 3k = 21/4 hops; a message to
    // itself takes no time.
    let zero = bounds(&bare, Pattern::UniformRandom, 4096).zero_load_latency_s;
    let expected = 21.0 / 4.0 * LINK.latency.0 + 63.0 / 64.0 * 4096.0 / LINK.bandwidth.0;
    assert!(close(zero, expected), "{zero} vs {expected}");
}

#[test]
fn at_low_load_latency_is_the_zero_load_latency_and_all_is_accepted() {
    let m = build(with_ports(mesh(8, 8)));
    let r = run(&m, &config(Pattern::UniformRandom, &[0.02, 0.1], 60));
    assert_eq!(r.sources, 64);
    assert_eq!((r.first_unstable, r.knee), (None, None));
    for p in &r.points {
        assert!(p.stable && p.messages > 2000, "{p:?}");
        assert!((p.accepted / p.offered - 1.0).abs() < 0.05, "{p:?}");
        assert!((p.accepted_bytes_per_s - p.accepted * LINK.bandwidth.0).abs() < 1.0);
    }
    let low = &r.points[0];
    assert!(
        (low.mean_latency_s / r.zero_load_latency_s - 1.0).abs() < 0.03,
        "{low:?} vs {}",
        r.zero_load_latency_s
    );
    assert!(low.p99_latency_s >= low.mean_latency_s);

    // Two dies, one hop, no ports: every message to the other die takes
    // L + B/W, one to itself nothing.
    let pair = build(mesh(2, 1));
    let r = run(&pair, &config(Pattern::Transpose, &[0.01], 200));
    let idle = LINK.latency.0 + 4096.0 / LINK.bandwidth.0;
    assert!((r.zero_load_latency_s / idle - 1.0).abs() < 1e-9);
    // Two messages seldom meet at 1% load.
    assert!((r.points[0].mean_latency_s / idle - 1.0).abs() < 0.01, "{r:?}");
}

#[test]
fn saturation_is_instability_at_the_bound_of_an_ideal_router() {
    // With an ideal router (every channel fully usable) a fluid network
    // keeps up with any load below its busiest channel's capacity and none
    // above: the search lands on theta, however long the runs.
    let m = build(with_ports(mesh(4, 4)));
    for pattern in [Pattern::UniformRandom, Pattern::Transpose, hotspot(None)] {
        let theta = bounds(&m, pattern, 4096).theta.expect("a bound");
        let mut found = Vec::new();
        for messages in [200, 600] {
            let c = NetbenchConfig {
                saturation: true,
                ..config(pattern, &[0.5 * theta, 1.05 * theta], messages)
            };
            let r = run(&m, &c);
            let s = r.saturation.expect("saturates");
            println!("{pattern} {messages}: {:.4} of theta", s / theta);
            // Finite runs read the last few percent below capacity as
            // unstable: the backlog there takes longer to settle than a run.
            assert!(s / theta > 0.93 && s / theta < 1.04, "{pattern}: {s} vs {theta}");
            assert!(r.points[0].stable && !r.points[1].stable, "{r:?}");
            assert!(r.points[1].backlog_growth > UNSTABLE_GROWTH);
            assert_eq!(r.first_unstable, Some(1.05 * theta));
            found.push(s);
        }
        // The verdict moves little with the run's length (the backlog's
        // fluctuations near capacity outlast a short run).
        assert!((found[0] / found[1] - 1.0).abs() < 0.08, "{pattern}: {found:?}");
    }
}

#[test]
fn reports_are_deterministic() {
    let m = build(mesh(4, 4));
    let mut c = config(
        Pattern::Hotspot {
            fraction: 0.2,
            die: None,
        },
        &[0.3, 0.1, f64::NAN, 0.6, -1.0],
        30,
    );
    c.saturation = true;
    let (a, b) = (run(&m, &c), run(&m, &c));
    assert_eq!(a, b);
    assert_eq!(a.points.iter().map(|p| p.offered).collect::<Vec<_>>(), [0.1, 0.3, 0.6]);
    assert_eq!(to_json(&a), to_json(&b));
    assert_eq!(to_svg(&a), to_svg(&b));
    assert_eq!(to_table(&a), to_table(&b));
    let back: NetbenchResult = serde_json::from_str(&to_json(&a)).expect("JSON reads back");
    // serde_json parses floats to within an ulp, not always exactly.
    assert_eq!(
        (&back.pattern, back.sources, back.first_unstable.is_some()),
        (&a.pattern, a.sources, a.first_unstable.is_some())
    );
    for (x, y) in back.points.iter().zip(&a.points) {
        assert!((x.mean_latency_s / y.mean_latency_s - 1.0).abs() < 1e-12);
        assert_eq!(x.messages, y.messages);
    }
    let svg = to_svg(&a);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    let table = to_table(&a);
    assert_eq!(
        table.lines().count(),
        1 + 1 + 3 + 2 + usize::from(a.saturation.is_some())
    );
    // Columns line up: every row as wide as the header.
    let widths: Vec<usize> = table.lines().skip(1).take(4).map(str::len).collect();
    assert!(widths.windows(2).all(|w| w[0] == w[1]), "{table}");
}

#[test]
fn degenerate_machines_and_configs_do_not_panic() {
    let one = build(mesh(1, 1));
    let r = run(&one, &config(Pattern::AllToAll, &[0.5], 10));
    assert_eq!((r.sources, r.first_unstable, r.theta), (0, None, None));
    assert_eq!(r.points[0].messages, 0);
    let _ = to_svg(&r);
    // A lone die sending to itself through an ideal router: nothing to
    // contend for, delivered at once.
    let r = run(&one, &config(Pattern::UniformRandom, &[0.5], 10));
    assert_eq!(r.sources, 1);
    assert!(r.points[0].stable);
    let m = build(mesh(3, 3));
    let mut c = config(Pattern::BitComplement, &[0.2], 10);
    c.message_bytes = 0;
    c.saturation = true;
    let r = run(&m, &c);
    // The middle die of an odd count mirrors onto itself and still sends.
    assert_eq!(r.sources, 9);
    assert!(r.points[0].stable);
    let _ = (to_svg(&r), to_table(&r));
    // A slow port bounds everything.
    let mut slow = mesh(4, 4);
    slow.router.port = Some(BytesPerSec(LINK.bandwidth.0 / 8.0));
    let m = build(slow);
    let theta = bounds(&m, Pattern::UniformRandom, 4096).theta.unwrap();
    assert!((theta - 1.0 / 8.0).abs() < 1e-12, "{theta}");
}
