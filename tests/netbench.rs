//! The network model against BookSim2, a cycle-accurate simulator: every
//! row of its 8x8 saturation table (`tests/netbench/saturation-8x8.csv`,
//! from `../shared/validation/booksim/`) reproduced within 15% by the
//! calibrated machine `examples/machines/booksim-mesh-8x8.moe`, and the same
//! router, unchanged, on the 4x4 mesh BookSim was also run on
//! (`tests/netbench/README.md` says how those figures were made).

mod common;

use moec_runtime::machine::Machine;
use moec_runtime::sim::netbench::{compare, read_reference, Comparison};

/// Messages per die and load point: enough for the saturation search to
/// settle (a point that looks unstable runs again up to 16x as long).
const MESSAGES: u32 = 100;

/// BookSim's flits of 16 bytes: 1 GHz on the examples' 16 GB/s links.
const FLIT: u64 = 16;

fn machine(file: &str) -> Machine {
    let session = common::checked(&common::root().join("examples/machines").join(file));
    let machines = &session.program.machines;
    assert_eq!(machines.len(), 1);
    machines[0].item.clone().expect("a valid machine")
}

fn reproduce(machine_file: &str, table: &str) -> Vec<Comparison> {
    let text = std::fs::read_to_string(common::root().join("tests/netbench").join(table)).expect("the table");
    let rows = read_reference(&text).expect("a BookSim table");
    assert_eq!(rows.len(), 8, "four patterns at 1 and 16 flits");
    compare(&machine(machine_file), &rows, FLIT, MESSAGES, 1)
}

/// Every row's saturation load and zero-load latency within `bound` of
/// BookSim's; the table is printed for whoever reads the test's output.
fn assert_within(rows: &[Comparison], bound: f64) {
    println!("{}", moec_runtime::sim::netbench::comparison_table(rows, FLIT));
    for c in rows {
        let what = format!("{} at {} flits", c.reference.pattern, c.reference.packet_flits);
        let theta = c.theta.expect("a bound");
        assert!(
            (theta / c.reference.theta - 1.0).abs() < 1e-3,
            "{what}: bound {theta} vs BookSim's {}",
            c.reference.theta
        );
        let error = c.saturation_error().expect("saturates");
        assert!(error.abs() <= bound, "{what}: saturation off by {:+.1}%", 100.0 * error);
        let error = c.zero_load_error();
        assert!(
            error.abs() <= bound,
            "{what}: zero-load latency off by {:+.1}%",
            100.0 * error
        );
    }
}

#[test]
fn the_8x8_mesh_reproduces_booksim_within_15_percent() {
    assert_within(&reproduce("booksim-mesh-8x8.moe", "saturation-8x8.csv"), 0.15);
}

#[test]
fn the_8x8_fit_holds_on_a_4x4_mesh() {
    assert_within(&reproduce("booksim-mesh-4x4.moe", "saturation-4x4.csv"), 0.15);
}
