//! The request window: how many chunk requests a downloader keeps in flight across all its peers.
//!
//! A fixed count cannot suit every cinema: an ADSL line is full with two 4 MiB chunks in flight, while a
//! fibre line fed by uploaders that each give it a slice of their link needs dozens. The window finds its
//! own size by climbing the receive rate, as TCP Vegas and BBR probe a path: it grows while a larger
//! window brings a higher rate (the uploaders were the limit) and steps back when it brings nothing (the
//! downloader's own link, or the swarm, is the limit).
//!
//! The window is measured in rounds. A round lasts until a window's worth of chunks (at least
//! [`ROUND_CHUNKS`]) has arrived and [`ROUND_MIN`] has passed; its rate is the bytes received over its
//! length. The round after a change of size is not measured: its arrivals were asked for before. At the end of a round in which
//! the window was full at some point (requests were held back by it):
//! - if the rate beat the best rate seen at a smaller window by at least half of what the larger window
//!   would bring were the uploaders the only limit ([`GAIN`]), the window grows: it doubles until the first
//!   step that brought nothing (slow start), then grows by a quarter (at least one). On a line the
//!   operator declared fast (`transfer.downlink`) less than half is asked, down to any gain at all from
//!   [`LINK_FREE`] ([`Window::with_link`]);
//! - otherwise, if the window grew since that best, it returns to the size that gave it, and holds there
//!   for [`HOLD_ROUNDS`] rounds before probing one step up again.
//!
//! A round in which the window was never full says nothing about it (the peers or the chunks were the
//! limit) and leaves it as it is. A request timeout halves the window (a loss, as in TCP), once per loss
//! episode: a request sent before the last cut tells of the same episode (TCP NewReno's rule, RFC 6582), so
//! a burst of timeouts of requests sent together long ago cuts once, not once each. The window stays
//! within `[min, max]`, both from the transfer config.
//!
//! On a declared line the window also says whether the node is *starved* ([`Window::starved`]): its window
//! rate, the last round's or the round in progress's once that has lasted as long as the last (and
//! [`ROUND_MIN`]), is below a share of the line. Judged on ended rounds alone, a round fed by a burst of a
//! superseeder's chunks made a slow line look fed until four more chunks had come from slow peers, the
//! superseeders idle for it 15-20 s each time (the 350-cinema fleet's slowest VDSL cinemas;
//! docs/benchmarks.md, "A slow line's window rate tells a stall before its round ends").
//!
//! Sans-io and deterministic: inputs carry `now`.

use crate::Time;

/// Chunks a round spans at least (more when the window is larger).
pub const ROUND_CHUNKS: u32 = 4;
/// A round lasts at least this long.
pub const ROUND_MIN: std::time::Duration = std::time::Duration::from_secs(1);
/// A larger window must bring at least this share of the rate it would bring if the uploaders were the
/// only limit (the rate grows in proportion to the window): half of it.
pub const GAIN: f64 = 0.5;
/// A declared line at or below this rate (bytes/s; 200 Mbit/s) asks the full [`GAIN`] of a larger window.
pub const LINK_FULL: f64 = 25e6;
/// A declared line at or above this rate (bytes/s; 800 Mbit/s) asks a larger window for any gain at all.
pub const LINK_FREE: f64 = 100e6;
/// Rounds held at a size that was found best before probing above it again.
pub const HOLD_ROUNDS: u32 = 4;

/// The adaptive request window.
#[derive(Debug, Clone)]
pub struct Window {
    min: u32,
    max: u32,
    size: u32,
    /// The best round rate seen, and the window that gave it.
    best: Option<(f64, u32)>,
    hold: u32,
    /// A larger window once brought nothing: growth is no longer by doubling.
    settled: bool,
    /// The size changed in the last round: the next round is not measured.
    transition: bool,
    round_start: Option<Time>,
    round_bytes: u64,
    round_chunks: u32,
    full: bool,
    /// When a timeout last cut the window.
    last_cut: Option<Time>,
    /// The share of the proportional gain a larger window must bring ([`GAIN`], less on a fast line).
    gain: f64,
    /// The declared line, bytes/s ([`Window::with_link`]).
    link: Option<f64>,
    /// The rate of the last round that ended, bytes/s.
    last_rate: Option<f64>,
    /// How long the last round that ended lasted.
    last_len: Option<std::time::Duration>,
}

impl Window {
    /// A window between `min` and `max` (at least 1), starting at `min`. With `min == max` it is fixed.
    pub fn new(min: u32, max: u32) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        Self {
            min,
            max,
            size: min,
            best: None,
            hold: 0,
            settled: false,
            transition: false,
            round_start: None,
            round_bytes: 0,
            round_chunks: 0,
            full: false,
            last_cut: None,
            gain: GAIN,
            link: None,
            last_rate: None,
            last_len: None,
        }
    }

    /// The same window on a line of `downlink` bytes/s, when it is known: the gain a larger window must
    /// bring falls from [`GAIN`] at [`LINK_FULL`] to none at [`LINK_FREE`].
    ///
    /// Why: the windows part in a swarm's first rounds, and the cinemas whose windows grew first take most
    /// of the upload and finish first. The completion-CDF bound wants that concentration, but by line
    /// speed: the fastest lines first. Early on no line is the limit, so which windows grow first is luck
    /// (simulated 350-cinema fleet: a 979 Mbit/s cinema finished 63rd, a 640 Mbit/s one 113th). A fast
    /// line asking less proof grows first by design. Lines up to 200 Mbit/s, and nodes that do not
    /// declare theirs, keep the rule as it was.
    pub fn with_link(mut self, downlink: Option<f64>) -> Self {
        if let Some(d) = downlink {
            self.gain = GAIN * ((LINK_FREE - d) / (LINK_FREE - LINK_FULL)).clamp(0.0, 1.0);
        }
        self.link = downlink;
        self
    }

    /// The declared line (the download limit where that is lower), bytes/s; none with no line declared.
    pub fn link(&self) -> Option<f64> {
        self.link
    }

    /// The last round brought less than `share(line)` of the declared line, or the round in progress did
    /// once it has lasted as long as the last round (and [`ROUND_MIN`]): a round stalled after a burst tells
    /// before it ends, one younger than a round says too little (a 4 MiB chunk is 0.7 s of a 50 Mbit/s
    /// line). False with no line declared or no round measured yet.
    pub fn starved(&self, now: Time, share: impl Fn(f64) -> f64) -> bool {
        let current = self.round_start.zip(self.last_len).and_then(|(start, last)| {
            let elapsed = now.saturating_since(start);
            (elapsed >= last.max(ROUND_MIN)).then(|| self.round_bytes as f64 / elapsed.as_secs_f64())
        });
        matches!((self.link, current.or(self.last_rate)), (Some(link), Some(rate)) if rate < share(link) * link)
    }

    /// The share of the proportional gain a larger window must bring.
    pub fn gain_share(&self) -> f64 {
        self.gain
    }

    /// Requests in flight allowed now.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The scheduler held a request back because the window was full.
    pub fn note_full(&mut self) {
        self.full = true;
    }

    /// A requested chunk of `bytes` arrived.
    pub fn on_chunk(&mut self, now: Time, bytes: u64) {
        // The first arrival opens the first round (its bytes came over an unknown time).
        let Some(start) = self.round_start else {
            self.round_start = Some(now);
            return;
        };
        self.round_bytes += bytes;
        self.round_chunks += 1;
        let elapsed = now.saturating_since(start);
        if self.round_chunks < ROUND_CHUNKS.max(self.size) || elapsed < ROUND_MIN {
            return;
        }
        let rate = self.round_bytes as f64 / elapsed.as_secs_f64();
        self.last_rate = Some(rate);
        self.last_len = Some(elapsed);
        if self.transition {
            // The arrivals of this round were asked for under the old size: they say nothing of the new.
            self.transition = false;
        } else if self.full {
            let before = self.size;
            self.end_round(rate);
            self.transition = self.size != before;
        }
        self.round_start = Some(now);
        self.round_bytes = 0;
        self.round_chunks = 0;
        self.full = false;
    }

    fn end_round(&mut self, rate: f64) {
        match self.best {
            None => {
                self.best = Some((rate, self.size));
                self.grow();
            }
            Some((best, at)) if self.size > at && rate > best * gain(self.gain, at, self.size) => {
                self.best = Some((rate, self.size));
                self.grow();
            }
            Some((best, at)) if self.size <= at => {
                // At (or below) the best size: refresh what it gives today, then probe after holding.
                if self.size == at {
                    self.best = Some((rate, at));
                } else if rate > best {
                    self.best = Some((rate, self.size));
                }
                if self.hold > 0 {
                    self.hold -= 1;
                } else {
                    self.size = (self.size + 1).min(self.max);
                }
            }
            Some((_, at)) => {
                // Grown without gain: back to the size that gave the best rate.
                self.size = at.clamp(self.min, self.max);
                self.settled = true;
                self.hold = HOLD_ROUNDS;
            }
        }
    }

    /// Doubles until the first step that brought nothing (slow start), then grows by a quarter.
    fn grow(&mut self) {
        let step = if self.settled { (self.size / 4).max(1) } else { self.size };
        self.size = (self.size + step).min(self.max);
    }

    /// A request sent at `sent` timed out at `now`: halve the window, unless the request was sent before
    /// the last cut (the same loss episode). True when the window was cut.
    pub fn on_timeout(&mut self, now: Time, sent: Time) -> bool {
        if self.last_cut.is_some_and(|cut| sent < cut) {
            return false;
        }
        self.last_cut = Some(now);
        let half = (self.size / 2).max(self.min);
        self.transition |= self.size != half;
        self.size = half;
        self.settled = true;
        self.best = self.best.map(|(r, at)| (r, at.min(self.size)));
        self.hold = HOLD_ROUNDS;
        true
    }
}

/// The rate factor a window of `size` must bring over the best at `at` to be kept.
fn gain(share: f64, at: u32, size: u32) -> f64 {
    1.0 + share * (f64::from(size) / f64::from(at.max(1)) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` arrivals, each spaced as the rate `rate(window)` gives, the window always full;
    /// returns the window after each.
    fn settle(w: &mut Window, rate: impl Fn(u32) -> f64, chunks: u32) -> Vec<u32> {
        let mut now = Time::ZERO;
        let mut seen = Vec::new();
        let bytes = 4_000_000u64;
        for _ in 0..chunks {
            w.note_full();
            now = now + std::time::Duration::from_secs_f64(bytes as f64 / rate(w.size()));
            w.on_chunk(now, bytes);
            seen.push(w.size());
        }
        seen
    }

    #[test]
    fn uploader_limited_grows_to_the_ceiling() {
        // Each request gets 1 MB/s from its uploader: the rate is proportional to the window.
        let mut w = Window::new(4, 64);
        let seen = settle(&mut w, |n| f64::from(n) * 1e6, 400);
        assert_eq!(*seen.last().unwrap(), 64, "{seen:?}");
    }

    #[test]
    fn link_limited_settles_near_the_knee() {
        // 1 MB/s per request up to the downloader's link of 12 MB/s.
        let mut w = Window::new(2, 64);
        let seen = settle(&mut w, |n| (f64::from(n) * 1e6).min(12e6), 2000);
        let tail = &seen[seen.len() - 200..];
        assert!(tail.iter().all(|&s| (12..=20).contains(&s)), "{seen:?}");
    }

    #[test]
    fn a_declared_fast_line_grows_where_a_slow_line_holds() {
        // Uploaders already shared: each larger window brings a third of the proportional gain (rate grows
        // as n^(1/3)). The rule's half stops such a window early; a 1 Gbit/s line asks for any gain.
        let rate = |n: u32| 4e6 * f64::from(n).powf(1.0 / 3.0);
        let end = |link: Option<f64>| {
            let mut w = Window::new(4, 64).with_link(link);
            *settle(&mut w, rate, 1500).last().unwrap()
        };
        let (undeclared, slow, fast) = (end(None), end(Some(100e6 / 8.0)), end(Some(1e9 / 8.0)));
        assert!(undeclared <= 8, "undeclared: {undeclared}");
        assert_eq!(slow, undeclared, "a 100 Mbit/s line keeps the rule");
        assert_eq!(fast, 64, "a 1 Gbit/s line grows while anything is gained");
        // Half-way between 200 and 800 Mbit/s, a quarter of the proportional gain.
        assert!((Window::new(4, 64).with_link(Some(62.5e6)).gain_share() - GAIN / 2.0).abs() < 1e-9);
        // Its own link still stops it: past the knee a larger window gains nothing.
        let mut w = Window::new(2, 64).with_link(Some(1e9 / 8.0));
        let seen = settle(&mut w, |n| (f64::from(n) * 1e6).min(12e6), 2000);
        assert!(seen[seen.len() - 200..].iter().all(|&s| (12..=20).contains(&s)), "{seen:?}");
    }

    #[test]
    fn a_round_that_never_filled_the_window_leaves_it() {
        let mut w = Window::new(4, 64);
        let mut now = Time::ZERO;
        for _ in 0..40 {
            now = now + std::time::Duration::from_millis(300);
            w.on_chunk(now, 4_000_000);
        }
        assert_eq!(w.size(), 4);
    }

    #[test]
    fn a_round_in_progress_stalled_longer_than_the_last_starves_before_it_ends() {
        // A 1 MB/s line; four 1 MB chunks in 4 s end a round fed (1 MB/s).
        let mut w = Window::new(4, 64).with_link(Some(1e6));
        let at = |ms: u64| Time::from_duration(std::time::Duration::from_millis(ms));
        assert!(!w.starved(at(0), |_| 0.8), "nothing measured yet");
        for ms in [0, 1000, 2000, 3000, 4000] {
            w.on_chunk(at(ms), 1_000_000);
        }
        assert!(!w.starved(at(4000), |_| 0.8));
        // Then nothing arrives. While the round in progress is younger than the last one it says too little
        // (a chunk may be about to land), and the last round speaks...
        assert!(!w.starved(at(7900), |_| 0.8));
        // ...once it has lasted as long, it speaks though it has not ended (four chunks are needed): one
        // chunk in 5 s is a fifth of the line.
        w.on_chunk(at(8500), 1_000_000);
        assert!(w.starved(at(9000), |_| 0.8));
        assert!(!w.starved(at(9000), |_| 0.1));
        // Its fourth chunk ends it: 4 MB in 6.5 s, 0.62 MB/s, and the ended round speaks again.
        for ms in [9500, 10000, 10500] {
            w.on_chunk(at(ms), 1_000_000);
        }
        assert!(w.starved(at(10500), |_| 0.8));
        assert!(!w.starved(at(10500), |_| 0.6));
    }

    #[test]
    fn timeout_halves_within_bounds() {
        let mut w = Window::new(3, 64);
        settle(&mut w, |n| f64::from(n) * 1e6, 200);
        let before = w.size();
        let t = Time::from_duration(std::time::Duration::from_secs(1000));
        assert!(w.on_timeout(t, Time::ZERO));
        assert_eq!(w.size(), (before / 2).max(3));
        let mut fixed = Window::new(8, 8);
        settle(&mut fixed, |n| f64::from(n) * 1e6, 100);
        fixed.on_timeout(t, Time::ZERO);
        assert_eq!(fixed.size(), 8);
    }

    #[test]
    fn timeouts_of_requests_sent_before_the_last_cut_cut_once() {
        // Eight requests sent together at t = 10 s to a line that never delivers time out one after
        // another at 310-317 s: one loss episode, one cut (not four: 64 -> 4).
        let mut w = Window::new(4, 64);
        settle(&mut w, |n| f64::from(n) * 1e6, 400);
        assert_eq!(w.size(), 64);
        let at = |s: u64| Time::from_duration(std::time::Duration::from_secs(s));
        let cuts = (0..8).filter(|i| w.on_timeout(at(310 + i), at(10))).count();
        assert_eq!((cuts, w.size()), (1, 32));
        // A request sent after that cut tells of a new episode.
        assert!(w.on_timeout(at(400), at(320)));
        assert_eq!(w.size(), 16);
    }
}
