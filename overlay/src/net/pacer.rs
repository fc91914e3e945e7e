//! When a node sends its fleet report: every `gossip.fleet_interval`, and soon after a change of state
//! of one of its contents (fetch started, complete, refused, stalled or moving again, hook result), but
//! never more often than once per [`MIN_GAP`]. Sans-io: the caller passes `now` and what it holds.
//!
//! A content is *stalled* when it is being fetched and its chunk count has not moved for [`STALL_AFTER`];
//! that is how the fleet learns quickly that a node fell behind.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::fleet::ContentState;
use crate::time::Time;
use crate::ContentId;

/// Shortest time between two reports, whatever changes.
pub const MIN_GAP: Duration = Duration::from_secs(2);
/// A content being fetched whose chunk count has not moved for this long counts as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// Decides when the next report is due.
#[derive(Debug, Default)]
pub struct Pacer {
    last: Option<Time>,
    sent_signature: u64,
    signature: u64,
    /// Per content: the chunk count last seen and since when it has not moved. Holds exactly the
    /// contents of the last [`observe`](Self::observe).
    progress: BTreeMap<ContentId, (u32, Time)>,
}

impl Pacer {
    /// Looks at the node's contents (`(content, state, chunks held)`) and its hook result at `now`;
    /// returns whether a report is due, given the regular `interval`.
    pub fn observe(
        &mut self,
        now: Time,
        contents: impl IntoIterator<Item = (ContentId, ContentState, u32)>,
        hook: Option<&str>,
        interval: Duration,
    ) -> bool {
        let mut seen = BTreeMap::new();
        let mut h = DefaultHasher::new();
        hook.hash(&mut h);
        for (content, state, have) in contents {
            let since = match self.progress.get(&content) {
                Some((before, since)) if *before == have => *since,
                _ => now,
            };
            let stalled = state == ContentState::Fetching && now.saturating_since(since) >= STALL_AFTER;
            (content, state, stalled).hash(&mut h);
            seen.insert(content, (have, since));
        }
        self.progress = seen;
        self.signature = h.finish();
        match self.last {
            None => true,
            Some(last) => {
                let elapsed = now.saturating_since(last);
                elapsed >= interval || (self.signature != self.sent_signature && elapsed >= MIN_GAP)
            }
        }
    }

    /// Records that a report was made at `now` (reflecting the last observation). When it reached no peer
    /// (`delivered` false, e.g. no peer subscribed yet right after start), another is due after
    /// [`MIN_GAP`] rather than a whole interval later.
    pub fn sent(&mut self, now: Time, delivered: bool) {
        self.last = Some(now);
        self.sent_signature = if delivered { self.signature } else { !self.signature };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(secs: f64) -> Time {
        Time::from_duration(Duration::from_secs_f64(secs))
    }

    fn one(state: ContentState, have: u32) -> [(ContentId, ContentState, u32); 1] {
        [(ContentId([1; 32]), state, have)]
    }

    #[test]
    fn a_change_of_state_is_reported_soon_but_not_more_than_once_per_gap() {
        let mut p = Pacer::default();
        assert!(p.observe(at(0.0), [], None, MINUTE), "the first report goes out at once");
        p.sent(at(0.0), true);
        assert!(!p.observe(at(1.0), [], None, MINUTE));
        // Fetch started: due once MIN_GAP has passed since the last report.
        assert!(!p.observe(at(1.5), one(ContentState::Waiting, 0), None, MINUTE));
        assert!(p.observe(at(2.0), one(ContentState::Waiting, 0), None, MINUTE));
        p.sent(at(2.0), true);
        // Nothing changed: quiet until the interval.
        assert!(!p.observe(at(3.0), one(ContentState::Waiting, 0), None, MINUTE));
        assert!(p.observe(at(62.0), one(ContentState::Waiting, 0), None, MINUTE));
        p.sent(at(62.0), true);
        // Fetching, complete, refused, a hook result: each a change.
        for (t, state, hook) in [
            (64.0, ContentState::Fetching, None),
            (66.0, ContentState::Complete, None),
            (68.0, ContentState::Complete, Some("ok: film")),
            (70.0, ContentState::Refused, Some("ok: film")),
        ] {
            assert!(p.observe(at(t), one(state, 0), hook, MINUTE), "{state:?} at {t}");
            p.sent(at(t), true);
        }
    }

    #[test]
    fn a_fetch_that_stops_moving_is_reported_and_so_is_its_recovery() {
        let mut p = Pacer::default();
        let mut t = 0.0;
        assert!(p.observe(at(t), one(ContentState::Fetching, 0), None, MINUTE));
        p.sent(at(t), true);
        // Moving: progress alone triggers nothing.
        for have in 1..=5 {
            t += 1.0;
            assert!(!p.observe(at(t), one(ContentState::Fetching, have), None, MINUTE));
        }
        // Stuck at 5 since t = 5 s: stalled from t = 15 s.
        t = 14.0;
        assert!(!p.observe(at(t), one(ContentState::Fetching, 5), None, MINUTE));
        t = 15.0;
        assert!(p.observe(at(t), one(ContentState::Fetching, 5), None, MINUTE));
        p.sent(at(t), true);
        t = 20.0;
        assert!(!p.observe(at(t), one(ContentState::Fetching, 5), None, MINUTE));
        // Moving again.
        t = 21.0;
        assert!(p.observe(at(t), one(ContentState::Fetching, 6), None, MINUTE));
    }

    #[test]
    fn a_report_that_reached_nobody_is_tried_again_after_the_gap() {
        let mut p = Pacer::default();
        assert!(p.observe(at(0.0), [], None, MINUTE));
        p.sent(at(0.0), false);
        assert!(!p.observe(at(1.0), [], None, MINUTE));
        assert!(p.observe(at(2.0), [], None, MINUTE));
        p.sent(at(2.0), true);
        assert!(!p.observe(at(4.0), [], None, MINUTE));
    }
}
