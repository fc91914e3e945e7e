//! A token bucket for upload and download limits, sans-io: the caller passes `now` and gets back how long
//! to wait before the bytes may go. Reservations may drive the bucket negative, so concurrent transfers
//! queue up fairly behind each other and the long-run rate never exceeds the limit.

use std::time::Duration;

use crate::Time;

/// A token bucket of `rate` bytes/s holding at most `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    level: f64,
    last: Time,
}

impl TokenBucket {
    /// A full bucket. `rate` is clamped to at least 1 byte/s, `burst` to at least 1 byte.
    pub fn new(rate: f64, burst: f64, now: Time) -> Self {
        let burst = burst.max(1.0);
        Self { rate: rate.max(1.0), burst, level: burst, last: now }
    }

    /// The rate in bytes/s.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate (e.g. a bandwidth schedule switching windows); reservations already made stand.
    pub fn set_rate(&mut self, now: Time, rate: f64) {
        self.refill(now);
        self.rate = rate.max(1.0);
    }

    fn refill(&mut self, now: Time) {
        let dt = now.saturating_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// How long until the bucket is out of deficit (zero when tokens are there now). Callers that can hold
    /// back work (e.g. not issue more requests) wait this long, then [`reserve`](Self::reserve).
    pub fn wait(&mut self, now: Time) -> Duration {
        self.refill(now);
        self.deficit_wait()
    }

    /// The wait for the deficit, rounded up to a whole microsecond (the resolution of [`Time`]): a wait
    /// that rounds to nothing would have a caller wake at the same instant again and again.
    fn deficit_wait(&self) -> Duration {
        if self.level > -1e-3 {
            Duration::ZERO
        } else {
            Duration::from_micros((-self.level / self.rate * 1e6).ceil() as u64)
        }
    }

    /// Takes `bytes` now and returns how long to wait before sending them (zero when tokens were there).
    pub fn reserve(&mut self, now: Time, bytes: u64) -> Duration {
        self.refill(now);
        self.level -= bytes as f64;
        self.deficit_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_whole_microseconds_so_waking_after_it_finds_the_deficit_paid() {
        // 1 GB/s and a deficit of 2 bytes: 2 ns, which a wake-up on the microsecond clock would not see pass.
        let mut b = TokenBucket::new(1e9, 1.0, Time::ZERO);
        let wait = b.reserve(Time::ZERO, 3);
        assert_eq!(wait, Duration::from_micros(1));
        assert_eq!(b.wait(Time::ZERO + wait), Duration::ZERO);
        // 3 bytes at 1 MB/s: exactly 3 us; a float's rounding above that takes no extra wake-up either.
        let mut b = TokenBucket::new(1e6, 1.0, Time::ZERO);
        let wait = b.reserve(Time::ZERO, 4);
        assert_eq!(wait, Duration::from_micros(3));
        assert_eq!(b.wait(Time::ZERO + wait), Duration::ZERO);
    }

    #[test]
    fn long_run_rate_is_the_limit() {
        // 5 MB/s, 1 MB burst: send 100 chunks of 1 MB back to back; the last may leave at ~ (100-1)/5 s.
        let mut b = TokenBucket::new(5e6, 1e6, Time::ZERO);
        let mut now = Time::ZERO;
        for _ in 0..100 {
            let wait = b.reserve(now, 1_000_000);
            now = now + wait;
        }
        let secs = now.as_secs_f64();
        assert!((secs - 19.8).abs() < 0.01, "took {secs} s");
    }

    #[test]
    fn idle_time_refills_up_to_the_burst_only() {
        let mut b = TokenBucket::new(1000.0, 500.0, Time::ZERO);
        assert_eq!(b.reserve(Time::ZERO, 500), Duration::ZERO);
        // After 100 s idle only the burst (500) is there again.
        let t = Time::from_secs_f64(100.0);
        assert_eq!(b.reserve(t, 500), Duration::ZERO);
        assert_eq!(b.reserve(t, 1000), Duration::from_secs(1));
    }

    #[test]
    fn wait_says_when_the_deficit_is_paid() {
        let mut b = TokenBucket::new(1000.0, 100.0, Time::ZERO);
        assert_eq!(b.wait(Time::ZERO), Duration::ZERO);
        assert_eq!(b.reserve(Time::ZERO, 600), Duration::from_millis(500));
        assert_eq!(b.wait(Time::ZERO), Duration::from_millis(500));
        assert_eq!(b.wait(Time::from_secs_f64(0.5)), Duration::ZERO);
    }

    #[test]
    fn rate_change_applies_to_later_reservations() {
        let mut b = TokenBucket::new(1000.0, 1.0, Time::ZERO);
        b.reserve(Time::ZERO, 1);
        b.set_rate(Time::ZERO, 10.0);
        assert_eq!(b.reserve(Time::ZERO, 10), Duration::from_secs(1));
    }
}
