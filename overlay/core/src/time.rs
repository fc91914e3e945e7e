//! Time as the sans-io core sees it: a monotonic instant given by the caller.
//!
//! The node passes the time elapsed since it started; the simulator passes virtual time. The core never
//! reads a clock.

use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, in microseconds since an origin chosen by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);
    /// Far in the future: used for "never".
    pub const MAX: Time = Time(u64::MAX);

    /// From a duration since the origin.
    pub fn from_duration(d: Duration) -> Self {
        Time(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// From seconds since the origin.
    pub fn from_secs_f64(s: f64) -> Self {
        Time((s * 1e6).max(0.0) as u64)
    }

    /// Duration since the origin.
    pub fn as_duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Seconds since the origin.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}
