//! Units and dimensions: `900 GB/s` is a bandwidth, `180 GB` a size.
//!
//! Every quantity in the language is checked against the dimension its
//! setting expects, so a bandwidth written where a size belongs is an error
//! with a span, not a silently wrong machine.

use super::suggest::did_you_mean;

/// The kinds of physical quantity the language knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// FLOP/s
    Compute,
    /// bytes
    Size,
    /// bytes/s
    Bandwidth,
    /// seconds
    Time,
}

impl Dim {
    /// "a bandwidth such as 900 GB/s" — the words an error uses.
    pub fn expected(self) -> &'static str {
        match self {
            Dim::Compute => "a compute rate such as 2250 TFLOPS",
            Dim::Size => "a size such as 180 GB",
            Dim::Bandwidth => "a bandwidth such as 900 GB/s",
            Dim::Time => "a time such as 20 ns",
        }
    }

    /// "a size" — what was found.
    pub fn noun(self) -> &'static str {
        match self {
            Dim::Compute => "a compute rate",
            Dim::Size => "a size",
            Dim::Bandwidth => "a bandwidth",
            Dim::Time => "a time",
        }
    }
}

/// Every unit: its spelling, dimension and factor to the base unit.
const UNITS: &[(&str, Dim, f64)] = &[
    ("FLOPS", Dim::Compute, 1.0),
    ("KFLOPS", Dim::Compute, 1e3),
    ("MFLOPS", Dim::Compute, 1e6),
    ("GFLOPS", Dim::Compute, 1e9),
    ("TFLOPS", Dim::Compute, 1e12),
    ("PFLOPS", Dim::Compute, 1e15),
    ("B", Dim::Size, 1.0),
    ("KB", Dim::Size, 1e3),
    ("MB", Dim::Size, 1e6),
    ("GB", Dim::Size, 1e9),
    ("TB", Dim::Size, 1e12),
    ("PB", Dim::Size, 1e15),
    ("KiB", Dim::Size, 1024.0),
    ("MiB", Dim::Size, 1048576.0),
    ("GiB", Dim::Size, 1073741824.0),
    ("TiB", Dim::Size, 1099511627776.0),
    ("PiB", Dim::Size, 1125899906842624.0),
    ("B/s", Dim::Bandwidth, 1.0),
    ("KB/s", Dim::Bandwidth, 1e3),
    ("MB/s", Dim::Bandwidth, 1e6),
    ("GB/s", Dim::Bandwidth, 1e9),
    ("TB/s", Dim::Bandwidth, 1e12),
    ("PB/s", Dim::Bandwidth, 1e15),
    ("KiB/s", Dim::Bandwidth, 1024.0),
    ("MiB/s", Dim::Bandwidth, 1048576.0),
    ("GiB/s", Dim::Bandwidth, 1073741824.0),
    ("TiB/s", Dim::Bandwidth, 1099511627776.0),
    // Network folk write bits per second.
    ("Gb/s", Dim::Bandwidth, 1e9 / 8.0),
    ("Tb/s", Dim::Bandwidth, 1e12 / 8.0),
    ("ns", Dim::Time, 1e-9),
    ("us", Dim::Time, 1e-6),
    ("ms", Dim::Time, 1e-3),
    ("s", Dim::Time, 1.0),
];

/// A unit looked up: its dimension and its factor to the base unit.
pub fn lookup(unit: &str) -> Option<(Dim, f64)> {
    UNITS.iter().find(|(u, _, _)| *u == unit).map(|&(_, d, f)| (d, f))
}

/// "did you mean `GB/s`?" for an unknown unit.
pub fn suggest(unit: &str) -> Option<String> {
    // Case slips first (`gb` -> `GB`), then spelling.
    if let Some((u, _, _)) = UNITS.iter().find(|(u, _, _)| u.eq_ignore_ascii_case(unit)) {
        return Some(format!("did you mean `{u}`?"));
    }
    let per_s = format!("{}/s", unit.trim_end_matches("ps").trim_end_matches("/sec"));
    if lookup(&per_s).is_some() {
        return Some(format!("did you mean `{per_s}`?"));
    }
    did_you_mean(unit, UNITS.iter().map(|(u, _, _)| *u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_have_the_right_dimension_and_factor() {
        assert_eq!(lookup("GB/s"), Some((Dim::Bandwidth, 1e9)));
        assert_eq!(lookup("GiB"), Some((Dim::Size, 1073741824.0)));
        assert_eq!(lookup("Gb/s"), Some((Dim::Bandwidth, 1.25e8)));
        assert_eq!(lookup("TFLOPS").map(|u| u.0), Some(Dim::Compute));
        assert_eq!(lookup("gb"), None);
    }

    #[test]
    fn unknown_units_get_a_suggestion() {
        assert_eq!(suggest("GBps").as_deref(), Some("did you mean `GB/s`?"));
        assert_eq!(suggest("gib").as_deref(), Some("did you mean `GiB`?"));
        assert_eq!(suggest("TFLOP").as_deref(), Some("did you mean `TFLOPS`?"));
    }
}
