//! Physical quantities the machine model and the compiler share.
//!
//! Every figure that has a unit gets a newtype, so a bandwidth can never be
//! passed where a size is expected. Sizes are exact byte counts; rates and
//! times are `f64` because they come out of divisions anyway.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Mul};

/// A size in bytes (weights, activations, memory capacity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

/// A data rate in bytes per second (links, memory bandwidth).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BytesPerSec(pub f64);

/// A compute rate in floating-point operations per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlopsPerSec(pub f64);

/// A count of floating-point operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flops(pub f64);

/// A duration in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Bytes {
    /// The size as a float, for rates and ratios.
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Bytes {
    fn add_assign(&mut self, rhs: Bytes) {
        *self = *self + rhs;
    }
}

impl Mul<u64> for Bytes {
    type Output = Bytes;
    fn mul(self, rhs: u64) -> Bytes {
        Bytes(self.0.saturating_mul(rhs))
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        iter.fold(Bytes(0), |a, b| a + b)
    }
}

impl Add for Flops {
    type Output = Flops;
    fn add(self, rhs: Flops) -> Flops {
        Flops(self.0 + rhs.0)
    }
}

impl AddAssign for Flops {
    fn add_assign(&mut self, rhs: Flops) {
        self.0 += rhs.0;
    }
}

impl Bytes {
    /// Time to move these bytes at `rate`.
    pub fn over(self, rate: BytesPerSec) -> Seconds {
        Seconds(self.as_f64() / rate.0)
    }
}

impl Flops {
    /// Time to compute these operations at `rate`.
    pub fn over(self, rate: FlopsPerSec) -> Seconds {
        Seconds(self.0 / rate.0)
    }
}

/// Writes `value` scaled by the largest prefix that keeps it at or above 1,
/// with up to three significant decimals and no trailing zeros.
fn scaled(f: &mut fmt::Formatter<'_>, value: f64, base: f64, prefixes: &[&str], suffix: &str) -> fmt::Result {
    let mut v = value;
    let mut i = 0;
    while v.abs() >= base && i + 1 < prefixes.len() {
        v /= base;
        i += 1;
    }
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    write!(f, "{text} {}{suffix}", prefixes[i])
}

impl fmt::Display for Bytes {
    /// Always decimal prefixes (GB, not GiB), so sizes in one table compare
    /// at a glance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        scaled(f, self.0 as f64, 1000.0, &["", "K", "M", "G", "T", "P"], "B")
    }
}

impl fmt::Display for BytesPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        scaled(f, self.0, 1000.0, &["", "K", "M", "G", "T", "P"], "B/s")
    }
}

impl fmt::Display for FlopsPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        scaled(f, self.0, 1000.0, &["", "K", "M", "G", "T", "P", "E"], "FLOPS")
    }
}

impl fmt::Display for Flops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        scaled(f, self.0, 1000.0, &["", "K", "M", "G", "T", "P", "E"], "FLOP")
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let (v, unit) = if s == 0.0 || s.abs() >= 1.0 {
            (s, "s")
        } else if s.abs() >= 1e-3 {
            (s * 1e3, "ms")
        } else if s.abs() >= 1e-6 {
            (s * 1e6, "us")
        } else {
            (s * 1e9, "ns")
        };
        let text = format!("{v:.3}");
        write!(f, "{} {unit}", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_with_decimal_prefixes() {
        assert_eq!(Bytes(180_000_000_000).to_string(), "180 GB");
        assert_eq!(Bytes(96 << 30).to_string(), "103.079 GB");
        assert_eq!(Bytes(44_040_192).to_string(), "44.04 MB");
        assert_eq!(Bytes(512).to_string(), "512 B");
    }

    #[test]
    fn rates_and_times_print_readably() {
        assert_eq!(BytesPerSec(900e9).to_string(), "900 GB/s");
        assert_eq!(FlopsPerSec(2.25e15).to_string(), "2.25 PFLOPS");
        assert_eq!(Seconds(20e-9).to_string(), "20 ns");
        assert_eq!(Seconds(1.5e-3).to_string(), "1.5 ms");
    }

    #[test]
    fn time_to_move_is_size_over_rate() {
        let t = Bytes(1_000_000_000).over(BytesPerSec(1e12));
        assert!((t.0 - 1e-3).abs() < 1e-15);
    }
}
