//! The rates a fleet report carries (per content, upload, download), measured over at least
//! [`WINDOW`]: reports can follow each other 2 s apart after a change of state, and a slow, steady
//! download whose chunks arrive every few seconds must not read as stalled in one and racing in the
//! next. Sans-io: the caller passes `now` and its counters.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::time::Time;
use crate::ContentId;

/// Shortest span a rate is measured over (when the node has been up that long).
pub const WINDOW: Duration = Duration::from_secs(10);
/// Samples kept (reports are at least 2 s apart, so 16 cover more than [`WINDOW`]).
const MAX_SAMPLES: usize = 16;

#[derive(Debug, Clone)]
struct Sample {
    at: Time,
    up: u64,
    down: u64,
    have: BTreeMap<ContentId, u32>,
}

/// Rates at one report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Content bytes sent per second.
    pub up: f64,
    /// Content bytes received per second.
    pub down: f64,
    /// Chunks gained per second, per content (absent: no earlier sample of it).
    pub chunks: BTreeMap<ContentId, f64>,
}

/// The counters at the last few reports.
#[derive(Debug, Default)]
pub struct Rates {
    samples: VecDeque<Sample>,
}

impl Rates {
    /// Records the counters at `now` (content bytes sent and received since start, chunks held per
    /// content) and returns the rates since the newest earlier sample at least [`WINDOW`] old (or the
    /// oldest one kept, when none is that old).
    pub fn measure(&mut self, now: Time, up: u64, down: u64, have: BTreeMap<ContentId, u32>) -> Measured {
        let old_enough = |s: &Sample| now.saturating_since(s.at) >= WINDOW;
        // Keep only the newest sample that is old enough, and everything after it.
        while self.samples.len() >= 2 && old_enough(&self.samples[1]) {
            self.samples.pop_front();
        }
        let per_sec = |amount: u64, since: Time| {
            let dt = now.saturating_since(since).as_secs_f64();
            (dt > 0.0).then(|| amount as f64 / dt)
        };
        let mut measured = Measured::default();
        if let Some(base) = self.samples.front() {
            measured.up = per_sec(up.saturating_sub(base.up), base.at).unwrap_or(0.0);
            measured.down = per_sec(down.saturating_sub(base.down), base.at).unwrap_or(0.0);
        }
        // Per content, from the base or, for a content that came later, its oldest sample.
        for (c, h) in &have {
            let first = self.samples.iter().find_map(|s| s.have.get(c).map(|b| (*b, s.at)));
            if let Some(rate) = first.and_then(|(b, at)| per_sec(h.saturating_sub(b) as u64, at)) {
                measured.chunks.insert(*c, rate);
            }
        }
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { at: now, up, down, have });
        measured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Time {
        Time::from_duration(Duration::from_secs(secs))
    }

    #[test]
    fn a_slow_steady_download_reads_steady_however_often_it_reports() {
        let c = ContentId([1; 32]);
        let mut r = Rates::default();
        assert_eq!(r.measure(at(0), 0, 0, BTreeMap::from([(c, 0)])), Measured::default());
        // One 1 MiB chunk every 4 s (256 KiB/s), reports every 2 s.
        let mut last = Measured::default();
        for t in (2..=40).step_by(2) {
            let chunks = (t / 4) as u32;
            last = r.measure(at(t), 0, chunks as u64 * (1 << 20), BTreeMap::from([(c, chunks)]));
            if t >= 12 {
                assert!(last.chunks[&c] > 0.15 && last.chunks[&c] < 0.35, "at {t} s: {:?}", last.chunks);
                assert!(last.down > 150e3 && last.down < 350e3, "at {t} s: {}", last.down);
            }
        }
        assert!(r.samples.len() <= 7, "only the window's samples are kept: {}", r.samples.len());
        // It stops: the rate falls to 0 within a window.
        let stuck = r.measure(at(52), 0, 10 << 20, BTreeMap::from([(c, 10)]));
        assert_eq!(stuck.chunks[&c], 0.0);
        assert!(last.up == 0.0 && stuck.up == 0.0);
    }

    #[test]
    fn a_content_that_came_later_is_measured_from_its_own_first_sample() {
        let (a, b) = (ContentId([1; 32]), ContentId([2; 32]));
        let mut r = Rates::default();
        r.measure(at(0), 0, 0, BTreeMap::from([(a, 0)]));
        let m = r.measure(at(5), 100, 0, BTreeMap::from([(a, 5), (b, 0)]));
        assert_eq!(m.chunks.get(&a), Some(&1.0));
        assert_eq!(m.chunks.get(&b), None, "no earlier sample of b yet");
        assert_eq!(m.up, 20.0);
        let m = r.measure(at(7), 100, 0, BTreeMap::from([(a, 7), (b, 4)]));
        assert_eq!(m.chunks.get(&b), Some(&2.0), "b from t = 5 s, not from the base at 0 s");
        assert_eq!(m.chunks.get(&a), Some(&1.0));
    }
}
