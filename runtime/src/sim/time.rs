//! Simulated time: an integer count of picoseconds.
//!
//! Every clock in the simulator (the engine's, the network's, the weights
//! in flight) is a [`Time`]. Durations are computed in floating point (a
//! roofline, bytes over a rate) and rounded once, to the picosecond, when
//! they are added to a clock; nothing ever adds a float to an absolute time.
//! So an event's time is its start plus a sum of rounded durations, and
//! shifting a whole step by any whole number of picoseconds shifts every
//! event by exactly that much: the order of events, and every duration,
//! cannot depend on when the step started (with `f64` seconds they did: an
//! addition to a larger clock rounds away more of a duration's low bits).
//!
//! A `u64` of picoseconds spans 213 days; arithmetic saturates at
//! [`Time::NEVER`], which the engine reports as an error rather than
//! wrapping.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Picoseconds in a second.
const PER_SECOND: f64 = 1e12;

/// A point in simulated time, or a span of it, in picoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The start of a simulation.
    pub const ZERO: Time = Time(0);
    /// Later than every event: "not scheduled", and where saturating
    /// arithmetic ends.
    pub const NEVER: Time = Time(u64::MAX);

    /// A duration of `seconds`, rounded to the nearest picosecond. Negative
    /// and NaN durations are 0; durations past the range saturate at `NEVER`.
    pub fn from_secs(seconds: f64) -> Time {
        Time::from_ps(seconds * PER_SECOND + 0.5)
    }

    /// A duration of `seconds` rounded up to the next picosecond, for a
    /// transfer's end: when it is reached the bytes are surely through.
    pub fn from_secs_ceil(seconds: f64) -> Time {
        let ps = seconds * PER_SECOND;
        let down = Time::from_ps(ps);
        // The cast truncates; one more picosecond if anything was cut off
        // (by hand: `f64::ceil` is a library call on baseline x86-64, and
        // this runs once per flow per rate recompute).
        if (down.0 as f64) < ps && !down.is_never() {
            Time(down.0 + 1)
        } else {
            down
        }
    }

    /// Whole picoseconds in `ps`, truncated; 0 for negatives and NaN,
    /// `NEVER` past the range.
    fn from_ps(ps: f64) -> Time {
        if ps.is_nan() || ps <= 0.0 {
            Time::ZERO
        } else if ps >= u64::MAX as f64 {
            Time::NEVER
        } else {
            Time(ps as u64)
        }
    }

    /// The time in seconds, for reports.
    pub fn secs(self) -> f64 {
        self.0 as f64 / PER_SECOND
    }

    /// Whether this is `NEVER`.
    pub fn is_never(self) -> bool {
        self == Time::NEVER
    }

    /// `self - earlier`, or 0 if `earlier` is later.
    pub fn since(self, earlier: Time) -> Time {
        Time(self.0.saturating_sub(earlier.0))
    }
}

impl Add for Time {
    type Output = Time;
    /// Saturates at `NEVER`.
    fn add(self, rhs: Time) -> Time {
        Time(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Time {
    fn add_assign(&mut self, rhs: Time) {
        *self = *self + rhs;
    }
}

impl Sub for Time {
    type Output = Time;
    /// Saturates at 0 (see [`Time::since`]).
    fn sub(self, rhs: Time) -> Time {
        self.since(rhs)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            f.write_str("never")
        } else {
            crate::units::Seconds(self.secs()).fmt(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_to_picoseconds_and_saturate() {
        assert_eq!(Time::from_secs(1e-9), Time(1000));
        assert_eq!(Time::from_secs(1.4e-12), Time(1));
        assert_eq!(Time::from_secs(1.6e-12), Time(2));
        assert_eq!(Time::from_secs_ceil(1.4e-12), Time(2));
        assert_eq!(Time::from_secs_ceil(3e-12), Time(3));
        assert_eq!(Time::from_secs_ceil(-3e-12), Time::ZERO);
        assert_eq!(Time::from_secs(-1.0), Time::ZERO);
        assert_eq!(Time::from_secs(f64::NAN), Time::ZERO);
        assert_eq!(Time::from_secs(1e308), Time::NEVER);
        assert_eq!(Time::from_secs(f64::INFINITY), Time::NEVER);
        assert_eq!(Time::NEVER + Time(5), Time::NEVER);
        assert_eq!(Time(3) - Time(5), Time::ZERO);
        assert_eq!(Time(2_500_000).secs(), 2.5e-6);
    }
}
