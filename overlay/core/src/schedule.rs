//! Bandwidth schedules: which upload and download limits are in force at a moment of the week.
//!
//! Limits come from three places and the most restrictive wins: the node's static
//! `transfer.upload_limit` / `download_limit`, the node's own weekly `transfer.schedule`, and the
//! distributor's signed `Policy` for the node's group (or the default policy). Times are UTC: day 0 is
//! Monday, minutes count from midnight.

use serde::{Deserialize, Serialize};

/// Rate limits during a weekly time window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    /// Days of the week it applies to: 0 = Monday .. 6 = Sunday, no duplicates.
    pub days: Vec<u8>,
    /// First minute after midnight (UTC) it applies, inclusive.
    pub start_minute: u16,
    /// Last minute, exclusive; at most 1440. A window across midnight is written as two windows.
    pub end_minute: u16,
    /// Upload limit in bytes/s; `None`: unlimited; `Some(0)`: no upload at all.
    pub upload: Option<u64>,
    /// Download limit in bytes/s; `None`: unlimited; `Some(0)`: no download at all.
    pub download: Option<u64>,
}

impl RateWindow {
    /// Whether the window contains `day` at `minute`.
    pub fn contains(&self, day: u8, minute: u16) -> bool {
        self.days.contains(&day) && self.start_minute <= minute && minute < self.end_minute
    }
}

/// Upload and download limits in bytes/s; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Upload limit.
    pub upload: Option<f64>,
    /// Download limit.
    pub download: Option<f64>,
}

impl Limits {
    /// The more restrictive of the two, field by field.
    pub fn min(self, other: Limits) -> Limits {
        let m = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
        Limits { upload: m(self.upload, other.upload), download: m(self.download, other.download) }
    }

    fn of(window: Option<&RateWindow>) -> Limits {
        window.map_or(Limits::default(), |w| Limits {
            upload: w.upload.map(|u| u as f64),
            download: w.download.map(|d| d as f64),
        })
    }
}

/// Day of the week (0 = Monday .. 6 = Sunday) and minute of the day of a unix time, UTC.
pub fn week_position(unix_secs: u64) -> (u8, u16) {
    let days = unix_secs / 86_400;
    // 1970-01-01 was a Thursday (day 3).
    (((days + 3) % 7) as u8, ((unix_secs % 86_400) / 60) as u16)
}

/// The limits in force at `unix_secs`: the most restrictive of `base` (static limits), the first of
/// `windows` containing the moment, and the first window of the signed `policy` schedule containing it.
pub fn limits_at(
    base: Limits,
    windows: &[RateWindow],
    policy: Option<&[RateWindow]>,
    unix_secs: u64,
) -> Limits {
    let (day, minute) = week_position(unix_secs);
    let own = Limits::of(windows.iter().find(|w| w.contains(day, minute)));
    let signed = Limits::of(policy.and_then(|p| p.iter().find(|w| w.contains(day, minute))));
    base.min(own).min(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2026-11-23 00:00 UTC.
    const MONDAY: u64 = 1_795_392_000;

    fn screenings() -> RateWindow {
        // Every day 18:00-23:30: upload at most 1 MB/s.
        RateWindow {
            days: (0..7).collect(),
            start_minute: 18 * 60,
            end_minute: 23 * 60 + 30,
            upload: Some(1_000_000),
            download: None,
        }
    }

    #[test]
    fn week_position_by_hand() {
        assert_eq!(week_position(0), (3, 0)); // Thursday 1970-01-01 00:00
        assert_eq!(week_position(MONDAY), (0, 0));
        assert_eq!(week_position(MONDAY + 6 * 86_400 + 23 * 3600 + 59 * 60 + 59), (6, 1439));
    }

    #[test]
    fn a_schedule_switches_at_its_boundaries() {
        let base = Limits { upload: Some(5e6), download: None };
        let w = [screenings()];
        let at = |h: u64, m: u64| limits_at(base, &w, None, MONDAY + h * 3600 + m * 60);
        assert_eq!(at(17, 59).upload, Some(5e6));
        assert_eq!(at(18, 0).upload, Some(1e6));
        assert_eq!(at(23, 29).upload, Some(1e6));
        assert_eq!(at(23, 30).upload, Some(5e6));
        assert_eq!(at(18, 0).download, None);
    }

    #[test]
    fn a_signed_policy_tightens_but_never_loosens() {
        let policy = vec![RateWindow {
            days: vec![0],
            start_minute: 0,
            end_minute: 12 * 60,
            upload: Some(2_000_000),
            download: Some(0),
        }];
        let base = Limits { upload: Some(5e6), download: None };
        let morning = limits_at(base, &[], Some(policy.as_slice()), MONDAY + 3600);
        assert_eq!(morning, Limits { upload: Some(2e6), download: Some(0.0) });
        let tuesday = limits_at(base, &[], Some(policy.as_slice()), MONDAY + 86_400 + 3600);
        assert_eq!(tuesday, base);
        let loose = vec![RateWindow { upload: Some(9e9 as u64), ..screenings() }];
        assert_eq!(limits_at(base, &[], Some(loose.as_slice()), MONDAY + 19 * 3600).upload, Some(5e6));
    }
}
