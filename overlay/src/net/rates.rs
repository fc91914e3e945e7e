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
        let measured = match self.samples.front() {
            Some(base) if now > base.at => {
                let dt = now.saturating_since(base.at).as_secs_f64();
                let chunks = have
                    .iter()
                    .filter_map(|(c, h)| base.have.get(c).map(|b| (*c, h.saturating_sub(*b) as f64 / dt)))
                    .collect();
                Measured {
                    up: up.saturating_sub(base.up) as f64 / dt,
                    down: down.saturating_sub(base.down) as f64 / dt,
                    chunks,
                }
            }
            _ => Measured::default(),
        };
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
    fn a_content_without_an_earlier_sample_has_no_rate_yet() {
        let (a, b) = (ContentId([1; 32]), ContentId([2; 32]));
        let mut r = Rates::default();
        r.measure(at(0), 0, 0, BTreeMap::from([(a, 0)]));
        let m = r.measure(at(5), 100, 0, BTreeMap::from([(a, 5), (b, 3)]));
        assert_eq!(m.chunks.get(&a), Some(&1.0));
        assert_eq!(m.chunks.get(&b), None);
        assert_eq!(m.up, 20.0);
    }
}
